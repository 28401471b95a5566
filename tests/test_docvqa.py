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
"""Tests of DocVQA support: ANLS and exact match, the answer-span finder on hand-made word lists, token positions and
post-processing, the reader, and `examples/run_docvqa.py` for 2 steps on two rendered pages."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import datasets
import numpy as np
import pytesseract
import pytest
from conftest import load_example
from PIL import Image, ImageDraw, ImageFont

import aetnet.data.ocr_cache as ocr_cache_module
from aetnet.data.docvqa import (
    AnswerSpan,
    add_answer_spans,
    answer_token_positions,
    find_answer_span,
    load_docvqa,
    normalize_text,
    postprocess_qa_predictions,
)
from aetnet.data.ocr_cache import OCRCache
from aetnet.metrics import anls, compute_docvqa_metrics, exact_match
from aetnet.metrics.anls import anls_score, levenshtein_distance


REPO = Path(__file__).resolve().parents[1]
DOCVQA_DIR = Path(os.environ.get("AETNET_DOCVQA_DIR", REPO.parent / "shared" / "data" / "docvqa-smallval"))
requires_docvqa = pytest.mark.shared_data


# ---- ANLS and exact match ----


def test_levenshtein_distance():
    assert levenshtein_distance("kitten", "sitting") == 3
    assert levenshtein_distance("", "abc") == 3 and levenshtein_distance("same", "same") == 0
    assert levenshtein_distance("abcdef", "uvwxyz", max_distance=2) == 3  # stopped early, reported as budget + 1


def test_anls_and_exact_match():
    # Case, outer spaces and inner runs of spaces do not count; one error in 10 characters scores 0.9; a distance
    # of half the length or more scores 0; the best of several gold answers counts.
    assert anls_score("  Vanderbilt   UNIVERSITY ", ["vanderbilt university"]) == 1.0
    assert anls_score("$123,11O", ["$123,110"]) == pytest.approx(1 - 1 / 8)
    assert anls_score("abcd", ["abxy"]) == 0.0  # NL = 0.5 is not below the threshold
    assert anls_score("2", ["page 2", "2"]) == 1.0
    predictions = ["page 2", "$123,11O", "nothing", ""]
    references = [["2", "page 2"], ["$123,110"], ["9,020"], ["1,354"]]
    assert anls(predictions, references) == pytest.approx((1 + 7 / 8 + 0 + 0) / 4)
    assert exact_match(predictions, references) == 0.25
    assert compute_docvqa_metrics(predictions, references) == {
        "anls": pytest.approx(0.46875),
        "exact_match": 0.25,
    }
    assert anls([], []) == 0.0
    with pytest.raises(ValueError, match="2 predictions but 1"):
        anls(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match=r"references\[0\]"):
        anls(["a"], [[]])
    with pytest.raises(ValueError, match="threshold"):
        anls(["a"], [["a"]], threshold=0)


# ---- The answer-span finder ----

PAGE = ["SCHEDULE", "1", "Salaries", "$", "123,110", "page", "2", "VANDERBILT", "UNIVERSITY,", "Nashvi1le", "1982"]


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        (["Vanderbilt university"], AnswerSpan(7, 8, "Vanderbilt university", 1.0)),  # case + punctuation, 2 words
        (["$123,110"], AnswerSpan(3, 4, "$123,110", 1.0)),  # split over "$" and "123,110": "$" is kept
        (["123110"], AnswerSpan(4, 4, "123110", 1.0)),  # no "$" in the answer: the span starts at the number
        (["2", "page 2"], AnswerSpan(5, 6, "page 2", 1.0)),  # the most specific answer wins
        (["Schedule 1 Salaries"], AnswerSpan(0, 2, "Schedule 1 Salaries", 1.0)),
        (["Nashville"], AnswerSpan(9, 9, "Nashville", pytest.approx(8 / 9))),  # fuzzy: one OCR error
        (["98"], None),  # inside "1982" only: spans start and end on word boundaries
        (["Memphis"], None),
        ([""], None),
    ],
)
def test_find_answer_span(answers, expected):
    assert find_answer_span(PAGE, answers) == expected


def test_find_answer_span_options():
    assert find_answer_span(["page2"], ["page 2"]) == AnswerSpan(0, 0, "page 2", 1.0)  # glued by OCR
    assert find_answer_span(["1", "x", "1"], ["1"]) == AnswerSpan(0, 0, "1", 1.0)  # first occurrence
    assert find_answer_span(PAGE, ["Nashville"], min_similarity=1.0) is None  # exact only
    assert find_answer_span(PAGE, ["Nashvxxle"], min_similarity=0.6).start == 9
    assert normalize_text("Ｐａｇｅ  2,") == "page2"  # full-width forms (NFKC), case, spaces, punctuation
    with pytest.raises(ValueError, match="min_similarity"):
        find_answer_span(PAGE, ["x"], min_similarity=0)


def test_add_answer_spans_skips_and_counts(caplog):
    questions = datasets.Dataset.from_dict(
        {
            "question_id": [1, 2, 3],
            "words": [PAGE, PAGE, ["nothing", "here"]],
            "answers": [["page 2"], ["Memphis"], ["9,020"]],
        }
    )
    with caplog.at_level(logging.WARNING, logger="aetnet.data.docvqa"):
        training = add_answer_spans(questions)
    assert training["question_id"] == [1]
    assert (training["answer_start_word"], training["answer_end_word"]) == ([5], [6])
    assert "2 of 3 question(s) have no gold answer" in caplog.text and "[2, 3]" in caplog.text
    kept = add_answer_spans(questions, drop_unmatched=False)
    assert kept["answer_start_word"] == [5, -1, -1] and kept["answer_score"] == [1.0, 0.0, 0.0]


# ---- Token positions and post-processing ----


def test_answer_token_positions():
    word_ids = [-1, -1, -1, -1, 0, 1, 1, 2, 3, -1]  # <s>, 2 question tokens, </s></s>... then words 0-3
    assert answer_token_positions(word_ids, 1, 2) == (5, 7)  # first token of word 1, last of word 2
    assert answer_token_positions(word_ids, 3, 5) == (0, 0)  # the end is in another window
    assert answer_token_positions(word_ids, -1, -1) == (0, 0)  # no answer


def test_postprocess_qa_predictions():
    words = [["a", "b", "c", "d", "e"], ["x", "y"]]
    # Two windows of question 0 (words 0-2, then 2-4) and one of question 1; the logits have two extra positions,
    # like LayoutLMv3's visual tokens, which must be ignored.
    word_ids = [[-1, -1, -1, 0, 1, 2, -1], [-1, -1, -1, 2, 3, 4, -1], [-1, -1, -1, 0, 1, -1, -1]]
    start = np.full((3, 9), -10.0)
    end = np.full((3, 9), -10.0)
    start[0, 1], end[0, 1] = 50.0, 50.0  # a question token (word_ids -1 for questions): never an answer
    start[0, 3], end[0, 4] = 2.0, 2.0  # "a b"...
    start[0, 0], end[0, 0] = 5.0, 5.0  # ...in a window that puts most of its mass on <s>: "not in this window"
    start[1, 4], end[1, 5] = 3.0, 3.0  # "d e", in a window sure of its answer: this window wins
    start[1, 5], end[1, 3] = 2.5, 4.0  # end before start (6.5): invalid
    start[2, 7], end[2, 8] = 99.0, 99.0  # visual positions: ignored
    start[2, 4], end[2, 4] = 1.0, 1.0  # "y"
    answers = postprocess_qa_predictions(start, end, word_ids, [0, 0, 1], words)
    assert [a["answer"] for a in answers] == ["d e", "y"]
    assert (answers[0]["start_word"], answers[0]["end_word"]) == (3, 4)
    # The score is p(start) * p(end), each a softmax over the window's page words and its <s> (position 0).
    normaliser = [0, 3, 4, 5]
    p_start = np.exp(start[1, 4]) / np.exp(start[1, normaliser]).sum()
    p_end = np.exp(end[1, 5]) / np.exp(end[1, normaliser]).sum()
    assert answers[0]["score"] == pytest.approx(p_start * p_end)
    short = postprocess_qa_predictions(start, end, word_ids, [0, 0, 1], words, max_answer_length=1)
    assert short[0]["answer"] in {"a", "b", "c", "d", "e"} and len(short[0]["answer"]) == 1
    none = postprocess_qa_predictions(start[:1], end[:1], [[-1] * 7], [0], [["a"]])
    assert none[0] == {"answer": "", "start_word": -1, "end_word": -1, "score": 0.0}
    with pytest.raises(ValueError, match=r"window_to_example\[2\]` is 2, outside the 2 questions"):
        postprocess_qa_predictions(start, end, word_ids, [0, 0, 2], words)
    with pytest.raises(ValueError, match="one of each per window"):
        postprocess_qa_predictions(start, end, word_ids[:2], [0, 0, 1], words)


# ---- The reader ----


def write_docvqa(root: Path, entries: list[dict], name: str = "val_v1.0.json") -> Path:
    (root / "documents").mkdir(parents=True, exist_ok=True)
    path = root / name
    path.write_text(json.dumps({"dataset_name": "docvqa", "dataset_split": "val", "data": entries}))
    return path


def test_load_docvqa(tmp_path):
    (tmp_path / "documents").mkdir()
    Image.new("L", (40, 30), 255).save(tmp_path / "documents" / "p1.png")
    entries = [
        {"questionId": 7, "question": "What?", "image": "documents/p1.png", "docId": 3, "answers": ["x", "X"]},
        {"questionId": 8, "question": "Who?", "image": "documents/p1.png", "ucsf_document_id": "abc"},
    ]
    questions = load_docvqa(write_docvqa(tmp_path, entries))
    assert questions["question_id"] == [7, 8] and questions["answers"] == [["x", "X"], []]
    assert questions["doc_id"] == ["3", "abc"]
    assert questions["image"][0] == str((tmp_path / "documents" / "p1.png").resolve())
    with pytest.raises(FileNotFoundError, match="documents/p2.png"):
        load_docvqa(write_docvqa(tmp_path, [{**entries[0], "image": "documents/p2.png"}], "bad.json"))
    with pytest.raises(ValueError, match=r"data\[0\]` lacks \['question'\]"):
        load_docvqa(write_docvqa(tmp_path, [{"questionId": 1, "image": "documents/p1.png"}], "bad.json"))
    (tmp_path / "other.json").write_text(json.dumps({"form": []}))
    with pytest.raises(ValueError, match="no `data` list"):
        load_docvqa(tmp_path / "other.json")


@requires_docvqa
def test_load_real_docvqa_smallval():
    questions = load_docvqa(DOCVQA_DIR / "val_v1.0.json")
    assert len(questions) == 12 and len(set(questions["image"])) == 3
    assert questions[1]["answers"] == ["Vanderbilt university", "VANDERBILT UNIVERSITY"]


# ---- run_docvqa.py end to end, 2 steps, on two rendered pages whose OCR is already in the cache ----

PAGE_LINES = {
    (400, 150): ["Invoice number 4711", "Total amount $1,250.00", "Due date March 3"],
    (410, 150): ["Vanderbilt University", "Nashville Tennessee", "Page 2"],
}


def render(size, lines):
    page = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(page)
    words, boxes = [], []
    font = ImageFont.load_default(size=18)
    for row, line in enumerate(lines):
        x, y = 10, 10 + 45 * row
        for word in line.split():
            x0, y0, x1, y1 = draw.textbbox((x, y), word, font=font)
            draw.text((x, y), word, fill="black", font=font)
            words.append(word)
            boxes.append([x0 * 1000 // size[0], y0 * 1000 // size[1], x1 * 1000 // size[0], y1 * 1000 // size[1]])
            x = x1 + 10
    return page, words, boxes


def test_run_docvqa_two_steps(tmp_path, monkeypatch, restore_logging):
    rendered = {size: render(size, lines) for size, lines in PAGE_LINES.items()}
    for index, (page, _, _) in enumerate(rendered.values()):
        page.save(tmp_path / f"page{index}.png")
    questions = [
        {"questionId": 1, "question": "What is the total amount?", "image": "page0.png", "answers": ["$1,250.00"]},
        {"questionId": 2, "question": "What is the invoice number?", "image": "page0.png", "answers": ["4711"]},
        {"questionId": 3, "question": "Which university?", "image": "page1.png", "answers": ["VANDERBILT UNIVERSITY"]},
        {"questionId": 4, "question": "Who signed it?", "image": "page1.png", "answers": ["John Smith"]},  # absent
    ]
    (tmp_path / "val.json").write_text(json.dumps({"data": questions}))
    unanswered = [{key: value for key, value in q.items() if key != "answers"} for q in questions[:2]]
    (tmp_path / "test.json").write_text(json.dumps({"data": unanswered}))

    # Fill the cache under the real Tesseract settings with the words as rendered, then forbid Tesseract.
    def rendered_words(page, lang, config):
        return rendered[page.size][1], rendered[page.size][2]

    engine = f"tesseract {pytesseract.get_tesseract_version()}"
    OCRCache(tmp_path / "ocr", ocr_function=rendered_words, engine=engine).ocr_pages(
        [tmp_path / "page0.png", tmp_path / "page1.png"], show_progress=False
    )
    monkeypatch.setattr(ocr_cache_module, "_tesseract", lambda *args: pytest.fail("Tesseract ran on a cached page"))

    output_dir = tmp_path / "out"
    argv = [
        "run_docvqa.py",
        f"--train_file={tmp_path / 'val.json'}",
        f"--validation_file={tmp_path / 'val.json'}",
        f"--test_file={tmp_path / 'test.json'}",
        f"--output_dir={output_dir}",
        f"--ocr_cache_dir={tmp_path / 'ocr'}",
        "--max_seq_length=32",
        "--doc_stride=4",
        "--max_steps=2",
        "--per_device_train_batch_size=2",
        "--tokenizer_vocab_size=300",
        "--report_to=none",
        "--dataloader_pin_memory=False",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    metrics = load_example("run_docvqa").main()

    assert 0.0 <= metrics["eval_anls"] <= 1.0 and 0.0 <= metrics["eval_exact_match"] <= metrics["eval_anls"] + 1e-9
    assert metrics["eval_answers_in_ocr"] == 0.75 and metrics["eval_samples"] == 4  # the absent answer still counts
    records = json.loads((output_dir / "eval_predictions.json").read_text())
    assert [r["questionId"] for r in records] == [1, 2, 3, 4]
    assert all(isinstance(r["answer"], str) and 0.0 <= r["anls"] <= 1.0 for r in records)
    page_words = {word for _, words, _ in rendered.values() for word in words}
    assert all(set(r["answer"].split()) <= page_words for r in records)  # answers are page words, mapped back
    submission = json.loads((output_dir / "test_predictions.json").read_text())
    assert [set(r) for r in submission] == [{"questionId", "answer"}] * 2
    assert json.loads((output_dir / "train_results.json").read_text())["train_samples"] > 0
    assert (output_dir / "model.safetensors").is_file() and (output_dir / "README.md").is_file()
