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
"""
The SROIE task-3 score: each receipt's predicted field strings against the annotated ones, a field counting as right
only when the strings are equal after whitespace normalisation (runs of whitespace become one space, ends stripped).
Precision is right / predicted non-empty fields, recall right / annotated non-empty fields, per field and over all
four (micro), as the competition ranks key information extraction. The predicted strings of a token classifier are
its decoded entity words joined with spaces ([`fields_from_word_labels`]).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence


def normalize_field(text: str | None) -> str:
    """`text` with runs of whitespace made one space and the ends stripped (`""` for `None`)."""
    return " ".join((text or "").split())


def fields_from_word_labels(words: Sequence[str], labels: Sequence[str], fields: Sequence[str]) -> dict[str, str]:
    """
    The field strings of a receipt from per-word BIO labels (`B-COMPANY`, `I-COMPANY`, ..., `O`): for each of
    `fields`, the words of its first entity joined with spaces (`""` when it has none). An entity starts at a `B-`
    label or at an `I-` label that does not continue the same type, as seqeval reads them.
    """
    found: dict[str, list[str]] = {}
    current = None
    for word, label in zip(words, labels):
        prefix, _, kind = label.partition("-")
        name = kind.lower()
        if prefix == "B" or (prefix == "I" and current != name):
            current = name if name not in found else None
            if current is not None:
                found[current] = [word]
        elif prefix == "I" and current is not None:
            found[current].append(word)
        else:
            current = None
    return {name: " ".join(found.get(name, [])) for name in fields}


def _prf(right: int, predicted: int, gold: int) -> tuple[float, float, float]:
    precision = right / predicted if predicted else 0.0
    recall = right / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def sroie_task3_scores(
    predictions: Sequence[Mapping[str, str]], references: Sequence[Mapping[str, str]], fields: Sequence[str]
) -> dict[str, float]:
    """
    Task-3 precision, recall and F1 of predicted field strings against annotated ones, one mapping per receipt.

    Returns:
        `dict[str, float]`: `task3_precision`, `task3_recall`, `task3_f1` over all fields and
        `task3_<field>_precision`, ... per field, plus `task3_<field>_accuracy` (right / receipts).
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} receipts.")
    right, predicted, gold = Counter(), Counter(), Counter()
    for prediction, reference in zip(predictions, references):
        for name in fields:
            guess, truth = normalize_field(prediction.get(name)), normalize_field(reference.get(name))
            predicted[name] += bool(guess)
            gold[name] += bool(truth)
            right[name] += bool(guess) and guess == truth
    scores = {}
    for name in fields:
        precision, recall, f1 = _prf(right[name], predicted[name], gold[name])
        scores |= {f"task3_{name}_precision": precision, f"task3_{name}_recall": recall, f"task3_{name}_f1": f1}
        scores[f"task3_{name}_accuracy"] = right[name] / len(references) if references else 0.0
    totals = (sum(right.values()), sum(predicted.values()), sum(gold.values()))
    scores |= dict(zip(("task3_precision", "task3_recall", "task3_f1"), _prf(*totals)))
    return scores


__all__ = ["fields_from_word_labels", "normalize_field", "sroie_task3_scores"]
