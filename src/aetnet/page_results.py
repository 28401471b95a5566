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
The JSON-ready dict of one page, as [`~aetnet.inference.DocumentPredictor`] returns it: its skeleton (`name`,
`source`, `page`, `width` and `height` of the page image, `task`, `ocr`, and `words` with their boxes in pixels of the
page image), the float32 CPU scores of each window the model saw, and decoding those scores into the page's
predictions, whatever the head:

- token classification: `words` get a `label` and `confidence`, merged over the windows by the rule evaluation uses
  too ([`~aetnet.windowing.merge_window_predictions`]), and `entities` (BIO groups: label, text, box, confidence,
  word indices);
- sequence classification: `label`, `score` and `scores` (probabilities averaged over the page's windows);
- question answering: `answers`, one per question (text, box, score, word indices), by the span decoder of
  evaluation too ([`~aetnet.qa_decoding.best_answer_spans`]).

Kept apart from the predictor so that what a page's dict holds is read in one place, whichever way (predictor,
pipeline, ONNX) the scores were computed. Shipped as remote code with the pipelines, this module imports only torch,
numpy and its sibling modules.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .entities import group_entities, word_span
from .pages import Page
from .processing_aetnet import WORD_INDEX_KEY
from .qa_decoding import best_answer_spans
from .windowing import merge_window_predictions


def _pixel_boxes(boxes: Sequence[Sequence[float]], normalized: bool, size: tuple[int, int]) -> list[list[int]]:
    array = np.asarray(boxes, dtype=float).reshape(-1, 4)
    if normalized:
        width, height = size
        array = array * np.array([width, height, width, height]) / 1000.0
    return np.round(array).astype(int).tolist()


def page_result(page: Page, words: list[str], boxes: list, normalized: bool, task: str) -> dict:
    """The dict of `page` before any prediction: where it came from, its size, and its `words` with boxes in pixels
    of the page image (`normalized`: whether `boxes` are on the 0-1000 scale)."""
    pixel_boxes = _pixel_boxes(boxes, normalized, page.image.size)
    return {
        "name": page.name,
        "source": page.source,
        "page": page.page_number,
        "width": page.image.width,
        "height": page.image.height,
        "task": task,
        "ocr": page.words is None,
        "words": [{"text": word, "box": box} for word, box in zip(words, pixel_boxes)],
    }


def batch_window_scores(output, lengths: Sequence[int], task: str) -> list[dict]:
    """Float32 CPU scores of each window of a batch `output` of a `task` model, cut to the window's own number of
    tokens (`lengths`): token `logits`, page-class `probs`, or `start` / `end` logits."""
    results = []
    for row, n in enumerate(lengths):
        if task == "question-answering":
            # The QA head also scores the visual tokens after the text: keep the text part.
            start, end = output.start_logits[row, :n], output.end_logits[row, :n]
            results.append({"start": start.float().cpu(), "end": end.float().cpu()})
        elif task == "token-classification":
            results.append({"logits": output.logits[row, :n].float().cpu()})
        else:
            results.append({"probs": output.logits[row].float().softmax(-1).cpu()})
    return results


def classify_page(result: dict, outputs: list[dict], labels: list[str]) -> None:
    """Fill `label`, `score` and `scores` of `result` from the page-class probabilities of its windows."""
    probs = torch.stack([o["probs"] for o in outputs]).mean(0)
    best = int(probs.argmax())
    result["label"], result["score"] = labels[best], round(float(probs[best]), 4)
    result["scores"] = {label: round(float(p), 4) for label, p in zip(labels, probs)}


def label_words(result: dict, windows: list[dict], outputs: list[dict], labels: list[str], bio: bool) -> int:
    """Fill the `label` and `confidence` of every word of `result` and its `entities`; returns how many words were
    in no window (their label and confidence are `None`), for the caller to report."""
    words = result["words"]
    logits = [output["logits"] for output in outputs]
    mapping = torch.zeros(len(windows), dtype=torch.long)
    word_index = [window[WORD_INDEX_KEY] for window in windows]
    merged = merge_window_predictions(logits, word_index, mapping, len(words))[0]
    unseen = 0
    for word, row in zip(words, merged):
        if torch.isnan(row).any():
            word.update(label=None, confidence=None)
            unseen += 1
        else:
            best = int(row.argmax())
            word.update(label=labels[best], confidence=round(float(row[best]), 4))
    result["entities"] = group_entities(words, bio)
    return unseen


def best_answer(
    words: list[dict],
    windows: list[dict],
    outputs: list[dict],
    question: str,
    *,
    n_best_size: int,
    max_answer_tokens: int,
) -> dict:
    """The answer of one question: the span decoder of evaluation too ([`~aetnet.qa_decoding.best_answer_spans`],
    whose docstring states the rule) over the question's windows."""
    (span,) = best_answer_spans(
        [output["start"] for output in outputs],
        [output["end"] for output in outputs],
        [window[WORD_INDEX_KEY] for window in windows],
        num_examples=1,
        n_best_size=n_best_size,
        max_answer_length=max_answer_tokens,
    )
    first, last = span["start_word"], span["end_word"]
    if first < 0:
        return {"question": question, "text": "", "box": None, "score": 0.0, "words": []}
    return {
        "question": question,
        **word_span(words, first, last),
        "score": round(span["score"], 4),
        "words": list(range(first, last + 1)),
    }


__all__ = ["batch_window_scores", "best_answer", "classify_page", "label_words", "page_result"]
