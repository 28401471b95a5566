# Copyright 2025 The aetnet developers.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Entity-level seqeval scores as a local `evaluate` metric.

`evaluate.load("seqeval")` downloads its script from the Hugging Face Hub. This file is a self-contained replacement
that `evaluate.load("<path to this file>")` imports without any network access (see `aetnet.metrics.load_seqeval`).
Its output has the same keys as the Hub metric: one `{"precision", "recall", "f1", "number"}` dict per entity type
plus `overall_precision`, `overall_recall`, `overall_f1` (micro averages over entities) and `overall_accuracy`
(token-level accuracy).

The file only imports `evaluate`, `datasets` and `seqeval`, because `evaluate` copies it on its own into its
module cache: it must not depend on the rest of the `aetnet` package.
"""

from __future__ import annotations

import importlib

import datasets
import evaluate
from seqeval.metrics import accuracy_score, classification_report


_DESCRIPTION = """\
Entity-level precision, recall and F1 of a sequence labelling (BIO, IOB1, IOBES, ...) computed with the `seqeval`
package, plus token-level accuracy. An entity counts as correct only when both its type and its exact span match.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[str]]`): predicted tags, one list per sequence (e.g. `["O", "B-QUESTION", "I-QUESTION"]`).
    references (`list[list[str]]`): gold tags, aligned with `predictions`.
    suffix (`bool`, *optional*, defaults to `False`): the tags are written `PER-B` instead of `B-PER`.
    scheme (`str`, *optional*): a `seqeval.scheme` class name (`"IOB2"`, `"IOBES"`, ...) for strict mode.
    mode (`str`, *optional*): `"strict"` to reject entities that violate `scheme`; the default is the lenient
        CoNLL evaluation.
    sample_weight (`list[int]`, *optional*): one weight per sequence.
    zero_division (`"warn"`, `0` or `1`, *optional*, defaults to `"warn"`): the value of an undefined ratio.
Returns:
    `dict`: `overall_precision`, `overall_recall`, `overall_f1`, `overall_accuracy` and, for each entity type
    `T`, `T: {"precision", "recall", "f1", "number"}` where `number` is the count of gold entities of type `T`.
Examples:
    >>> metric = evaluate.load("path/to/seqeval_metric.py")
    >>> metric.compute(predictions=[["B-QUESTION", "O"]], references=[["B-QUESTION", "O"]])["overall_f1"]
    1.0
"""

# Keys that seqeval's report adds next to the entity types; the micro average becomes the `overall_*` scores.
_AVERAGE_KEYS = ("micro avg", "macro avg", "weighted avg")


def compute_seqeval_scores(
    predictions: list[list[str]],
    references: list[list[str]],
    *,
    suffix: bool = False,
    scheme: str | None = None,
    mode: str | None = None,
    sample_weight: list[int] | None = None,
    zero_division: str | int = "warn",
) -> dict:
    """Compute the seqeval scores of `predictions` against `references` (both lists of tag-string lists).

    This is the computation behind the `evaluate` metric, usable without `evaluate`'s caching machinery.
    """
    if len(predictions) != len(references):
        raise ValueError(
            f"`predictions` has {len(predictions)} sequences but `references` has {len(references)}; they must match."
        )
    for index, (prediction, reference) in enumerate(zip(predictions, references)):
        if len(prediction) != len(reference):
            raise ValueError(
                f"Sequence {index} has {len(prediction)} predicted tags but {len(reference)} reference tags."
            )
    if scheme is not None:
        try:
            scheme = getattr(importlib.import_module("seqeval.scheme"), scheme)
        except AttributeError as error:
            raise ValueError(
                f"`scheme` must name a class of `seqeval.scheme` (e.g. 'IOB2'), got {scheme!r}."
            ) from error

    report = classification_report(
        y_true=references,
        y_pred=predictions,
        suffix=suffix,
        output_dict=True,
        scheme=scheme,
        mode=mode,
        sample_weight=sample_weight,
        zero_division=zero_division,
    )
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    scores: dict = {}
    for entity_type, values in report.items():
        if entity_type in _AVERAGE_KEYS:
            continue
        scores[entity_type] = {
            "precision": float(values["precision"]),
            "recall": float(values["recall"]),
            "f1": float(values["f1-score"]),
            "number": int(values["support"]),
        }
    scores["overall_precision"] = float(micro["precision"])
    scores["overall_recall"] = float(micro["recall"])
    scores["overall_f1"] = float(micro["f1-score"])
    scores["overall_accuracy"] = float(accuracy_score(y_true=references, y_pred=predictions))
    return scores


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Seqeval(evaluate.Metric):
    """seqeval entity-level precision, recall, F1 and token accuracy, loadable offline."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Hiroki Nakayama. seqeval: A Python framework for sequence labeling evaluation. 2018.",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string", id="label"), id="sequence"),
                    "references": datasets.Sequence(datasets.Value("string", id="label"), id="sequence"),
                }
            ),
            reference_urls=["https://github.com/chakki-works/seqeval"],
        )

    def _compute(
        self,
        predictions,
        references,
        suffix: bool = False,
        scheme: str | None = None,
        mode: str | None = None,
        sample_weight: list[int] | None = None,
        zero_division: str | int = "warn",
    ) -> dict:
        return compute_seqeval_scores(
            predictions,
            references,
            suffix=suffix,
            scheme=scheme,
            mode=mode,
            sample_weight=sample_weight,
            zero_division=zero_division,
        )


__all__ = ["Seqeval", "compute_seqeval_scores"]
