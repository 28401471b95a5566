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
"""Tests of window merging: first_subword_mask and merge_window_predictions, by hand and on the processor's windows."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from processing_helpers import make_document, one_hot_logits, process, processor, tokenizer  # noqa: F401 (pytest fixtures)

from aetnet.windowing import first_subword_mask, merge_window_predictions


# --------------------------------------------------------------------------------------------- merging


def test_first_subword_mask_skips_continued_leading_runs():
    word_ids = torch.tensor(
        [
            [-1, 0, 0, 1, 1, -1],  # doc 0, window 0
            [-1, 1, 2, 2, 3, -1],  # doc 0, window 1: starts inside word 1 (seen in window 0)
            [-1, 4, 4, 5, -1, -1],  # doc 0, window 2: word 4 not in window 1 -> a true start
            [-1, 0, 1, -1, -1, -1],  # doc 1: same word ids, other document
        ]
    )
    mask = first_subword_mask(word_ids, torch.tensor([0, 0, 0, 1]))
    assert mask.tolist() == [
        [False, True, False, True, False, False],
        [False, False, True, False, True, False],
        [False, True, False, True, False, False],
        [False, True, True, False, False, False],
    ]


def test_merge_window_predictions_averages_probabilities_of_overlaps_by_hand():
    word_ids = torch.tensor(
        [
            [-1, 0, 1, 1, 2, -1],  # doc 0, window 0
            [-1, 2, 3, 4, 4, -1],  # doc 0, window 1: ambiguous leading word 2 -> ignored; words 3, 4 new
            [-1, 3, 5, -1, -1, -1],  # doc 0, window 2: leading word 3 also in window 1 -> ignored
            [-1, -1, 0, 1, -1, -1],  # doc 1 (a QA-like window: -1 before the words)
        ]
    )
    mapping = torch.tensor([0, 0, 0, 1])
    logits = torch.zeros(4, 6, 2)
    logits[0, 1] = torch.tensor([1.0, 0.0])  # word 0
    logits[0, 2] = torch.tensor([2.0, 0.0])  # word 1 first sub-token
    logits[0, 3] = torch.tensor([100.0, -100.0])  # word 1 continuation: ignored
    logits[0, 4] = torch.tensor([3.0, 1.0])  # word 2
    logits[1, 1] = torch.tensor([-50.0, 50.0])  # word 2 again, ambiguous start: ignored
    logits[1, 2] = torch.tensor([4.0, 0.0])  # word 3
    logits[1, 3] = torch.tensor([5.0, 0.0])  # word 4
    logits[2, 2] = torch.tensor([6.0, 2.0])  # word 5
    logits[3, 2] = torch.tensor([7.0, 0.0])  # doc 1 word 0
    logits[3, 3] = torch.tensor([8.0, 0.0])  # doc 1 word 1
    merged = merge_window_predictions(logits, word_ids, mapping)
    assert len(merged) == 2
    expected = torch.tensor([[1.0, 0], [2, 0], [3, 1], [4, 0], [5, 0], [6, 2]]).softmax(-1)
    torch.testing.assert_close(merged[0], expected)
    torch.testing.assert_close(merged[1], torch.tensor([[7.0, 0], [8, 0]]).softmax(-1))
    # One (length, num_labels) tensor per window, unpadded, gives the same.
    ragged = [logits[w, : int((word_ids[w] >= 0).nonzero().max()) + 1] for w in range(4)]
    rows = [row[: len(logit)].tolist() for row, logit in zip(word_ids, ragged)]
    for merged_row, ragged_row in zip(merged, merge_window_predictions(ragged, rows, mapping)):
        torch.testing.assert_close(merged_row, ragged_row)

    # Word 1 starts (non-leading) in two windows: both votes count, as probabilities. Word 9 leads a window but is
    # absent from the previous one, so it is a true start. Words 2-8 and 10 never appear: NaN rows.
    word_ids = torch.tensor([[-1, 0, 1, -1], [-1, 9, 1, -1]])
    logits = torch.zeros(2, 4, 3)
    logits[0, 1], logits[0, 2] = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 10.0, 9.0])
    logits[1, 1], logits[1, 2] = torch.tensor([5.0, 0.0, 0.0]), torch.tensor([6.0, 0.0, 0.0])
    merged = merge_window_predictions(logits, word_ids, torch.tensor([0, 0]), num_words=11)[0]
    expected = (torch.tensor([0.0, 10.0, 9.0]).softmax(-1) + torch.tensor([6.0, 0.0, 0.0]).softmax(-1)) / 2
    torch.testing.assert_close(merged[1], expected)
    # Averaged logits (3, 5, 4.5) would say class 1; averaged probabilities say class 0: window 0's large logits
    # count as one vote, not by their margin.
    assert int(merged[1].argmax()) == 0
    torch.testing.assert_close(merged[0], torch.tensor([1.0, 0.0, 0.0]).softmax(-1))
    torch.testing.assert_close(merged[9], torch.tensor([5.0, 0.0, 0.0]).softmax(-1))
    assert torch.isnan(merged[2:9]).all() and torch.isnan(merged[10]).all()


def test_merge_window_predictions_validates_inputs():
    with pytest.raises(ValueError, match="must have shape"):
        merge_window_predictions(torch.zeros(2, 5, 3), torch.zeros(2, 4, dtype=torch.long), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="windows of each document must be consecutive"):
        merge_window_predictions(torch.zeros(3, 3, 2), torch.zeros(3, 3, dtype=torch.long), torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match=r"word_ids\[0\]\[1\]` = 3 is out of range for document 0"):
        merge_window_predictions(torch.zeros(1, 3, 2), torch.tensor([[-1, 3, -1]]), torch.tensor([0]), num_words=2)


def test_processor_windows_merge_back_to_every_word(process, processor):
    documents = [make_document(300, seed=4), make_document(40, seed=5)]
    out = process(
        [Image.new("RGB", (200, 100))] * 2,
        [d[0] for d in documents],
        boxes=[d[1] for d in documents],
        max_length=64,
        stride=16,
        return_tensors="pt",
    )
    word_ids = out["word_index"]
    # Fake logits that name each token's word (classes 0-299) and document (classes 300-301): the merged
    # probabilities must name them back.
    document = out["overflow_to_sample_mapping"][:, None].expand_as(word_ids)
    logits = torch.cat([one_hot_logits(word_ids, 300, 20.0), one_hot_logits(document, 2, 10.0)], dim=-1)
    merged = processor.merge_window_predictions(
        logits, word_ids, out["overflow_to_sample_mapping"], num_words=[300, 40]
    )
    for index, scores in enumerate(merged):
        assert scores.shape == (len(documents[index][0]), 302)
        assert scores[:, :300].argmax(-1).tolist() == list(range(len(documents[index][0])))
        assert torch.all(scores[:, 300:].argmax(-1) == index)


def test_merge_window_predictions_takes_ragged_word_index_rows(processor):
    words, boxes, _ = make_document(120, seed=13)
    out = processor(Image.new("RGB", (200, 100)), words, boxes=boxes, max_length=40, stride=8, padding=False)
    rows = out["word_index"]
    assert len({len(row) for row in rows}) > 1  # the last window is shorter
    length = max(len(row) for row in rows)
    logits = torch.full((len(rows), length, 120), -5.0)
    for i, row in enumerate(rows):
        logits[i, : len(row)] = one_hot_logits(torch.tensor(row), 120)
    (merged,) = processor.merge_window_predictions(logits, rows, out["overflow_to_sample_mapping"])
    assert merged.argmax(-1).tolist() == list(range(120))
