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
The bad-input table of AETNetProcessor (README.md, section "Bad input"), one parametrized row per input: each bad input either
works correctly (checked on the outputs) or raises a `ValueError` that names the argument, the index and the value.
Whatever cannot be kept whole (clipped coordinates, truncated words) is counted in a warning, never dropped silently.
"""

from __future__ import annotations

import io
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import LayoutLMv3ImageProcessorPil

from aetnet import AETNetConfig, AETNetForTokenClassification, AETNetProcessor
from aetnet.data.tokenizer_training import train_layoutlmv3_tokenizer


VOCAB = ["invoice", "total", "amount", "due", "date", "name", "what", "is", "the"]
LOGGER = "aetnet.processing_aetnet"
MAX_LENGTH, STRIDE, IMAGE = 32, 8, 16
LABEL2ID = {"O": 0, "B-KEY": 1, "I-KEY": 2}
BOX = [0, 0, 10, 10]


@pytest.fixture(scope="module")
def processor():
    rng = random.Random(0)
    tokenizer = train_layoutlmv3_tokenizer(
        [" ".join(rng.choice(VOCAB) for _ in range(20)) for _ in range(30)], vocab_size=300
    )
    image_processor = LayoutLMv3ImageProcessorPil(apply_ocr=False, size={"height": IMAGE, "width": IMAGE})
    return AETNetProcessor(image_processor=image_processor, tokenizer=tokenizer)


def page(mode: str = "RGB", size: tuple[int, int] = (100, 50)) -> Image.Image:
    return Image.new(mode, size)


def encoded_png(size=(64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "red").save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Row:
    """One row of the table: the call's arguments, then either `raises` (a regex) or `check(outputs, log_text)`."""

    description: str
    images: Any
    words: Any
    boxes: Any
    kwargs: dict
    raises: str | None = None
    check: Callable[[Any, str], None] | None = None


def all_words_present(num_words: int):
    def check(out, log):
        assert {w for row in out["word_index"] for w in row if w >= 0} == set(range(num_words))

    return check


def clipped(expected_count: int, expected_box: list[int]):
    def check(out, log):
        assert f"{expected_count} box coordinate(s) fell outside the page" in log
        assert out["bbox"][0][out["word_index"][0].index(0)] == expected_box

    return check


def valid_pixels(out, log):
    pixels = np.asarray(out["pixel_values"])
    assert pixels.shape == (1, 3, IMAGE, IMAGE) and np.isfinite(pixels).all()
    assert out["word_index"][0].count(0) >= 1


def sixteen_bit_rescaled(out, log):
    valid_pixels(out, log)
    # 30000 / 65535 of full scale: mid-grey, not the white page that PIL's own 16-bit conversion gives.
    assert abs(float(np.asarray(out["pixel_values"]).mean())) < 0.2


def empty_document(out, log):
    assert len(out["input_ids"]) == 1 and all(w == -1 for w in out["word_index"][0])
    assert all(label == -100 for label in out["labels"][0])


def long_word_split(out, log):
    windows_with_word = sum(1 in row for row in out["word_index"])
    assert windows_with_word > 1
    labelled = [label for row in out["labels"] for label in row if label != -100]
    assert sorted(labelled) == [0, 1, 2]  # the long word keeps one label, on its first sub-token


def names_mapped(out, log):
    assert [label for label in out["labels"][0] if label != -100] == [1, 2, 0]


def tensor_ids_kept(out, log):
    assert [label for label in out["labels"][0] if label != -100] == [2, 0]


def empty_word_kept(out, log):
    assert "1 empty word(s)" in log
    all_words_present(2)(out, log)


def truncation_counted(out, log):
    kept = len({w for w in out["word_index"][0] if w >= 0})
    assert kept < 60 and f"{60 - kept} word(s) in 1 document(s)" in log


def whitespace_words_kept(out, log):
    all_words_present(4)(out, log)


ROWS = {
    "words-boxes-length": Row(
        "2 words, 1 box", page(), ["total", "due"], [BOX], {}, r"Document 0 has 2 words but 1 boxes"
    ),
    "words-labels-length": Row(
        "1 word, 2 labels",
        page(),
        ["total"],
        [BOX],
        {"word_labels": [0, 1]},
        r"Document 0 has 1 words but 2 word_labels",
    ),
    "documents-boxes-length": Row(
        "2 documents, boxes for 1", [page(), page()], [["a"], ["b"]], [[BOX]], {}, r"2 document\(s\) of words but 1"
    ),
    "images-documents-length": Row("2 images, 1 document", [page(), page()], ["a"], [BOX], {}, r"Got 2 image"),
    "word-not-string": Row("word 3", page(), ["a", 3], [BOX, BOX], {}, r"`words\[0\]\[1\]` must be a string, got 3"),
    "word-empty-string": Row('word ""', page(), ["total", ""], [BOX, BOX], {}, check=empty_word_kept),
    "word-whitespace-unicode": Row(
        "words '  ', zero-width space, emoji, combining accent",
        page(),
        ["  ", "\u200b", "\U0001f600", "\u0301"],
        [BOX] * 4,
        {},
        check=whitespace_words_kept,
    ),
    "box-x0-gt-x1": Row(
        "[30, 0, 10, 5]", page(), ["a"], [[30, 0, 10, 5]], {}, r"`boxes\[0\]\[0\]` must satisfy x0 <= x1"
    ),
    "box-y0-gt-y1": Row(
        "[0, 9, 10, 5]", page(), ["a"], [[0, 9, 10, 5]], {}, r"`boxes\[0\]\[0\]` must satisfy .* got \[0.0, 9.0"
    ),
    "box-negative": Row(
        "[-5, -1, 10, 5] on 100x50", page(), ["a"], [[-5, -1, 10, 5]], {}, check=clipped(2, [0, 0, 100, 100])
    ),
    "box-beyond-page": Row(
        "[90, 40, 130, 60] on 100x50", page(), ["a"], [[90, 40, 130, 60]], {}, check=clipped(2, [900, 800, 1000, 1000])
    ),
    "box-beyond-1000-normalized": Row(
        "[0, 0, 1003, 1200], boxes_normalized",
        page(),
        ["a"],
        [[0, 0, 1003, 1200]],
        {"boxes_normalized": True},
        check=clipped(2, [0, 0, 1000, 1000]),
    ),
    "box-nan": Row(
        "[0, nan, 3, 4]",
        page(),
        ["a"],
        [[0, float("nan"), 3, 4]],
        {},
        r"`boxes\[0\]\[0\]` contains NaN or inf: \[0.0, nan",
    ),
    "box-inf": Row(
        "[0, 0, inf, 4]", page(), ["a"], [[0, 0, float("inf"), 4]], {}, r"`boxes\[0\]\[0\]` contains NaN or inf"
    ),
    "box-non-numeric": Row(
        "['a', 0, 1, 2]", page(), ["a"], [["a", 0, 1, 2]], {}, r"`boxes\[0\]\[0\]` must hold numbers, got \['a'"
    ),
    "box-three-coordinates": Row(
        "[1, 2, 3]", page(), ["a"], [[1, 2, 3]], {}, r"`boxes\[0\]\[0\]` must be 4 coordinates .* \[1, 2, 3\]"
    ),
    "box-five-coordinates": Row(
        "[1, 2, 3, 4, 5]", page(), ["a"], [[1, 2, 3, 4, 5]], {}, r"`boxes\[0\]\[0\]` must be 4 coordinates"
    ),
    "box-none": Row("None", page(), ["a"], [None], {}, r"`boxes\[0\]\[0\]` must be 4 coordinates .* got None"),
    "empty-document": Row("no words, no boxes", page(), [], [], {"word_labels": []}, check=empty_document),
    "word-longer-than-window": Row(
        "one word of ~60 tokens, window 32",
        page(),
        ["total", "zq" * 60, "due"],
        [BOX] * 3,
        {"word_labels": [0, 1, 2]},
        check=long_word_split,
    ),
    "truncation-without-overflow": Row(
        "60 words, return_overflowing_tokens=False",
        page(),
        ["total"] * 60,
        [BOX] * 60,
        {"return_overflowing_tokens": False},
        check=truncation_counted,
    ),
    "image-grayscale": Row("mode L", page("L"), ["a"], [BOX], {}, check=valid_pixels),
    "image-rgba": Row("mode RGBA", page("RGBA"), ["a"], [BOX], {}, check=valid_pixels),
    "image-palette": Row("mode P", page("P"), ["a"], [BOX], {}, check=valid_pixels),
    "image-16-bit": Row(
        "mode I;16 (uint16 array)",
        Image.fromarray(np.full((50, 100), 30000, np.uint16)),
        ["a"],
        [BOX],
        {},
        check=sixteen_bit_rescaled,
    ),
    "image-1x1": Row("1 x 1 pixel page", page(size=(1, 1)), ["a"], [[0, 0, 1, 1]], {}, check=valid_pixels),
    "image-10000px": Row(
        "10000 x 20 page", page("L", (10000, 20)), ["a"], [[9000, 0, 10000, 20]], {}, check=valid_pixels
    ),
    "image-truncated-file": Row(
        "PNG cut in half, Image.open", "truncated", ["a"], [BOX], {}, r"`images\[0\]` could not be decoded \(truncated"
    ),
    "image-not-an-image": Row("raw file bytes", encoded_png(), ["a"], [BOX], {}, r"`images\[0\]` must be a PIL image"),
    "label-name-without-label2id": Row(
        "word_labels=[0, 'B-KEY']",
        page(),
        ["a", "b"],
        [BOX, BOX],
        {"word_labels": [0, "B-KEY"]},
        r"`word_labels\[0\]\[1\]` must be an int label id \(pass `label2id`.*got 'B-KEY'",
    ),
    "label-name-unknown": Row(
        "word_labels=['O', 'B-FOO'], label2id",
        page(),
        ["a", "b"],
        [BOX, BOX],
        {"word_labels": ["O", "B-FOO"], "label2id": LABEL2ID},
        r"`word_labels\[0\]\[1\]` is the unknown label name 'B-FOO'",
    ),
    "label-names-known": Row(
        "word_labels=['B-KEY', 'I-KEY', 'O'], label2id",
        page(),
        ["a", "b", "c"],
        [BOX] * 3,
        {"word_labels": ["B-KEY", "I-KEY", "O"], "label2id": LABEL2ID},
        check=names_mapped,
    ),
    "label-ids-as-tensor": Row(
        "word_labels=torch.tensor([2, 0])",
        page(),
        ["a", "b"],
        [BOX, BOX],
        {"word_labels": torch.tensor([2, 0])},
        check=tensor_ids_kept,
    ),
    "label-id-not-in-label2id": Row(
        "word_labels=[7], label2id",
        page(),
        ["a"],
        [BOX],
        {"word_labels": [7], "label2id": LABEL2ID},
        r"`word_labels\[0\]\[0\]` must be a value of `label2id` or -100, got 7",
    ),
    "label-negative": Row(
        "word_labels=[-3]",
        page(),
        ["a"],
        [BOX],
        {"word_labels": [-3]},
        r"`word_labels\[0\]\[0\]` must be >= 0 or -100, got -3",
    ),
    "label-float": Row(
        "word_labels=[1.5]",
        page(),
        ["a"],
        [BOX],
        {"word_labels": [1.5]},
        r"`word_labels\[0\]\[0\]` must be an int label id, got 1.5",
    ),
    "question-longer-than-window": Row(
        "QA question of 40 words, window 32",
        page(),
        ["total"],
        [BOX],
        {"question": " ".join(["total"] * 40)},
        r"`question\[0\]` takes \d+ tokens",
    ),
    "question-empty": Row(
        "QA question '  '", page(), ["total"], [BOX], {"question": "  "}, r"`question\[0\]` must be a non-empty string"
    ),
}


@pytest.mark.parametrize("row_id", list(ROWS))
def test_bad_input_row(processor, caplog, row_id):
    row = ROWS[row_id]
    kwargs = dict(row.kwargs)
    images = row.images
    if isinstance(images, str) and images == "truncated":  # opened lazily, as from disk, so decoding fails late
        data = encoded_png()
        images = Image.open(io.BytesIO(data[: len(data) // 2]))
    question = kwargs.pop("question", None)
    args = (images, question, row.words) if question is not None else (images, row.words)
    call = lambda: processor(*args, boxes=row.boxes, max_length=MAX_LENGTH, stride=STRIDE, **kwargs)  # noqa: E731
    if row.raises is not None:
        with pytest.raises(ValueError, match=row.raises):
            call()
        return
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        out = call()
    row.check(out, caplog.text)
    for window in out["bbox"]:  # whatever came in, every box that goes out is on the 0-1000 page
        assert all(0 <= coordinate <= 1000 for box in window for coordinate in box)


def test_every_row_is_documented():
    text = (Path(__file__).parents[1] / "README.md").read_text().split("## Bad input", 1)[1]
    for row_id in ROWS:
        assert f"`{row_id}`" in text, row_id


def test_empty_document_runs_end_to_end_through_the_model(processor):
    """An empty document is one window of special tokens: inference works; in a batch with a real document the
    training loss and every alignment term are finite (alone, it has no labelled token, so the task loss is NaN and
    AETNetTrainer skips and counts that step)."""
    config = AETNetConfig.from_preset(
        "tiny", vocab_size=len(processor.tokenizer), max_length=MAX_LENGTH + 4, num_labels=3, queue_size=8
    )
    torch.manual_seed(0)
    model = AETNetForTokenClassification(config)
    out = processor(
        [page(), page()],
        [[], ["total", "due"]],
        boxes=[[], [BOX, BOX]],
        word_labels=[[], [1, 2]],
        max_length=MAX_LENGTH,
        stride=STRIDE,
        return_tensors="pt",
    )
    inputs = {key: out[key] for key in ("input_ids", "bbox", "attention_mask", "pixel_values")}
    model.eval()
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (2, MAX_LENGTH, 3) and torch.isfinite(logits).all()
    model.train()
    outputs = model(**inputs, labels=out["labels"])
    assert torch.isfinite(outputs.loss)
    assert set(outputs.alignment_losses) == {"ditc", "imc", "glitc", "pita"}
    assert all(torch.isfinite(value) for value in outputs.alignment_losses.values())
    alone = model(**{key: value[:1] for key, value in inputs.items()}, labels=out["labels"][:1])
    assert torch.isnan(alone.task_loss) and all(torch.isfinite(v) for v in alone.alignment_losses.values())
