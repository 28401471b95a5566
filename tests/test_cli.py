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
"""The `aetnet` command line, run in subprocesses on a tiny checkpoint: JSON schema, pictures, PDFs, bad inputs."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont
from transformers import LayoutLMv3ImageProcessorPil

from aetnet import (
    AETNetConfig,
    AETNetForQuestionAnswering,
    AETNetForSequenceClassification,
    AETNetForTokenClassification,
    AETNetProcessor,
)
from aetnet.commands import export as export_module
from aetnet.commands import info as info_module
from aetnet.commands import predict as predict_module
from aetnet.commands.aetnet_cli import build_parser, main
from aetnet.commands.predict import to_json
from aetnet.data import FUNSD_LABELS, generate_synthetic_forms
from aetnet.data.tokenizer_training import train_layoutlmv3_tokenizer


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
WORD_KEYS = {"text", "box", "label", "confidence"}
ENTITY_KEYS = {"label", "text", "box", "confidence", "words"}
PAGE_KEYS = {"name", "source", "page", "width", "height", "task", "ocr", "words", "entities"}


@pytest.fixture(scope="module")
def form():
    return generate_synthetic_forms(1, seed=3)[0]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, form):
    """A token checkpoint trained a few steps, sequence / QA checkpoints with random weights, and some pages."""
    root = tmp_path_factory.mktemp("cli")
    tokenizer = train_layoutlmv3_tokenizer([form["words"]] * 4, vocab_size=400, min_frequency=1)
    processor = AETNetProcessor(
        LayoutLMv3ImageProcessorPil(apply_ocr=False, size={"height": 16, "width": 16}), tokenizer
    )
    torch.manual_seed(0)
    heads = {
        "token": (AETNetForTokenClassification, FUNSD_LABELS),
        "sequence": (AETNetForSequenceClassification, ["invoice", "letter"]),
        "qa": (AETNetForQuestionAnswering, None),
    }
    for name, (model_class, labels) in heads.items():
        kwargs = (
            {}
            if labels is None
            else {"id2label": dict(enumerate(labels)), "label2id": {label: i for i, label in enumerate(labels)}}
        )
        config = AETNetConfig.from_preset("tiny", vocab_size=len(tokenizer), queue_size=8, **kwargs)
        model = model_class(config)
        if model_class is AETNetForTokenClassification:
            _train_a_few_steps(model, processor, form)
        model.save_pretrained(root / name)
        processor.save_pretrained(root / name)

    form["image"].save(root / "form.png")
    font = ImageFont.truetype(FONT, 28)
    letters = []
    for lines in (["Invoice number 4711", "Total amount 120"], ["Date March 1987", "Signed Mary Smith"]):
        page = Image.new("RGB", (500, 240), "white")
        for row, line in enumerate(lines):
            ImageDraw.Draw(page).text((30, 40 + 70 * row), line, fill="black", font=font)
        letters.append(page)
    letters[0].save(root / "letter.pdf", "PDF", save_all=True, append_images=letters[1:], resolution=72)
    (root / "corrupt.pdf").write_bytes(b"%PDF-1.7\nthis is not a real PDF\n")
    png = (root / "form.png").read_bytes()
    (root / "truncated.png").write_bytes(png[: len(png) // 3])
    return root


def _train_a_few_steps(model, processor, form, steps=15):
    """Train the token checkpoint on its form, so that the CLI runs a trained model (and the loss shows it)."""
    encoding = processor(
        form["image"],
        form["words"],
        boxes=form["bboxes"],
        word_labels=form["ner_tags"],
        boxes_normalized=True,
        return_tensors="pt",
    )
    inputs = {k: encoding[k] for k in ("input_ids", "bbox", "attention_mask", "pixel_values", "labels")}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    losses = []
    for _ in range(steps):
        outputs = model(**inputs)
        outputs.loss.backward()  # the whole objective (the EMA step ran in the forward)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(outputs.task_loss.item())
    assert losses[-1] < losses[0]
    model.eval()


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "aetnet.commands.aetnet_cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=cwd,
        timeout=300,
    )


def check_token_page(page: dict) -> None:
    assert set(page) == PAGE_KEYS
    assert page["task"] == "token-classification"
    for word in page["words"]:
        assert set(word) == WORD_KEYS
        assert word["label"] in FUNSD_LABELS and 0.0 <= word["confidence"] <= 1.0
        x0, y0, x1, y1 = word["box"]
        assert 0 <= x0 <= x1 <= page["width"] and 0 <= y0 <= y1 <= page["height"]
    for entity in page["entities"]:
        assert set(entity) == ENTITY_KEYS
        assert entity["label"] in {"HEADER", "QUESTION", "ANSWER"}
        members = [page["words"][i] for i in entity["words"]]
        assert entity["text"] == " ".join(w["text"] for w in members)
        assert entity["box"][0] == min(w["box"][0] for w in members)
        assert entity["box"][3] == max(w["box"][3] for w in members)


def test_predict_images_pdf_and_bad_files(workspace, form):
    out = workspace / "out"
    pages = [workspace / name for name in ("form.png", "letter.pdf", "corrupt.pdf", "truncated.png", "missing.png")]
    options = "--draw --pdf-dpi 72 --max-length 64 --stride 16 --batch-size 2".split()
    result = run_cli("predict", workspace / "token", *pages, "--output-dir", out, *options)
    assert result.returncode == 1, result.stderr
    # Every bad path is named on stderr, and the good pages were still written.
    for bad in ("corrupt.pdf", "truncated.png", "missing.png"):
        assert any(bad in line and "error" in line for line in result.stderr.splitlines()), (bad, result.stderr)
    expected = [f"{stem}.{ext}" for stem in ("form", "letter_page1", "letter_page2") for ext in ("json", "png")]
    assert sorted(p.name for p in out.iterdir()) == expected
    assert "Wrote 3 page prediction(s)" in result.stdout and "3 failed" in result.stdout

    page = json.loads((out / "form.json").read_text())
    check_token_page(page)
    assert page["ocr"] is True and page["source"].endswith("form.png") and page["page"] is None
    assert (page["width"], page["height"]) == form["image"].size
    ocr_text = " ".join(w["text"] for w in page["words"])
    assert sum(word in ocr_text for word in form["words"]) > len(form["words"]) // 2  # Tesseract read the form

    for number, expected in ((1, "Invoice"), (2, "Signed")):
        letter = json.loads((out / f"letter_page{number}.json").read_text())
        check_token_page(letter)
        assert letter["page"] == number and (letter["width"], letter["height"]) == (500, 240)
        assert expected in [w["text"] for w in letter["words"]]

    picture = Image.open(out / "form.png")
    assert picture.size == form["image"].size and (out / "form.png").stat().st_size > 1000
    assert np.asarray(picture.convert("RGB")).std() > 0  # not a blank page
    assert Image.open(out / "letter_page2.png").size == (500, 240)


def test_words_json_on_a_page_longer_than_one_window(workspace, form):
    """No OCR: the words come from a JSON file, and 64-token windows cover the ~100-word form several times over.
    Runs the installed `aetnet` console script, and checks from Python's import log that `predict` keeps the training
    stack (the trainer, `datasets`) out of its import graph."""
    script = Path(sys.executable).with_name("aetnet")
    assert script.exists(), "the `aetnet` console script is not installed: pip install -e ."
    words_json = workspace / "words.json"
    entry = {"words": form["words"], "boxes": form["bboxes"], "boxes_normalized": True}
    words_json.write_text(json.dumps({"form.png": entry, "elsewhere.png": entry}))
    out = workspace / "out-words"
    result = subprocess.run(
        [
            str(script),
            "predict",
            str(workspace / "token"),
            str(workspace / "form.png"),
            "--words-json",
            str(words_json),
            "-o",
            str(out),
            "--max-length",
            "64",
            "--stride",
            "16",
        ],
        capture_output=True,
        text=True,
        env={**ENV, "PYTHONPROFILEIMPORTTIME": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "warning: 1 of the --words-json entries match no page" in result.stderr
    imported = {
        line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")
    }
    assert "aetnet.inference" in imported
    assert "aetnet.training.trainer_aetnet" not in imported and "datasets" not in imported
    page = json.loads((out / "form.json").read_text())
    check_token_page(page)
    assert page["ocr"] is False
    assert [w["text"] for w in page["words"]] == form["words"]
    width, height = form["image"].size
    assert page["words"][0]["box"] == [round(v * s / 1000) for v, s in zip(form["bboxes"][0], (width, height) * 2)]


def test_info_summarises_config_labels_and_parameters(workspace, capsys):
    assert main(["info", str(workspace / "token")]) == 0
    text = capsys.readouterr().out
    assert "token-classification" in text
    assert ", ".join(FUNSD_LABELS) in text and "(BIO)" in text
    for component in ("layoutlmv3", "vision_model", "text_model", "vision_model_m", "head: classifier", "total"):
        assert component in text
    assert "Alignment:" in text and "ditc imc glitc pita" in text


def test_info_json_counts_every_parameter(workspace, capsys):
    assert main(["info", str(workspace / "token"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    model = AETNetForTokenClassification.from_pretrained(workspace / "token")
    assert summary["total_parameters"] == sum(p.numel() for p in model.parameters())
    momentum = sum(n for c, n in summary["parameters"].items() if c.endswith("_m"))
    projections = sum(summary["parameters"][name] for name in ("vision_proj", "text_proj", "temp"))
    assert summary["inference_parameters"] == summary["total_parameters"] - momentum - projections
    assert summary["labels"] == FUNSD_LABELS and summary["task"] == "token-classification"


def test_sequence_classification_and_qa_through_the_same_command(workspace, capsys):
    out = workspace / "out-heads"
    common = [str(workspace / "letter.pdf"), "-o", str(out), "--pdf-dpi", "72", "--no-progress"]
    assert main(["predict", str(workspace / "sequence"), *common, "--draw"]) == 0
    assert main(["predict", str(workspace / "token"), *common, "-o", str(out / "redacted"), "--draw", "--redact"]) == 0
    redacted = np.asarray(Image.open(out / "redacted" / "letter_page1.png").convert("RGB"))
    scan = np.asarray(Image.open(out / "letter_page1.png").convert("RGB"))
    assert redacted.shape == scan.shape and not (redacted == scan).all()
    assert main(["predict", str(workspace / "token"), *common, "--redact"]) == 2  # --redact needs --draw
    page = json.loads((out / "letter_page1.json").read_text())
    assert page["task"] == "sequence-classification" and page["label"] in ("invoice", "letter")
    assert set(page["scores"]) == {"invoice", "letter"} and Image.open(out / "letter_page1.png").size == (500, 240)

    questions = ["--question", "What is the total?", "--question", "Who signed?"]
    assert main(["predict", str(workspace / "qa"), *common, *questions]) == 0
    page = json.loads((out / "letter_page2.json").read_text())
    assert page["task"] == "question-answering"
    assert [a["question"] for a in page["answers"]] == ["What is the total?", "Who signed?"]
    texts = [w["text"] for w in page["words"]]
    for answer in page["answers"]:
        assert answer["text"] == " ".join(texts[i] for i in answer["words"]) and answer["text"]
        assert len(answer["box"]) == 4
    stdout = capsys.readouterr().out
    assert "'Who signed?' ->" in stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["predict", "{root}/nowhere", "{root}/form.png"], "is not a folder"),
        (["predict", "{root}/qa", "{root}/form.png"], "give at least one --question"),
        (["predict", "{root}/token", "{root}/form.png", "--question", "Why?"], "needs a question answering model"),
        (["predict", "{root}/token", "{root}/form.png", "--batch-size", "0"], "--batch-size"),
        (["predict", "{root}/token", "{root}/form.png", "--max-length", "100000"], "--max-length 100000: it must be"),
        (["predict", "{root}/token", "{root}/form.png", "--stride", "100000"], "--stride 100000: it must be"),
        (["predict", "{root}/token", "{root}/letter.pdf", "--words-json", "{root}/single.json"], "2 pages were given"),
        (["predict", "{root}/token", "{root}/form.png", "--words-json", "{root}/nothere.json"], "cannot read"),
        (["info", "{root}/nowhere"], "cannot read a config"),
    ],
)
def test_usage_errors_exit_2(workspace, capsys, args, message):
    (workspace / "single.json").write_text(json.dumps({"words": ["a"], "boxes": [[0, 0, 1, 1]]}))
    assert main([arg.format(root=workspace) for arg in args]) == 2
    err = capsys.readouterr().err
    assert message in err
    if "--max-length" in args or "--stride" in args:
        assert "cannot load" not in err and "`max_length`" not in err


def test_argparse_errors_exit_2(workspace):
    with pytest.raises(SystemExit) as excinfo:
        main(["predict", str(workspace / "token"), str(workspace / "form.png"), "--fp16", "--bf16"])
    assert excinfo.value.code == 2


def test_each_subcommand_registers_its_own_parser():
    """The cli module only assembles: each sub-command's module adds its sub-parser, its options and the function
    that runs it, and `aetnet --help` lists the sub-commands in that order."""
    cases = [
        ("predict", predict_module, ["MODEL", "a.png", "b.pdf", "--draw", "--entities", "e.json", "--bf16"]),
        ("export", export_module, ["MODEL", "--onnx", "model.onnx", "--opset", "18"]),
        ("info", info_module, ["MODEL", "--json"]),
    ]
    for name, module, argv in cases:
        parser = argparse.ArgumentParser(prog="aetnet")
        module.register_subcommand(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args([name, *argv])
        assert args.func is getattr(module, f"{name}_command") and args.model == "MODEL"
    assert args.json is True
    help_text = build_parser().format_help()
    assert help_text.index("predict") < help_text.index("export") < help_text.index("info")


def test_to_json_puts_boxes_on_one_line():
    text = to_json({"words": [{"text": "[\n1 ]", "box": [1, 2, 3, 4]}], "score": 1e-05})
    assert '"box": [1, 2, 3, 4]' in text
    assert json.loads(text) == {"words": [{"text": "[\n1 ]", "box": [1, 2, 3, 4]}], "score": 1e-05}
