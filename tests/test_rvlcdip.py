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
"""Tests of document classification: the RVL-CDIP readers, the classification metrics and confusion-matrix plot, and
`examples/run_rvlcdip.py` (AETNet and `--baseline layoutlmv3`) for 2 steps on six rendered pages."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytesseract
import pytest
from conftest import load_example
from huggingface_hub import ModelCard
from PIL import Image, ImageDraw, ImageFont

import aetnet.data.ocr_cache as ocr_cache_module
from aetnet.data.ocr_cache import OCRCache
from aetnet.data.rvlcdip import RVLCDIP_LABELS, load_rvlcdip
from aetnet.metrics import classification_metrics, confusion_matrix, plot_confusion_matrix


REPO = Path(__file__).resolve().parents[1]
RVLCDIP3_DIR = Path(os.environ.get("AETNET_RVLCDIP3_DIR", REPO.parent / "shared" / "data" / "rvlcdip3"))
requires_rvlcdip3 = pytest.mark.shared_data


# ---- Readers ----


def write_pages(root: Path, names: list[str]) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (20, 30), 255).save(root / name)


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(record) + "\n" for record in records) + "\n")


def test_jsonl_layout(tmp_path):
    write_pages(tmp_path, ["memo/a.png", "memo/b.png", "email/c.png"])
    write_jsonl(
        tmp_path / "train.jsonl",
        [{"image": "memo/a.png", "label": "memo"}, {"image": "email/c.png", "label": "email"}],
    )
    write_jsonl(tmp_path / "dev.jsonl", [{"image": "memo/b.png", "label": "memo"}])
    pages = load_rvlcdip(tmp_path)
    assert sorted(pages) == ["train", "validation"]  # dev.jsonl is the validation split
    assert pages["train"].features["label"].names == ["email", "memo"]  # sorted names of all splits
    assert pages["train"]["label"] == [1, 0] and pages["validation"]["id"] == ["memo/b.png"]
    assert pages["train"]["image"][0] == str((tmp_path / "memo" / "a.png").resolve())
    assert "words" not in pages["train"].column_names

    # Files may carry their own OCR, for every line or none; explicit files override the folder's.
    with_ocr = [
        {"image": "memo/a.png", "label": "memo", "words": ["To:", "Bob"], "bboxes": [[1, 2, 3, 4], [5, 6, 7, 8]]}
    ]
    write_jsonl(tmp_path / "ocr.jsonl", with_ocr)
    pages = load_rvlcdip(tmp_path, train_file=tmp_path / "ocr.jsonl", label_names=["email", "memo", "letter"])
    assert pages["train"]["words"] == [["To:", "Bob"]] and pages["train"]["bboxes"][0][1] == [5, 6, 7, 8]
    assert pages["validation"].features["label"].names == ["email", "memo", "letter"]
    write_jsonl(tmp_path / "mixed.jsonl", with_ocr + [{"image": "memo/b.png", "label": "memo"}])
    with pytest.raises(ValueError, match="mixed.jsonl:2 has no `words`"):
        load_rvlcdip(train_file=tmp_path / "mixed.jsonl")


def test_rvlcdip_release_layout(tmp_path):
    write_pages(tmp_path / "images", ["imagesa/a/x 1.tif", "imagesb/b/y.tif"])
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "train.txt").write_text("imagesa/a/x 1.tif 14\nimagesb/b/y.tif 2\n")
    (tmp_path / "labels" / "test.txt").write_text("imagesb/b/y.tif 15\n")
    pages = load_rvlcdip(tmp_path)
    assert sorted(pages) == ["test", "train"] and len(RVLCDIP_LABELS) == 16
    names = pages["train"].features["label"].names
    assert names == RVLCDIP_LABELS and [names[i] for i in pages["train"]["label"]] == ["resume", "email"]
    assert pages["train"]["id"][0] == "imagesa/a/x 1.tif"  # a path with a space
    assert names[pages["test"]["label"][0]] == "memo"


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        ("imagesa/a/x.tif 16\n", ValueError, "train.txt:1: label id 16 is outside the 16 classes"),
        ("lonely\n", ValueError, "train.txt:1 must read `<image path> <label>`"),
        ("imagesa/a/missing.tif 1\n", FileNotFoundError, "train.txt:1: the image .*missing.tif does not exist"),
    ],
)
def test_reader_errors(tmp_path, content, error, message):
    write_pages(tmp_path / "images", ["imagesa/a/x.tif"])
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "train.txt").write_text(content)
    with pytest.raises(error, match=message):
        load_rvlcdip(tmp_path)


def test_reader_errors_without_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="No split files"):
        load_rvlcdip(tmp_path)
    with pytest.raises(ValueError, match="Give `data_dir`"):
        load_rvlcdip()
    write_pages(tmp_path, ["a.png"])
    write_jsonl(tmp_path / "train.jsonl", [{"image": "a.png", "label": "memo"}])
    with pytest.raises(ValueError, match="label 'memo' is not one of the classes"):
        load_rvlcdip(tmp_path, label_names=["email"])


@requires_rvlcdip3
def test_real_rvlcdip3_layout():
    pages = load_rvlcdip(RVLCDIP3_DIR)
    assert (len(pages["train"]), len(pages["validation"])) == (132, 33)
    assert pages["train"].features["label"].names == ["email", "paper", "resume"]
    assert np.bincount(pages["train"]["label"]).tolist() == [44, 44, 44]


# ---- Metrics ----


def test_classification_metrics_and_confusion_matrix(tmp_path):
    labels = np.array([0, 0, 1, 1, 2, 2])
    predictions = np.array([0, 1, 1, 1, 2, 0])
    # Per class: F1(0) = 2*1/(2+2) = 0.5, F1(1) = 2*2/(3+2) = 0.8, F1(2) = 2*1/(1+2) = 2/3.
    scores = classification_metrics(predictions, labels, ["a", "b", "c"], per_class=True)
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert (scores["f1_a"], scores["f1_b"], scores["f1_c"]) == pytest.approx((0.5, 0.8, 2 / 3))
    matrix = confusion_matrix(predictions, labels)
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    logits = np.eye(4)[predictions]  # a 4th class never seen: it does not enter the macro average
    assert classification_metrics(logits, labels)["macro_f1"] == pytest.approx(scores["macro_f1"])
    assert confusion_matrix(logits, labels).shape == (4, 4)
    with pytest.raises(ValueError, match=r"labels\[1\]` is 5, outside \[0, 3\)"):
        classification_metrics([0, 0], [0, 5], ["a", "b", "c"])
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix([0, 1, 2], [0, 1])

    path = plot_confusion_matrix(matrix, ["a", "b", "c"], tmp_path / "matrix.png", normalize=True)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 100
    with pytest.raises(ValueError, match="square"):
        plot_confusion_matrix(matrix, ["a", "b"], tmp_path / "bad.png")


# ---- run_rvlcdip.py end to end, 2 steps, six rendered pages whose OCR is already in the cache ----

CLASS_TEXT = {
    "email": ["From: Alice", "To: Bob", "Subject: budget"],
    "paper": ["Abstract", "We propose a method", "References"],
    "resume": ["Education", "Experience", "Skills"],
}


@pytest.fixture
def rendered_pages(tmp_path, monkeypatch):
    """Six pages (two per class) in the rvlcdip3 layout, their OCR cached under the real Tesseract settings."""
    font = ImageFont.load_default(size=16)
    ocr, records = {}, {"train": [], "dev": []}
    for class_index, (label, lines) in enumerate(CLASS_TEXT.items()):
        for copy in range(2):
            size = (300 + 10 * class_index + copy, 200)  # a distinct size per page names its words below
            page = Image.new("L", size, 255)
            draw = ImageDraw.Draw(page)
            words, boxes = [], []
            for row, line in enumerate(lines):
                draw.text((10, 10 + 30 * row), line, fill=0, font=font)
                for column, word in enumerate(line.split()):
                    words.append(word)
                    boxes.append([30 + 200 * column, 50 + 150 * row, 180 + 200 * column, 120 + 150 * row])
            name = f"{label}/doc_{copy}.png"
            (tmp_path / label).mkdir(exist_ok=True)
            page.save(tmp_path / name)
            ocr[size] = (words, boxes)
            records["train" if copy == 0 else "dev"].append({"image": name, "label": label})
    for split, split_records in records.items():
        write_jsonl(tmp_path / f"{split}.jsonl", split_records)
    engine = f"tesseract {pytesseract.get_tesseract_version()}"
    OCRCache(tmp_path / "ocr", ocr_function=lambda page, lang, config: ocr[page.size], engine=engine).ocr_pages(
        sorted(tmp_path.glob("*/doc_*.png")), show_progress=False
    )
    monkeypatch.setattr(ocr_cache_module, "_tesseract", lambda *args: pytest.fail("Tesseract ran on a cached page"))
    return tmp_path


@pytest.mark.parametrize("baseline", [None, "layoutlmv3"])
def test_run_rvlcdip_two_steps(rendered_pages, tmp_path, monkeypatch, restore_logging, baseline):
    output_dir = tmp_path / "out"
    argv = [
        "run_rvlcdip.py",
        f"--dataset_dir={rendered_pages}",
        f"--output_dir={output_dir}",
        f"--ocr_cache_dir={rendered_pages / 'ocr'}",
        "--max_seq_length=16",
        "--max_steps=2",
        "--per_device_train_batch_size=2",
        "--tokenizer_vocab_size=300",
        "--report_to=none",
        "--dataloader_pin_memory=False",
    ] + ([f"--baseline={baseline}"] if baseline else [])
    monkeypatch.setattr(sys, "argv", argv)
    metrics = load_example("run_rvlcdip").main()

    assert 0.0 <= metrics["eval_accuracy"] <= 1.0 and 0.0 <= metrics["eval_macro_f1"] <= 1.0
    assert metrics["eval_samples"] == 3
    assert ("eval_loss_ditc" in metrics) == (baseline is None)  # alignment losses are AETNet's only
    matrix = json.loads((output_dir / "confusion_matrix.json").read_text())
    assert matrix["labels"] == ["email", "paper", "resume"] and np.sum(matrix["rows_true_columns_predicted"]) == 3
    assert (output_dir / "confusion_matrix.png").stat().st_size > 0
    predictions = [json.loads(line) for line in (output_dir / "predictions.jsonl").read_text().splitlines()]
    assert [p["id"] for p in predictions] == ["email/doc_1.png", "paper/doc_1.png", "resume/doc_1.png"]
    assert all(p["predicted_label"] in CLASS_TEXT and 0 < p["score"] <= 1 for p in predictions)
    config = json.loads((output_dir / "config.json").read_text())
    assert config["model_type"] == ("layoutlmv3" if baseline else "aetnet")
    assert config["id2label"] == {"0": "email", "1": "paper", "2": "resume"}
    # The model card says which model it is: a baseline is not presented as AETNet.
    card = ModelCard.load(output_dir / "README.md")
    assert ("aetnet-baseline" in card.data.tags) == bool(baseline) and ("aetnet" in card.data.tags) != bool(baseline)
    assert ("It is not an AETNet model." in card.text) == bool(baseline)
    assert ("Loss weights" in card.text) == ("alignment encoder whose outputs" in card.text) == (not baseline)


def test_run_rvlcdip_with_ocr_in_the_split_files_needs_no_tesseract(
    rendered_pages, tmp_path, monkeypatch, restore_logging
):
    """Pages whose split files carry `words` and `bboxes` are used as given: no OCR cache, no Tesseract needed."""
    for split in ("train", "dev"):
        lines = (rendered_pages / f"{split}.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines if line]
        for record in records:
            record["words"] = ["Hello", record["label"]]
            record["bboxes"] = [[10, 10, 100, 40], [10, 50, 100, 80]]
        write_jsonl(rendered_pages / f"{split}.jsonl", records)
    monkeypatch.setattr(ocr_cache_module, "OCRCache", lambda *args, **kwargs: pytest.fail("OCR was set up"))
    monkeypatch.setattr(pytesseract, "get_tesseract_version", lambda: pytest.fail("Tesseract was asked for"))
    argv = [
        "run_rvlcdip.py",
        f"--dataset_dir={rendered_pages}",
        f"--output_dir={tmp_path / 'out'}",
        "--max_seq_length=16",
        "--max_steps=1",
        "--per_device_train_batch_size=2",
        "--tokenizer_vocab_size=300",
        "--report_to=none",
        "--dataloader_pin_memory=False",
        "--do_predict=False",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    metrics = load_example("run_rvlcdip").main()
    assert metrics["eval_samples"] == 3 and 0.0 <= metrics["eval_accuracy"] <= 1.0
