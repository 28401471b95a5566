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
"""Tests of AETNetProcessor's inputs, images, real OCR, augmented view and saving, and the offline tokenizer trainer."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont
from processing_helpers import LOGGER, corpus, make_document, process, processor, tokenizer  # noqa: F401 (pytest fixtures)
from transformers import AutoTokenizer, LayoutLMv3ImageProcessorPil

from aetnet import AETNetProcessor
from aetnet.data.tokenizer_training import train_layoutlmv3_tokenizer
from aetnet.tasks import MODEL_INPUT_NAMES


def word_runs(word_ids: list[int]) -> list[tuple[int, int]]:
    """(position, word) of every position where a new word starts."""
    return [(j, w) for j, w in enumerate(word_ids) if w >= 0 and (j == 0 or word_ids[j - 1] != w)]


# --------------------------------------------------------------------------------------------- basic outputs


def test_keys_shapes_and_first_subtoken_labels(process, processor):
    words, boxes, labels = make_document(12)
    out = process(
        Image.new("RGB", (200, 100), "white"),
        words,
        boxes=boxes,
        word_labels=labels,
        max_length=64,
        return_tensors="pt",
    )
    expected = {
        "input_ids",
        "attention_mask",
        "bbox",
        "labels",
        "word_index",
        "overflow_to_sample_mapping",
        "pixel_values",
    }
    assert set(out.keys()) == expected
    assert out["input_ids"].shape == (1, 64) and out["bbox"].shape == (1, 64, 4)
    assert out["pixel_values"].shape == (1, 3, 16, 16) and out["pixel_values"].dtype == torch.float32
    assert out["overflow_to_sample_mapping"].tolist() == [0]
    word_ids = out["word_index"][0].tolist()
    starts = word_runs(word_ids)
    assert [w for _, w in starts] == list(range(12))  # every word, in order, once
    expected_labels = [-100] * 64
    for position, word in starts:
        expected_labels[position] = labels[word]
    assert out["labels"][0].tolist() == expected_labels
    # Multi-token words exist, so the check above really excludes continuation sub-tokens.
    assert sum(w >= 0 for w in word_ids) > 12
    assert word_ids[0] == -1 and out["input_ids"][0, 0] == processor.tokenizer.cls_token_id
    for name in ("input_ids", "bbox", "attention_mask", "pixel_values"):
        assert name in processor.model_input_names


def test_model_input_names_come_from_the_task_table(processor):
    assert processor.model_input_names == list(MODEL_INPUT_NAMES)


def test_pixel_boxes_are_normalised_from_original_page_size(process):
    # 200 x 100 page: x -> 5 * x, y -> 10 * y.
    out = process(Image.new("L", (200, 100)), ["total", "due"], boxes=[[20, 10, 40, 30], [0, 0, 200, 100]])
    word_ids, bbox = out["word_index"][0], out["bbox"][0]
    assert bbox[word_ids.index(0)] == [100, 100, 200, 300]
    assert bbox[word_ids.index(1)] == [0, 0, 1000, 1000]
    assert bbox[0] == [0, 0, 0, 0]
    normalised = process(Image.new("L", (200, 100)), ["total"], boxes=[[100, 100, 200, 300]], boxes_normalized=True)
    assert normalised["bbox"][0][1] == [100, 100, 200, 300]


def test_out_of_range_boxes_are_clipped_with_a_counting_warning(process, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        out = process(Image.new("RGB", (200, 100)), ["total", "due"], boxes=[[-5, 10, 250, 30], [0, 0, 10, 10]])
    assert "2 box coordinate(s)" in caplog.text
    assert out["bbox"][0][1] == [0, 100, 1000, 300]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        process(Image.new("RGB", (200, 100)), ["total"], boxes=[[0, 0, 1003, 1200]], boxes_normalized=True)
    assert "2 box coordinate(s)" in caplog.text


@pytest.mark.parametrize(
    "bad_box, message",
    [
        ([30, 0, 10, 5], r"boxes\[0\]\[1\]` must satisfy x0 <= x1 and y0 <= y1, got \[30.0, 0.0, 10.0, 5.0\]"),
        ([0, 9, 10, 5], r"boxes\[0\]\[1\]` must satisfy x0 <= x1 and y0 <= y1, got \[0.0, 9.0, 10.0, 5.0\]"),
        ([1, 2, 3], r"boxes\[0\]\[1\]` must be 4 coordinates .* got \[1, 2, 3\]"),
        ([1, 2, 3, 4, 5], r"boxes\[0\]\[1\]` must be 4 coordinates .* got \[1, 2, 3, 4, 5\]"),
        ([0, float("nan"), 3, 4], r"boxes\[0\]\[1\]` contains NaN or inf: \[0.0, nan, 3.0, 4.0\]"),
        ([0, 0, float("inf"), 4], r"boxes\[0\]\[1\]` contains NaN or inf"),
        (["a", 0, 1, 2], r"boxes\[0\]\[1\]` must hold numbers, got \['a', 0, 1, 2\]"),
        ("abcd", r"boxes\[0\]\[1\]` must be 4 coordinates .* got 'abcd'"),
    ],
)
def test_malformed_boxes_raise_with_index_and_value(process, bad_box, message):
    with pytest.raises(ValueError, match=message):
        process(Image.new("RGB", (200, 100)), ["total", "due"], boxes=[[0, 0, 1, 1], bad_box])


def test_malformed_box_in_second_document_names_the_document(process):
    image = Image.new("RGB", (200, 100))
    with pytest.raises(ValueError, match=r"boxes\[1\]\[0\]"):
        process([image, image], [["total"], ["due"]], boxes=[[[0, 0, 1, 1]], [[5, 0, 1, 1]]])


@pytest.mark.parametrize(
    "words, boxes, labels, message",
    [
        (["a", "b"], [[0, 0, 1, 1]], None, "Document 0 has 2 words but 1 boxes"),
        (["a"], [[0, 0, 1, 1]], [0, 1], "Document 0 has 1 words but 2 word_labels"),
        ([["a"], ["b"]], [[[0, 0, 1, 1]]], None, "2 document\\(s\\) of words but 1 of boxes"),
        ([["a"], ["b", "c"]], [[[0, 0, 1, 1]], [[0, 0, 1, 1]]], None, "Document 1 has 2 words but 1 boxes"),
        (["a", 3], [[0, 0, 1, 1]] * 2, None, r"words\[0\]\[1\]` must be a string, got 3"),
    ],
)
def test_length_and_type_mismatches_raise(process, words, boxes, labels, message):
    batched = isinstance(words[0], list)
    images = [Image.new("RGB", (10, 10))] * (len(words) if batched else 1)
    with pytest.raises(ValueError, match=message):
        process(images if batched else images[0], words, boxes=boxes, word_labels=labels)


def test_image_count_must_match_documents(process):
    with pytest.raises(ValueError, match="Got 2 image"):
        process([Image.new("RGB", (10, 10))] * 2, ["a"], boxes=[[0, 0, 1, 1]])


# --------------------------------------------------------------------------------------------- OCR


def render_page() -> Image.Image:
    image = Image.new("RGB", (900, 240), "white")
    ImageDraw.Draw(image).text((40, 80), "INVOICE TOTAL 1234", fill="black", font=ImageFont.load_default(size=48))
    return image


def test_ocr_with_real_tesseract(process, processor):
    page = render_page()
    out = process(page.convert("L"), apply_ocr=True, max_length=32, stride=4)
    words, boxes = out["words"][0], out["boxes"][0]
    assert [w.upper() for w in words] == ["INVOICE", "TOTAL", "1234"]
    assert all(0 <= c <= 1000 for box in boxes for c in box)
    assert boxes[0][2] <= boxes[1][0] and boxes[1][2] <= boxes[2][0]  # left to right
    assert 200 <= boxes[0][1] <= boxes[0][3] <= 700  # the text line sits in the middle band of the page
    assert out["bbox"][0][out["word_index"][0].index(2)] == boxes[2]
    assert processor.apply_tesseract(page) == (words, boxes)
    question = process(page, "what is the total?", apply_ocr=True, max_length=32, stride=4)
    assert question["words"] == [words] and max(max(row) for row in question["word_index"]) == 2
    with pytest.raises(ValueError, match="bounding boxes"):
        process(page, ["a"], boxes=[[0, 0, 1, 1]], apply_ocr=True)
    with pytest.raises(ValueError, match="word labels"):
        process(page, word_labels=[1], apply_ocr=True)


# --------------------------------------------------------------------------------------------- images


def test_image_modes_and_arrays_give_the_same_pixels(process):
    gray = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1))  # 32 x 32 gradient
    reference = process(Image.fromarray(gray).convert("RGB"), ["a"], boxes=[[0, 0, 1, 1]], return_tensors="pt")
    variants = {
        "L": Image.fromarray(gray),
        "P": Image.fromarray(gray).convert("P"),
        "I;16": Image.fromarray(gray.astype(np.uint16) * 257),
        "I": Image.fromarray(gray.astype(np.int32) * 257),
        "F": Image.fromarray(gray.astype(np.float32) / 255),
        "RGBA": Image.fromarray(gray).convert("RGBA"),
        "LA": Image.fromarray(gray).convert("LA"),
        "numpy HW uint8": gray,
        "numpy HWC uint8": np.repeat(gray[..., None], 3, axis=-1),
        "numpy CHW float": np.repeat(gray[None], 3, axis=0).astype(np.float32) / 255,
        "numpy HW uint16": gray.astype(np.uint16) * 257,
        "torch CHW": torch.from_numpy(np.repeat(gray[None], 3, axis=0)),
    }
    assert variants["I;16"].mode.startswith("I;16") and variants["I"].mode == "I" and variants["F"].mode == "F"
    for name, image in variants.items():
        out = process(image, ["a"], boxes=[[0, 0, 1, 1]], return_tensors="pt")
        torch.testing.assert_close(out["pixel_values"], reference["pixel_values"], atol=1e-6, rtol=0, msg=name)


def test_transparent_and_bilevel_pages(process):
    transparent = process(Image.new("RGBA", (20, 20), (0, 0, 0, 0)), ["a"], boxes=[[0, 0, 1, 1]], return_tensors="pt")
    assert torch.all(transparent["pixel_values"] == 1.0)  # paper is white, not black
    bilevel = process(Image.new("1", (20, 20), 0), ["a"], boxes=[[0, 0, 1, 1]], return_tensors="pt")
    assert torch.all(bilevel["pixel_values"] == -1.0)
    with pytest.raises(ValueError, match=r"images\[0\]` float pixels must be in"):
        process(np.full((4, 4), -3.0), ["a"], boxes=[[0, 0, 1, 1]])


# --------------------------------------------------------------------------------------------- augmented view, saving


def test_augmented_view_only_changes_the_momentum_view(process):
    words, boxes, labels = make_document(10)
    image = Image.fromarray(np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1)))
    plain = process(image, words, boxes=boxes, word_labels=labels, return_tensors="pt")
    first = process(
        image,
        words,
        boxes=boxes,
        word_labels=labels,
        return_tensors="pt",
        return_augmented_view=True,
        augmentation_generator=torch.Generator().manual_seed(0),
    )
    second = process(
        image,
        words,
        boxes=boxes,
        word_labels=labels,
        return_tensors="pt",
        return_augmented_view=True,
        augmentation_generator=torch.Generator().manual_seed(0),
    )
    for key in plain:
        torch.testing.assert_close(first[key], plain[key])  # online view, boxes and labels untouched
    assert first["pixel_values_aug"].shape == plain["pixel_values"].shape
    assert not torch.equal(first["pixel_values_aug"], plain["pixel_values"])
    torch.testing.assert_close(first["pixel_values_aug"], second["pixel_values_aug"])


def test_save_and_load_round_trip(process, processor, tmp_path):
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["processor_class"] == "AETNetProcessor"
    assert config["image_processor"]["size"] == {"height": 16, "width": 16}
    reloaded = AETNetProcessor.from_pretrained(tmp_path)
    assert isinstance(reloaded.image_processor, LayoutLMv3ImageProcessorPil)
    assert reloaded.image_processor.apply_ocr is False
    words, boxes, labels = make_document(30)
    kwargs = dict(boxes=boxes, word_labels=labels, max_length=32, stride=8, return_tensors="pt")
    image = Image.new("RGB", (200, 100), "gray")
    before, after = process(image, words, **kwargs), reloaded(image, words, **kwargs)
    assert before.keys() == after.keys()
    for key in before:
        torch.testing.assert_close(before[key], after[key])


# --------------------------------------------------------------------------------------------- tokenizer trainer


def test_tokenizer_training_is_deterministic_and_round_trips(tmp_path):
    first = train_layoutlmv3_tokenizer(corpus(1), vocab_size=300)
    second = train_layoutlmv3_tokenizer(corpus(1), vocab_size=300)
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()
    assert (
        first.backend_tokenizer.to_str()
        != train_layoutlmv3_tokenizer(corpus(2), vocab_size=300).backend_tokenizer.to_str()
    )
    special = [first.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")]
    assert special == [0, 1, 2, 3, 4]
    assert (first.cls_token_id, first.pad_token_id, first.sep_token_id, first.unk_token_id) == (0, 1, 2, 3)
    words = ["invoice", "totals", "Zürich", "€42"]
    encoded = first(words, boxes=[[0, 0, 1, 1]] * 4)["input_ids"]
    assert first.unk_token_id not in encoded  # byte-level: nothing unknown
    assert first.decode(encoded, skip_special_tokens=True).strip() == " ".join(words)
    first.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(reloaded).__name__ == "LayoutLMv3Tokenizer" and reloaded.model_max_length == 512
    assert reloaded(words, boxes=[[0, 0, 1, 1]] * 4)["input_ids"] == encoded


def test_tokenizer_training_accepts_word_lists_and_validates_arguments():
    from_words = train_layoutlmv3_tokenizer([doc.split() for doc in corpus(3)], vocab_size=300)
    from_text = train_layoutlmv3_tokenizer(corpus(3), vocab_size=300)
    assert from_words.backend_tokenizer.to_str() == from_text.backend_tokenizer.to_str()
    assert len(from_words) <= 300
    with pytest.raises(ValueError, match="`vocab_size` must be an int >= 261"):
        train_layoutlmv3_tokenizer(corpus(), vocab_size=100)
    with pytest.raises(ValueError, match="`min_frequency`"):
        train_layoutlmv3_tokenizer(corpus(), min_frequency=0)
    with pytest.raises(ValueError, match=r"`texts\[1\]` must be a string or a list of strings"):
        train_layoutlmv3_tokenizer(["fine", 3])
