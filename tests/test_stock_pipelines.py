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
"""
transformers' own `token-classification` and `document-question-answering` pipelines (not the package's classes,
see `test_pipelines.py`) on tiny AETNet checkpoints saved with `save_pretrained`, offline. They pass the inputs they
pass to any LayoutLMv3 model: text alone for token classification (no boxes, no page), and for document QA the
page under LayoutLMv2's name `image`, which LayoutLMv3's heads do not read.
"""

import logging

import pytest
import torch
import transformers
from PIL import Image, ImageDraw
from transformers import LayoutLMv3ImageProcessorPil, RobertaTokenizer, pipeline

from aetnet import AETNetConfig, AETNetForQuestionAnswering, AETNetForTokenClassification, AETNetProcessor
from aetnet.data.tokenizer_training import train_layoutlmv3_tokenizer


WORDS = "Invoice number 4711 Date March 1987 Signed Mary Smith Total 120".split()
# No "O": the pipeline leaves out tokens labelled "O", and a random model may label them all so.
LABELS = ["B-KEY", "I-KEY", "B-VALUE"]
SENTENCE = "Invoice number 4711 signed by Mary Smith"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A token-classification and a QA checkpoint, each a `save_pretrained` folder with its processor."""
    root = tmp_path_factory.mktemp("stock-pipelines")
    tokenizer = train_layoutlmv3_tokenizer([WORDS] * 4, vocab_size=300)
    processor = AETNetProcessor(
        LayoutLMv3ImageProcessorPil(apply_ocr=False, size={"height": 16, "width": 16}), tokenizer
    )
    torch.manual_seed(0)
    labels = {"id2label": dict(enumerate(LABELS)), "label2id": {label: i for i, label in enumerate(LABELS)}}
    heads = {
        "token": AETNetForTokenClassification(AETNetConfig.from_preset("tiny", vocab_size=len(tokenizer), **labels)),
        "qa": AETNetForQuestionAnswering(AETNetConfig.from_preset("tiny", vocab_size=len(tokenizer))),
    }
    for name, model in heads.items():
        model.save_pretrained(root / name)
        processor.save_pretrained(root / name)
    return {name: str(root / name) for name in heads}


def test_the_stock_token_classification_pipeline_labels_a_plain_sentence(checkpoints):
    # LayoutLMv3's tokenizer takes words and boxes, so a sentence goes through a RoBERTa tokenizer of the same files.
    tokenizer = RobertaTokenizer.from_pretrained(checkpoints["token"])
    tagger = pipeline("token-classification", model=checkpoints["token"], tokenizer=tokenizer, device="cpu")
    assert type(tagger.model) is AETNetForTokenClassification
    entities = tagger(SENTENCE)
    encoding = tokenizer(SENTENCE, return_tensors="pt")
    with torch.no_grad():
        # What the pipeline passes: the ids alone, so LayoutLMv3 reads zero boxes and no page.
        probabilities = tagger.model(**encoding).logits.softmax(-1)[0]
        boxed = tagger.model(**encoding, bbox=torch.zeros(*encoding["input_ids"].shape, 4, dtype=torch.long)).logits
    torch.testing.assert_close(probabilities, boxed.softmax(-1)[0])
    assert len(entities) == encoding["input_ids"].shape[1] - 2  # every token but <s> and </s>
    for entity in entities:
        label = int(probabilities[entity["index"]].argmax())
        assert entity["entity"] == LABELS[label]
        assert float(entity["score"]) == pytest.approx(float(probabilities[entity["index"], label]), rel=1e-5)
        assert SENTENCE[entity["start"] : entity["end"]] == entity["word"].lstrip("Ġ")
    groups = tagger(SENTENCE, aggregation_strategy="simple")
    assert groups and {group["entity_group"] for group in groups} <= {"KEY", "VALUE"}


def page_and_words(shade: str):
    page = Image.new("RGB", (200, 100), shade)
    ImageDraw.Draw(page).rectangle((10, 10, 60, 30), fill="black")
    boxes = [
        [50 * (i % 4) + 10, 200 * (i // 4) + 10, 50 * (i % 4) + 50, 200 * (i // 4) + 50] for i in range(len(WORDS))
    ]
    return page, list(zip(WORDS, boxes))


def test_the_stock_document_question_answering_pipeline_answers_from_given_words(checkpoints, caplog):
    qa = pipeline("document-question-answering", model=checkpoints["qa"], device="cpu")
    assert type(qa.model) is AETNetForQuestionAnswering
    page, word_boxes = page_and_words("white")
    verbosity = transformers.utils.logging.get_verbosity()
    transformers.utils.logging.set_verbosity_warning()
    transformers.utils.logging.warning_once.cache_clear()
    try:
        with caplog.at_level(logging.WARNING):
            answers = qa(image=page, question="What is the invoice number?", word_boxes=word_boxes, top_k=2)
    finally:
        transformers.utils.logging.set_verbosity(verbosity)
    assert 1 <= len(answers) <= 2
    for answer in answers:
        assert answer["answer"] == " ".join(WORDS[answer["start"] : answer["end"] + 1])
        assert 0.0 < answer["score"] <= 1.0
    # The pipeline passes the page as `image`, which LayoutLMv3's heads do not read (their start / end logits would
    # cover the page patches the pipeline's decoding does not expect): the answers come from the words and boxes,
    # and a warning says so rather than dropping the page in silence.
    assert any("does not read `image`" in record.getMessage() for record in caplog.records)
    other_page, _ = page_and_words("gray")
    again = qa(image=other_page, question="What is the invoice number?", word_boxes=word_boxes, top_k=2)
    assert [(a["answer"], a["start"], a["end"]) for a in again] == [
        (a["answer"], a["start"], a["end"]) for a in answers
    ]
