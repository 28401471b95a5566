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
Property-based tests of AETNetProcessor: on random documents (unicode and empty-ish words, random boxes, random page
sizes) it never fails except with the documented `ValueError`s, every word lands in some window, and every output box
is on the 0-1000 page.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers import LayoutLMv3ImageProcessorPil

from aetnet import AETNetProcessor
from aetnet.data.tokenizer_training import train_layoutlmv3_tokenizer


MAX_LENGTH, STRIDE = 32, 8
VOCAB = ["invoice", "total", "amount", "due", "date", "name", "address"]
# Messages of the ValueErrors the processor documents for bad boxes (docs/bad-inputs.md).
DOCUMENTED_BOX_ERRORS = ("must satisfy x0 <= x1 and y0 <= y1", "contains NaN or inf")


@pytest.fixture(scope="module")
def processor():
    rng = random.Random(0)
    tokenizer = train_layoutlmv3_tokenizer(
        [" ".join(rng.choice(VOCAB) for _ in range(20)) for _ in range(30)], vocab_size=300
    )
    image_processor = LayoutLMv3ImageProcessorPil(apply_ocr=False, size={"height": 8, "width": 8})
    return AETNetProcessor(image_processor=image_processor, tokenizer=tokenizer)


words_strategy = st.one_of(
    st.sampled_from(VOCAB + ["", " ", "  ", "\t", "\n", "\u200b", "\ufeff", "\u0301", "\U0001f600", "é"]),
    st.text(max_size=12),
    st.text(alphabet="zq", min_size=20, max_size=80),  # unknown strings: many tokens, can outgrow a window
)
coordinate = st.one_of(
    st.integers(min_value=-50, max_value=3000),
    st.floats(min_value=-50, max_value=3000, allow_nan=False, allow_infinity=False),
)
any_coordinate = st.one_of(coordinate, st.just(float("nan")), st.just(float("inf")))


@st.composite
def documents(draw, valid_boxes: bool):
    width, height = draw(st.integers(1, 400)), draw(st.integers(1, 400))
    words = draw(st.lists(words_strategy, min_size=0, max_size=25))
    boxes = []
    for _ in words:
        if valid_boxes:
            x = sorted(draw(st.lists(coordinate, min_size=2, max_size=2)))
            y = sorted(draw(st.lists(coordinate, min_size=2, max_size=2)))
            boxes.append([x[0], y[0], x[1], y[1]])
        else:
            boxes.append(draw(st.lists(any_coordinate, min_size=4, max_size=4)))
    return Image.new(draw(st.sampled_from(["RGB", "L", "RGBA", "P"])), (width, height)), words, boxes


def check_outputs(out, num_words: list[int]) -> None:
    mapping = out["overflow_to_sample_mapping"]
    for document, count in enumerate(num_words):
        seen = {w for row, doc in zip(out["word_index"], mapping) if doc == document for w in row if w >= 0}
        assert seen == set(range(count)), f"document {document}: words {set(range(count)) - seen} in no window"
    boxes = np.asarray(out["bbox"])
    assert boxes.shape[-1] == 4 and boxes.min(initial=0) >= 0 and boxes.max(initial=0) <= 1000
    assert all(len(row) == MAX_LENGTH for row in out["input_ids"])
    assert np.isfinite(np.asarray(out["pixel_values"])).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(documents(valid_boxes=True), min_size=1, max_size=3))
def test_valid_documents_keep_every_word_on_the_page(processor, batch):
    images, words, boxes = (list(column) for column in zip(*batch))
    labels = [[index % 3 for index in range(len(doc))] for doc in words]
    out = processor(images, words, boxes=boxes, word_labels=labels, max_length=MAX_LENGTH, stride=STRIDE)
    check_outputs(out, [len(doc) for doc in words])
    labelled = sum(label != -100 for row in out["labels"] for label in row)
    assert labelled >= sum(len(doc) for doc in words)  # every word keeps its label at least once


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=documents(valid_boxes=False), normalized=st.booleans())
def test_random_boxes_only_raise_documented_errors(processor, document, normalized):
    image, words, boxes = document
    try:
        out = processor(image, words, boxes=boxes, boxes_normalized=normalized, max_length=MAX_LENGTH, stride=STRIDE)
    except ValueError as error:
        message = str(error)
        assert message.startswith("`boxes[0][") and any(text in message for text in DOCUMENTED_BOX_ERRORS), message
        index = int(message.split("`boxes[0][")[1].split("]")[0])
        row = [float(value) for value in boxes[index]]
        assert not all(np.isfinite(row)) or row[0] > row[2] or row[1] > row[3]  # the named box really is bad
        return
    for box in boxes:
        assert all(np.isfinite(box)) and box[0] <= box[2] and box[1] <= box[3]
    check_outputs(out, [len(words)])
