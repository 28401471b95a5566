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
"""Tests of the SROIE field-to-word match rule and the task-3 scorer on hand-made examples, of the reader on real
receipts of `../shared/data/sroie` (and its coverage of the training split's fields), and of `examples/run_sroie.py`
for 2 steps on a few of them."""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import pytest
from conftest import load_example

from aetnet.data.sroie import (
    SROIE_FIELDS,
    SROIE_LABELS,
    duplicate_test_receipts,
    load_sroie,
    match_field,
    read_sroie_fields,
)
from aetnet.metrics import fields_from_word_labels, normalize_field, sroie_task3_scores


REPO = Path(__file__).resolve().parents[1]
SROIE_DIR = Path(os.environ.get("AETNET_SROIE_DIR", REPO.parent / "shared" / "data" / "sroie"))
requires_sroie = pytest.mark.shared_data  # deselect with -m "not shared_data" where ../shared is absent


def test_labels():
    assert SROIE_LABELS == [
        "O",
        "B-COMPANY",
        "I-COMPANY",
        "B-DATE",
        "I-DATE",
        "B-ADDRESS",
        "I-ADDRESS",
        "B-TOTAL",
        "I-TOTAL",
    ]


def test_match_multi_line_address():
    # Three OCR lines in reading order; the field string joins them with single spaces.
    words = ["789417-W", "NO.53", "55,57", "&", "59,", "JALAN", "SAGU", "18,", "TAMAN", "DAYA,", "JOHOR.", "TEL"]
    assert match_field(words, "NO.53 55,57 & 59, JALAN SAGU 18, TAMAN DAYA, JOHOR.") == ((1, 11), "whole_word")
    # Case and spacing do not matter: "K(TAMAN" in the OCR is "K (TAMAN" in the field.
    assert match_field(["BOOK", "TA", ".K(TAMAN", "DAYA)", "SDN"], "book ta .k (taman daya) sdn") == (
        (0, 5),
        "whole_word",
    )


def test_match_total_inside_a_line():
    words = ["SUBTOTAL", "9.00", "TOTAL", "(RM):", "9.00", "CASH", "10.00"]
    assert match_field(words, "9.00", last=True) == ((4, 5), "whole_word")  # total: the last match
    assert match_field(words, "9.00") == ((1, 2), "whole_word")  # the others: the first
    # "9.0" is only a part of words: no whole-word match, a match inside words ("19.0" does not count as whole).
    assert match_field(["19.00", "TOTAL"], "9.0") == ((0, 1), "inside_word")
    # A whole-word match is preferred to an earlier match inside a word.
    assert match_field(["DATE:25/12/2018", "25/12/2018"], "25/12/2018") == ((1, 2), "whole_word")
    assert match_field(["DATE:25/12/2018", "8:13"], "25/12/2018") == ((0, 1), "inside_word")


def test_match_without_punctuation():
    # The annotation's full stop and comma are not in the OCR: found with letters and digits only, over two lines.
    words = ["NO", "122.124", "JALAN", "DEDAP", "13", "81100", "JOHOR", "BAHRU"]
    assert match_field(words, "NO 122.124. JALAN DEDAP 13, 81100 JOHOR BAHRU") == ((0, 8), "without_punctuation")
    # A word of punctuation only inside the run is covered by the span.
    assert match_field(["A", "&", "B", "SDN"], "A B") == ((0, 3), "without_punctuation")


def test_match_none():
    assert match_field(["SDN", "BND"], "SDN BHD") == (None, None)
    assert match_field(["SDN", "BHD"], "  ") == (None, None)
    assert match_field([], "9.00") == (None, None)


def test_task3_scores():
    assert normalize_field("  A \n B\tC ") == "A B C" and normalize_field(None) == ""
    gold = [
        {"company": "ABC SDN BHD", "date": "01/01/2019", "address": "1 JALAN", "total": "9.00"},
        {"company": "XYZ", "date": "02/01/2019", "address": "", "total": "3.00"},
    ]
    predicted = [
        {"company": "ABC  SDN BHD", "date": "01/01/2019", "address": "1 JALAN X", "total": "9.00"},
        {"company": "", "date": "02/01/2019", "address": "", "total": "30.00"},
    ]
    scores = sroie_task3_scores(predicted, gold, SROIE_FIELDS)
    # 7 non-empty gold fields, 6 predicted, 4 right (company, two dates, one total).
    assert scores["task3_precision"] == pytest.approx(4 / 6) and scores["task3_recall"] == pytest.approx(4 / 7)
    assert scores["task3_f1"] == pytest.approx(2 * 4 / (6 + 7))
    assert scores["task3_company_precision"] == 1.0 and scores["task3_company_recall"] == 0.5
    assert scores["task3_date_f1"] == 1.0 and scores["task3_address_f1"] == 0.0
    assert scores["task3_total_accuracy"] == 0.5
    with pytest.raises(ValueError, match="1 predictions for 2 receipts"):
        sroie_task3_scores(predicted[:1], gold, SROIE_FIELDS)


def test_fields_from_word_labels():
    words = ["ABC", "SDN", "BHD", "TOTAL", "9.00", "CASH", "9.00", "X", "Y"]
    labels = ["B-COMPANY", "I-COMPANY", "I-COMPANY", "O", "B-TOTAL", "O", "B-TOTAL", "I-DATE", "I-DATE"]
    fields = fields_from_word_labels(words, labels, SROIE_FIELDS)
    # The first entity of each field; an I- label that does not continue its type starts an entity.
    assert fields == {"company": "ABC SDN BHD", "date": "X Y", "address": "", "total": "9.00"}


@requires_sroie
def test_reader_on_real_receipts(tmp_path):
    root = few_receipts(tmp_path)
    raw, stats = load_sroie(root)
    receipt = raw["train"][0]
    assert receipt["id"] == "000" and receipt["image"].mode == "RGB"
    words, tags = receipt["words"], [SROIE_LABELS[i] for i in receipt["ner_tags"]]
    assert len(words) == len(tags) == len(receipt["bboxes"])
    spans = {label: [w for w, t in zip(words, tags) if t.endswith(label)] for label in ("DATE", "ADDRESS", "TOTAL")}
    assert spans["DATE"] == ["25/12/2018"]
    assert " ".join(spans["ADDRESS"]) == read_sroie_fields(root, "000")["address"]
    # The total, 9.00, is also an item's amount and the rounded total: its last occurrence (the receipt's last
    # line) is tagged.
    assert spans["TOTAL"] == ["9.00"] and tags.index("B-TOTAL") == len(words) - 1 and words.count("9.00") == 3
    # The OCR reads the company "... SDN BND": no match, counted.
    assert "B-COMPANY" not in tags and stats["train"].unmatched["company"] >= 1
    # Segment-level boxes: the words of a line share its box.
    date = words.index("25/12/2018")
    assert receipt["bboxes"][date] == receipt["bboxes"][date + 1]
    # Test: test_294 repeats training image 073 and is left out by default.
    assert "test_294" in duplicate_test_receipts(root) and len(duplicate_test_receipts(root)) == 7
    assert raw["test"]["id"] == ["test_001", "test_002"] and stats["test"].duplicates_left_out == 1
    kept, _ = load_sroie(root, splits="test", drop_test_duplicates=False)
    assert kept["test"]["id"] == ["test_001", "test_002", "test_294"]


@requires_sroie
def test_word_level_boxes(tmp_path):
    root = few_receipts(tmp_path)
    raw, _ = load_sroie(root, splits=["train"], word_level=True)
    receipt = raw["train"][0]
    # "25/12/2018 8:13:39 PM" (21 characters) spans x 163-338 of a 457 x 1000 page: the date is its first 10.
    date = receipt["words"].index("25/12/2018")
    assert receipt["bboxes"][date] == [int(1000 * 163 / 457), 367, int(1000 * (163 + 175 * 10 / 21) / 457), 384]
    with pytest.raises(ValueError, match="`splits` must be"):
        load_sroie(root, splits=["validation"])
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        load_sroie(tmp_path / "nowhere")


@requires_sroie
def test_training_split_coverage(caplog):
    with caplog.at_level(logging.INFO, logger="aetnet.data.sroie"):
        _, stats = load_sroie(SROIE_DIR, splits="train")
    train = stats["train"]
    assert train.receipts == 626 and sum(train.fields.values()) == 2502 and sum(train.empty.values()) == 2
    for name in SROIE_FIELDS:
        assert train.fields[name] == train.matched(name) + train.unmatched[name]
    assert train.coverage() >= 0.95
    assert train.to_dict()["coverage"]["overall"] == train.coverage()
    assert "SROIE train: 626 receipts" in caplog.text


def few_receipts(tmp_path: Path) -> Path:
    """A copy of 5 training and 3 test receipts (one, test_294, repeating training image 073) with the whole
    `duplicate_images.tsv`: the real layout, small."""
    root = tmp_path / "sroie"
    for folder in ("images", "ocr", "fields"):
        (root / folder).mkdir(parents=True)
    train, test = ["000", "001", "002", "003", "073"], ["test_001", "test_002", "test_294"]
    for receipt_id in train + test:
        for folder, suffix in (("images", "jpg"), ("ocr", "json"), ("fields", "json")):
            shutil.copy(SROIE_DIR / folder / f"{receipt_id}.{suffix}", root / folder / f"{receipt_id}.{suffix}")
    (root / "train.txt").write_text("\n".join(train) + "\n")
    (root / "test.txt").write_text("\n".join(test) + "\n")
    shutil.copy(SROIE_DIR / "duplicate_images.tsv", root / "duplicate_images.tsv")
    return root


def test_window_options_are_run_cords():
    # The shared window options, with the same defaults and help texts as the other receipt script.
    def options(dtype):
        return {f.name: (f.default, f.metadata.get("help")) for f in dataclasses.fields(dtype)}

    run_sroie, run_cord = load_example("run_sroie"), load_example("run_cord")
    assert options(run_sroie.SroieWindowArguments) == options(run_cord.CordWindowArguments)
    assert {"max_seq_length", "doc_stride", "pad_to_max_length"} <= set(options(run_sroie.SroieWindowArguments))


@requires_sroie
@pytest.mark.parametrize("baseline", [None, "layoutlmv3"])
def test_run_sroie_two_steps(tmp_path, monkeypatch, restore_logging, baseline):
    run_sroie = load_example("run_sroie")
    output_dir = tmp_path / "out"
    argv = [
        "run_sroie.py",
        f"--dataset_dir={few_receipts(tmp_path)}",
        f"--output_dir={output_dir}",
        "--max_train_samples=4",
        "--max_seq_length=32",
        "--doc_stride=8",
        "--max_steps=2",
        "--per_device_train_batch_size=2",
        "--tokenizer_vocab_size=300",
        "--report_to=none",
        "--dataloader_pin_memory=False",
    ] + ([f"--baseline={baseline}"] if baseline else [])
    monkeypatch.setattr(sys, "argv", argv)
    metrics = run_sroie.main()

    assert {"eval_precision", "eval_recall", "eval_f1", "eval_task3_f1", "eval_task3_total_f1"} <= set(metrics)
    # Entity-level seqeval per field (all four are tagged in the two test receipts).
    assert {f"eval_{name.upper()}_f1" for name in SROIE_FIELDS} <= set(metrics)
    assert 0.0 <= metrics["eval_task3_f1"] <= 1.0 and metrics["eval_samples"] >= 2
    # The scores the comparison harness tabulates for `--task sroie`.
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    compare = importlib.import_module("compare")
    assert {f"eval_{name}" for name in compare.TASKS["sroie"][1]} <= set(metrics)
    config = json.loads((output_dir / "config.json").read_text())
    assert len(config["id2label"]) == 9 and config["id2label"]["1"] == "B-COMPANY"
    assert config["model_type"] == ("layoutlmv3" if baseline else "aetnet")
    matching = json.loads((output_dir / "sroie_matching.json").read_text())
    assert matching["train"]["receipts"] == 5 and matching["test"]["duplicates_left_out"] == 1
    predictions = [json.loads(line) for line in (output_dir / "predictions.jsonl").read_text().splitlines()]
    assert [p["id"] for p in predictions] == ["test_001", "test_002"]  # test_294 left out
    assert all(len(p["predicted_labels"]) == len(p["words"]) for p in predictions)
    fields = [json.loads(line) for line in (output_dir / "field_predictions.jsonl").read_text().splitlines()]
    assert fields[0]["fields"] == read_sroie_fields(SROIE_DIR, "test_001")
    assert set(fields[0]["predicted_fields"]) == set(SROIE_FIELDS)
    assert (output_dir / "README.md").is_file()
