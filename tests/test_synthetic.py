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
"""Tests of the synthetic FUNSD-like forms: schema, determinism, label consistency and that boxes match the ink."""

import time
from collections import Counter

import datasets
import numpy as np
import pytest

from aetnet.data import FUNSD_LABELS, funsd_features, generate_synthetic_forms, load_synthetic_funsd


@pytest.fixture(scope="module")
def forms():
    return generate_synthetic_forms(12, seed=3)


@pytest.fixture(scope="module")
def word_level_forms():
    return generate_synthetic_forms(12, seed=3, word_level=True)


def raw_images(dataset: datasets.Dataset) -> list[bytes]:
    return [image["bytes"] for image in dataset.cast_column("image", datasets.Image(decode=False))["image"]]


def tag_names(example) -> list[str]:
    return [FUNSD_LABELS[tag] for tag in example["ner_tags"]]


def entity_spans(tags: list[str]) -> list[tuple[str, int, int]]:
    spans = []
    for index, tag in enumerate(tags):
        if tag.startswith("B-"):
            spans.append([tag[2:], index, index + 1])
        elif tag.startswith("I-"):
            assert spans and spans[-1][2] == index and spans[-1][0] == tag[2:], (
                f"{tag} at {index} does not continue an entity"
            )
            spans[-1][2] = index + 1
    return [tuple(span) for span in spans]


def test_schema_matches_funsd(forms):
    assert forms.features == funsd_features()
    assert forms.num_rows == 12
    assert forms["id"] == [f"synthetic_{index:05d}" for index in range(12)]
    image = forms[0]["image"]
    assert image.mode == "RGB" and image.size == (762, 1000)


def test_same_seed_is_identical(forms):
    again = generate_synthetic_forms(12, seed=3)
    assert (
        again["words"] == forms["words"]
        and again["bboxes"] == forms["bboxes"]
        and again["ner_tags"] == forms["ner_tags"]
    )
    assert raw_images(again) == raw_images(forms)
    assert again.data.table.equals(forms.data.table)
    # Forms are drawn one after the other from one stream, so a shorter run is a prefix of a longer one.
    assert generate_synthetic_forms(3, seed=3)["words"] == forms["words"][:3]


def test_different_seed_differs(forms):
    other = generate_synthetic_forms(12, seed=4)
    assert other["words"] != forms["words"]
    assert all(a != b for a, b in zip(raw_images(other), raw_images(forms)))


def test_bio_labels_are_consistent(forms):
    types = Counter()
    for example in forms:
        tags = tag_names(example)
        assert len(tags) == len(example["words"]) == len(example["bboxes"]) > 20
        spans = entity_spans(tags)
        # Every form has a title, and at least one question with its answer.
        assert {"HEADER", "QUESTION", "ANSWER"} <= {entity_type for entity_type, *_ in spans}
        types.update(entity_type for entity_type, *_ in spans)
    assert all(types[name] > 0 for name in ("HEADER", "QUESTION", "ANSWER"))
    all_tags = [tag for example in forms for tag in tag_names(example)]
    assert set(all_tags) == set(FUNSD_LABELS)


def test_questions_are_learnable_from_text_and_layout(forms):
    with_colon = total = answers_right_or_below = answers = 0
    for example in forms:
        spans = entity_spans(tag_names(example))
        for (entity_type, start, end), following in zip(spans, spans[1:] + [None]):
            if entity_type != "QUESTION":
                continue
            total += 1
            with_colon += example["words"][end - 1].endswith(":")
            if following is not None and following[0] == "ANSWER":
                answers += 1
                question_box, answer_box = example["bboxes"][start], example["bboxes"][following[1]]
                answers_right_or_below += answer_box[0] >= question_box[2] or answer_box[1] >= question_box[3]
    assert with_colon / total > 0.8
    assert answers > 50 and answers_right_or_below == answers


def test_segment_and_word_level_boxes(forms, word_level_forms):
    assert word_level_forms["words"] == forms["words"]
    assert raw_images(word_level_forms) == raw_images(forms)
    num_differing = 0
    for segment_example, word_example in zip(forms, word_level_forms):
        for _, start, end in entity_spans(tag_names(segment_example)):
            boxes = segment_example["bboxes"][start:end]
            assert all(box == boxes[0] for box in boxes)
        for segment_box, word_box in zip(segment_example["bboxes"], word_example["bboxes"]):
            assert 0 <= word_box[0] < word_box[2] <= 1000 and 0 <= word_box[1] < word_box[3] <= 1000
            assert segment_box[0] <= word_box[0] and segment_box[1] <= word_box[1]
            assert word_box[2] <= segment_box[2] and word_box[3] <= segment_box[3]
            num_differing += segment_box != word_box
    assert num_differing > 100


def test_words_are_drawn_inside_their_boxes(word_level_forms):
    for example in word_level_forms.select(range(3)):
        ink = np.asarray(example["image"].convert("L")) < 200
        height, width = ink.shape
        covered = np.zeros_like(ink)
        for x0, y0, x1, y1 in example["bboxes"]:
            # Normalising to 0-1000 floors each coordinate, so widen by one pixel to cover the glyphs.
            left, top = int(x0 * width / 1000), int(y0 * height / 1000)
            right, bottom = int(x1 * width / 1000) + 2, int(y1 * height / 1000) + 2
            assert ink[top:bottom, left:right].any()
            covered[top:bottom, left:right] = True
        # Outside the word boxes there is only ruling (horizontal lines), never glyphs.
        stray_rows = (ink & ~covered).sum(axis=1)
        stray_row_indices = np.flatnonzero(stray_rows)
        for row in stray_row_indices:
            assert stray_rows[row] > 20 or stray_rows[max(row - 1, 0)] > 20 or stray_rows[min(row + 1, height - 1)] > 20


def test_load_synthetic_funsd_splits_differ():
    splits = load_synthetic_funsd(num_train=4, num_test=3, seed=0)
    assert {name: dataset.num_rows for name, dataset in splits.items()} == {"train": 4, "test": 3}
    assert splits["train"]["id"][0] == "train_00000" and splits["test"]["id"][0] == "test_00000"
    assert splits["train"]["words"][:3] != splits["test"]["words"]
    assert splits["train"].features == splits["test"].features == funsd_features()


def test_custom_page_size():
    dataset = generate_synthetic_forms(2, seed=1, image_size=(600, 800))
    assert dataset[0]["image"].size == (600, 800)
    assert all(0 <= value <= 1000 for boxes in dataset["bboxes"] for box in boxes for value in box)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"num_documents": 0}, "num_documents"), ({"num_documents": 2, "image_size": (100, 1000)}, "image_size")],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_synthetic_forms(**kwargs)


def test_hundred_forms_are_fast():
    start = time.perf_counter()
    dataset = generate_synthetic_forms(100, seed=7)
    assert dataset.num_rows == 100
    assert time.perf_counter() - start < 10.0
