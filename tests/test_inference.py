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
"""The Python inference API: pages from files, entity grouping, window merging on long pages, three heads, pictures."""

import logging
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import LayoutLMv3ImageProcessorPil

from aetnet import (
    AETNetConfig,
    AETNetForQuestionAnswering,
    AETNetForSequenceClassification,
    AETNetForTokenClassification,
    AETNetProcessor,
    DocumentPredictor,
    predict,
)
from aetnet.data import FUNSD_LABELS, generate_synthetic_forms
from aetnet.data.tokenizer_training import train_layoutlmv3_tokenizer
from aetnet.entities import group_entities, is_bio
from aetnet.pages import Page, PageLoadError, as_page, collect_page_sources
from aetnet.visualization import draw_prediction, label_colors, redact_page
from aetnet.visualization.drawing import KNOWN_COLORS


DOC_LABELS = ["email", "paper", "resume"]


@pytest.fixture(scope="module")
def forms():
    return generate_synthetic_forms(3, seed=7)


@pytest.fixture(scope="module")
def processor(forms):
    tokenizer = train_layoutlmv3_tokenizer(forms["words"], vocab_size=400)
    image_processor = LayoutLMv3ImageProcessorPil(apply_ocr=False, size={"height": 16, "width": 16})
    return AETNetProcessor(image_processor=image_processor, tokenizer=tokenizer)


def tiny_config(processor, labels=None):
    kwargs = (
        {}
        if labels is None
        else {"id2label": dict(enumerate(labels)), "label2id": {label: i for i, label in enumerate(labels)}}
    )
    return AETNetConfig.from_preset("tiny", vocab_size=len(processor.tokenizer), queue_size=8, **kwargs)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, processor):
    """Token, sequence and QA checkpoints with random weights, saved with the processor as training would."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("checkpoints")
    heads = {
        "token": AETNetForTokenClassification(tiny_config(processor, FUNSD_LABELS)),
        "sequence": AETNetForSequenceClassification(tiny_config(processor, DOC_LABELS)),
        "qa": AETNetForQuestionAnswering(tiny_config(processor)),
    }
    for name, model in heads.items():
        model.save_pretrained(root / name)
        processor.save_pretrained(root / name)
    return {name: str(root / name) for name in heads}


def form_input(form, **overrides):
    return {
        "image": form["image"],
        "words": form["words"],
        "boxes": form["bboxes"],
        "boxes_normalized": True,
        **overrides,
    }


# --------------------------------------------------------------------------------------------- entity grouping


def word(text, label, confidence=0.5, box=(0, 0, 10, 10)):
    return {"text": text, "label": label, "confidence": confidence, "box": list(box)}


def test_bio_grouping_opens_on_b_and_on_type_change():
    words = [
        word("Name", "B-QUESTION", 0.9, (10, 10, 40, 20)),
        word(":", "I-QUESTION", 0.7, (42, 12, 45, 22)),
        word("Ann", "B-ANSWER", 0.8, (50, 10, 70, 20)),
        word("Lee", "B-ANSWER", 0.6, (72, 10, 90, 20)),  # B- opens a second answer
        word("x", "O"),
        word("stray", "I-HEADER", 0.4),  # I- without B- opens an entity (as seqeval does)
        word("more", "I-ANSWER", 0.2),  # type change opens another
        word("gap", None),  # a word never seen closes the open entity
        word("tail", "I-ANSWER", 0.3),
    ]
    entities = group_entities(words, bio=True)
    assert [(e["label"], e["text"], e["words"]) for e in entities] == [
        ("QUESTION", "Name :", [0, 1]),
        ("ANSWER", "Ann", [2]),
        ("ANSWER", "Lee", [3]),
        ("HEADER", "stray", [5]),
        ("ANSWER", "more", [6]),
        ("ANSWER", "tail", [8]),
    ]
    assert entities[0]["box"] == [10, 10, 45, 22]
    assert entities[0]["confidence"] == pytest.approx(0.8)


def test_non_bio_grouping_uses_runs_of_equal_labels():
    labels = ["total", "total", "date", "O", "date", "date"]
    assert not is_bio(labels) and is_bio(FUNSD_LABELS) and not is_bio(["O"])
    entities = group_entities([word(str(i), label) for i, label in enumerate(labels)], bio=False)
    assert [(e["label"], e["words"]) for e in entities] == [("total", [0, 1]), ("date", [2]), ("date", [4, 5])]


# --------------------------------------------------------------------------------------------- pages from files


def test_collect_page_sources_names_pages_and_reports_bad_paths(tmp_path, caplog):
    Image.new("RGB", (60, 40), "white").save(tmp_path / "scan.png")
    pages = [Image.new("RGB", (50, 30), color) for color in ("white", "gray")]
    pages[0].save(tmp_path / "letter.pdf", "PDF", save_all=True, append_images=pages[1:])
    frames = [Image.new("L", (40, 20), shade) for shade in (255, 128, 0)]
    frames[0].save(tmp_path / "fax.tiff", save_all=True, append_images=frames[1:])
    (tmp_path / "notes.txt").write_text("not a page")
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 garbage")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    with caplog.at_level(logging.WARNING, logger="aetnet.page_predictor"):
        sources, errors = collect_page_sources([tmp_path, tmp_path / "missing.png"])
    assert [s.name for s in sources] == ["fax_page1", "fax_page2", "fax_page3", "letter_page1", "letter_page2", "scan"]
    assert [s.index for s in sources] == [0, 1, 2, 0, 1, None]
    assert sorted(path.rsplit("/", 1)[-1] for path, _ in errors) == ["broken.pdf", "broken.png", "missing.png"]
    assert "skipped 1 file" in caplog.text
    assert sources[2].load().getpixel((0, 0)) == (0, 0, 0)  # the third frame of the TIFF
    assert sources[3].load(pdf_dpi=72).size == (50, 30)
    assert sources[5].load().mode == "RGB"


def test_truncated_image_fails_when_loaded(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (source,), errors = collect_page_sources([tmp_path / "cut.png"])  # the header is fine
    assert errors == []
    with pytest.raises(PageLoadError, match="unreadable image"):
        source.load()


def test_as_page_rejects_incomplete_words():
    image = Image.new("RGB", (20, 20))
    with pytest.raises(ValueError, match=r"inputs\[3\].*both `words` and `boxes`"):
        as_page({"image": image, "words": ["a"]}, 3)
    with pytest.raises(ValueError, match=r"inputs\[0\].*equal length"):
        as_page({"image": image, "words": ["a", "b"], "boxes": [[0, 0, 1, 1]]})


# --------------------------------------------------------------------------------------------- token classification


def test_token_classification_schema(checkpoints, forms):
    (page,) = predict(checkpoints["token"], [form_input(forms[0])], device="cpu")
    form = forms[0]
    width, height = form["image"].size
    assert page["task"] == "token-classification" and page["ocr"] is False
    assert (page["width"], page["height"]) == (width, height)
    assert [w["text"] for w in page["words"]] == form["words"]
    for word_out, box in zip(page["words"], form["bboxes"]):
        assert word_out["label"] in FUNSD_LABELS
        assert 0.0 <= word_out["confidence"] <= 1.0
        expected = [round(box[0] * width / 1000), round(box[1] * height / 1000)]
        assert word_out["box"][:2] == expected  # pixels of the page, from 0-1000 boxes
    covered = [i for entity in page["entities"] for i in entity["words"]]
    assert covered == sorted(set(covered))
    assert all(page["words"][i]["label"] != "O" for i in covered)
    for entity in page["entities"]:
        assert entity["text"] == " ".join(page["words"][i]["text"] for i in entity["words"])
        assert entity["label"] in {"HEADER", "QUESTION", "ANSWER"}


class BoxOracle(torch.nn.Module):
    """Scores every token from its own box only, so a word's label is the same in every window that holds it."""

    def __init__(self, num_labels: int):
        super().__init__()
        self.config = SimpleNamespace(
            id2label={i: f"L{i}" for i in range(num_labels)}, num_labels=num_labels, max_position_embeddings=514
        )
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the module a device and dtype

    def forward(self, input_ids, bbox, attention_mask, pixel_values):
        label = (bbox[..., 0] // 7) % self.config.num_labels
        logits = torch.nn.functional.one_hot(label, self.config.num_labels).float() * 3.0 + self.anchor
        return SimpleNamespace(logits=logits)


def test_long_page_labels_merge_over_overlapping_windows(processor):
    num_words, num_labels = 90, 5
    words = [f"w{i}x{i * 7 % 13}" for i in range(num_words)]  # several sub-tokens each
    boxes = [[7 * i + 1, 10 + i, 7 * i + 5, 20 + i] for i in range(num_words)]
    page = Page(Image.new("RGB", (1000, 1000), "white"), words=words, boxes=boxes, boxes_normalized=True)
    predictor = DocumentPredictor(
        BoxOracle(num_labels),
        processor,
        task="token-classification",
        device="cpu",
        max_length=32,
        stride=8,
        batch_size=3,
    )
    windows = processor([page.image], [words], boxes=[boxes], boxes_normalized=True, max_length=32, stride=8)
    assert len(windows["input_ids"]) > 3  # the page spans many windows...
    seen = [set(w for w in row if w >= 0) for row in windows["word_index"]]
    assert any(seen[i] & seen[i + 1] for i in range(len(seen) - 1))  # ...which overlap

    (result,) = predictor.predict_pages([page])
    expected_confidence = math.exp(3) / (math.exp(3) + num_labels - 1)
    assert len(result["words"]) == num_words
    for i, word_out in enumerate(result["words"]):
        assert word_out["label"] == f"L{(7 * i + 1) // 7 % num_labels}", i
        assert word_out["confidence"] == pytest.approx(expected_confidence, abs=1e-4)
    # Non-BIO labels: runs of equal labels are entities; consecutive words here all differ.
    assert len(result["entities"]) == num_words


def test_bad_boxes_fail_their_page_only(checkpoints, forms):
    predictor = DocumentPredictor.from_pretrained(checkpoints["token"], device="cpu")
    good = as_page(form_input(forms[0]))
    bad = as_page(form_input(forms[1], boxes=[[5, 5, 1, 1]] * len(forms[1]["words"])))
    outcomes = predictor.predict_pages([bad, good])
    assert isinstance(outcomes[0], ValueError) and "x0 <= x1" in str(outcomes[0])
    assert len(outcomes[1]["words"]) == len(forms[0]["words"])
    with pytest.raises(ValueError, match="x0 <= x1"):
        predictor([form_input(forms[1], boxes=[[5, 5, 1, 1]] * len(forms[1]["words"]))])


def test_half_precision_runs(checkpoints, forms):
    predictor = DocumentPredictor.from_pretrained(checkpoints["token"], device="cpu", dtype="bfloat16")
    assert next(predictor.model.parameters()).dtype == torch.bfloat16
    (page,) = predictor([form_input(forms[2])])
    assert all(w["label"] in FUNSD_LABELS for w in page["words"])
    with pytest.raises(ValueError, match="`dtype`"):
        DocumentPredictor.from_pretrained(checkpoints["token"], device="cpu", dtype="float8")


def test_window_arguments_are_checked(checkpoints):
    with pytest.raises(ValueError, match="`max_length`"):
        DocumentPredictor.from_pretrained(checkpoints["token"], device="cpu", max_length=4096)
    with pytest.raises(ValueError, match="`stride`"):
        DocumentPredictor.from_pretrained(checkpoints["token"], device="cpu", max_length=32, stride=30)


# --------------------------------------------------------------------------------------------- other heads


def test_sequence_classification_averages_windows(checkpoints, forms):
    predictor = DocumentPredictor.from_pretrained(checkpoints["sequence"], device="cpu", max_length=32, stride=8)
    assert predictor.task == "sequence-classification"
    (page,) = predictor([form_input(forms[0])])
    assert page["label"] in DOC_LABELS
    assert set(page["scores"]) == set(DOC_LABELS)
    assert sum(page["scores"].values()) == pytest.approx(1.0, abs=1e-3)
    assert page["score"] == max(page["scores"].values())
    assert "entities" not in page and len(page["words"]) == len(forms[0]["words"])


def test_question_answering_returns_a_span_per_question(checkpoints, forms):
    predictor = DocumentPredictor.from_pretrained(checkpoints["qa"], device="cpu", max_length=48, stride=8)
    with pytest.raises(ValueError, match="needs `questions`"):
        predictor([form_input(forms[0])])
    questions = ["What is the date?", "Who signed?"]
    (page,) = predictor([form_input(forms[0])], questions=questions)
    assert [a["question"] for a in page["answers"]] == questions
    for answer in page["answers"]:
        first, last = answer["words"][0], answer["words"][-1]
        assert answer["words"] == list(range(first, last + 1))
        assert answer["text"] == " ".join(forms[0]["words"][first : last + 1])
        boxes = np.array([page["words"][i]["box"] for i in answer["words"]])
        assert answer["box"] == [*boxes[:, :2].min(0), *boxes[:, 2:].max(0)]
        assert 0.0 <= answer["score"] <= 1.0
    with pytest.raises(ValueError, match="only for question answering"):
        DocumentPredictor.from_pretrained(checkpoints["token"], device="cpu")([form_input(forms[0])], questions="Why?")


# --------------------------------------------------------------------------------------------- pictures


def test_draw_prediction_colours_entities_and_keeps_the_page_size():
    image = Image.new("RGB", (400, 300), "white")
    prediction = {
        "task": "token-classification",
        "width": 400,
        "height": 300,
        "entities": [
            {"label": "QUESTION", "text": "Name", "box": [20, 150, 120, 180], "confidence": 0.9, "words": [0]},
            {"label": "ANSWER", "text": "Ann", "box": [200, 150, 300, 180], "confidence": 0.8, "words": [1]},
        ],
    }
    picture = draw_prediction(image, prediction)
    assert picture.size == image.size and picture.mode == "RGB"
    assert picture.getpixel((20, 165)) == KNOWN_COLORS["QUESTION"]  # left outline of the box
    assert picture.getpixel((300, 170)) == KNOWN_COLORS["ANSWER"]
    inside = picture.getpixel((70, 170))
    assert inside != (255, 255, 255) and inside[2] > inside[0]  # translucent blue fill
    # Drawn on a half-size copy, boxes follow the page.
    small = draw_prediction(image.resize((200, 150)), prediction)
    assert small.getpixel((10, 82)) == KNOWN_COLORS["QUESTION"]
    # The legend holds a swatch of each class somewhere in a corner.
    corners = [np.asarray(picture)[:60, -150:], np.asarray(picture)[-60:, -150:], np.asarray(picture)[:60, :150]]
    corners.append(np.asarray(picture)[-60:, :150])
    assert any(
        (c == KNOWN_COLORS["ANSWER"]).all(-1).any() and (c == KNOWN_COLORS["QUESTION"]).all(-1).any() for c in corners
    )


def test_redacted_page_keeps_the_word_boxes_and_nothing_of_the_scan():
    scan = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8))
    prediction = {"width": 800, "height": 600, "words": [{"text": "secret", "box": [100, 100, 300, 140]}]}
    page = redact_page(scan, prediction)
    assert page.size == scan.size and page.mode == "RGB"
    pixels = np.asarray(page)
    assert (pixels[50:70, 150 : 150 + 1] == 200).all()  # inside the word box, scaled to the half-size scan
    assert (pixels[:40] == 255).all() and (pixels[80:] == 255).all()  # everything else is blank
    assert set(np.unique(pixels)) == {200, 255}


def test_label_colors_are_stable_and_distinct():
    colors = label_colors(["total", "date", "ANSWER", "total"])
    assert colors["ANSWER"] == KNOWN_COLORS["ANSWER"]
    assert len(set(colors.values())) == 3
    assert label_colors(["total", "date"]) == {"total": colors["total"], "date": colors["date"]}


# --------------------------------------------------------------------------------------------- transformers pipeline


def test_pipeline_task_gives_the_predictor_output(checkpoints, forms):
    from transformers import pipeline

    import aetnet.pipeline_aetnet  # noqa: F401 (registers the task)

    labeller = pipeline("document-token-classification", model=checkpoints["token"], device="cpu")
    pages = labeller([form_input(forms[1]), form_input(forms[2])], max_length=48, stride=8)
    expected = predict(checkpoints["token"], [form_input(forms[1])], device="cpu", max_length=48, stride=8)[0]
    assert len(pages) == 2 and pages[0]["words"] == expected["words"] and pages[0]["entities"] == expected["entities"]
