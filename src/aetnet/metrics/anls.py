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
"""Document VQA scores: ANLS (Average Normalized Levenshtein Similarity) and exact match.

ANLS is the official DocVQA metric (Biten et al., ICCV 2019; Mathew et al., WACV 2021). For one question with
predicted answer `o` and gold answers `a_1..a_k`:

    s(a, o) = 1 - NL(a, o)   if NL(a, o) < threshold (0.5)   else 0,     NL(a, o) = lev(a, o) / max(|a|, |o|)
    ANLS   = mean over questions of max_j s(a_j, o)

Answers are compared as the official evaluation does: lower-cased, with leading and trailing white space removed
(runs of inner white space are also collapsed to one space, so OCR spacing does not count as an error).
"""

from __future__ import annotations

from collections.abc import Sequence


def normalize_answer(text: str) -> str:
    """Lower-case, strip and collapse white space: the comparison form of an answer for ANLS and exact match."""
    return " ".join(text.lower().split())


def levenshtein_distance(first: str, second: str, max_distance: int | None = None) -> int:
    """
    Edit distance (insertions, deletions and substitutions, each of cost 1) between two strings.

    With `max_distance`, the computation stops as soon as the distance is known to exceed it and returns
    `max_distance + 1`; the answer-span finder uses this to discard hopeless candidates quickly.
    """
    if len(first) < len(second):
        first, second = second, first
    if max_distance is not None and len(first) - len(second) > max_distance:
        return max_distance + 1
    previous = list(range(len(second) + 1))
    for i, char in enumerate(first, start=1):
        current = [i]
        for j, other in enumerate(second, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char != other)))
        if max_distance is not None and min(current) > max_distance:
            return max_distance + 1
        previous = current
    return previous[-1]


def normalized_levenshtein_similarity(prediction: str, answer: str) -> float:
    """`1 - lev(a, o) / max(|a|, |o|)` of the normalised strings (1.0 for two empty strings)."""
    prediction, answer = normalize_answer(prediction), normalize_answer(answer)
    length = max(len(prediction), len(answer))
    if length == 0:
        return 1.0
    return 1.0 - levenshtein_distance(prediction, answer) / length


def _check_inputs(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"Got {len(predictions)} predictions but {len(references)} lists of gold answers.")
    for index, prediction in enumerate(predictions):
        if not isinstance(prediction, str):
            raise ValueError(f"`predictions[{index}]` must be a string, got {prediction!r}")
    for index, answers in enumerate(references):
        if isinstance(answers, str) or not answers:
            raise ValueError(f"`references[{index}]` must be a non-empty list of gold answers, got {answers!r}")
        for answer_index, answer in enumerate(answers):
            if not isinstance(answer, str):
                raise ValueError(f"`references[{index}][{answer_index}]` must be a string, got {answer!r}")


def anls_score(prediction: str, answers: Sequence[str], threshold: float = 0.5) -> float:
    """ANLS of one question: the best thresholded similarity of `prediction` to any of the gold `answers`."""
    _check_inputs([prediction], [answers])
    best = max(normalized_levenshtein_similarity(prediction, answer) for answer in answers)
    return best if 1.0 - best < threshold else 0.0


def anls(predictions: Sequence[str], references: Sequence[Sequence[str]], threshold: float = 0.5) -> float:
    """
    Average Normalized Levenshtein Similarity over questions.

    Args:
        predictions (`Sequence[str]`): one predicted answer per question ("" when the model gave none).
        references (`Sequence[Sequence[str]]`): the gold answers of every question (at least one each).
        threshold (`float`, *optional*, defaults to 0.5): normalised distances at or above it score 0.

    Returns:
        `float` in [0, 1]; 0.0 for an empty list of questions.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"`threshold` must be in (0, 1], got {threshold}")
    _check_inputs(predictions, references)
    if not predictions:
        return 0.0
    return sum(anls_score(p, answers, threshold) for p, answers in zip(predictions, references)) / len(predictions)


def exact_match(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Fraction of questions whose normalised prediction equals one of the normalised gold answers."""
    _check_inputs(predictions, references)
    if not predictions:
        return 0.0
    hits = sum(
        normalize_answer(p) in {normalize_answer(a) for a in answers} for p, answers in zip(predictions, references)
    )
    return hits / len(predictions)


def compute_docvqa_metrics(
    predictions: Sequence[str], references: Sequence[Sequence[str]], threshold: float = 0.5
) -> dict[str, float]:
    """`{"anls": ..., "exact_match": ...}` for a list of predicted answers and their gold answers."""
    return {"anls": anls(predictions, references, threshold), "exact_match": exact_match(predictions, references)}


__all__ = [
    "anls",
    "anls_score",
    "compute_docvqa_metrics",
    "exact_match",
    "levenshtein_distance",
    "normalize_answer",
    "normalized_levenshtein_similarity",
]
