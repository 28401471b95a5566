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
"""Tests of the CORD reader on a CORD-v2-format fixture built here (labels, quads turned into boxes, segment-level
boxes, counted problems) and of `examples/run_cord.py` for 2 steps on it."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
from conftest import load_example
from PIL import Image

from aetnet.data.cord import CORD_ENTITY_TYPES, CORD_LABELS, cord_features, load_cord, quad_to_box


def quad(x0, y0, x1, y1, skew=0):
    """A CORD quad (clockwise from the top left); `skew` tilts it, as on photographed receipts."""
    return {"x1": x0, "y1": y0 + skew, "x2": x1, "y2": y0, "x3": x1 + skew, "y3": y1, "x4": x0 + skew, "y4": y1 + skew}


# A 400 x 200 receipt: x maps to 2.5 * x and y to 5 * y on the 0-1000 grid.
RECEIPT = [
    {
        "category": "menu.nm",
        "group_id": 1,
        "words": [
            {"text": "ICED", "quad": quad(10, 10, 50, 30, skew=2), "is_key": 0, "row_id": 1},
            {"text": "LATTE", "quad": quad(60, 12, 120, 32), "is_key": 0, "row_id": 1},
        ],
    },
    {"category": "menu.cnt", "group_id": 1, "words": [{"text": "2", "quad": quad(200, 10, 210, 30), "row_id": 1}]},
    {"category": "menu.price", "group_id": 1, "words": [{"text": "56,000", "quad": quad(300, 10, 380, 30)}]},
    {
        "category": "total.total_price",
        "group_id": 2,
        "words": [
            {"text": "TOTAL", "quad": quad(10, 100, 80, 120)},
            {"text": " ", "quad": quad(85, 100, 90, 120)},  # empty text: dropped and counted
            {"text": "56,000", "quad": quad(300, 100, 410, 120)},  # past the right edge: clipped and counted
        ],
    },
    {"category": "menu.unknowncat", "group_id": 3, "words": [{"text": "THANKS", "quad": quad(10, 150, 90, 170)}]},
]


def write_receipt(root: Path, split: str, stem: str, lines: list[dict], size=(400, 200), meta_size=None) -> None:
    for folder in ("json", "image"):
        (root / split / folder).mkdir(parents=True, exist_ok=True)
    width, height = meta_size or size
    annotation = {
        "valid_line": lines,
        "meta": {"version": "v2.0", "split": split, "image_id": 0, "image_size": {"width": width, "height": height}},
        "roi": {},
        "repeating_symbol": [],
        "dontcare": [],
    }
    (root / split / "json" / f"{stem}.json").write_text(json.dumps(annotation))
    Image.new("RGB", size, "white").save(root / split / "image" / f"{stem}.png")


@pytest.fixture
def cord_dir(tmp_path):
    root = tmp_path / "CORD"
    for split in ("train", "dev", "test"):
        write_receipt(root, split, "receipt_00001", RECEIPT)
        write_receipt(root, split, "receipt_00000", RECEIPT[:3])
    return root


def test_label_set():
    assert len(CORD_ENTITY_TYPES) == 30 and len(CORD_LABELS) == 61 and CORD_LABELS[0] == "O"
    assert CORD_LABELS[1] == "B-MENU.NM" and CORD_LABELS[31] == "I-MENU.NM" and CORD_LABELS[-1] == "I-TOTAL.MENUQTY_CNT"
    assert cord_features()["ner_tags"].feature.names == CORD_LABELS


def test_quad_to_box():
    assert quad_to_box(quad(10, 10, 50, 30, skew=2)) == [10, 10, 52, 32]
    assert quad_to_box({"x1": 5, "y1": 9, "x2": 1, "y2": 3, "x3": 4, "y3": 8, "x4": 2, "y4": 7}) == [1, 3, 5, 9]
    with pytest.raises(ValueError, match="x1..x4 and y1..y4"):
        quad_to_box({"x1": 0})


def test_load_cord_labels_and_segment_boxes(cord_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="aetnet.data.cord"):
        cord = load_cord(cord_dir)
    assert sorted(cord) == ["test", "train", "validation"]
    receipt = cord["train"][1]
    assert cord["train"]["id"] == ["receipt_00000", "receipt_00001"]
    assert receipt["words"] == ["ICED", "LATTE", "2", "56,000", "TOTAL", "56,000", "THANKS"]
    tags = [CORD_LABELS[i] for i in receipt["ner_tags"]]
    assert tags == [
        "B-MENU.NM",
        "I-MENU.NM",
        "B-MENU.CNT",
        "B-MENU.PRICE",
        "B-TOTAL.TOTAL_PRICE",
        "I-TOTAL.TOTAL_PRICE",
        "O",
    ]
    # Segment-level: both words of the first line get the union of their quads' boxes, [10, 10, 120, 32] in pixels.
    assert receipt["bboxes"][0] == receipt["bboxes"][1] == [25, 50, 300, 160]
    # The total line: [10, 100, 400 (clipped from 410), 120] -> one box for its two kept words.
    assert receipt["bboxes"][4] == receipt["bboxes"][5] == [25, 500, 1000, 600]
    assert receipt["image"].mode == "RGB" and receipt["image"].size == (400, 200)
    assert "empty_words: 1" in caplog.text and "clipped_boxes: 1" in caplog.text
    assert "unknown category 'MENU.UNKNOWNCAT': 1" in caplog.text

    words = load_cord(cord_dir, word_level=True, splits=["train"])["train"][1]
    assert words["bboxes"][0] == [25, 50, 130, 160] and words["bboxes"][1] == [150, 60, 300, 160]


def test_boxes_follow_meta_image_size(tmp_path, caplog):
    # The image was resized to half its size: the quads still refer to meta.image_size.
    write_receipt(tmp_path, "train", "r", RECEIPT[:1], size=(200, 100), meta_size=(400, 200))
    with caplog.at_level(logging.WARNING, logger="aetnet.data.cord"):
        receipt = load_cord(tmp_path, splits="train")["train"][0]
    assert receipt["bboxes"][0] == [25, 50, 300, 160] and "size_mismatch: 1" in caplog.text


def test_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        load_cord(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="`splits` must be"):
        load_cord(tmp_path, splits=["dev"])
    write_receipt(tmp_path, "train", "r", RECEIPT[:1])
    (tmp_path / "train" / "image" / "r.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"No image r\{.png,.jpg,.jpeg\}"):
        load_cord(tmp_path, splits="train")
    write_receipt(tmp_path, "train", "r", [{"category": "menu.nm", "words": [{"text": "A"}]}])
    with pytest.raises(ValueError, match=r"valid_line\[0\].words\[0\] has no `quad`"):
        load_cord(tmp_path, splits="train")


def test_run_cord_two_steps(cord_dir, tmp_path, monkeypatch, restore_logging):
    run_cord = load_example("run_cord")
    output_dir = tmp_path / "out"
    argv = [
        "run_cord.py",
        f"--dataset_dir={cord_dir}",
        f"--output_dir={output_dir}",
        "--max_seq_length=16",
        "--doc_stride=4",
        "--max_steps=2",
        "--per_device_train_batch_size=2",
        "--tokenizer_vocab_size=300",
        "--report_to=none",
        "--dataloader_pin_memory=False",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    metrics = run_cord.main()

    assert {"eval_precision", "eval_recall", "eval_f1", "eval_loss_task"} <= set(metrics)
    config = json.loads((output_dir / "config.json").read_text())
    assert len(config["id2label"]) == 61 and config["id2label"]["1"] == "B-MENU.NM"
    state = json.loads((output_dir / "predict_results.json").read_text())
    assert 0.0 <= state["predict_f1"] <= 1.0
    predictions = [json.loads(line) for line in (output_dir / "predictions.jsonl").read_text().splitlines()]
    assert [len(p["predicted_labels"]) for p in predictions] == [4, 7]  # one label per word, windows merged
    assert all(label in CORD_LABELS for p in predictions for label in p["predicted_labels"])
    # 61 labels: LayoutLMv3's MLP token head, not a single linear layer.
    from aetnet import AETNetForTokenClassification

    model = AETNetForTokenClassification.from_pretrained(output_dir)
    assert type(model.classifier).__name__ == "LayoutLMv3ClassificationHead"
