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
What [`~aetnet.processing_aetnet.AETNetProcessor`] checks and normalises before it tokenises: the call's words,
boxes, labels and questions as batches, one box and one label per word, boxes validated and scaled to 0-1000, label
names mapped to ids, and a stride that fits the window.

Every check raises `ValueError` with the document and word it is about, because a malformed input would otherwise
reach the tokenizer (which panics on a stride that does not fit) or the loss (as a wrong class) silently. Like the
processor, which ships it as remote code, this module imports only torch, numpy and the standard library.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def batch_inputs(text, text_pair, boxes, word_labels):
    """Given words and boxes, always as batches: (words, boxes, labels, questions or None)."""
    if text is None:
        raise ValueError("`text` (the words, or the question with `text_pair`) is required without OCR.")
    if boxes is None:
        raise ValueError("You must provide `boxes` (one per word) when `apply_ocr=False`.")
    is_qa = text_pair is not None
    if not is_qa and isinstance(text, str):
        raise ValueError(
            "`text` must be the list of words of a document (or a batch of such lists); to ask a question, "
            "pass it as `text` and the words as `text_pair`."
        )
    words = text_pair if is_qa else text
    if len(words) > 0 and isinstance(words[0], (list, tuple)):
        questions = ([text] if isinstance(text, str) else list(text)) if is_qa else None
        return words, boxes, word_labels, questions
    labels = None if word_labels is None else [word_labels]
    return [words], [boxes], labels, ([text] if is_qa else None)


def validate_lengths(words, boxes, labels, questions, num_pages: int) -> None:
    """One page per document, one box (and label) per word, string words and non-empty questions."""
    if len(words) != num_pages:
        raise ValueError(f"Got {num_pages} image(s) but {len(words)} document(s) of words: one image per document.")
    if len(boxes) != len(words):
        raise ValueError(f"Got {len(words)} document(s) of words but {len(boxes)} of boxes.")
    if labels is not None and len(labels) != len(words):
        raise ValueError(f"Got {len(words)} document(s) of words but {len(labels)} of word_labels.")
    if questions is not None and len(questions) != len(words):
        raise ValueError(f"Got {len(words)} document(s) of words but {len(questions)} question(s).")
    for doc_index, doc_words in enumerate(words):
        if len(boxes[doc_index]) != len(doc_words):
            raise ValueError(
                f"Document {doc_index} has {len(doc_words)} words but {len(boxes[doc_index])} boxes: one box per word."
            )
        if labels is not None and len(labels[doc_index]) != len(doc_words):
            raise ValueError(
                f"Document {doc_index} has {len(doc_words)} words but {len(labels[doc_index])} word_labels."
            )
        for word_index, word in enumerate(doc_words):
            if not isinstance(word, str):
                raise ValueError(f"`words[{doc_index}][{word_index}]` must be a string, got {word!r}")
    for index, question in enumerate(questions or []):
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"`question[{index}]` must be a non-empty string, got {question!r}")


def label_ids(labels: list[list], label2id: dict[str, int] | None) -> list[list[int]]:
    """Label ids per word; a name, a float or a negative id would reach the loss as a wrong class silently."""
    known = None if label2id is None else set(label2id.values())
    ids = []
    for doc_index, doc_labels in enumerate(labels):
        doc_ids = []
        for word_index, label in enumerate(doc_labels):
            if isinstance(label, torch.Tensor) and label.ndim == 0 and not label.is_floating_point():
                label = label.item()
            if isinstance(label, str) and label2id is not None:
                if label not in label2id:
                    raise ValueError(
                        f"`word_labels[{doc_index}][{word_index}]` is the unknown label name {label!r}; known "
                        f"names: {sorted(label2id)[:20]}"
                    )
                label = label2id[label]
            if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
                hint = " (pass `label2id` to use label names)" if isinstance(label, str) else ""
                raise ValueError(
                    f"`word_labels[{doc_index}][{word_index}]` must be an int label id{hint}, got {label!r}"
                )
            label = int(label)
            if label != -100 and (label < 0 or (known is not None and label not in known)):
                expected = "a value of `label2id`" if known is not None else ">= 0"
                raise ValueError(f"`word_labels[{doc_index}][{word_index}]` must be {expected} or -100, got {label}")
            doc_ids.append(label)
        ids.append(doc_ids)
    return ids


def prepare_boxes(boxes, doc_index: int, page_size: tuple[int, int], normalized: bool) -> tuple[list, int]:
    """Validate one document's word boxes, scale them to 0-1000 and clip; returns the boxes and the clip count."""
    rows = []
    for word_index, box in enumerate(boxes):
        if isinstance(box, (str, bytes)) or not hasattr(box, "__len__") or len(box) != 4:
            raise ValueError(f"`boxes[{doc_index}][{word_index}]` must be 4 coordinates (x0, y0, x1, y1), got {box!r}")
        try:
            row = [float(coordinate) for coordinate in box]
        except (TypeError, ValueError):
            raise ValueError(f"`boxes[{doc_index}][{word_index}]` must hold numbers, got {box!r}") from None
        if not all(math.isfinite(coordinate) for coordinate in row):
            raise ValueError(f"`boxes[{doc_index}][{word_index}]` contains NaN or inf: {row}")
        if row[0] > row[2] or row[1] > row[3]:
            raise ValueError(f"`boxes[{doc_index}][{word_index}]` must satisfy x0 <= x1 and y0 <= y1, got {row}")
        rows.append(row)
    array = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    if not normalized:
        width, height = page_size
        array = array * (1000.0 / np.array([width, height, width, height]))
    out_of_range = int(((array < 0) | (array > 1000)).sum())
    return np.floor(np.clip(array, 0, 1000)).astype(np.int64).tolist(), out_of_range


def validate_window(tokenizer, max_length: int, stride: int, questions) -> None:
    """The tokenizers library panics (not a Python exception) on a stride that does not fit: check first."""
    if not isinstance(stride, int) or stride < 0:
        raise ValueError(f"`stride` must be a non-negative int, got {stride!r}")
    if questions is None:
        room = max_length - tokenizer.num_special_tokens_to_add(pair=False)
        if stride >= room:
            raise ValueError(
                f"`stride` ({stride}) must be smaller than the {room} word tokens that fit in `max_length` "
                f"({max_length})."
            )
        return
    for index, question in enumerate(questions):
        question_words = question.split()
        question_length = len(
            tokenizer(question_words, boxes=[[0, 0, 0, 0]] * len(question_words), add_special_tokens=False)["input_ids"]
        )
        room = max_length - tokenizer.num_special_tokens_to_add(pair=True) - question_length
        if room <= stride:
            raise ValueError(
                f"`question[{index}]` takes {question_length} tokens, leaving {max(room, 0)} for the words with "
                f"`max_length`={max_length}; `stride` ({stride}) must be smaller than that. Shorten the question, "
                "raise `max_length` or lower `stride`."
            )


__all__ = ["batch_inputs", "label_ids", "prepare_boxes", "validate_lengths", "validate_window"]
