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
"""`aetnet predict` on a relation extraction checkpoint (issue 16): the entities from `--entities` (FUNSD's shape, a
FUNSD annotation file as is) or from a token classification `--entity-model`, the `links` of the page JSON, the
arrows of `--draw`, and the usage errors of missing or ill-formed entities. Runs the command in-process on tiny
checkpoints with random weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from transformers import AutoConfig, LayoutLMv3ImageProcessorPil

from aetnet import AETNetConfig, AETNetForRelationExtraction, AETNetForTokenClassification, AETNetProcessor
from aetnet.commands.aetnet_cli import main
from aetnet.data import FUNSD_LABELS
from aetnet.data.tokenizer_training import train_layoutlmv3_tokenizer
from aetnet.inference import RelationPredictor, load_checkpoint, parse_entities
from aetnet.tasks import RELATION_EXTRACTION, task_of
from aetnet.visualization.relations import ARROW_COLOR


FUNSD = Path(__file__).resolve().parents[2] / "shared" / "data" / "funsd" / "testing_data"
LINK_KEYS = {"head", "tail", "question", "answer", "question_box", "answer_box", "score"}
# One form in FUNSD's annotation shape: two question -> answer pairs, a header, and an entity without words.
FORM = [
    {
        "id": 0,
        "label": "header",
        "text": "REGISTRATION",
        "box": [40, 10, 260, 40],
        "words": [{"text": "REGISTRATION", "box": [40, 10, 260, 40]}],
        "linking": [],
    },
    {
        "id": 1,
        "label": "question",
        "text": "Date:",
        "box": [40, 80, 110, 105],
        "words": [{"text": "Date:", "box": [40, 80, 110, 105]}],
        "linking": [[1, 2]],
    },
    {
        "id": 2,
        "label": "answer",
        "text": "12/03/1998",
        "box": [250, 80, 380, 105],
        "words": [{"text": "12/03/1998", "box": [250, 80, 380, 105]}],
        "linking": [[1, 2]],
    },
    {
        "id": 3,
        "label": "question",
        "text": "Name of applicant:",
        "box": [40, 180, 210, 205],
        "words": [
            {"text": "Name", "box": [40, 180, 90, 205]},
            {"text": "of", "box": [95, 180, 115, 205]},
            {"text": "applicant:", "box": [120, 180, 210, 205]},
        ],
        "linking": [[3, 4]],
    },
    {
        "id": 4,
        "label": "answer",
        "text": "Mary Smith",
        "box": [250, 180, 370, 205],
        "words": [{"text": "Mary", "box": [250, 180, 300, 205]}, {"text": "Smith", "box": [305, 180, 370, 205]}],
        "linking": [[3, 4]],
    },
    {
        "id": 5,
        "label": "other",
        "text": "",
        "box": [10, 270, 20, 280],
        "words": [{"text": " ", "box": [10, 270, 20, 280]}],
        "linking": [],
    },
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run faster on one thread of a busy 2-core machine (as in `conftest.restore_logging`)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A relation checkpoint and a token classification one (random weights, shared tokenizer), a page with the
    words of `FORM` written where its boxes say, and `FORM` as an entities file."""
    root = tmp_path_factory.mktemp("predict-relations")
    texts = [word["text"] for entity in FORM for word in entity["words"]]
    tokenizer = train_layoutlmv3_tokenizer([texts] * 4, vocab_size=300, min_frequency=1)
    processor = AETNetProcessor(
        LayoutLMv3ImageProcessorPil(apply_ocr=False, size={"height": 16, "width": 16}), tokenizer
    )
    torch.manual_seed(0)
    config = AETNetConfig.from_preset("tiny", vocab_size=len(tokenizer), queue_size=8)
    AETNetForRelationExtraction(config).save_pretrained(root / "relation")
    processor.save_pretrained(root / "relation")
    labels = {"id2label": dict(enumerate(FUNSD_LABELS)), "label2id": {name: i for i, name in enumerate(FUNSD_LABELS)}}
    page = Image.new("RGB", (400, 300), "white")
    draw = ImageDraw.Draw(page)
    for entity in FORM:
        for word in entity["words"]:
            draw.text((word["box"][0], word["box"][1] + 5), word["text"], fill="black")
    page.save(root / "form.png")
    page.save(root / "other.png")
    (root / "form.json").write_text(json.dumps(FORM))
    words = [word for entity in FORM[:5] for word in entity["words"]]
    entry = {"words": [word["text"] for word in words], "boxes": [word["box"] for word in words]}
    (root / "words.json").write_text(json.dumps(entry))

    config = AETNetConfig.from_preset("tiny", vocab_size=len(tokenizer), queue_size=8, **labels)
    token_model = AETNetForTokenClassification(config)
    _fit_the_form(token_model, processor, page, entry)
    token_model.save_pretrained(root / "token")
    processor.save_pretrained(root / "token")
    return root


def _fit_the_form(model, processor, page, entry, max_steps=50):
    """Train the token checkpoint until it tags the form's words right, so that its entities are `FORM`'s."""
    tags = [f"{'I' if i else 'B'}-{e['label'].upper()}" for e in FORM[:5] for i, _ in enumerate(e["words"])]
    encoding = processor(
        page,
        entry["words"],
        boxes=entry["boxes"],
        word_labels=tags,
        label2id=model.config.label2id,
        padding=False,
        return_tensors="pt",
    )
    inputs = {key: encoding[key] for key in ("input_ids", "bbox", "attention_mask", "pixel_values")}
    labels = encoding["labels"]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(max_steps):
        model.train()
        model(**inputs, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        model.eval()
        with torch.no_grad():
            predicted = model(**inputs).logits.argmax(-1)
        if (predicted == labels)[labels != -100].all():
            return
    raise AssertionError(f"the token model did not fit the form in {max_steps} steps")


def predict(workspace, *args, out="out") -> int:
    return main(["predict", str(workspace / "relation"), *map(str, args), "-o", str(workspace / out), "--no-progress"])


def test_relation_checkpoints_are_a_task_and_load():
    config = AutoConfig.for_model("aetnet", architectures=["AETNetForRelationExtraction"])
    assert task_of(config) == RELATION_EXTRACTION


def test_links_from_an_entities_file(workspace, capsys):
    args = [workspace / "form.png", "--entities", workspace / "form.json"]
    assert predict(workspace, *args, "--link-threshold", 0) == 0
    page = json.loads((workspace / "out" / "form.json").read_text())
    assert page["task"] == RELATION_EXTRACTION and page["ocr"] is False
    # The words are the entities' words; the entity without words is left out, and the others keep their ids.
    assert [entity["id"] for entity in page["entities"]] == [0, 1, 2, 3, 4]
    assert [entity["label"] for entity in page["entities"]] == ["HEADER", "QUESTION", "ANSWER", "QUESTION", "ANSWER"]
    assert [w["text"] for w in page["words"]] == [w["text"] for e in FORM[:5] for w in e["words"]]
    name = page["entities"][3]
    assert name["text"] == "Name of applicant:" and name["box"] == [40, 180, 210, 205] and name["words"] == [3, 4, 5]
    # Threshold 0: every question -> answer pair is a link, best first.
    links = page["links"]
    assert {(link["head"], link["tail"]) for link in links} == {(1, 2), (1, 4), (3, 2), (3, 4)}
    assert [link["score"] for link in links] == sorted((link["score"] for link in links), reverse=True)
    for link in links:
        assert set(link) == LINK_KEYS
        assert isinstance(link["score"], float) and 0.0 <= link["score"] <= 1.0
        head, tail = page["entities"][link["head"]], page["entities"][link["tail"]]
        assert (link["question"], link["answer"]) == (head["text"], tail["text"])
        assert (link["question_box"], link["answer_box"]) == (head["box"], tail["box"])
    assert "5 entities, 4 links" in capsys.readouterr().out

    # The default threshold keeps the pairs scored at least 0.5, with the same scores.
    assert predict(workspace, *args, out="out-default") == 0
    kept = json.loads((workspace / "out-default" / "form.json").read_text())["links"]
    assert kept == [link for link in links if link["score"] >= 0.5]


def test_draw_writes_the_arrows(workspace):
    args = [workspace / "form.png", "--entities", workspace / "form.json", "--link-threshold", 0, "--draw"]
    assert predict(workspace, *args, out="out-draw") == 0
    with Image.open(workspace / "form.png") as page, Image.open(workspace / "out-draw" / "form.png") as drawn:
        page, drawn = np.asarray(page.convert("RGB")), np.asarray(drawn.convert("RGB"))
    assert drawn.shape == page.shape and (drawn != page).any()
    assert (drawn == ARROW_COLOR).all(-1).sum() > 100  # arrows, not only the entity boxes


@pytest.mark.shared_data
def test_a_funsd_annotation_file_works_as_is(workspace):
    annotation = FUNSD / "annotations" / "82092117.json"
    assert predict(workspace, FUNSD / "images" / "82092117.png", "--entities", annotation, out="out-funsd") == 0
    page = json.loads((workspace / "out-funsd" / "82092117.json").read_text())
    form = json.loads(annotation.read_text())["form"]
    with_words = [entity for entity in form if any(word["text"].strip() for word in entity["words"])]
    assert [entity["id"] for entity in page["entities"]] == [entity["id"] for entity in with_words]
    for link in page["links"]:
        assert page["entities"][link["head"]]["label"] == "QUESTION"
        assert page["entities"][link["tail"]]["label"] == "ANSWER"


def test_links_between_the_entities_a_token_model_predicts(workspace):
    entry = json.loads((workspace / "words.json").read_text())
    args = [workspace / "form.png", "--entity-model", workspace / "token", "--words-json", workspace / "words.json"]
    assert predict(workspace, *args, "--link-threshold", 0, out="out-token") == 0
    page = json.loads((workspace / "out-token" / "form.json").read_text())
    assert page["task"] == RELATION_EXTRACTION and [w["text"] for w in page["words"]] == entry["words"]
    assert all(word["label"] in FUNSD_LABELS for word in page["words"])  # the token model's labels are kept
    # The token model was fitted to the form: its entities are the annotated ones, and they are linked.
    assert [(e["label"], e["text"]) for e in page["entities"]] == [(e["label"].upper(), e["text"]) for e in FORM[:5]]
    assert {(link["head"], link["tail"]) for link in page["links"]} == {(1, 2), (1, 4), (3, 2), (3, 4)}
    assert all(set(link) == LINK_KEYS for link in page["links"])


def test_the_predictor_in_python_matches_the_command(workspace):
    predictor = RelationPredictor.from_pretrained(workspace / "relation", device="cpu", threshold=0.0)
    assert isinstance(predictor.model, AETNetForRelationExtraction)
    entities, dropped = parse_entities({"form": FORM}, predictor.entity_labels)
    assert dropped == 1 and [entity["label"] for entity in entities][:2] == ["HEADER", "QUESTION"]
    model, _, task = load_checkpoint(workspace / "relation")
    assert task == RELATION_EXTRACTION and isinstance(model, AETNetForRelationExtraction)


@pytest.mark.parametrize(
    "content, extra, message",
    [
        (None, [], "give them with --entities FILE.json"),
        ('"a string"', [], "must hold a list of entities"),
        ('{"form.png": 3}', [], "entry 'form.png' must be a list of entities"),
        (json.dumps([{"label": "price", "words": []}]), [], "entity 0 has label 'price', which the checkpoint"),
        (
            json.dumps([{"label": "question", "words": [{"text": "a", "box": [1, 2]}]}]),
            [],
            "entity 0, word 0: `box` must be 4 numbers",
        ),
        (json.dumps([{"label": "question", "words": "Date"}]), [], "entity 0: `words` must be a list"),
        (json.dumps([7]), [], "entity 0 must be an object"),
        (json.dumps({"form.png": [{"label": "x"}]}), [], "(page 'form.png'): entity 0 has label 'x'"),
        ("[]", ["{root}/other.png"], "--entities holds one page's entities but 2 pages were given"),
        ("[]", ["--words-json", "{root}/words.json"], "drop --words-json"),
        ("[]", ["--entity-model", "{root}/token"], "one of --entities and --entity-model"),
        ("[]", ["--stride", "8"], "--stride does not apply"),
        ("[]", ["--link-threshold", "2"], "--link-threshold must be in [0, 1], got 2.0"),
        ("[]", ["--question", "Why?"], "--question needs a question answering model"),
    ],
)
def test_usage_errors_name_the_option_and_the_value(workspace, capsys, content, extra, message):
    args = [str(workspace / "form.png"), *(arg.format(root=workspace) for arg in extra)]
    if content is not None:
        (workspace / "bad.json").write_text(content)
        args += ["--entities", str(workspace / "bad.json")]
    assert predict(workspace, *args, out="out-bad") == 2
    assert message in capsys.readouterr().err


def test_other_misuses(workspace, capsys):
    form = str(workspace / "form.png")
    assert predict(workspace, form, "--entities", workspace / "nowhere.json") == 2
    assert "cannot read --entities" in capsys.readouterr().err
    assert main(["predict", str(workspace / "token"), form, "--entities", str(workspace / "form.json")]) == 2
    assert "--entities needs a relation extraction model; MODEL does token-classification" in capsys.readouterr().err
    assert predict(workspace, form, "--entity-model", workspace / "relation") == 2
    assert "it must be a token classification model" in capsys.readouterr().err
    # A page without an entry fails alone: the others are written, and the exit code says a page failed.
    (workspace / "by-page.json").write_text(json.dumps({"form.png": FORM}))
    assert predict(workspace, form, workspace / "other.png", "--entities", workspace / "by-page.json") == 1
    captured = capsys.readouterr()
    assert "no entry for page 'other'" in captured.err and "Wrote 1 page prediction(s)" in captured.out


def test_info_names_the_task_and_the_entity_types(workspace, capsys):
    assert main(["info", str(workspace / "relation"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["task"] == RELATION_EXTRACTION
    assert summary["labels"] == ["HEADER", "QUESTION", "ANSWER", "OTHER"]
