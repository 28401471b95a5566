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
"""Tests of the FUNSD reader: a hand-made form in a temporary folder, bad layouts, and the real FUNSD release."""

import json
import logging
import os
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from aetnet.data import FUNSD_LABELS, funsd_features, load_funsd, load_funsd_like


FUNSD_DIR = Path(os.environ.get("AETNET_FUNSD_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "funsd"))
requires_funsd = pytest.mark.shared_data  # deselect with -m "not shared_data" where ../shared is absent

# A 200 x 100 page: every pixel coordinate x maps to 5 * x and y to 10 * y on the 0-1000 grid.
TINY_FORM = [
    {
        "id": 0,
        "label": "header",
        "words": [{"text": "ORDER", "box": [10, 5, 40, 15]}, {"text": "FORM", "box": [44, 5, 70, 15]}],
    },
    {
        "id": 1,
        "label": "question",
        "words": [
            {"text": "Ship", "box": [10, 30, 30, 40]},
            {"text": " ", "box": [30, 30, 32, 40]},
            {"text": "To:", "box": [34, 30, 50, 42]},
        ],
    },
    {
        "id": 2,
        "label": "answer",
        "words": [{"text": "Acme", "box": [60, 30, 90, 40]}, {"text": "Inc.", "box": [180, 31, 230, 41]}],
    },
    {
        "id": 3,
        "label": "other",
        "words": [{"text": "Page", "box": [10, 80, 30, 90]}, {"text": "1", "box": [32, 80, 36, 90]}],
    },
    {"id": 4, "label": "answer", "words": [{"text": "", "box": [0, 0, 1, 1]}]},
]


def write_funsd(root: Path, forms: dict[str, list[dict]], split_folder: str = "training_data") -> Path:
    for sub in ("annotations", "images"):
        (root / split_folder / sub).mkdir(parents=True, exist_ok=True)
    for stem, form in forms.items():
        (root / split_folder / "annotations" / f"{stem}.json").write_text(json.dumps({"form": form}))
        Image.new("L", (200, 100), 255).save(root / split_folder / "images" / f"{stem}.png")
    return root


@pytest.fixture
def tiny_funsd(tmp_path):
    return write_funsd(tmp_path / "funsd", {"b_form": TINY_FORM, "a_form": TINY_FORM[:1]})


def test_tiny_form_segment_level(tiny_funsd, caplog):
    with caplog.at_level(logging.WARNING, logger="aetnet.data.funsd"):
        dataset = load_funsd(tiny_funsd, splits=("train",))["train"]
    assert dataset.features == funsd_features()
    assert dataset["id"] == ["a_form", "b_form"]
    example = dataset[1]
    assert example["words"] == ["ORDER", "FORM", "Ship", "To:", "Acme", "Inc.", "Page", "1"]
    names = [FUNSD_LABELS[tag] for tag in example["ner_tags"]]
    assert names == ["B-HEADER", "I-HEADER", "B-QUESTION", "I-QUESTION", "B-ANSWER", "I-ANSWER", "O", "O"]
    header, question, answer, other = (
        [50, 50, 350, 150],
        [50, 300, 250, 420],
        [300, 300, 1000, 410],
        [50, 800, 180, 900],
    )
    # "Inc." sticks out of the 200 px page and is clipped to x1 = 200 before normalising.
    assert example["bboxes"] == [header] * 2 + [question] * 2 + [answer] * 2 + [other] * 2
    assert example["image"].mode == "RGB" and example["image"].size == (200, 100)
    message = caplog.text
    assert "skipped 2 words with empty text" in message and "1 entities left without words" in message
    assert "clipped 1 word boxes" in message


def test_tiny_form_word_level(tiny_funsd):
    example = load_funsd(tiny_funsd, word_level=True, splits="train")["train"][1]
    assert example["bboxes"][:4] == [
        [50, 50, 200, 150],
        [220, 50, 350, 150],
        [50, 300, 150, 400],
        [170, 300, 250, 420],
    ]
    assert example["bboxes"][5] == [900, 310, 1000, 410]


def test_layout_errors(tmp_path, tiny_funsd):
    with pytest.raises(FileNotFoundError, match="missing"):
        load_funsd(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="testing_data"):
        load_funsd(tiny_funsd)  # the fixture only has training_data/
    with pytest.raises(ValueError, match="splits"):
        load_funsd(tiny_funsd, splits=("validation",))
    (tiny_funsd / "training_data" / "images" / "a_form.png").unlink()
    with pytest.raises(FileNotFoundError, match="a_form.png"):
        load_funsd(tiny_funsd, splits=("train",))


@pytest.mark.parametrize(
    "entity, match",
    [
        ({"id": 0, "label": "title", "words": [{"text": "A", "box": [0, 0, 5, 5]}]}, "entity 0 has label 'title'"),
        (
            {"id": 0, "label": "answer", "words": [{"text": "A", "box": [9, 0, 5, 5]}]},
            r"entity 0, word 0 has an inverted box \[9, 0, 5, 5\]",
        ),
    ],
)
def test_bad_annotations(tmp_path, entity, match):
    root = write_funsd(tmp_path, {"bad": [entity]})
    with pytest.raises(ValueError, match=match):
        load_funsd(root, splits=("train",))


def test_load_funsd_like(tiny_funsd, tmp_path):
    local = load_funsd_like(tiny_funsd, splits=("train",))["train"]
    assert local["words"] == load_funsd(tiny_funsd, splits=("train",))["train"]["words"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_funsd_like(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="word_level"):
        load_funsd_like("nielsr/funsd-layoutlmv3", word_level=True)
    # The Hub is unreachable here (tests run with HF_HUB_OFFLINE=1): the error names the id and says what to pass.
    with pytest.raises(FileNotFoundError, match="'nielsr/funsd-layoutlmv3' is not a local folder.*Hugging Face Hub"):
        load_funsd_like("nielsr/funsd-layoutlmv3")


@pytest.fixture(scope="module")
def funsd():
    return load_funsd(FUNSD_DIR)


def entity_spans(tags: list[str]) -> list[tuple[int, int]]:
    """(start, end) of each B-/I- run."""
    spans = []
    for index, tag in enumerate(tags):
        if tag.startswith("B-"):
            spans.append([index, index + 1])
        elif tag.startswith("I-"):
            assert spans and spans[-1][1] == index and tags[spans[-1][0]][2:] == tag[2:], f"stray {tag} at {index}"
            spans[-1][1] = index + 1
    return [tuple(span) for span in spans]


@requires_funsd
def test_real_funsd_schema_and_counts(funsd):
    assert {split: funsd[split].num_rows for split in funsd} == {"train": 149, "test": 50}
    assert funsd["train"].features == funsd_features()
    assert funsd["train"].features["ner_tags"].feature.names == FUNSD_LABELS
    assert funsd["train"]["id"] == sorted(
        path.stem for path in (FUNSD_DIR / "training_data" / "annotations").glob("*.json")
    )
    # README counts: train 22,512 words, header 441 / question 3,266 / answer 2,802 entities; test 8,973 words,
    # 122 / 1,077 / 821. The reader drops the words with empty text (624 train, 266 test), and with them the entities
    # made only of such words: train 13 questions and 70 answers, test 3 headers, 7 questions and 12 answers.
    expected = {
        "train": (22512 - 624, {"HEADER": 441, "QUESTION": 3266 - 13, "ANSWER": 2802 - 70}),
        "test": (8973 - 266, {"HEADER": 122 - 3, "QUESTION": 1077 - 7, "ANSWER": 821 - 12}),
    }
    for split, (num_words, entities) in expected.items():
        tags = [FUNSD_LABELS[tag] for example in funsd[split]["ner_tags"] for tag in example]
        assert len(tags) == num_words == sum(len(words) for words in funsd[split]["words"])
        assert Counter(tag[2:] for tag in tags if tag.startswith("B-")) == entities


@requires_funsd
def test_real_funsd_boxes(funsd):
    word_level = load_funsd(FUNSD_DIR, word_level=True, splits=("train",))["train"]
    assert word_level["words"] == funsd["train"]["words"]
    assert word_level["ner_tags"] == funsd["train"]["ner_tags"]
    num_differing = 0
    for segment_example, word_example in zip(funsd["train"], word_level):
        tags = [FUNSD_LABELS[tag] for tag in segment_example["ner_tags"]]
        for box in segment_example["bboxes"] + word_example["bboxes"]:
            assert 0 <= box[0] <= box[2] <= 1000 and 0 <= box[1] <= box[3] <= 1000, box
        for start, end in entity_spans(tags):
            segment_boxes = segment_example["bboxes"][start:end]
            assert all(box == segment_boxes[0] for box in segment_boxes)
            x0, y0, x1, y1 = segment_boxes[0]
            for wx0, wy0, wx1, wy1 in word_example["bboxes"][start:end]:
                assert x0 <= wx0 and y0 <= wy0 and wx1 <= x1 and wy1 <= y1
        num_differing += sum(a != b for a, b in zip(segment_example["bboxes"], word_example["bboxes"]))
    assert num_differing > 10000


@requires_funsd
def test_real_funsd_first_form(funsd):
    example = funsd["train"][0]
    raw = json.loads((FUNSD_DIR / "training_data" / "annotations" / f"{example['id']}.json").read_text())["form"]
    entity = next(
        e
        for e in raw
        if e["label"] == "question" and len(e["words"]) > 2 and all(w["text"].strip() for w in e["words"])
    )
    texts = [word["text"] for word in entity["words"]]
    start = next(i for i in range(len(example["words"])) if example["words"][i : i + len(texts)] == texts)
    with Image.open(FUNSD_DIR / "training_data" / "images" / f"{example['id']}.png") as image:
        width, height = image.size
    x0s, y0s, x1s, y1s = zip(*(word["box"] for word in entity["words"]))
    union = [
        int(1000 * min(x0s) / width),
        int(1000 * min(y0s) / height),
        int(1000 * max(x1s) / width),
        int(1000 * max(y1s) / height),
    ]
    assert example["bboxes"][start : start + len(texts)] == [union] * len(texts)
    assert [FUNSD_LABELS[t] for t in example["ner_tags"][start : start + len(texts)]] == ["B-QUESTION"] + [
        "I-QUESTION"
    ] * (len(texts) - 1)
    assert example["image"].mode == "RGB" and example["image"].size == (width, height)
