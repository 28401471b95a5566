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
"""Entity-level seqeval scores of token classification, offline.

[`load_seqeval`] returns the seqeval metric as an `evaluate.EvaluationModule` loaded from the script shipped inside
this package (`seqeval_metric.py`); [`seqeval_summary`] flattens its output into what a `Trainer`'s
`compute_metrics` returns (the example scripts score merged per-word labels with the two);
[`compute_token_classification_metrics`] does both for token-level logits or label ids with `-100` positions, as a
`compute_metrics` over windows.

`evaluate`, `datasets` and `seqeval` are optional dependencies (the `examples` extra): they are imported on use.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


SEQEVAL_METRIC_PATH = str(Path(__file__).resolve().parent / "seqeval_metric.py")


def load_seqeval(**kwargs):
    """Load the offline seqeval metric with `evaluate.load`, from the script shipped in `aetnet/metrics/`.

    `kwargs` are passed to `evaluate.load` (e.g. `experiment_id`, `keep_in_memory`). The result behaves like
    `evaluate.load("seqeval")` (same inputs and output keys) but never contacts the Hub.
    """
    import evaluate

    return evaluate.load(SEQEVAL_METRIC_PATH, **kwargs)


def seqeval_summary(results: dict, return_entity_level_metrics: bool = False) -> dict[str, float]:
    """
    The flat dict a `Trainer`'s `compute_metrics` returns, from the output of the seqeval metric ([`load_seqeval`]
    or `seqeval_metric.compute_seqeval_scores`): `precision`, `recall`, `f1` (micro averages over entities) and
    `accuracy` (over tokens or words), and with `return_entity_level_metrics` `<TYPE>_precision`, `<TYPE>_recall`,
    `<TYPE>_f1` and `<TYPE>_number` for every entity type.
    """
    scores = {name: results[f"overall_{name}"] for name in ("precision", "recall", "f1", "accuracy")}
    if return_entity_level_metrics:
        for entity_type, values in results.items():
            if isinstance(values, dict):
                scores.update({f"{entity_type}_{key}": value for key, value in values.items()})
    return scores


def compute_token_classification_metrics(
    predictions,
    labels,
    label_names: Sequence[str],
    ignore_index: int = -100,
    return_entity_level_metrics: bool = False,
) -> dict[str, float]:
    """Entity-level seqeval scores of a token-classification model's predictions.

    Args:
        predictions (`np.ndarray` or nested lists):
            Either logits of shape `(batch_size, sequence_length, num_labels)` (the arg-max is taken) or predicted
            label ids of shape `(batch_size, sequence_length)`.
        labels (`np.ndarray` or nested lists of shape `(batch_size, sequence_length)`):
            Gold label ids; positions equal to `ignore_index` (special tokens, padding, non-first sub-words) are
            dropped from both predictions and labels before scoring.
        label_names (`Sequence[str]`):
            The tag string of every label id (e.g. `FUNSD_LABELS`), in BIO notation.
        ignore_index (`int`, *optional*, defaults to -100):
            The label id that marks positions to ignore.
        return_entity_level_metrics (`bool`, *optional*, defaults to `False`):
            Also return `<TYPE>_precision`, `<TYPE>_recall`, `<TYPE>_f1` and `<TYPE>_number` for every entity type.

    Returns:
        `dict[str, float]`: `precision`, `recall`, `f1` (micro averages over entities) and `accuracy` (over tokens),
        plus the per-type entries when requested.
    """
    from .seqeval_metric import compute_seqeval_scores

    labels = np.asarray(labels)
    predictions = np.asarray(predictions)
    if predictions.ndim == labels.ndim + 1:
        predictions = predictions.argmax(axis=-1)
    if predictions.shape != labels.shape:
        raise ValueError(
            f"`predictions` must have the shape of `labels` {labels.shape} (or that shape plus a label axis), "
            f"got {predictions.shape}."
        )
    num_labels = len(label_names)
    kept = labels != ignore_index
    for name, ids in (("labels", labels[kept]), ("predictions", predictions[kept])):
        invalid = (ids < 0) | (ids >= num_labels)
        if invalid.any():
            position = tuple(int(i) for i in np.argwhere(kept)[np.flatnonzero(invalid)[0]])
            raise ValueError(
                f"`{name}` at index {position} is {int(ids[invalid][0])}, outside [0, {num_labels}) "
                f"for the {num_labels} `label_names`."
            )

    true_tags = [[label_names[i] for i in row[mask]] for row, mask in zip(labels, kept)]
    predicted_tags = [[label_names[i] for i in row[mask]] for row, mask in zip(predictions, kept)]
    results = compute_seqeval_scores(predicted_tags, true_tags, zero_division=0)
    return seqeval_summary(results, return_entity_level_metrics)


__all__ = ["SEQEVAL_METRIC_PATH", "compute_token_classification_metrics", "load_seqeval", "seqeval_summary"]
