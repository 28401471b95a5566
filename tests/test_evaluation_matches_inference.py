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
"""Evaluation (the example scripts) and inference (`DocumentPredictor`, `aetnet predict`) decode alike: the same
answer span of a multi-window DocVQA page, the same per-word labels of a multi-window form, on cases where the rules
they used before (start + end logits vs. a product of softmaxes over page words; averaged logits vs. averaged
probabilities) disagree."""

from __future__ import annotations

from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch
from conftest import load_example
from PIL import Image
from transformers import LayoutLMv3ImageProcessorPil

from aetnet import AETNetProcessor, DocumentPredictor
from aetnet.data import generate_synthetic_forms
from aetnet.data.reader_utils import token_classification_features
from aetnet.data.tokenizer_training import train_layoutlmv3_tokenizer
from aetnet.data_collator import AETNetDataCollator
from aetnet.pages import Page
from aetnet.qa_decoding import best_answer_spans
from aetnet.tasks import MODEL_INPUT_NAMES
from aetnet.windowing import first_subword_mask, pad_rows, pad_word_index


LABELS = ["L0", "L1", "L2"]


@pytest.fixture(scope="module")
def processor():
    tokenizer = train_layoutlmv3_tokenizer(generate_synthetic_forms(3, seed=7)["words"], vocab_size=400)
    image_processor = LayoutLMv3ImageProcessorPil(apply_ocr=False, size={"height": 16, "width": 16})
    return AETNetProcessor(image_processor=image_processor, tokenizer=tokenizer)


def page_words(count: int) -> tuple[list[str], list[list[int]]]:
    """Words with several sub-tokens each; word `i` has the box whose x0 is `10 * (i + 1) + 1` (0-1000 scale)."""
    words = [f"w{i}x{i * 7 % 13}" for i in range(count)]
    return words, [[10 * (i + 1) + 1, 10, 10 * (i + 1) + 8, 20] for i in range(count)]


def token_words(bbox: torch.Tensor) -> torch.Tensor:
    """The page word of every token, read back from its box (-1 for the question and special tokens)."""
    return bbox[..., 0] // 10 - 1


class FakeModel(torch.nn.Module):
    """A model whose scores are a function of its inputs only, so that evaluation and inference see the same."""

    def __init__(self, num_labels: int = len(LABELS)):
        super().__init__()
        self.config = SimpleNamespace(
            id2label=dict(enumerate(LABELS[:num_labels])), num_labels=num_labels, max_position_embeddings=514
        )
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the module a device and dtype


class DecoyQA(FakeModel):
    """Start / end logits: high on `answer` (and nearly as high on its neighbours), a little above the rest on
    `decoy`; `<s>` says "not in this window" (+10) in every window without `answer`, and -10 where it is."""

    decoy, answer = 2, 10

    def forward(self, input_ids, bbox, attention_mask, pixel_values):
        word = token_words(bbox)
        first = word != torch.nn.functional.pad(word[:, :-1], (1, 0), value=-1)
        last = word != torch.nn.functional.pad(word[:, 1:], (0, 1), value=-1)
        start, end = torch.full(word.shape, -2.0), torch.full(word.shape, -2.0)
        for target, value in ((self.decoy, 3.0), (self.answer, 4.0), (self.answer - 1, 3.9)):
            start[(word == target) & first] = value
        for target, value in ((self.decoy, 3.0), (self.answer, 4.0), (self.answer + 1, 3.9)):
            end[(word == target) & last] = value
        holds_answer = (word == self.answer).any(dim=1)
        start[:, 0] = end[:, 0] = torch.where(holds_answer, -10.0, 10.0)
        return SimpleNamespace(start_logits=start + self.anchor, end_logits=end + self.anchor)


class EdgeTagger(FakeModel):
    """Token logits: a word seen within the first four tokens of a window (half its context cut off) gets large,
    split, wrong logits; seen further in, moderate right ones."""

    def forward(self, input_ids, bbox, attention_mask, pixel_values):
        word = token_words(bbox).clamp(min=0)
        one_hot = torch.nn.functional.one_hot
        right = one_hot(word % 3, 3).float() * 6.0
        wrong = one_hot((word + 1) % 3, 3).float() * 10.0 + one_hot((word + 2) % 3, 3).float() * 9.0
        edge = (torch.arange(word.shape[1]) <= 4)[None, :, None]
        return SimpleNamespace(logits=torch.where(edge, wrong, right) + self.anchor)


def trainer_predict(model, rows: list[dict], batch_size: int, *keys: str) -> tuple[np.ndarray, ...]:
    """What `Trainer.predict` returns for `rows`: batches collated for evaluation, outputs padded with -100."""
    collator = AETNetDataCollator(augment=False)
    outputs = {key: [] for key in keys}
    for start in range(0, len(rows), batch_size):
        batch = collator(rows[start : start + batch_size])
        output = model(**{name: batch[name] for name in MODEL_INPUT_NAMES})
        for key in keys:
            outputs[key].extend(getattr(output, key).detach())
    length = max(len(row) for row in outputs[keys[0]])
    padded = []
    for key in keys:
        rows = [pad_rows([row], length, value=-100.0)[0] for row in outputs[key]]
        padded.append(torch.stack(rows).numpy())
    return tuple(padded)


def softmax(values: np.ndarray) -> np.ndarray:
    exp = np.exp(values - values.max())
    return exp / exp.sum()


def test_document_qa_evaluation_and_inference_choose_the_same_span(processor, tmp_path):
    run_docvqa = load_example("run_docvqa")
    words, boxes = page_words(16)
    question = "total"
    image_path = tmp_path / "page.png"
    Image.new("RGB", (200, 100), "white").save(image_path)
    model = DecoyQA()
    window = {"max_length": 24, "stride": 6}

    # Inference: DocumentPredictor, as `aetnet predict` runs it.
    predictor = DocumentPredictor(model, processor, task="question-answering", device="cpu", batch_size=2, **window)
    page = Page(Image.open(image_path), words=words, boxes=boxes, boxes_normalized=True)
    (result,) = predictor.predict_pages([page], [question])
    (predicted,) = result["answers"]

    # Evaluation: run_docvqa's windows and post-processing over what the Trainer would return.
    examples = datasets.Dataset.from_dict(
        {
            "question": [question],
            "words": [words],
            "bboxes": [boxes],
            "answer_start_word": [-1],
            "answer_end_word": [-1],
            "image": [str(image_path)],
        }
    )
    data_args = SimpleNamespace(
        max_seq_length=window["max_length"],
        doc_stride=window["stride"],
        pad_to_max_length=False,
        n_best_size=20,
        max_answer_length=30,
    )
    windows, pixel_windows = run_docvqa.prepare_windows(examples, processor, data_args, None, "windows")
    rows = [pixel_windows[i] for i in range(len(pixel_windows))]
    start, end = trainer_predict(model, rows, 2, "start_logits", "end_logits")
    trainer = SimpleNamespace(predict=lambda *args, **kwargs: SimpleNamespace(predictions=(start, end), metrics={}))
    (evaluated,), _ = run_docvqa.predict_answers(trainer, windows, pixel_windows, examples, data_args, "eval")

    # The case discriminates: the decoy sits in a window without the answer, and the old rules disagreed.
    word_index = windows["word_index"]
    assert any(DecoyQA.decoy in row and DecoyQA.answer not in row for row in word_index)
    contexts = [np.flatnonzero(np.asarray(row) >= 0) for row in word_index]
    candidates = [
        (w, row, c, i, j)
        for w, (row, c) in enumerate(zip(word_index, contexts))
        for i in range(len(c))
        for j in range(i, len(c))
    ]
    # Old evaluation: start + end logits; old inference: p(start) * p(end), softmaxes over the page words only.
    logit_sum = max((start[w, c[i]] + end[w, c[j]], row[c[i]]) for w, row, c, i, j in candidates)
    product = max((softmax(start[w, c])[i] * softmax(end[w, c])[j], row[c[i]]) for w, row, c, i, j in candidates)
    assert logit_sum[1] == DecoyQA.answer and product[1] == DecoyQA.decoy

    # ...and now both call sites give the same answer: the one in the window sure of it.
    assert (evaluated["start_word"], evaluated["end_word"]) == (DecoyQA.answer, DecoyQA.answer)
    assert predicted["words"] == [DecoyQA.answer] and predicted["text"] == evaluated["answer"] == words[DecoyQA.answer]
    assert predicted["score"] == pytest.approx(evaluated["score"], abs=1e-4)
    (span,) = best_answer_spans(list(start), list(end), word_index)
    assert span["start_word"] == evaluated["start_word"]


def test_token_classification_evaluation_and_inference_give_the_same_word_labels(processor):
    utils_aetnet_data = load_example("utils_aetnet_data")
    words, boxes = page_words(60)
    image = Image.new("RGB", (200, 100), "white")
    model = EdgeTagger()
    window = {"max_length": 32, "stride": 8}

    # Inference: DocumentPredictor.
    predictor = DocumentPredictor(model, processor, task="token-classification", device="cpu", batch_size=3, **window)
    (result,) = predictor.predict_pages([Page(image, words=words, boxes=boxes, boxes_normalized=True)])
    inferred = [word["label"] for word in result["words"]]

    # Evaluation: run_funsd's / run_cord's windows and merging over what the Trainer would return.
    documents = datasets.Dataset.from_dict(
        {"id": ["page"], "words": [words], "bboxes": [boxes], "ner_tags": [[0] * len(words)], "image": [image]},
        features=token_classification_features(LABELS),
    )
    data_args = SimpleNamespace(
        max_seq_length=window["max_length"], doc_stride=window["stride"], pad_to_max_length=False
    )
    windows = utils_aetnet_data.prepare_token_windows(documents, processor, data_args, {0: 0}, None, "windows")
    assert len(windows) > 3
    (logits,) = trainer_predict(model, [windows[i] for i in range(len(windows))], 3, "logits")
    (evaluated,) = utils_aetnet_data.merge_to_words(logits, windows, documents, outside_id=0)

    assert inferred == [LABELS[i] for i in evaluated]
    # The case discriminates: averaging the logits instead would label some words otherwise.
    word_ids = pad_word_index(windows["word_index"], logits.shape[1])
    mask = first_subword_mask(word_ids, torch.as_tensor(windows["document_index"]))
    flat_logits, flat_words = torch.from_numpy(logits)[mask], word_ids[mask]
    by_logits = [int(flat_logits[flat_words == i].mean(0).argmax()) for i in range(len(words))]
    assert by_logits != list(evaluated)
