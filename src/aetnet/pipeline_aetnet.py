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
`transformers.pipeline` for AETNet checkpoints: document question answering and document token classification.

- [`AETNetDocumentQuestionAnsweringPipeline`] is the stock `document-question-answering` pipeline (same call, same
  answers: `score`, `answer`, `start`, `end`) fed by the AETNet processor, so that the model gets the page pixels it
  needs (the stock one passes them only to LayoutLMv2/v3 configs, under another name).
- [`DocumentTokenClassificationPipeline`] (task `document-token-classification`) labels the words of a page and
  groups them into entities, as [`~aetnet.page_predictor.PagePredictor`] does (same dict per page).

Both take an image with given words and boxes, or run Tesseract, cut long pages into windows, and batch windows
(`batch_size=...`). A checkpoint saved by the example scripts (or passed to [`~aetnet.training.save_custom_pipelines`]) names its
pipeline in `config.json` (`custom_pipelines`) and carries this file, so that it also works where aetnet is not
installed:

```python
>>> from transformers import pipeline

>>> qa = pipeline("document-question-answering", model="outputs/docvqa", trust_remote_code=True)
>>> qa(image="scan.png", question="What is the date?")
>>> labeller = pipeline("document-token-classification", model="outputs/funsd", trust_remote_code=True)
>>> labeller(["scan.png", {"image": "form.png", "words": words, "boxes": boxes}], batch_size=2)
```

With aetnet installed and without remote code, pass the class: `pipeline("document-question-answering",
model=..., pipeline_class=AETNetDocumentQuestionAnsweringPipeline)`. Importing this module also registers the
`document-token-classification` task, for checkpoints that do not name their pipeline.

This module imports only torch, transformers and its sibling modules, so that checkpoints can ship it as remote code.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForTokenClassification
from transformers.image_utils import load_image
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.base import ChunkPipeline
from transformers.pipelines.document_question_answering import DocumentQuestionAnsweringPipeline

from .page_predictor import PagePredictor, text_positions
from .pages import as_page
from .tasks import TASKS
from .windowing import default_stride


TASK = TASKS["token-classification"].pipeline
QA_TASK = TASKS["question-answering"].pipeline


class DocumentTokenClassificationPipeline(ChunkPipeline):
    """
    Label the words of document pages and group them into entities, with OCR unless words and boxes are given and
    overlapping windows for long pages. Each input is one page: a path to an image, a PIL image, or a dict `{"image",
    "words", "boxes", "boxes_normalized"}` (pixel boxes unless `boxes_normalized`); each output is the page dict of
    [`~aetnet.inference.DocumentPredictor`] (`words` with label and confidence, `entities`). The windows of all pages
    are batched together (`batch_size`).

    Pipeline arguments (at creation or per call): `max_length`, `stride` (window length and overlap in tokens),
    `ocr_lang`, `tesseract_config` (Tesseract settings).
    """

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False

    def _sanitize_parameters(self, max_length=None, stride=None, ocr_lang=None, tesseract_config=None, **kwargs):
        preprocess_params = {
            key: value
            for key, value in (
                ("max_length", max_length),
                ("stride", stride),
                ("ocr_lang", ocr_lang),
                ("tesseract_config", tesseract_config),
            )
            if value is not None
        }
        return preprocess_params, {}, {}

    def _predictor(self, **settings) -> PagePredictor:
        """A predictor over this pipeline's model and processor; cheap, as the model is only referenced."""
        return PagePredictor(self.model, self.processor, task="token-classification", device=self.device, **settings)

    def preprocess(self, inputs, **settings):
        result, ((_, windows),) = self._predictor(**settings).prepare(as_page(inputs))
        for index, window in enumerate(windows):
            yield {
                "input_ids": window["input_ids"][None],
                "bbox": window["bbox"][None],
                "attention_mask": window["attention_mask"][None],
                "pixel_values": window["pixel_values"][None],
                "window": window,
                "result": result,
                "settings": settings,
                "is_last": index == len(windows) - 1,
            }

    def _forward(self, model_inputs):
        # Batched (`batch_size` > 1), the per-window entries come as lists, one item per window of the batch.
        extras = {key: model_inputs.pop(key) for key in ("window", "result", "settings", "is_last")}
        batched = isinstance(extras["is_last"], list)
        if not batched:
            extras = {key: [value] for key, value in extras.items()}
        predictor = self._predictor()
        output = predictor.run_model(model_inputs)
        scores = predictor.window_scores(output, [len(window["input_ids"]) for window in extras["window"]])
        outputs = {"scores": scores, **extras}
        return outputs if batched else {key: value[0] for key, value in outputs.items()}

    def postprocess(self, all_outputs):
        first = all_outputs[0]
        windows = [output["window"] for output in all_outputs]
        scores = [output["scores"] for output in all_outputs]
        return self._predictor(**first["settings"]).decode(first["result"], [(None, windows, scores)])


class AETNetDocumentQuestionAnsweringPipeline(DocumentQuestionAnsweringPipeline):
    """
    transformers' `document-question-answering` pipeline for AETNet (and LayoutLMv3 baseline) checkpoints saved with
    an [`~aetnet.processing_aetnet.AETNetProcessor`]: the same call (`image`, `question`, optional `word_boxes` as
    `(word, [x0, y0, x1, y1])` pairs on the 0-1000 scale, or a list of such dicts; `top_k`, `max_answer_len`,
    `handle_impossible_answer`, `doc_stride`, `max_seq_len`, `lang`, `tesseract_config`) and the same answers, with
    the page pixels passed to the model, the answer searched over the text tokens only, and windows batched
    (`batch_size`). `max_seq_len` defaults to what the model takes (at most 512 tokens), `doc_stride` to
    `min(128, max_seq_len // 4)`.
    """

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False

    def check_model_type(self, supported_models):
        """Any extractive QA head with `start_logits` / `end_logits` over LayoutLMv3-style inputs will do."""

    def preprocess(
        self,
        input,
        padding="do_not_pad",
        doc_stride=None,
        max_seq_len=None,
        word_boxes=None,
        lang=None,
        tesseract_config="",
        timeout=None,
    ):
        if input.get("image") is None:
            raise ValueError("AETNet reads the page: give an `image` (with `word_boxes`, or Tesseract reads it).")
        image = load_image(input["image"], timeout=timeout)
        if "word_boxes" in input:
            words = [word for word, _ in input["word_boxes"]]
            boxes = [list(box) for _, box in input["word_boxes"]]
        else:
            words, boxes = self.processor.apply_tesseract(image, ocr_lang=lang, tesseract_config=tesseract_config)
        if max_seq_len is None:
            max_seq_len = min(512, text_positions(self.model.config, self.processor.tokenizer))
        if doc_stride is None:
            doc_stride = default_stride(max_seq_len)
        encoding = self.processor(
            image,
            input["question"],
            text_pair=words,
            boxes=boxes,
            boxes_normalized=True,
            apply_ocr=False,
            max_length=max_seq_len,
            stride=doc_stride,
            padding=padding,
            truncation=True,
            return_overflowing_tokens=True,
        )
        num_spans = len(encoding["input_ids"])
        for span in range(num_spans):
            # 1 marks what cannot be an answer: the question and special tokens; <s> stays open for "no answer".
            p_mask = [int(sequence != 1) for sequence in encoding.sequence_ids(span)]
            p_mask[0] = 0
            yield {
                "input_ids": torch.tensor(encoding["input_ids"][span])[None],
                "bbox": torch.tensor(encoding["bbox"][span])[None],
                "attention_mask": torch.tensor(encoding["attention_mask"][span])[None],
                "pixel_values": torch.as_tensor(encoding["pixel_values"][span])[None].to(self.model.dtype),
                # A tensor, so that batching pads it (with 1) like the logits.
                "p_mask": torch.tensor(p_mask)[None],
                "word_ids": encoding.word_ids(span),
                "words": words,
                "is_last": span == num_spans - 1,
            }

    def _forward(self, model_inputs, **generate_kwargs):
        length = model_inputs["input_ids"].shape[1]
        outputs = super()._forward(model_inputs, **generate_kwargs)
        # The QA head scores the visual tokens after the text too: answers are text tokens.
        for key in ("start_logits", "end_logits"):
            outputs[key] = outputs[key][:, :length]
        return outputs


# Once per process: this module is imported again, under another name, each time a checkpoint's remote pipeline code
# is loaded, and registering twice makes transformers warn that the task is being overwritten.
if TASK not in PIPELINE_REGISTRY.get_supported_tasks():
    PIPELINE_REGISTRY.register_pipeline(
        TASK,
        pipeline_class=DocumentTokenClassificationPipeline,
        pt_model=AutoModelForTokenClassification,
        type="multimodal",
    )


__all__ = [
    "AETNetDocumentQuestionAnsweringPipeline",
    "DocumentTokenClassificationPipeline",
    "QA_TASK",
    "TASK",
]
