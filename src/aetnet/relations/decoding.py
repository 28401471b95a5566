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
From pair scores to links, one rule for the example's evaluation and for `aetnet predict`: the scores of a page's
windows are merged per entity pair ([`merge_page_scores`]: the highest score of the windows that saw the pair), a
pair is a link when its score reaches the threshold ([`decode_links`]), and links are scored against gold links with
the LayoutXLM convention ([`relation_scores`]: a predicted pair is correct iff `(head, tail)` is a gold link, with
the gold entities given), or written as page JSON ([`links_to_json`]).

This module imports nothing outside the standard library, so that checkpoints can ship it as remote code.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def merge_page_scores(
    window_scores: Sequence[dict[tuple[int, int], float]], window_pages: Sequence[int], num_pages: int
) -> list[dict[tuple[int, int], float]]:
    """Per page, the score of every `(head, tail)` pair that some window of the page scored: the maximum over those
    windows (a window where one end is near its edge sees less context; the most confident view wins)."""
    pages = [{} for _ in range(num_pages)]
    for scores, page in zip(window_scores, window_pages):
        merged = pages[page]
        for pair, score in scores.items():
            merged[pair] = max(score, merged.get(pair, score))
    return pages


def decode_links(
    pair_scores: dict[tuple[int, int], float], threshold: float = 0.5, one_head_per_tail: bool = False
) -> list[tuple[int, int, float]]:
    """
    The predicted links of one page, `(head, tail, score)` by decreasing score: every pair whose link probability is
    at least `threshold` (0.5: the argmax of the two logits, LayoutXLM's rule). With `one_head_per_tail`, a tail
    (an answer) keeps only its best head (FUNSD answers belong to one question); off by default, as in LayoutXLM.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"`threshold` must be in [0, 1], got {threshold}.")
    links, taken = [], set()
    for (head, tail), score in sorted(pair_scores.items(), key=lambda item: (-item[1], item[0])):
        if score < threshold or (one_head_per_tail and tail in taken):
            continue
        taken.add(tail)
        links.append((head, tail, score))
    return links


def relation_scores(
    predicted: Iterable[Iterable[tuple[int, int]]], gold: Iterable[Iterable[tuple[int, int]]]
) -> dict[str, float]:
    """Micro precision, recall and F1 over pages of predicted `(head, tail)` pairs against gold links (LayoutXLM
    convention), with the counts."""
    true_positives = num_predicted = num_gold = 0
    for page_predicted, page_gold in zip(predicted, gold, strict=True):
        page_predicted = {tuple(pair[:2]) for pair in page_predicted}
        page_gold = {tuple(pair) for pair in page_gold}
        true_positives += len(page_predicted & page_gold)
        num_predicted += len(page_predicted)
        num_gold += len(page_gold)
    precision = true_positives / num_predicted if num_predicted else 0.0
    recall = true_positives / num_gold if num_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "true_positives": true_positives,
        "predicted_links": num_predicted,
        "gold_links": num_gold,
    }


def links_to_json(links: Iterable[tuple[int, int, float]], entities: Sequence[dict]) -> list[dict]:
    """
    Page-JSON records of `links` between `entities` (dicts with `text`, `box` and `label`, e.g. the `entities` of a
    `DocumentPredictor` page): `{"head", "tail", "question", "answer", "question_box", "answer_box", "score"}`,
    where `question` / `answer` are the texts of the head and the tail entity.
    """
    return [
        {
            "head": head,
            "tail": tail,
            "question": entities[head].get("text"),
            "answer": entities[tail].get("text"),
            "question_box": entities[head].get("box"),
            "answer_box": entities[tail].get("box"),
            "score": round(float(score), 4),
        }
        for head, tail, score in links
    ]


__all__ = ["decode_links", "links_to_json", "merge_page_scores", "relation_scores"]
