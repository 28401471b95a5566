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
Run a trained AETNet checkpoint on document pages, the way `aetnet predict` does.

Pages come from image files, folders and PDFs (rendered with pypdfium2), or from images in memory. Words and boxes
come from Tesseract unless they are given. Long pages are split into the processor's overlapping windows and merged
back to one prediction per word. Every page becomes one JSON-ready dict, whatever the head:

- token classification: `words` (text, box, label, confidence) and `entities` (BIO groups: label, text, box,
  confidence, word indices);
- sequence classification: `label`, `score` and `scores` (probabilities averaged over the page's windows);
- question answering: `answers`, one per question (text, box, score, word indices).

Boxes in the output are in pixels of the page image; `width` and `height` give its size.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from transformers import (
    AutoConfig,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)
from transformers.utils import logging

from aetnet.processing_aetnet import AETNetProcessor, merge_window_predictions


logger = logging.get_logger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".pbm")
PDF_EXTENSIONS = (".pdf",)
TASKS = {
    "token-classification": AutoModelForTokenClassification,
    "sequence-classification": AutoModelForSequenceClassification,
    "question-answering": AutoModelForQuestionAnswering,
}
_ARCHITECTURE_SUFFIXES = {
    "ForTokenClassification": "token-classification",
    "ForSequenceClassification": "sequence-classification",
    "ForQuestionAnswering": "question-answering",
    "ForDocumentQuestionAnswering": "question-answering",
}
# What one page can raise without the others being affected: bad files, bad words or boxes, Tesseract failures.
_PAGE_ERRORS = (ValueError, RuntimeError, OSError)
_WINDOW_KEYS = ("input_ids", "bbox", "attention_mask", "word_ids")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class PageLoadError(ValueError):
    """A path that does not exist, is not an image or a PDF, or cannot be decoded."""


@dataclass(frozen=True)
class PageSource:
    """One page to load: `index` is the 0-based page of a PDF or multi-frame TIFF, `None` for a plain image."""

    path: str
    index: int | None
    name: str

    def load(self, pdf_dpi: float = 200) -> Image.Image:
        """Decode the page into an RGB image (EXIF rotation applied, PDF pages rendered at `pdf_dpi`)."""
        try:
            if self.path.lower().endswith(PDF_EXTENSIONS):
                import pypdfium2

                document = pypdfium2.PdfDocument(self.path)
                try:
                    return document[self.index].render(scale=pdf_dpi / 72).to_pil().convert("RGB")
                finally:
                    document.close()
            with Image.open(self.path) as image:
                if self.index is not None:
                    image.seek(self.index)
                return ImageOps.exif_transpose(image).convert("RGB")
        except Exception as error:  # PIL and pdfium raise many types for damaged files
            raise PageLoadError(f"unreadable {'image' if self.index is None else 'page'}: {error}") from error


@dataclass
class Page:
    """A page in memory, with its words and boxes when they are known (else Tesseract reads them)."""

    image: Image.Image
    name: str = "page"
    source: str | None = None
    page_number: int | None = None
    words: list[str] | None = None
    boxes: list[list[float]] | None = None
    boxes_normalized: bool = False


def collect_page_sources(paths: Iterable[str | os.PathLike]) -> tuple[list[PageSource], list[tuple[str, str]]]:
    """
    Expand files and folders into pages without decoding them.

    Folders contribute their images and PDFs (sorted, not recursive); other files in them are skipped with a warning
    that counts them. A PDF gives one source per page (`<stem>_page<N>`), a multi-frame TIFF one per frame.

    Returns:
        `(sources, errors)`: the pages, and `(path, message)` for every path that cannot be used.
    """
    sources, errors = [], []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            entries = [p for p in path.iterdir() if p.is_file()]
            files = sorted(p for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS + PDF_EXTENSIONS)
            skipped = len(entries) - len(files)
            if skipped:
                logger.warning(f"{path}: skipped {skipped} file(s) that are not images or PDFs.")
            if not files:
                errors.append((str(path), "folder holds no image or PDF file"))
        elif path.is_file():
            files = [path]
        else:
            errors.append((str(path), "no such file or folder"))
            continue
        for file in files:
            try:
                sources.extend(_file_pages(file))
            except PageLoadError as error:
                errors.append((str(file), str(error)))
    return sources, errors


def _file_pages(file: Path) -> list[PageSource]:
    if file.suffix.lower() in PDF_EXTENSIONS:
        import pypdfium2

        try:
            document = pypdfium2.PdfDocument(str(file))
        except Exception as error:
            raise PageLoadError(f"not a readable PDF ({error})") from error
        try:
            count = len(document)
        finally:
            document.close()
        if count == 0:
            raise PageLoadError("PDF has no pages")
        return [PageSource(str(file), i, f"{file.stem}_page{i + 1}") for i in range(count)]
    try:
        with Image.open(file) as image:
            frames = getattr(image, "n_frames", 1) if image.format == "TIFF" else 1
    except (UnidentifiedImageError, OSError) as error:
        raise PageLoadError(f"not a readable image ({error})") from error
    if frames == 1:
        return [PageSource(str(file), None, file.stem)]
    return [PageSource(str(file), i, f"{file.stem}_page{i + 1}") for i in range(frames)]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`None`/`"auto"` picks CUDA, then MPS, then CPU; anything else is passed to `torch.device`."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def task_of(config) -> str:
    """The task of a checkpoint, from the head class named in `config.architectures`."""
    for architecture in getattr(config, "architectures", None) or []:
        for suffix, task in _ARCHITECTURE_SUFFIXES.items():
            if architecture.endswith(suffix):
                return task
    raise ValueError(
        f"Cannot tell the task of this checkpoint from `architectures`={getattr(config, 'architectures', None)}; "
        f"pass `task` (one of {list(TASKS)})."
    )


def is_bio(labels: Iterable[str]) -> bool:
    """Whether a label set is BIO: every label is `O` or starts with `B-` / `I-`, and some are not `O`."""
    labels = list(labels)
    return any(label != "O" for label in labels) and all(label == "O" or label[:2] in ("B-", "I-") for label in labels)


def group_entities(words: Sequence[dict], bio: bool) -> list[dict]:
    """
    Group consecutive labelled words into entities.

    With BIO labels, `B-X` opens an entity of type `X`, `I-X` extends an open entity of type `X` (and opens one
    otherwise, as seqeval does) and `O` closes it. Without BIO, runs of equal labels form entities and `O` is skipped.
    Each entity has its label, its words' text joined by spaces, the union of their boxes, their mean confidence and
    their indices. Words without a label (never seen by the model) close the open entity.
    """
    entities, current = [], None
    for index, word in enumerate(words):
        label = word.get("label")
        if label is None or label == "O":
            current = None
            continue
        kind, opens = (label[2:], label.startswith("B-")) if bio else (label, False)
        if current is None or opens or current["label"] != kind:
            current = {"label": kind, "words": []}
            entities.append(current)
        current["words"].append(index)
    for entity in entities:
        members = [words[i] for i in entity["words"]]
        boxes = np.asarray([w["box"] for w in members], dtype=float)
        entity["text"] = " ".join(w["text"] for w in members)
        entity["box"] = _union_box(boxes)
        entity["confidence"] = round(float(np.mean([w["confidence"] for w in members])), 4)
    return [{key: e[key] for key in ("label", "text", "box", "confidence", "words")} for e in entities]


def _union_box(boxes: np.ndarray) -> list[int]:
    return np.round(np.concatenate([boxes[:, :2].min(0), boxes[:, 2:].max(0)])).astype(int).tolist()


def _pixel_boxes(boxes: Sequence[Sequence[float]], normalized: bool, size: tuple[int, int]) -> list[list[int]]:
    array = np.asarray(boxes, dtype=float).reshape(-1, 4)
    if normalized:
        width, height = size
        array = array * np.array([width, height, width, height]) / 1000.0
    return np.round(array).astype(int).tolist()


class DocumentPredictor:
    """
    Run a token classification, sequence classification or question answering checkpoint on document pages.

    Args:
        model (`PreTrainedModel`): the model; its `config.id2label` names the labels.
        processor ([`AETNetProcessor`]): the processor saved with the model.
        task (`str`, *optional*): `"token-classification"`, `"sequence-classification"` or
            `"question-answering"`; read from `model.config.architectures` by default.
        device (`str` or `torch.device`, *optional*): where to run; `"auto"` (default) picks CUDA, MPS, then CPU.
        dtype (`str` or `torch.dtype`, *optional*): `"float16"` or `"bfloat16"` to run in half precision.
        batch_size (`int`, *optional*, defaults to 8): pages loaded together and windows per forward pass.
        max_length (`int`, *optional*): window length in tokens; defaults to what the model and tokenizer accept, at
            most 512.
        stride (`int`, *optional*): tokens shared by consecutive windows; defaults to `min(128, max_length // 4)`.
        ocr_lang (`str`, *optional*): Tesseract language (e.g. `"eng+deu"`); defaults to the processor's.
        tesseract_config (`str`, *optional*): extra Tesseract flags (e.g. `"--psm 6"`).
        max_answer_tokens (`int`, *optional*, defaults to 30): longest answer span for question answering.
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
    ):
        self.task = task_of(model.config) if task is None else task
        if self.task not in TASKS:
            raise ValueError(f"`task` must be one of {list(TASKS)}, got {self.task!r}")
        if isinstance(dtype, str):
            if dtype not in _DTYPES:
                raise ValueError(f"`dtype` must be one of {list(_DTYPES)}, got {dtype!r}")
            dtype = _DTYPES[dtype]
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}")
        self.device = resolve_device(device)
        self.model = model.to(device=self.device, dtype=dtype).eval()
        self.dtype = next(self.model.parameters()).dtype
        self.processor = processor
        self.batch_size = batch_size
        self.ocr_lang, self.tesseract_config = ocr_lang, tesseract_config
        self.max_answer_tokens = max_answer_tokens
        limit = self._text_positions()
        self.max_length = min(512, limit) if max_length is None else max_length
        if not isinstance(self.max_length, int) or not 8 <= self.max_length <= limit:
            raise ValueError(f"`max_length` must be an int in [8, {limit}] for this model, got {self.max_length!r}")
        self.stride = min(128, self.max_length // 4) if stride is None else stride
        if not isinstance(self.stride, int) or not 0 <= self.stride < self.max_length - 2:
            raise ValueError(f"`stride` must be an int in [0, {self.max_length - 3}], got {self.stride!r}")
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.bio = is_bio(self.labels)

    @classmethod
    def from_pretrained(cls, model_name_or_path: str | os.PathLike, *, task: str | None = None, **kwargs):
        """Load the model (with the Auto class of its task) and its processor from one folder; `kwargs` go to
        `DocumentPredictor`."""
        path = str(model_name_or_path)
        config = AutoConfig.from_pretrained(path)
        task = task_of(config) if task is None else task
        if task not in TASKS:
            raise ValueError(f"`task` must be one of {list(TASKS)}, got {task!r}")
        model = TASKS[task].from_pretrained(path)
        try:
            processor = AETNetProcessor.from_pretrained(path)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"{path} has no usable processor (save it with `processor.save_pretrained`): {error}"
            ) from error
        return cls(model, processor, task=task, **kwargs)

    def _text_positions(self) -> int:
        """Longest window the model and tokenizer take: RoBERTa-style positions start after the padding index."""
        config = self.model.config
        config = getattr(config, "layout_config", config)
        positions = getattr(config, "max_position_embeddings", 514) - 2
        return min(positions, self.processor.tokenizer.model_max_length)

    # ------------------------------------------------------------------------------------------------ public calls

    def __call__(self, inputs, *, questions: str | Sequence[str] | None = None, pdf_dpi: float = 200) -> list[dict]:
        """
        Predict every page of `inputs` and return one dict per page (see the module docstring).

        Args:
            inputs: a path (image, folder or PDF), a PIL image or array, a dict `{"image", "words", "boxes",
                "boxes_normalized"}`, a [`Page`], or a list of these.
            questions (`str` or `list[str]`, *optional*): the question(s) asked of every page (question answering).
            pdf_dpi (`float`, *optional*, defaults to 200): resolution PDF pages are rendered at.

        Raises:
            `PageLoadError` for paths that cannot be read, `ValueError` for bad words or boxes.
        """
        items = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        pages = []
        for index, item in enumerate(items):
            if isinstance(item, (str, os.PathLike)):
                sources, errors = collect_page_sources([item])
                if errors:
                    raise PageLoadError(f"{errors[0][0]}: {errors[0][1]}")
                for source in sources:
                    number = None if source.index is None else source.index + 1
                    pages.append(Page(source.load(pdf_dpi), source.name, source.path, number))
            else:
                pages.append(as_page(item, index))
        results = []
        for start in range(0, len(pages), self.batch_size):
            batch = pages[start : start + self.batch_size]
            for page, result in zip(batch, self.predict_pages(batch, questions)):
                if isinstance(result, Exception):
                    raise ValueError(f"{page.source or page.name}: {result}") from result
                results.append(result)
        return results

    def predict_sources(
        self,
        sources: Sequence[PageSource],
        *,
        questions: str | Sequence[str] | None = None,
        pdf_dpi: float = 200,
        words: dict[str, dict] | None = None,
        return_images: bool = False,
    ) -> Iterator[tuple[PageSource, dict | Exception, Image.Image | None]]:
        """
        Load and predict pages `batch_size` at a time, yielding `(source, outcome, image)` in order. A page that
        cannot be read or processed has its exception as outcome, so that one bad page stops nothing else. `image` is
        the decoded page with `return_images=True` (e.g. to draw on it), else `None`. `words`, if given, maps page
        names (or file names, stems, paths) to `{"words", "boxes", "boxes_normalized"}`; a page without an entry fails.
        """
        for start in range(0, len(sources), self.batch_size):
            batch = sources[start : start + self.batch_size]
            outcomes: list[dict | Exception | None] = [None] * len(batch)
            pages, positions = [], []
            for position, source in enumerate(batch):
                try:
                    image = source.load(pdf_dpi)
                    entry = {} if words is None else _words_entry(words, source)
                    page_number = None if source.index is None else source.index + 1
                    pages.append(as_page({**entry, "image": image}, position, source.name, source.path, page_number))
                    positions.append(position)
                except _PAGE_ERRORS as error:
                    outcomes[position] = error
            for position, result in zip(positions, self.predict_pages(pages, questions)):
                outcomes[position] = result
            images = [None] * len(batch)
            if return_images:
                for position, page in zip(positions, pages):
                    images[position] = page.image
            yield from zip(batch, outcomes, images)

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
            except _PAGE_ERRORS as error:
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
        pixel_boxes = _pixel_boxes(boxes, normalized, page.image.size)
        result = {
            "name": page.name,
            "source": page.source,
            "page": page.page_number,
            "width": page.image.width,
            "height": page.image.height,
            "task": self.task,
            "ocr": page.words is None,
            "words": [{"text": word, "box": box} for word, box in zip(words, pixel_boxes)],
        }
        return result, encoded

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
        pad_id = self.processor.tokenizer.pad_token_id
        for start in range(0, len(windows), self.batch_size):
            chunk = windows[start : start + self.batch_size]
            batch = {
                "input_ids": _pad_stack([w["input_ids"] for w in chunk], pad_id),
                "bbox": _pad_stack([w["bbox"] for w in chunk], 0),
                "attention_mask": _pad_stack([w["attention_mask"] for w in chunk], 0),
                "pixel_values": torch.stack([w["pixel_values"] for w in chunk]),
            }
            batch = {key: value.to(self.device) for key, value in batch.items()}
            batch["pixel_values"] = batch["pixel_values"].to(self.dtype)
            output = self.model(**batch)
            for row, window in enumerate(chunk):
                n = len(window["input_ids"])
                if self.task == "question-answering":
                    # The QA head also scores the visual tokens after the text: keep the text part.
                    start, end = output.start_logits[row, :n], output.end_logits[row, :n]
                    results.append({"start": start.float().cpu(), "end": end.float().cpu()})
                elif self.task == "token-classification":
                    results.append({"probs": output.logits[row, :n].float().softmax(-1).cpu()})
                else:
                    results.append({"probs": output.logits[row].float().softmax(-1).cpu()})
        return results

    def decode(self, result: dict, encoded: list[tuple[str | None, list[dict], list[dict]]]) -> dict:
        """Last step: fill `result` (from [`~DocumentPredictor.prepare`]) from `(question, windows, outputs)` of each
        question (one entry with question `None` except for question answering) and return it."""
        for question, windows, outputs in encoded:
            self._decode(result, windows, outputs, question)
        return result

    def _decode(self, result: dict, windows: list[dict], outputs: list[dict], question: str | None) -> None:
        words = result["words"]
        if self.task == "sequence-classification":
            probs = torch.stack([o["probs"] for o in outputs]).mean(0)
            best = int(probs.argmax())
            result["label"], result["score"] = self.labels[best], round(float(probs[best]), 4)
            result["scores"] = {label: round(float(p), 4) for label, p in zip(self.labels, probs)}
        elif self.task == "token-classification":
            length = max(len(w["word_ids"]) for w in windows)
            probs = torch.zeros(len(windows), length, len(self.labels))
            word_ids = torch.full((len(windows), length), -1, dtype=torch.long)
            for i, (window, output) in enumerate(zip(windows, outputs)):
                probs[i, : len(output["probs"])] = output["probs"]
                word_ids[i, : len(window["word_ids"])] = window["word_ids"]
            mapping = torch.zeros(len(windows), dtype=torch.long)
            merged = merge_window_predictions(probs, word_ids, mapping, len(words))[0]
            unseen = 0
            for word, row in zip(words, merged):
                if torch.isnan(row).any():
                    word.update(label=None, confidence=None)
                    unseen += 1
                else:
                    best = int(row.argmax())
                    word.update(label=self.labels[best], confidence=round(float(row[best]), 4))
            if unseen:
                logger.warning(f"{result['name']}: {unseen} word(s) were in no window and got no label.")
            result["entities"] = group_entities(words, self.bio)
        else:
            result.setdefault("answers", []).append(self._best_answer(words, windows, outputs, question))

    def _best_answer(self, words: list[dict], windows: list[dict], outputs: list[dict], question: str) -> dict:
        """Highest `p(start) * p(end)` span over context tokens of all windows, `start <= end < start + max`."""
        best = (-1.0, None, None)
        for window, output in zip(windows, outputs):
            context = window["word_ids"] >= 0
            if not context.any():
                continue
            start = output["start"].masked_fill(~context, -math.inf).softmax(-1)
            end = output["end"].masked_fill(~context, -math.inf).softmax(-1)
            scores = torch.triu(start[:, None] * end[None, :]).tril(self.max_answer_tokens - 1)
            flat = int(scores.argmax())
            score = float(scores.flatten()[flat])
            if score > best[0]:
                s, e = divmod(flat, scores.shape[1])
                best = (score, int(window["word_ids"][s]), int(window["word_ids"][e]))
        score, first, last = best
        if first is None:
            return {"question": question, "text": "", "box": None, "score": 0.0, "words": []}
        members = words[first : last + 1]
        return {
            "question": question,
            "text": " ".join(w["text"] for w in members),
            "box": _union_box(np.asarray([w["box"] for w in members], dtype=float)),
            "score": round(score, 4),
            "words": list(range(first, last + 1)),
        }


def _pad_stack(rows: list[torch.Tensor], value: int) -> torch.Tensor:
    """Right-pad the first dimension of each row to the longest and stack."""
    length = max(len(row) for row in rows)
    return torch.stack(
        [torch.nn.functional.pad(row, (0, 0) * (row.dim() - 1) + (0, length - len(row)), value=value) for row in rows]
    )


def as_page(
    item, index: int = 0, name: str | None = None, source: str | None = None, page_number: int | None = None
) -> Page:
    """A [`Page`] from a `Page`, a PIL image / array, or a dict `{"image", "words", "boxes", "boxes_normalized"}`."""
    if isinstance(item, Page):
        return item
    entry = item if isinstance(item, dict) else {"image": item}
    where = f"page {name!r}" if name else f"`inputs[{index}]`"
    if "image" not in entry:
        raise ValueError(f"{where} is a dict without an `image`")
    image = entry["image"]
    if isinstance(image, (str, os.PathLike)):
        image = PageSource(str(image), None, Path(image).stem).load()
    elif not isinstance(image, Image.Image):
        image = Image.fromarray(np.asarray(image))
    words, boxes = entry.get("words"), entry.get("boxes")
    if (words is None) != (boxes is None):
        raise ValueError(f"{where} must give both `words` and `boxes`, or neither (to run OCR)")
    if words is not None and (not isinstance(words, list) or not isinstance(boxes, list) or len(words) != len(boxes)):
        raise ValueError(
            f"{where} needs lists `words` and `boxes` of equal length, got "
            f"{type(words).__name__} of {len(words) if hasattr(words, '__len__') else '?'} and "
            f"{type(boxes).__name__} of {len(boxes) if hasattr(boxes, '__len__') else '?'}"
        )
    return Page(
        image=image.convert("RGB"),
        name=name or f"page{index}",
        source=source,
        page_number=page_number,
        words=words,
        boxes=boxes,
        boxes_normalized=bool(entry.get("boxes_normalized", False)),
    )


def words_key_for(words: dict[str, dict], source: PageSource) -> str | None:
    """The key of a page in a `--words-json` mapping: its page name, file name, stem or path; `None` if absent."""
    path = Path(source.path)
    for key in (source.name, path.name, path.stem, source.path, str(path.resolve())):
        if key in words:
            return key
    return None


def _words_entry(words: dict[str, dict], source: PageSource) -> dict:
    key = words_key_for(words, source)
    entry = None if key is None else words[key]
    if entry is None:
        raise ValueError(f"no entry for page {source.name!r} in the words JSON (keys: {sorted(words)[:5]})")
    if not isinstance(entry, dict):
        raise ValueError(f"the words JSON entry of page {source.name!r} must be an object, got {type(entry).__name__}")
    return entry


def predict(model, inputs, *, questions: str | Sequence[str] | None = None, **kwargs) -> list[dict]:
    """
    Predict `inputs` (paths, images, dicts with words and boxes) with `model`, a checkpoint folder or a
    [`DocumentPredictor`]; `kwargs` go to `DocumentPredictor.from_pretrained`. One dict per page.

    Example:

    ```python
    >>> import aetnet.inference
    >>> pages = aetnet.inference.predict("outputs/aetnet-synthetic", ["scan.png", "letters.pdf"])
    >>> [(e["label"], e["text"]) for e in pages[0]["entities"]][:3]
    ```
    """
    if isinstance(model, DocumentPredictor):
        if kwargs:
            raise ValueError(
                f"Settings {sorted(kwargs)} apply when loading: pass them to `DocumentPredictor`, not here."
            )
        predictor = model
    else:
        predictor = DocumentPredictor.from_pretrained(model, **kwargs)
    return predictor(inputs, questions=questions)


__all__ = [
    "DocumentPredictor",
    "IMAGE_EXTENSIONS",
    "PDF_EXTENSIONS",
    "Page",
    "PageLoadError",
    "PageSource",
    "TASKS",
    "as_page",
    "collect_page_sources",
    "group_entities",
    "is_bio",
    "predict",
    "resolve_device",
    "task_of",
    "words_key_for",
]
