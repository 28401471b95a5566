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
DocVQA for extractive question answering: the reader of the official JSON files, the answer-span finder that turns
a free-text gold answer into a span of OCR words, and the mapping of spans to token positions and back.

DocVQA gives answers as text, not as positions, and the words come from OCR, so the answer has to be found in the
words. [`find_answer_span`] compares *normalised* text, where case, Unicode forms, white space and punctuation do
not count (`"$123,110"` matches the word `"123,110"`, `"Vanderbilt University"` matches `"VANDERBILT"`,
`"UNIVERSITY,"`), and an answer may be split over several words or glued into one:

1. exact: the normalised answer equals the concatenation of the normalised words of a span (span boundaries are
   word boundaries). Among the gold answers, the longest (most specific) normalised answer that occurs wins, and
   its first occurrence in reading order. Punctuation-only words next to the span join it when the answer starts
   or ends with them (`"$123,110"` on `"$"`, `"123,110"` spans both);
2. fuzzy, only when no answer occurs exactly: the span whose normalised text is closest to a normalised answer, by
   normalised Levenshtein similarity, if it reaches `min_similarity` (0.8 by default, i.e. about one OCR error in
   five characters); ties go to the earlier span.

A question whose answers match nowhere is skipped for training and counted in a warning ([`add_answer_spans`]).
"""

from __future__ import annotations

import json
import logging
import os
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from ..metrics.anls import levenshtein_distance
from ..qa_decoding import best_answer_spans


logger = logging.getLogger(__name__)


def docvqa_features() -> datasets.Features:
    """Columns of [`load_docvqa`]: one row per question."""
    return datasets.Features(
        {
            "question_id": datasets.Value("int64"),
            "question": datasets.Value("string"),
            "image": datasets.Value("string"),
            "answers": datasets.Sequence(datasets.Value("string")),
            "doc_id": datasets.Value("string"),
        }
    )


def load_docvqa(json_file: str | os.PathLike, image_root: str | os.PathLike | None = None) -> datasets.Dataset:
    """
    Read an official DocVQA annotation file (`train_v1.0.json`, `val_v1.0.json`, `test_v1.0.json`).

    Args:
        json_file (`str` or `os.PathLike`): the file, an object whose `data` lists questions with `questionId`,
            `question`, `image` (e.g. `"documents/ffbg0227_2.png"`) and, except in the test split, `answers`.
        image_root (`str` or `os.PathLike`, *optional*): the folder `image` paths are relative to; defaults to the
            folder of `json_file`.

    Returns:
        `datasets.Dataset` with `question_id`, `question`, `image` (absolute path), `answers` (empty without gold
        answers) and `doc_id` (`docId`, else the UCSF document id, else the image name).
    """
    json_file = Path(json_file)
    with open(json_file, encoding="utf-8") as handle:
        content = json.load(handle)
    entries = content.get("data") if isinstance(content, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{json_file} has no `data` list of questions; is it a DocVQA annotation file?")
    root = Path(image_root) if image_root is not None else json_file.parent
    columns = {name: [] for name in docvqa_features()}
    for index, entry in enumerate(entries):
        missing = [key for key in ("questionId", "question", "image") if key not in entry]
        if missing:
            raise ValueError(f"{json_file}: `data[{index}]` lacks {missing}.")
        answers = entry.get("answers") or []
        if isinstance(answers, str) or not all(isinstance(answer, str) for answer in answers):
            raise ValueError(f"{json_file}: `data[{index}]['answers']` must be a list of strings, got {answers!r}.")
        image = root / entry["image"]
        if not image.is_file():
            raise FileNotFoundError(f"{json_file}: the image of `data[{index}]`, {image}, does not exist.")
        columns["question_id"].append(int(entry["questionId"]))
        columns["question"].append(str(entry["question"]))
        columns["image"].append(str(image.resolve()))
        columns["answers"].append(list(answers))
        columns["doc_id"].append(str(entry.get("docId", entry.get("ucsf_document_id", Path(entry["image"]).stem))))
    return datasets.Dataset.from_dict(columns, features=docvqa_features())


def normalize_text(text: str) -> str:
    """The span finder's comparison form: NFKC, case-folded, letters and digits only (no spaces or punctuation)."""
    return "".join(char for char in unicodedata.normalize("NFKC", text).casefold() if char.isalnum())


@dataclass(frozen=True)
class AnswerSpan:
    """Words `start..end` (inclusive) of a page match the gold answer `answer` with similarity `score` (1 = exact)."""

    start: int
    end: int
    answer: str
    score: float


def _exact_span(pieces: list[str], target: str) -> tuple[int, int] | None:
    """First span of non-empty pieces whose concatenation is `target`, starting and ending on piece boundaries."""
    for start, piece in enumerate(pieces):
        if not piece or not target.startswith(piece):
            continue
        length = 0
        for end in range(start, len(pieces)):
            length += len(pieces[end])
            if length > len(target):
                break
            if length == len(target) and pieces[end] and "".join(pieces[start : end + 1]) == target:
                return start, end
    return None


def _edge(text: str, leading: bool) -> str:
    """The non-alphanumeric characters at the start (or end) of `text`, without white space: `"$"` of `"$123"`."""
    stripped = text.strip()
    edge = []
    for char in stripped if leading else reversed(stripped):
        if char.isalnum():
            break
        edge.append(char)
    return "".join(edge if leading else reversed(edge)).replace(" ", "")


def _with_edge_punctuation(words: Sequence[str], pieces: list[str], start: int, end: int, answer: str):
    """Widen a span over adjacent punctuation-only words that the answer itself starts (or ends) with, so that the
    answer `"$123,110"` on the words `"$"`, `"123,110"` spans both (a closer text for ANLS)."""
    leading, trailing = _edge(answer, leading=True), _edge(answer, leading=False)
    while start > 0 and not pieces[start - 1]:
        mark = words[start - 1].strip()
        if not mark or not leading.endswith(mark):
            break
        leading, start = leading[: -len(mark)], start - 1
    while end + 1 < len(words) and not pieces[end + 1]:
        mark = words[end + 1].strip()
        if not mark or not trailing.startswith(mark):
            break
        trailing, end = trailing[len(mark) :], end + 1
    return start, end


def find_answer_span(words: Sequence[str], answers: Sequence[str], min_similarity: float = 0.8) -> AnswerSpan | None:
    """
    Locate a gold answer in a page's OCR words (see the module docstring for the matching rules).

    Args:
        words (`Sequence[str]`): the page's words in reading order.
        answers (`Sequence[str]`): the gold answers of the question (any one may be found).
        min_similarity (`float`, *optional*, defaults to 0.8): the lowest normalised Levenshtein similarity that a
            fuzzy match may have; 1.0 disables fuzzy matching.

    Returns:
        [`AnswerSpan`] or `None` when no answer is found.
    """
    if not 0.0 < min_similarity <= 1.0:
        raise ValueError(f"`min_similarity` must be in (0, 1], got {min_similarity}")
    pieces = [normalize_text(word) for word in words]
    targets = [(normalize_text(answer), order, answer) for order, answer in enumerate(answers)]
    targets = [target for target in targets if target[0]]
    # Exact: longest normalised answer first (most specific), then the order of the gold answers.
    for target, _, answer in sorted(targets, key=lambda item: (-len(item[0]), item[1])):
        span = _exact_span(pieces, target)
        if span is not None:
            return AnswerSpan(*_with_edge_punctuation(words, pieces, *span, answer), answer, 1.0)
    if min_similarity == 1.0:
        return None

    best: tuple[float, int, int, str] | None = None
    for target, _, answer in targets:
        # Spans longer than len / min_similarity (or shorter than len * min_similarity) cannot reach the threshold.
        longest = int(len(target) / min_similarity)
        target_counts = Counter(target)
        for start, piece in enumerate(pieces):
            if not piece:
                continue
            text, counts = "", Counter()
            for end in range(start, len(pieces)):
                text += pieces[end]
                counts.update(pieces[end])
                if len(text) > longest:
                    break
                if not pieces[end] or len(text) < len(target) * min_similarity:
                    continue
                size = max(len(text), len(target))
                budget = int((1.0 - min_similarity) * size + 1e-9)
                # The bag distance (characters in one string and not the other) is a cheap lower bound of the
                # edit distance: most candidates are rejected without the quadratic computation.
                if max(sum((counts - target_counts).values()), sum((target_counts - counts).values())) > budget:
                    continue
                distance = levenshtein_distance(text, target, max_distance=budget)
                if distance > budget:
                    continue
                score = 1.0 - distance / size
                if best is None or score > best[0] or (score == best[0] and (start, end) < best[1:3]):
                    best = (score, start, end, answer)
    if best is None:
        return None
    return AnswerSpan(*_with_edge_punctuation(words, pieces, best[1], best[2], best[3]), best[3], best[0])


def add_answer_spans(
    dataset: datasets.Dataset, min_similarity: float = 0.8, drop_unmatched: bool = True
) -> datasets.Dataset:
    """
    Add `answer_start_word`, `answer_end_word` (inclusive; -1 when not found) and `answer_score` to a dataset with
    `words` and `answers` columns, using [`find_answer_span`].

    With `drop_unmatched=True` (training) questions whose answer is not found are removed; their number is logged
    as a warning, so that an OCR or matching problem cannot silently shrink the training set.
    """
    for column in ("words", "answers"):
        if column not in dataset.column_names:
            raise ValueError(f"The dataset needs a `{column}` column, got {dataset.column_names}")
    spans = [
        find_answer_span(words, answers, min_similarity) for words, answers in zip(dataset["words"], dataset["answers"])
    ]
    dataset = dataset.add_column("answer_start_word", [-1 if span is None else span.start for span in spans])
    dataset = dataset.add_column("answer_end_word", [-1 if span is None else span.end for span in spans])
    dataset = dataset.add_column("answer_score", [0.0 if span is None else span.score for span in spans])
    unmatched = [index for index, span in enumerate(spans) if span is None]
    fuzzy = sum(span is not None and span.score < 1.0 for span in spans)
    if unmatched:
        action = "skipped for training" if drop_unmatched else "kept, with no answer span"
        if "question_id" in dataset.column_names:
            examples = f"question ids {[dataset[i]['question_id'] for i in unmatched[:5]]}"
        else:
            examples = f"rows {unmatched[:5]}"
        logger.warning(
            f"{len(unmatched)} of {len(spans)} question(s) have no gold answer in the OCR words (min_similarity="
            f"{min_similarity}) and are {action}; e.g. {examples}."
        )
    if fuzzy:
        logger.info(f"{fuzzy} answer(s) were matched approximately (fuzzy match).")
    if drop_unmatched and unmatched:
        keep = [index for index, span in enumerate(spans) if span is not None]
        dataset = dataset.select(keep)
    return dataset


def answer_token_positions(word_index: Sequence[int], start_word: int, end_word: int) -> tuple[int, int]:
    """
    Token positions of a word span in one window: the first token of `start_word` and the last of `end_word`.

    `word_index` is the processor's (word index of each token, -1 for the question, special and padding tokens).
    When the window does not hold the whole span, or there is no span (`start_word < 0`), the answer is "not in
    this window" and both positions are 0, the `<s>` token, as in the transformers question-answering examples.
    """
    word_index = np.asarray(word_index)
    if start_word < 0 or end_word < start_word:
        return 0, 0
    starts = np.flatnonzero(word_index == start_word)
    ends = np.flatnonzero(word_index == end_word)
    if not starts.size or not ends.size:
        return 0, 0
    return int(starts[0]), int(ends[-1])


def postprocess_qa_predictions(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    word_index: Sequence[Sequence[int]],
    window_to_example: Sequence[int],
    words: Sequence[Sequence[str]],
    n_best_size: int = 20,
    max_answer_length: int = 30,
) -> list[dict]:
    """
    Turn window logits into one answer per question, with the span decoder that `aetnet predict` uses too
    ([`~aetnet.qa_decoding.best_answer_spans`], whose docstring states the rule): the best span over all the windows
    of the question, start before end, both on page words and at most `max_answer_length` tokens; its words are
    joined with spaces.

    Args:
        start_logits, end_logits (`np.ndarray` of shape `(num_windows, length)`): the model's logits; positions
            beyond `word_index` (LayoutLMv3's visual tokens, batch padding) are ignored.
        word_index (`Sequence[Sequence[int]]`): the processor's `word_index` (word of each token) of each window.
        window_to_example (`Sequence[int]`): the question of each window (0-based rows of `words`).
        words (`Sequence[Sequence[str]]`): the page words of each question.
        n_best_size (`int`, *optional*, defaults to 20): start and end candidates tried per window.
        max_answer_length (`int`, *optional*, defaults to 30): longest answer in tokens.

    Returns:
        `list[dict]`: per question, `answer` (`""` when no valid span exists), `score` (`p(start) * p(end)`, 0.0
        without a span), `start_word`, `end_word` (-1 without a span).
    """
    spans = best_answer_spans(
        start_logits,
        end_logits,
        word_index,
        window_to_example,
        num_examples=len(words),
        n_best_size=n_best_size,
        max_answer_length=max_answer_length,
    )
    answers = []
    for page, span in zip(words, spans):
        text = " ".join(page[span["start_word"] : span["end_word"] + 1]) if span["start_word"] >= 0 else ""
        answers.append({"answer": text, **span})
    return answers


__all__ = [
    "AnswerSpan",
    "add_answer_spans",
    "answer_token_positions",
    "docvqa_features",
    "find_answer_span",
    "load_docvqa",
    "normalize_text",
    "postprocess_qa_predictions",
]
