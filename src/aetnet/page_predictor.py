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
The page-level core of running a trained checkpoint: a page's words (given, or read by Tesseract) cut into the
processor's overlapping windows, the windows of many pages batched through the model, and the scores merged back to
one prediction per word by the rules evaluation uses too, then decoded into one JSON-ready dict per page
(`page_results.py` builds it and says what it holds), whatever the head.

[`PagePredictor`] runs pages already in memory; the pipelines (`pipeline_aetnet.py`) use it, and
[`~aetnet.inference.DocumentPredictor`] adds checkpoint folders, ONNX files and pages from paths. Relation extraction
checkpoints, which read the page's entities besides its words, run with
[`~aetnet.inference.relations.RelationPredictor`].

The model may be a PyTorch model or an exported ONNX file run by ONNX Runtime
([`~aetnet.inference.onnx_export.ONNXDocumentModel`]): both go through the same windows, merging and decoding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers.utils import logging

from .data_collator import AETNetDataCollator
from .entities import is_bio
from .page_results import batch_window_scores, best_answer, classify_page, label_words, page_result
from .pages import Page
from .processing_aetnet import WORD_INDEX_KEY, AETNetProcessor
from .tasks import MODEL_INPUT_NAMES, RELATION_EXTRACTION, TASKS, task_of
from .windowing import default_stride


logger = logging.get_logger(__name__)

# What one page can raise without the others being affected: bad files, bad words or boxes, Tesseract failures.
PAGE_ERRORS = (ValueError, RuntimeError, OSError)
_WINDOW_KEYS = ("input_ids", "bbox", "attention_mask", WORD_INDEX_KEY)


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype_and_batch_size(dtype: str | torch.dtype | None, batch_size: int) -> torch.dtype | None:
    """The predictors' shared argument check: `dtype` as a torch dtype (names as in `DTYPES`), `batch_size` >= 1."""
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"`dtype` must be one of {list(DTYPES)}, got {dtype!r}")
        dtype = DTYPES[dtype]
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}")
    return dtype


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`None`/`"auto"` picks CUDA, then MPS, then CPU; anything else is passed to `torch.device`."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def text_positions(config, tokenizer) -> int:
    """Longest window (in tokens) a model with `config` and `tokenizer` take: RoBERTa-style positions start after the
    padding index."""
    config = getattr(config, "layout_config", config)
    positions = getattr(config, "max_position_embeddings", 514) - 2
    return min(positions, tokenizer.model_max_length)


class PagePredictor:
    """
    Run a token classification, sequence classification or question answering checkpoint on document pages.

    Args:
        model (`PreTrainedModel` or [`~aetnet.inference.onnx_export.ONNXDocumentModel`]): the model; its `config.id2label`
            names the labels. An ONNX model runs where its session was created (`device` and `dtype` do not apply).
        processor ([`AETNetProcessor`]): the processor saved with the model.
        task (`str`, *optional*): `"token-classification"`, `"sequence-classification"` or
            `"question-answering"`; read from `model.config.architectures` by default.
        device (`str` or `torch.device`, *optional*): where to run; `"auto"` (default) picks CUDA, MPS, then CPU.
        dtype (`str` or `torch.dtype`, *optional*): `"float16"` or `"bfloat16"` to run in half precision.
        batch_size (`int`, *optional*, defaults to 8): pages loaded together and windows per forward pass.
        max_length (`int`, *optional*): window length in tokens; defaults to what the model and tokenizer accept, at
            most 512.
        stride (`int`, *optional*): tokens shared by consecutive windows; defaults to `min(128, max_length // 4)`
            ([`~aetnet.windowing.default_stride`]).
        ocr_lang (`str`, *optional*): Tesseract language (e.g. `"eng+deu"`); defaults to the processor's.
        tesseract_config (`str`, *optional*): extra Tesseract flags (e.g. `"--psm 6"`).
        max_answer_tokens (`int`, *optional*, defaults to 30): longest answer span for question answering.
        n_best_size (`int`, *optional*, defaults to 20): start and end candidates tried per window (question
            answering; see [`~aetnet.qa_decoding.best_answer_spans`], the decoder evaluation uses too).
    """

    def __init__(
        self,
        model,
        processor: AETNetProcessor,
        *,
        task: str | None = None,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype | None = None,
        batch_size: int = 8,
        max_length: int | None = None,
        stride: int | None = None,
        ocr_lang: str | None = None,
        tesseract_config: str | None = None,
        max_answer_tokens: int = 30,
        n_best_size: int = 20,
    ):
        self.task = task_of(model.config) if task is None else task
        if self.task == RELATION_EXTRACTION:
            raise ValueError("A relation extraction model runs with `aetnet.inference.relations.RelationPredictor`")
        if self.task not in TASKS:
            raise ValueError(f"`task` must be one of {list(TASKS)}, got {self.task!r}")
        dtype = resolve_dtype_and_batch_size(dtype, batch_size)
        if isinstance(model, torch.nn.Module):
            self.device = resolve_device(device)
            self.model = model.to(device=self.device, dtype=dtype).eval()
            self.dtype = next(self.model.parameters()).dtype
        else:  # an ONNX Runtime model: takes CPU tensors and runs on its session's providers
            self.device, self.model, self.dtype = torch.device("cpu"), model, torch.float32
        self.processor = processor
        self.batch_size = batch_size
        self.ocr_lang, self.tesseract_config = ocr_lang, tesseract_config
        self.max_answer_tokens, self.n_best_size = max_answer_tokens, n_best_size
        # Right padding whatever the tokenizer's side: `window_scores` keeps the first tokens of every row.
        self.collator = AETNetDataCollator(pad_token_id=processor.tokenizer.pad_token_id)
        limit = self._text_positions()
        self.max_length = min(512, limit) if max_length is None else max_length
        if not isinstance(self.max_length, int) or not 8 <= self.max_length <= limit:
            raise ValueError(f"`max_length` must be an int in [8, {limit}] for this model, got {self.max_length!r}")
        self.stride = default_stride(self.max_length) if stride is None else stride
        if not isinstance(self.stride, int) or not 0 <= self.stride < self.max_length - 2:
            raise ValueError(f"`stride` must be an int in [0, {self.max_length - 3}], got {self.stride!r}")
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.bio = is_bio(self.labels)

    def _text_positions(self) -> int:
        return text_positions(self.model.config, self.processor.tokenizer)

    # ------------------------------------------------------------------------------------------------ public calls

    @torch.inference_mode()
    def predict_pages(
        self, pages: Sequence[Page], questions: str | Sequence[str] | None = None
    ) -> list[dict | Exception]:
        """Predict pages already in memory, one outcome per page: its dict, or the error of a page whose words or
        boxes are invalid or whose OCR failed. The windows of all pages share forward passes."""
        questions = self._check_questions(questions)
        outcomes: list[dict | Exception] = []
        prepared = []  # (result, [(question, windows), ...]) of the pages that could be encoded
        for page in pages:
            try:
                result, encoded = self.prepare(page, questions)
            except PAGE_ERRORS as error:
                outcomes.append(error)
                continue
            outcomes.append(result)
            prepared.append((result, encoded))
        outputs = iter(self.forward([w for _, encoded in prepared for _, windows in encoded for w in windows]))
        for result, encoded in prepared:
            self.decode(result, [(q, windows, [next(outputs) for _ in windows]) for q, windows in encoded])
        return outcomes

    # ------------------------------------------------------------------------------------------------ steps

    def _check_questions(self, questions: str | Sequence[str] | None) -> list[str | None]:
        if isinstance(questions, str):
            questions = [questions]
        if self.task == "question-answering" and not questions:
            raise ValueError("A question answering model needs `questions`.")
        if self.task != "question-answering" and questions:
            raise ValueError(f"`questions` are only for question answering models; this one does {self.task}.")
        return list(questions) if questions else [None]

    def prepare(self, page: Page, questions: list[str | None] | None = None) -> tuple[dict, list]:
        """
        First step for one page: read its words (OCR unless given) and cut it into windows.

        Returns:
            `(result, encoded)`: the page's output dict without predictions (name, size, words with pixel boxes) and
            `[(question, windows), ...]` (question `None` except for question answering), each window a dict of
            unpadded tensors. Raises `ValueError` (bad words or boxes) or Tesseract's error.
        """
        if page.words is not None:
            words, boxes, normalized = list(page.words), list(page.boxes), page.boxes_normalized
        else:
            words, boxes = self.processor.apply_tesseract(
                page.image, ocr_lang=self.ocr_lang, tesseract_config=self.tesseract_config
            )
            words, boxes, normalized = list(words), [list(b) for b in boxes], True
        encoded = [(q, self._encode(page.image, words, boxes, normalized, q)) for q in questions or [None]]
        return page_result(page, words, boxes, normalized, self.task), encoded

    def _encode(self, image, words, boxes, normalized, question) -> list[dict]:
        """Windows of one page (and question) as a list of unpadded dicts of tensors."""
        text, pair = (question, [words]) if question is not None else ([words], None)
        encoding = self.processor(
            [image],
            text,
            text_pair=pair,
            boxes=[boxes],
            boxes_normalized=normalized,
            apply_ocr=False,
            max_length=self.max_length,
            stride=self.stride,
            padding=False,
        )
        windows = []
        for i in range(len(encoding["input_ids"])):
            window = {key: torch.tensor(encoding[key][i]) for key in _WINDOW_KEYS}
            window["pixel_values"] = torch.as_tensor(np.asarray(encoding["pixel_values"][i]))
            windows.append(window)
        return windows

    @torch.inference_mode()
    def forward(self, windows: list[dict]) -> list[dict]:
        """Second step: run the model over windows (of any pages) in chunks of `batch_size`; returns float32 CPU
        scores per window, unpadded: `probs` (token or page classes) or `start` / `end` logits."""
        results = []
        for start in range(0, len(windows), self.batch_size):
            chunk = windows[start : start + self.batch_size]
            output = self.run_model(self.collate(chunk))
            results.extend(self.window_scores(output, [len(window["input_ids"]) for window in chunk]))
        return results

    def collate(self, windows: list[dict]) -> dict[str, torch.Tensor]:
        """The model inputs of a batch of windows, by the training collator ([`AETNetDataCollator`], without
        augmentation): text fields right-padded to the longest window, pages stacked."""
        return self.collator(windows)

    @torch.inference_mode()
    def run_model(self, batch: dict[str, torch.Tensor]):
        """The model's output on a collated batch, moved to the predictor's device and dtype first."""
        batch = {key: batch[key].to(self.device) for key in MODEL_INPUT_NAMES}
        batch["pixel_values"] = batch["pixel_values"].to(self.dtype)
        return self.model(**batch)

    def window_scores(self, output, lengths: Sequence[int]) -> list[dict]:
        """Float32 CPU scores of each window of a batch `output`, cut to the window's own number of tokens
        (`lengths`): token `logits`, page-class `probs`, or `start` / `end` logits."""
        return batch_window_scores(output, lengths, self.task)

    def decode(self, result: dict, encoded: list[tuple[str | None, list[dict], list[dict]]]) -> dict:
        """Last step: fill `result` (from [`~DocumentPredictor.prepare`]) from `(question, windows, outputs)` of each
        question (one entry with question `None` except for question answering) and return it."""
        for question, windows, outputs in encoded:
            self._decode(result, windows, outputs, question)
        return result

    def _decode(self, result: dict, windows: list[dict], outputs: list[dict], question: str | None) -> None:
        if self.task == "sequence-classification":
            classify_page(result, outputs, self.labels)
        elif self.task == "token-classification":
            unseen = label_words(result, windows, outputs, self.labels, self.bio)
            if unseen:
                logger.warning(f"{result['name']}: {unseen} word(s) were in no window and got no label.")
        else:
            answer = best_answer(
                result["words"],
                windows,
                outputs,
                question,
                n_best_size=self.n_best_size,
                max_answer_tokens=self.max_answer_tokens,
            )
            result.setdefault("answers", []).append(answer)


__all__ = [
    "DTYPES",
    "PAGE_ERRORS",
    "PagePredictor",
    "resolve_device",
    "resolve_dtype_and_batch_size",
    "text_positions",
]
