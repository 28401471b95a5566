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
Pages with entities and links -> model windows for [`~aetnet.modeling_aetnet_relation.AETNetForRelationExtraction`],
their collation, and the scoring loop that maps every window's pair scores back to page entities.

Windows never cut an entity: a page is split into *units* (an entity, or a word outside every entity), sorted in
reading order, and each window takes whole consecutive units, as many as fit in `max_length - 2` tokens; the next
window starts at the middle unit of the previous one, so that consecutive windows share about half their units and
a link between nearby entities lies wholly in at least one window. (A window's tokens need not be contiguous in the
page's word order: LayoutLMv3 reads the layout from the boxes.) An entity alone longer than a window is truncated,
and a link whose ends share no window cannot be scored: both are counted in [`WindowStatistics`] (and such a link
stays a gold link in the evaluation, where it is a miss).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..data_collator import AETNetDataCollator
from ..windowing import pad_rows


RELATION_KEYS = {"entity_spans": -1, "entity_labels": -100, "relations": -1, "entity_index": -1}


@dataclass
class WindowStatistics:
    """Counts of [`relation_windows`]: pages, windows, pages split in several windows, entities truncated because
    they alone exceed a window, links, and links whose two ends share no window (they cannot be predicted)."""

    pages: int = 0
    windows: int = 0
    pages_split: int = 0
    entities_truncated: int = 0
    links: int = 0
    links_in_no_window: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def _units(boxes: Sequence[Sequence[int]], entity_word_spans: Sequence[Sequence[int]]) -> list[tuple[int, int, int]]:
    """`(first word, end word, entity or -1)` of the entities and of the words outside them, in reading order (top to
    bottom, then left to right, by the unit's box): annotation order is not reading order (FUNSD lists a question and
    its answer anywhere in the file), while a question and its answer are close on the page."""
    owner = [-1] * len(boxes)
    for entity, (start, end) in enumerate(entity_word_spans):
        owner[start:end] = [entity] * (end - start)
    units, word = [], 0
    while word < len(boxes):
        end = word + 1
        while owner[word] >= 0 and end < len(boxes) and owner[end] == owner[word]:
            end += 1
        units.append((word, end, owner[word]))
        word = end
    return sorted(units, key=lambda unit: (min(b[1] for b in boxes[unit[0] : unit[1]]), boxes[unit[0]][0], unit[0]))


def relation_windows(
    tokenizer: Any,
    words: Sequence[str],
    boxes: Sequence[Sequence[int]],
    entity_word_spans: Sequence[Sequence[int]],
    entity_labels: Sequence[int],
    relations: Sequence[Sequence[int]] | None,
    max_length: int,
    stats: WindowStatistics | None = None,
) -> list[dict[str, list]]:
    """
    One page (words, 0-1000 `boxes`, entities as `[start, end)` word spans with label ids, `[head, tail]` links) ->
    its windows, each a dict with `input_ids`, `bbox`, `attention_mask`, `entity_spans` (token `[start, end)`),
    `entity_labels`, `relations` (window entity indices) and `entity_index` (the page entity of each window entity).
    `tokenizer` is a LayoutLMv3 tokenizer (words and boxes in); `relations=None` for pages without gold links.
    """
    stats = stats if stats is not None else WindowStatistics()
    encoding = tokenizer(list(words), boxes=[list(b) for b in boxes], add_special_tokens=False, verbose=False)
    # token_start[w]: the first token of word w (every word has at least one token: the processor's tokenizer).
    token_start = [len(encoding["input_ids"])] * (len(words) + 1)
    for position, word in reversed(list(enumerate(encoding.word_ids()))):
        token_start[word] = position
    units = _units(boxes, entity_word_spans)
    budget = max_length - 2
    cost = [token_start[end] - token_start[start] for start, end, _ in units]

    windows, first = [], 0
    while first < len(units) or not windows:
        last, used = first, 0
        while last < len(units) and (last == first or used + cost[last] <= budget):
            used += cost[last]
            last += 1
        window = _window(tokenizer, encoding, token_start, units[first:last], budget, entity_labels, relations, stats)
        windows.append(window)
        if last >= len(units):
            break
        first = max(first + 1, (first + last) // 2)
    stats.pages += 1
    stats.windows += len(windows)
    stats.pages_split += len(windows) > 1
    gold = {tuple(link) for link in relations or []}
    stats.links += len(gold)
    covered = {tuple(w["entity_index"][i] for i in link) for w in windows for link in w["relations"]}
    stats.links_in_no_window += len(gold - covered)
    return windows


def _window(tokenizer, encoding, token_start, units, budget, entity_labels, relations, stats) -> dict:
    """One window of whole `units` (the first alone may exceed `budget`: it is then truncated and counted)."""
    ids, boxes, spans, entity_index = [tokenizer.cls_token_id], [[0, 0, 0, 0]], [], []
    for unit_start, unit_end, entity in units:
        start, end = token_start[unit_start], token_start[unit_end]
        if end - start > budget:
            stats.entities_truncated += entity >= 0
            end = start + budget
        if entity >= 0:
            spans.append([len(ids), len(ids) + end - start])
            entity_index.append(entity)
        ids.extend(encoding["input_ids"][start:end])
        boxes.extend(encoding["bbox"][start:end])
    local = {entity: i for i, entity in enumerate(entity_index)}
    return {
        "input_ids": [*ids, tokenizer.sep_token_id],
        "bbox": [*boxes, [0, 0, 0, 0]],
        "attention_mask": [1] * (len(ids) + 1),
        "entity_spans": spans,
        "entity_labels": [int(entity_labels[e]) for e in entity_index],
        "relations": [[local[h], local[t]] for h, t in relations or [] if h in local and t in local],
        "entity_index": entity_index,
    }


@dataclass
class RelationDataCollator(AETNetDataCollator):
    """
    [`AETNetDataCollator`] that also pads the relation inputs: `entity_spans` and `relations` with -1 and
    `entity_labels` with -100 (a padded entity slot); `entity_index` (padded with -1), which maps window entities
    back to the page, only when `keep_keys` names it, since the model takes no such input.
    """

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        wanted = [key for key in RELATION_KEYS if key != "entity_index" or key in self.keep_keys]
        extra = {key: [feature.get(key) for feature in features] for key in wanted if key in features[0]}
        rest = [{k: v for k, v in f.items() if k not in RELATION_KEYS} for f in features]
        batch = super().__call__(rest)
        for key, rows in extra.items():
            rows = [torch.as_tensor(row if row is not None else [], dtype=torch.long) for row in rows]
            if key in ("entity_spans", "relations"):
                rows = [row.reshape(-1, 2) for row in rows]
            batch[key] = pad_rows(rows, value=RELATION_KEYS[key]).long()
        return batch


@torch.no_grad()
def score_relation_windows(
    model: torch.nn.Module, windows: Sequence[dict], collator: RelationDataCollator, batch_size: int = 8
) -> list[dict[tuple[int, int], float]]:
    """
    Score every candidate pair of every window (eval mode, no gold links needed) and return per window the scores by
    page entity pair `(head, tail)`, read through each window's `entity_index`.
    """
    model.eval()
    device = next(model.parameters()).device
    results = []
    for offset in range(0, len(windows), batch_size):
        chunk = windows[offset : offset + batch_size]
        batch = collator([{k: v for k, v in w.items() if k != "relations"} for w in chunk])
        entity_index = batch.pop("entity_index")
        inputs = {key: value.to(device) for key, value in batch.items()}
        outputs = model(**inputs)
        pairs, scores = outputs.pairs.cpu(), outputs.scores.float().cpu()
        window_scores = [{} for _ in range(entity_index.shape[0])]
        for (window, head, tail), score in zip(pairs.tolist(), scores.tolist()):
            page_pair = (int(entity_index[window, head]), int(entity_index[window, tail]))
            window_scores[window][page_pair] = score
        results.extend(window_scores)
    return results


__all__ = [
    "RELATION_KEYS",
    "RelationDataCollator",
    "WindowStatistics",
    "relation_windows",
    "score_relation_windows",
]
