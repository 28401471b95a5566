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
"""`transformers.pipeline` on tiny AETNet checkpoints: document QA and token classification, batched, with given words
and with Tesseract, with the package and (in a subprocess) without it, through the checkpoint's remote code."""

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers
from PIL import Image, ImageDraw, ImageFont
from transformers import LayoutLMv3ImageProcessorPil, pipeline

from aetnet import (
    AETNetConfig,
    AETNetForQuestionAnswering,
    AETNetForSequenceClassification,
    AETNetForTokenClassification,
    AETNetProcessor,
    predict,
)
from aetnet.data import FUNSD_LABELS, generate_synthetic_forms
from aetnet.data.tokenizer_training import train_layoutlmv3_tokenizer
from aetnet.pipeline_aetnet import AETNetDocumentQuestionAnsweringPipeline, DocumentTokenClassificationPipeline
from aetnet.training import save_custom_pipelines


FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
WINDOW = {"max_length": 48, "stride": 8}  # short windows: the forms span several
QUESTIONS = ["What is the date?", "Who signed the form?"]


@pytest.fixture(scope="module")
def forms():
    return list(generate_synthetic_forms(3, seed=5))


def letter(lines) -> Image.Image:
    page = Image.new("RGB", (520, 60 + 60 * len(lines)), "white")
    for row, line in enumerate(lines):
        ImageDraw.Draw(page).text((30, 30 + 60 * row), line, fill="black", font=ImageFont.truetype(FONT, 28))
    return page


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, forms):
    """Token and QA checkpoints saved as `save_pretrained` leaves them (`plain`) and with their pipeline named in the
    config (`remote`, what the example scripts write), plus two typed letters for Tesseract."""
    root = tmp_path_factory.mktemp("pipelines")
    typed = ["Invoice", "number", "4711", "Date", "March", "1987", "Signed", "Mary", "Smith", "Total", "120"]
    words = [form["words"] for form in forms] + [typed]
    tokenizer = train_layoutlmv3_tokenizer(words, vocab_size=400)
    processor = AETNetProcessor(
        LayoutLMv3ImageProcessorPil(apply_ocr=False, size={"height": 16, "width": 16}), tokenizer
    )
    torch.manual_seed(0)
    label2id = {label: i for i, label in enumerate(FUNSD_LABELS)}
    labels = {"id2label": dict(enumerate(FUNSD_LABELS)), "label2id": label2id}
    heads = {
        "token": AETNetForTokenClassification(
            AETNetConfig.from_preset("tiny", vocab_size=len(tokenizer), queue_size=8, **labels)
        ),
        "qa": AETNetForQuestionAnswering(AETNetConfig.from_preset("tiny", vocab_size=len(tokenizer), queue_size=8)),
    }
    paths = {}
    for name, model in heads.items():
        for kind in ("plain", "remote"):
            folder = root / f"{name}-{kind}"
            model.save_pretrained(folder)
            processor.save_pretrained(folder)
            if kind == "remote":
                save_custom_pipelines(folder)
            paths[f"{name}-{kind}"] = str(folder)
    letters = [letter(["Invoice number 4711", "Date March 1987"]), letter(["Signed Mary Smith", "Total 120"])]
    for index, page in enumerate(letters):
        page.save(root / f"letter{index}.png")
    paths["letters"] = [str(root / f"letter{index}.png") for index in range(len(letters))]
    for index, form in enumerate(forms):
        form["image"].save(root / f"form{index}.png")
    paths["forms"] = [str(root / f"form{index}.png") for index in range(len(forms))]
    paths["root"] = root
    return paths


def qa_inputs(forms):
    """One question per form with the form's words and 0-1000 boxes, as the stock pipeline takes `word_boxes`."""
    return [
        {"image": form["image"], "question": question, "word_boxes": list(zip(form["words"], form["bboxes"]))}
        for form, question in zip(forms, QUESTIONS * 2)
    ]


def token_inputs(forms):
    return [
        {"image": form["image"], "words": form["words"], "boxes": form["bboxes"], "boxes_normalized": True}
        for form in forms
    ]


def same_answers(batched, single):
    assert len(batched) == len(single)
    for answers, expected in zip(batched, single):
        assert [(a["answer"], a["start"], a["end"]) for a in answers] == [
            (a["answer"], a["start"], a["end"]) for a in expected
        ]
        assert [a["score"] for a in answers] == pytest.approx([a["score"] for a in expected], rel=1e-4)


# --------------------------------------------------------------------------------------------- with the package


def test_document_question_answering_batched_with_given_words(workspace, forms):
    qa = pipeline(
        "document-question-answering",
        model=workspace["qa-plain"],
        pipeline_class=AETNetDocumentQuestionAnsweringPipeline,
        device="cpu",
        max_seq_len=WINDOW["max_length"],
        doc_stride=WINDOW["stride"],
    )
    inputs = qa_inputs(forms)
    single = qa(inputs, top_k=2)
    batched = qa(inputs, top_k=2, batch_size=2)
    same_answers(batched, single)
    for answers, form in zip(batched, forms):
        assert 1 <= len(answers) <= 2
        for answer in answers:
            assert answer["answer"] == " ".join(form["words"][answer["start"] : answer["end"] + 1])
            assert 0.0 < answer["score"] <= 1.0
    # The stock call shape: one image and one question.
    (answer,) = qa(image=forms[0]["image"], question=QUESTIONS[0], word_boxes=inputs[0]["word_boxes"])
    assert answer["answer"] == single[0][0]["answer"]


def test_document_question_answering_with_tesseract(workspace):
    qa = pipeline(
        "document-question-answering",
        model=workspace["qa-plain"],
        pipeline_class=AETNetDocumentQuestionAnsweringPipeline,
        device="cpu",
    )
    inputs = [{"image": path, "question": question} for path, question in zip(workspace["letters"], QUESTIONS)]
    answers = qa(inputs, batch_size=2)
    ocr_words = {"Invoice", "number", "4711", "Date", "March", "1987", "Signed", "Mary", "Smith", "Total", "120"}
    for (answer,) in answers:
        assert answer["answer"] and set(answer["answer"].split()) <= ocr_words


def test_token_classification_batched_with_given_words_and_with_tesseract(workspace, forms):
    import aetnet.pipeline_aetnet  # noqa: F401 (registers document-token-classification)

    labeller = pipeline("document-token-classification", model=workspace["token-plain"], device="cpu", **WINDOW)
    pages = labeller(token_inputs(forms), batch_size=2)
    expected = predict(workspace["token-plain"], token_inputs(forms), device="cpu", **WINDOW)
    assert len(pages) == len(forms)
    for page, reference in zip(pages, expected):
        assert [w["label"] for w in page["words"]] == [w["label"] for w in reference["words"]]
        confidences = [w["confidence"] for w in page["words"]]
        assert confidences == pytest.approx([w["confidence"] for w in reference["words"]], abs=2e-4)
        assert [e["words"] for e in page["entities"]] == [e["words"] for e in reference["entities"]]
    scanned = labeller(workspace["letters"], batch_size=2)
    assert [w["text"] for w in scanned[0]["words"]][:3] == ["Invoice", "number", "4711"]
    assert all(page["ocr"] and all(w["label"] in FUNSD_LABELS for w in page["words"]) for page in scanned)


def test_a_checkpoint_naming_its_pipeline_also_runs_with_the_package_s_class(workspace, forms):
    config = json.loads(open(os.path.join(workspace["qa-remote"], "config.json")).read())
    assert config["custom_pipelines"]["document-question-answering"]["impl"] == (
        "pipeline_aetnet.AETNetDocumentQuestionAnsweringPipeline"
    )
    # Without remote code the stock loader asks for `trust_remote_code`; the package's class needs none.
    with pytest.raises(ValueError, match="trust_remote_code"):
        pipeline("document-question-answering", model=workspace["qa-remote"], device="cpu")
    qa = pipeline(
        "document-question-answering",
        model=workspace["qa-remote"],
        pipeline_class=AETNetDocumentQuestionAnsweringPipeline,
        device="cpu",
        **{"max_seq_len": WINDOW["max_length"], "doc_stride": WINDOW["stride"]},
    )
    assert type(qa.model) is AETNetForQuestionAnswering
    labeller = pipeline(
        "document-token-classification",
        model=workspace["token-remote"],
        pipeline_class=DocumentTokenClassificationPipeline,
        device="cpu",
    )
    assert len(labeller(token_inputs(forms[:1]))[0]["words"]) == len(forms[0]["words"])


def test_save_custom_pipelines_skips_heads_without_a_pipeline(tmp_path, workspace):
    model = AETNetForSequenceClassification(AETNetConfig.from_preset("tiny", vocab_size=400, queue_size=8))
    model.save_pretrained(tmp_path)
    assert save_custom_pipelines(tmp_path, model) == {}
    assert "custom_pipelines" not in json.loads((tmp_path / "config.json").read_text())
    token = AETNetForTokenClassification(AETNetConfig.from_preset("tiny", vocab_size=400, queue_size=8))
    token.save_pretrained(tmp_path / "token")
    entry = save_custom_pipelines(tmp_path / "token", token)
    token.save_pretrained(tmp_path / "token")  # a later save keeps the entry
    assert json.loads((tmp_path / "token" / "config.json").read_text())["custom_pipelines"] == entry


# --------------------------------------------------------------------------------------------- without the package


def test_both_pipelines_run_from_remote_code_where_aetnet_is_not_importable(workspace, forms):
    """In a fresh interpreter where `import aetnet` fails: the stock `pipeline(..., trust_remote_code=True)` loads the
    checkpoint's model, processor and pipeline code, batches, and answers as the package does."""
    root = workspace["root"]
    qa_words = [{k: v for k, v in item.items() if k != "image"} for item in qa_inputs(forms)]
    token_words = [{k: v for k, v in item.items() if k != "image"} for item in token_inputs(forms)]
    (root / "inputs.json").write_text(json.dumps({"qa": qa_words, "token": token_words}))

    script = textwrap.dedent(
        f"""
        import json, sys
        sys.modules["aetnet"] = None
        try:
            import aetnet
            raise SystemExit("aetnet was importable")
        except ImportError:
            pass
        from transformers import pipeline

        inputs = json.load(open({str(root / "inputs.json")!r}))
        forms, letters = {workspace["forms"]!r}, {workspace["letters"]!r}
        qa = pipeline("document-question-answering", model={workspace["qa-remote"]!r}, trust_remote_code=True,
                      device="cpu", max_seq_len={WINDOW["max_length"]}, doc_stride={WINDOW["stride"]})
        labeller = pipeline(model={workspace["token-remote"]!r}, trust_remote_code=True, device="cpu",
                            max_length={WINDOW["max_length"]}, stride={WINDOW["stride"]})
        qa_items = [{{**item, "word_boxes": [tuple(pair) for pair in item["word_boxes"]], "image": image}}
                    for item, image in zip(inputs["qa"], forms)]
        token_items = [{{**item, "image": image}} for item, image in zip(inputs["token"], forms)]
        out = {{
            "classes": [type(qa).__name__, type(qa.model).__module__, type(labeller).__name__],
            "qa": qa(qa_items, top_k=2, batch_size=2),
            "qa_ocr": qa([{{"image": path, "question": "What is the date?"}} for path in letters], batch_size=2),
            "token": labeller(token_items, batch_size=2),
            "token_ocr": labeller(letters, batch_size=2),
        }}
        print("RESULT " + json.dumps(out))
        """
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(root / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, result.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT ") :])
    qa_class, model_module, token_class = out["classes"]
    assert qa_class == "AETNetDocumentQuestionAnsweringPipeline"
    assert token_class == "DocumentTokenClassificationPipeline"
    assert model_module.startswith("transformers_modules.")

    qa = pipeline(
        "document-question-answering",
        model=workspace["qa-plain"],
        pipeline_class=AETNetDocumentQuestionAnsweringPipeline,
        device="cpu",
        max_seq_len=WINDOW["max_length"],
        doc_stride=WINDOW["stride"],
    )
    same_answers(out["qa"], qa(qa_inputs(forms), top_k=2))
    assert all(len(answers) == 1 and answers[0]["answer"] for answers in out["qa_ocr"])
    expected = predict(workspace["token-plain"], token_inputs(forms), device="cpu", **WINDOW)
    for page, reference in zip(out["token"], expected):
        assert [w["label"] for w in page["words"]] == [w["label"] for w in reference["words"]]
    assert [w["text"] for w in out["token_ocr"][1]["words"]][:3] == ["Signed", "Mary", "Smith"]


def test_registering_the_pipeline_again_is_quiet(caplog):
    """Loading a checkpoint's remote pipeline code imports this module again: the task is registered once."""
    import importlib

    import aetnet.pipeline_aetnet as pipeline_module

    verbosity = transformers.utils.logging.get_verbosity()
    transformers.utils.logging.set_verbosity_warning()
    try:
        with caplog.at_level(logging.WARNING):
            importlib.reload(pipeline_module)
    finally:
        transformers.utils.logging.set_verbosity(verbosity)
    assert not [record for record in caplog.records if "already registered" in record.getMessage()]
    assert pipeline_module.TASK in transformers.pipelines.PIPELINE_REGISTRY.get_supported_tasks()
