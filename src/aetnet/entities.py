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
Word-level output of [`~aetnet.inference.DocumentPredictor`]: labelled words grouped into entities (BIO or runs of
equal labels), and the text and box of a run of words, shared by entities and question-answering spans.

This module imports only numpy, so that checkpoints can ship it with their pipeline as remote code.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def is_bio(labels: Iterable[str]) -> bool:
    """Whether a label set is BIO: every label is `O` or starts with `B-` / `I-`, and some are not `O`."""
    labels = list(labels)
    return any(label != "O" for label in labels) and all(label == "O" or label[:2] in ("B-", "I-") for label in labels)


def group_entities(words: Sequence[dict], bio: bool) -> list[dict]:
    """
    Group consecutive labelled words into entities.

    With BIO labels, `B-X` opens an entity of type `X`, `I-X` extends an open entity of type `X` (and opens one
    otherwise, as seqeval does) and `O` closes it. Without BIO, runs of equal labels form entities and `O` is skipped.
    Each entity has its label, its words' text joined by spaces, the union of their boxes, their mean confidence and
    their indices. Words without a label (never seen by the model) close the open entity.
    """
    entities, current = [], None
    for index, word in enumerate(words):
        label = word.get("label")
        if label is None or label == "O":
            current = None
            continue
        kind, opens = (label[2:], label.startswith("B-")) if bio else (label, False)
        if current is None or opens or current["label"] != kind:
            current = {"label": kind, "words": []}
            entities.append(current)
        current["words"].append(index)
    for entity in entities:
        entity.update(word_span(words, entity["words"][0], entity["words"][-1]))
        confidences = [words[i]["confidence"] for i in entity["words"]]
        entity["confidence"] = round(float(np.mean(confidences)), 4)
    return [{key: e[key] for key in ("label", "text", "box", "confidence", "words")} for e in entities]


def word_span(words: Sequence[dict], first: int, last: int) -> dict:
    """The `text` (joined by spaces) and `box` (the union of the pixel boxes) of `words[first : last + 1]`, words
    as [`~aetnet.inference.DocumentPredictor`] returns them (`text`, `box`)."""
    members = words[first : last + 1]
    boxes = np.asarray([word["box"] for word in members], dtype=float)
    box = np.round(np.concatenate([boxes[:, :2].min(0), boxes[:, 2:].max(0)])).astype(int).tolist()
    return {"text": " ".join(word["text"] for word in members), "box": box}


__all__ = ["group_entities", "is_bio", "word_span"]
