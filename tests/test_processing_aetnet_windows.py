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
"""Tests of AETNetProcessor's overflow windows, question-answering windows and their parity with LayoutLMv3Processor."""

from __future__ import annotations

import logging

import pytest
import torch
from PIL import Image
from processing_helpers import LOGGER, make_document, one_hot_logits, process, processor, tokenizer  # noqa: F401 (pytest fixtures)
from transformers import LayoutLMv3ImageProcessorPil


# --------------------------------------------------------------------------------------------- windows


def full_token_layout(tokenizer, words, boxes):
    """Token ids and word ids of the whole document without truncation (independent of the windowing code)."""
    encoding = tokenizer(words, boxes=boxes, add_special_tokens=False)
    return encoding["input_ids"], encoding.word_ids()


def test_overflow_windows_cover_every_word_and_label_only_true_first_subtokens(process, tokenizer):
    documents = [make_document(300, seed=1), make_document(150, seed=2)]
    images = [Image.new("RGB", (200, 100), "white"), Image.new("RGB", (200, 100), "black")]
    max_length, stride = 64, 16
    out = process(
        images,
        [d[0] for d in documents],
        boxes=[d[1] for d in documents],
        word_labels=[d[2] for d in documents],
        max_length=max_length,
        stride=stride,
        return_tensors="pt",
    )
    mapping = out["overflow_to_sample_mapping"].tolist()
    assert mapping == sorted(mapping) and set(mapping) == {0, 1} and len(mapping) > 10
    for window, document in enumerate(mapping):  # each window carries its own page: white (1.0) or black (-1.0)
        assert torch.all(out["pixel_values"][window] == (1.0 if document == 0 else -1.0)), (window, document)

    content = max_length - 2
    window_starts_mid_word = 0
    for document, (words, _, labels) in enumerate(documents):
        full_ids, full_word_ids = full_token_layout(tokenizer, words, [[0, 0, 0, 0]] * len(words))
        first_position = {}
        for position, word in enumerate(full_word_ids):
            first_position.setdefault(word, position)
        windows = [i for i, d in enumerate(mapping) if d == document]
        labelled_first_positions = set()
        for k, window in enumerate(windows):
            start = k * (content - stride)  # the tokenizer's overflow rule, checked on the token ids below
            ids = out["input_ids"][window].tolist()
            word_ids = out["word_index"][window].tolist()
            length = sum(w >= 0 for w in word_ids)
            assert ids[1 : 1 + length] == full_ids[start : start + length]
            assert word_ids[1 : 1 + length] == full_word_ids[start : start + length]
            window_starts_mid_word += first_position[word_ids[1]] < start
            for position, label in enumerate(out["labels"][window].tolist()):
                if label == -100:
                    continue
                word = word_ids[position]
                global_position = start + position - 1
                assert global_position == first_position[word], "label on a continuation sub-token"
                assert label == labels[word]
                labelled_first_positions.add(word)
        assert labelled_first_positions == set(range(len(words)))  # no word silently lost
    assert window_starts_mid_word > 0  # the case the stock tokenizer mislabels is exercised


def test_word_longer_than_window_is_split_not_lost(process, processor):
    words = ["total", "zq" * 60, "due"]
    out = process(
        Image.new("RGB", (50, 50)),
        words,
        boxes=[[0, 0, 1, 1]] * 3,
        word_labels=[1, 2, 3],
        max_length=16,
        stride=4,
        return_tensors="pt",
    )
    word_ids = out["word_index"]
    windows_with_long_word = (word_ids == 1).any(dim=1).sum().item()
    assert windows_with_long_word > 2
    labelled = out["labels"][out["labels"] != -100].tolist()
    assert labelled.count(2) == 1 and 1 in labelled and 3 in labelled
    merged = processor.merge_window_predictions(
        torch.randn(*word_ids.shape, 4), word_ids, out["overflow_to_sample_mapping"]
    )
    assert merged[0].shape == (3, 4) and torch.isfinite(merged[0]).all()


def test_truncation_without_overflow_warns_with_count(process, caplog):
    words, boxes, _ = make_document(100, seed=3)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        out = process(Image.new("RGB", (200, 100)), words, boxes=boxes, max_length=32, return_overflowing_tokens=False)
    kept = len({w for w in out["word_index"][0] if w >= 0})
    assert out["overflow_to_sample_mapping"] == [0]
    assert f"{100 - kept} word(s) in 1 document(s)" in caplog.text


def test_empty_words_are_kept_as_unknown_token(process, processor, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        out = process(Image.new("RGB", (20, 20)), ["total", "", "due"], boxes=[[0, 0, 1, 1]] * 3, word_labels=[1, 2, 3])
    assert "1 empty word(s)" in caplog.text
    word_ids = out["word_index"][0]
    assert out["input_ids"][0][word_ids.index(1)] == processor.tokenizer.unk_token_id
    assert [label for label in out["labels"][0] if label != -100] == [1, 2, 3]


def test_stride_that_does_not_fit_raises_instead_of_panicking(process):
    with pytest.raises(ValueError, match="`stride` \\(62\\) must be smaller than the 62 word tokens"):
        process(Image.new("RGB", (20, 20)), ["a"], boxes=[[0, 0, 1, 1]], max_length=64, stride=62)
    with pytest.raises(ValueError, match=r"question\[0\]` takes"):
        process(
            Image.new("RGB", (20, 20)),
            "what is the total amount due of the invoice",
            ["total"],
            boxes=[[0, 0, 1, 1]],
            max_length=16,
            stride=4,
        )


# --------------------------------------------------------------------------------------------- QA


def test_question_answering_inputs(process, processor):
    words, boxes, _ = make_document(120, seed=6)
    question = "what is the total amount"
    out = process(
        Image.new("RGB", (200, 100)), question, words, boxes=boxes, max_length=48, stride=8, return_tensors="pt"
    )
    assert out["input_ids"].shape[0] > 1
    question_ids = processor.tokenizer(question.split(), boxes=[[0, 0, 0, 0]] * 5, add_special_tokens=False)[
        "input_ids"
    ]
    for window in range(out["input_ids"].shape[0]):
        ids, word_ids = out["input_ids"][window].tolist(), out["word_index"][window].tolist()
        assert ids[1 : 1 + len(question_ids)] == question_ids  # whole question in every window
        assert all(w == -1 for w in word_ids[: 1 + len(question_ids) + 2])
        assert all(b == [0, 0, 0, 0] for b in out["bbox"][window, : 1 + len(question_ids)].tolist())
    merged = processor.merge_window_predictions(
        one_hot_logits(out["word_index"], 120), out["word_index"], out["overflow_to_sample_mapping"]
    )
    assert merged[0].argmax(-1).tolist() == list(range(120))
    batched = process(
        [Image.new("RGB", (200, 100))] * 2,
        ["what is the total", "which date"],
        [words[:5], words[5:9]],
        boxes=[boxes[:5], boxes[5:9]],
        max_length=32,
        stride=4,
    )
    assert batched["overflow_to_sample_mapping"] == [0, 1]
    assert max(batched["word_index"][1]) == 3


# --------------------------------------------------------------------------------------------- LayoutLMv3 parity


@pytest.mark.parametrize("qa", [False, True], ids=["words", "question"])
def test_output_is_a_batch_encoding_whose_word_ids_match_layoutlmv3_processor(processor, qa):
    """`encoding.word_ids(i)` (and `sequence_ids(i)`) of every window are those of the stock LayoutLMv3Processor on
    the same inputs, and `word_index` is derived from them; a `BatchFeature` has no `word_ids` method at all."""
    from transformers import BatchEncoding, LayoutLMv3Processor

    documents = [make_document(90, seed=11), make_document(30, seed=12)]
    images = [Image.new("RGB", (200, 100), "white")] * 2
    words = [d[0] for d in documents]
    normalized = [
        [[c * 1000 // (200 if i % 2 == 0 else 100) for i, c in enumerate(box)] for box in d[1]] for d in documents
    ]
    questions = ["what is the total amount", "which date"] if qa else None
    window = {"max_length": 48, "stride": 8, "truncation": "only_second" if qa else True}
    ours = processor(
        images,
        questions if qa else words,
        text_pair=words if qa else None,
        boxes=normalized,
        boxes_normalized=True,
        padding="max_length",
        return_tensors="pt",
        **window,
    )
    stock_processor = LayoutLMv3Processor(
        image_processor=LayoutLMv3ImageProcessorPil(apply_ocr=False, size={"height": 16, "width": 16}),
        tokenizer=processor.tokenizer,
    )
    stock = stock_processor(
        images,
        questions if qa else words,
        text_pair=words if qa else None,
        boxes=normalized,
        padding="max_length",
        return_overflowing_tokens=True,
        return_tensors="pt",
        **window,
    )
    assert isinstance(ours, BatchEncoding) and ours.encodings is not None
    assert len(ours["input_ids"]) == len(stock["input_ids"]) > 2
    assert torch.equal(ours["input_ids"], stock["input_ids"]) and torch.equal(ours["bbox"], stock["bbox"])
    content = 1 if qa else 0
    for i in range(len(ours["input_ids"])):
        assert ours.word_ids(i) == stock.word_ids(i)
        assert ours.sequence_ids(i) == stock.sequence_ids(i)
        pairs = zip(stock.word_ids(i), stock.sequence_ids(i))
        assert ours["word_index"][i].tolist() == [w if w is not None and s == content else -1 for w, s in pairs]
    assert "word_ids" not in ours  # the tensor field is `word_index`; `word_ids` is the method
    if qa:  # the question's tokens have word ids (sequence 0) but no word index
        assert ours.word_ids(0)[1] == 0 and ours.sequence_ids(0)[1] == 0 and ours["word_index"][0, 1] == -1
    # `token_to_word` and friends come with the encodings too.
    position = ours["word_index"][0].tolist().index(3)
    assert ours.token_to_word(0, position) == 3
