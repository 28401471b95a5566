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
Processor class for AETNet: the stock LayoutLMv3 image processor and tokenizer, plus what LayoutLMv3 users keep
re-implementing (method.md section 7): box validation and clipping, sliding windows that lose no word, a per-token
word index to merge window predictions back to one score per word, and the augmented momentum view.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import ChannelDimension
from transformers.models.layoutlmv3.image_processing_pil_layoutlmv3 import apply_tesseract as _stock_apply_tesseract
from transformers.processing_utils import ProcessorMixin
from transformers.tokenization_utils_base import BatchEncoding, TruncationStrategy
from transformers.utils import logging

from .augmentation import AugmentationConfig, augment_pixel_values
from .windowing import (
    default_stride,
    first_subword_mask,
    merge_window_predictions,
    pad_word_index,
    word_index_rows,
)


logger = logging.get_logger(__name__)

WORD_INDEX_KEY = "word_index"
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


def _to_rgb_image(image, index: int) -> Image.Image:
    """Convert a PIL image of any mode, a numpy array or a torch tensor into an 8-bit RGB PIL image."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if isinstance(image, Image.Image):
        try:
            image.load()  # PIL decodes lazily: a truncated or corrupt file only fails here
        except (OSError, SyntaxError) as error:
            raise ValueError(f"`images[{index}]` could not be decoded (truncated or corrupt file?): {error}") from None
        if image.mode == "RGB":
            return image
        if image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
            # Transparent regions of a page are paper, not black: composite onto white.
            rgba = image.convert("RGBA")
            return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
        if image.mode.startswith("I") or image.mode == "F":
            # PIL's own conversion clips 16-bit and float pages to 255 (a white page); rescale instead.
            image = np.asarray(image)
        else:
            return image.convert("RGB")
    if not isinstance(image, np.ndarray):
        raise ValueError(f"`images[{index}]` must be a PIL image, a numpy array or a torch tensor, got {type(image)}")

    array = image
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)  # channels-first -> channels-last
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(
            f"`images[{index}]` must have shape (height, width), (height, width, 1|3|4) or (1|3|4, height, width), "
            f"got {array.shape}"
        )
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError(f"`images[{index}]` contains NaN or infinite pixel values")
        low, high = float(array.min(initial=0)), float(array.max(initial=0))
        if low < 0 or high > 255:
            raise ValueError(f"`images[{index}]` float pixels must be in [0, 1] or [0, 255], got [{low}, {high}]")
        array = np.rint(array * 255 if high <= 1 else array).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.integer) and array.dtype != np.uint8:
        low, high = int(array.min(initial=0)), int(array.max(initial=0))
        if low < 0 or high > 65535:
            raise ValueError(f"`images[{index}]` integer pixels must be in [0, 65535], got [{low}, {high}]")
        # 16-bit data (uint16, or wider ints holding values above 255) is rescaled; 0-255 ints are kept as they are.
        sixteen_bit = array.dtype == np.uint16 or high > 255
        array = np.rint(array / 257).astype(np.uint8) if sixteen_bit else array.astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ValueError(f"`images[{index}]` has unsupported dtype {array.dtype}")
    return _to_rgb_image(Image.fromarray(array), index)


def run_tesseract(page: Image.Image, ocr_lang: str, tesseract_config: str) -> tuple[list[str], list[list[int]]]:
    """
    The one Tesseract wrapper of the package (the processor's `apply_ocr=True` path, [`AETNetProcessor.apply_tesseract`]
    and the OCR cache's default engine): the stock LayoutLMv3 `apply_tesseract` through `pytesseract` on an RGB page,
    empty words dropped, boxes normalised to 0-1000 by the page size (not yet clipped), as plain lists.
    """
    words, boxes = _stock_apply_tesseract(
        np.asarray(page), ocr_lang, tesseract_config, input_data_format=ChannelDimension.LAST
    )
    return list(words), [[int(value) for value in box] for box in boxes]


def _prepare_boxes(boxes, doc_index: int, page_size: tuple[int, int], normalized: bool) -> tuple[list, int]:
    """Validate one document's word boxes, scale them to 0-1000 and clip; returns the boxes and the clip count."""
    rows = []
    for word_index, box in enumerate(boxes):
        if isinstance(box, (str, bytes)) or not hasattr(box, "__len__") or len(box) != 4:
            raise ValueError(f"`boxes[{doc_index}][{word_index}]` must be 4 coordinates (x0, y0, x1, y1), got {box!r}")
        try:
            row = [float(coordinate) for coordinate in box]
        except (TypeError, ValueError):
            raise ValueError(f"`boxes[{doc_index}][{word_index}]` must hold numbers, got {box!r}") from None
        if not all(math.isfinite(coordinate) for coordinate in row):
            raise ValueError(f"`boxes[{doc_index}][{word_index}]` contains NaN or inf: {row}")
        if row[0] > row[2] or row[1] > row[3]:
            raise ValueError(f"`boxes[{doc_index}][{word_index}]` must satisfy x0 <= x1 and y0 <= y1, got {row}")
        rows.append(row)
    array = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    if not normalized:
        width, height = page_size
        array = array * (1000.0 / np.array([width, height, width, height]))
    out_of_range = int(((array < 0) | (array > 1000)).sum())
    return np.floor(np.clip(array, 0, 1000)).astype(np.int64).tolist(), out_of_range


class AETNetProcessor(ProcessorMixin):
    r"""
    Constructs an AETNet processor from a LayoutLMv3 image processor and a LayoutLMv3 tokenizer.

    On top of [`LayoutLMv3Processor`] it:

    - normalises pixel boxes to 0-1000 from the original page size (or takes normalised boxes), clips out-of-range
      coordinates with a warning that counts them, and raises `ValueError` on malformed boxes;
    - turns long documents into overlapping windows (`stride`) that all keep their page image, and returns
      `word_index` (the document word of each token) so that window predictions can be merged back per word
      ([`~AETNetProcessor.merge_window_predictions`]), also after `dataset.map`;
    - returns a [`BatchEncoding`] that keeps the tokenizer's encodings, so that `encoding.word_ids(i)`,
      `encoding.sequence_ids(i)` and `encoding.token_to_word(i, j)` work as with [`LayoutLMv3Processor`];
    - puts labels only on the first sub-token of each word, also when a window starts in the middle of a word;
    - optionally returns `pixel_values_aug`, an augmented copy of the page for the momentum ViT only.

    Args:
        image_processor (`LayoutLMv3ImageProcessorPil`, *optional*): the image processor; its `apply_ocr`,
            `ocr_lang` and `tesseract_config` are the defaults of the corresponding call arguments.
        tokenizer (`LayoutLMv3Tokenizer`, *optional*): the tokenizer.
    """

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer)

    def __call__(
        self,
        images,
        text=None,
        text_pair=None,
        boxes=None,
        word_labels=None,
        *,
        label2id: dict[str, int] | None = None,
        boxes_normalized: bool = False,
        apply_ocr: bool | None = None,
        ocr_lang: str | None = None,
        tesseract_config: str | None = None,
        max_length: int = 512,
        stride: int = 128,
        padding: bool | str = "max_length",
        truncation: bool | str = True,
        return_overflowing_tokens: bool = True,
        return_augmented_view: bool = False,
        augmentation_generator: torch.Generator | None = None,
        return_tensors: str | None = None,
        **kwargs,
    ) -> BatchEncoding:
        r"""
        Prepare one page or a batch of pages for an AETNet model.

        Args:
            images (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                One page image per document, in any PIL mode (L, RGB, RGBA, P, I;16, ...) or as an array (HW, HWC or
                CHW; uint8, 16-bit, or float in [0, 1], or in [0, 255] when the maximum exceeds 1). Converted to
                8-bit RGB, transparent areas composited onto white. The original size normalises pixel boxes.
            text (`list[str]`, `list[list[str]]`, `str` or `list[str]`, *optional*):
                The words of each document (token classification), or, together with `text_pair` or with OCR, the
                question(s) for question answering.
            text_pair (`list[str]` or `list[list[str]]`, *optional*): the words when `text` holds questions.
            boxes (`list[list[float]]` or `list[list[list[float]]]`, *optional*): one `(x0, y0, x1, y1)` per word,
                in pixels of the original image unless `boxes_normalized=True`.
            word_labels (`list[int]` or `list[list[int]]`, *optional*): one label per word, for training: an int
                id (>= 0, or -100 to ignore the word), or a label name when `label2id` is given.
            label2id (`dict[str, int]`, *optional*): maps label names in `word_labels` to ids (e.g.
                `model.config.label2id`); unknown names, and ids that are none of its values, raise `ValueError`.
            boxes_normalized (`bool`, *optional*, defaults to `False`): whether `boxes` are already on the 0-1000
                scale.
            apply_ocr (`bool`, *optional*): run Tesseract to get words and boxes. Defaults to
                `image_processor.apply_ocr`. Cannot be combined with `boxes` or `word_labels`.
            ocr_lang, tesseract_config (`str`, *optional*): Tesseract language (e.g. `"eng"`) and extra flags (e.g.
                `"--psm 6"`); default to the image processor's settings.
            max_length (`int`, *optional*, defaults to 512): window length in tokens.
            stride (`int`, *optional*, defaults to 128): number of tokens shared by consecutive windows.
            padding, truncation: as for the tokenizer. For question answering `truncation=True` means
                `"only_second"`, so the question is repeated whole in every window.
            return_overflowing_tokens (`bool`, *optional*, defaults to `True`): split long documents into windows.
                When `False`, words beyond `max_length` are dropped and a warning says how many.
            return_augmented_view (`bool`, *optional*, defaults to `False`): also return `pixel_values_aug`
                (see [`~aetnet.augmentation.augment_pixel_values`]), drawn with `augmentation_generator`.
            return_tensors (`str`, *optional*): `"pt"` or `"np"`; lists when `None`.
            **kwargs: forwarded to the tokenizer (e.g. `return_offsets_mapping=True`).

        Returns:
            [`BatchEncoding`] with one row per window: `input_ids`, `attention_mask`, `bbox`, `labels` (with
            `word_labels`), `pixel_values` (the window's page), `pixel_values_aug` (if asked), `word_index` (source
            word of each token, -1 for special, question and padding tokens; see [`word_index_rows`]),
            `overflow_to_sample_mapping` (document of each window), and with OCR `words` / `boxes` (per document,
            boxes normalised). It keeps the tokenizer's encodings: `encoding.word_ids(i)` and
            `encoding.sequence_ids(i)` of window `i` are the stock ones (`None` for special tokens; for question
            answering the question's tokens have word ids too, in sequence 0).

        A word longer than a whole window is kept, split over consecutive windows; its label sits on its first
        sub-token only, in the first window that holds it.
        """
        if images is None:
            raise ValueError("`images` is required: AETNet reads the page image with LayoutLMv3 and the aligner ViT.")
        apply_ocr = self.image_processor.apply_ocr if apply_ocr is None else apply_ocr
        if isinstance(images, (list, tuple)) or (isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4):
            image_list = list(images)
        else:
            image_list = [images]
        pages = [_to_rgb_image(image, index) for index, image in enumerate(image_list)]
        if max_length is None:
            max_length = self.tokenizer.model_max_length

        if apply_ocr:
            words, boxes, labels, questions = self._ocr_inputs(
                pages, text, text_pair, boxes, word_labels, ocr_lang, tesseract_config
            )
            boxes_normalized = True
        else:
            words, boxes, labels, questions = self._batch_inputs(text, text_pair, boxes, word_labels)
        self._validate_lengths(words, boxes, labels, questions, num_pages=len(pages))
        if labels is not None:
            labels = self._label_ids(labels, label2id)
        words = self._replace_empty_words(words)
        prepared_boxes, clipped = [], 0
        for doc_index, (doc_boxes, page) in enumerate(zip(boxes, pages)):
            doc_boxes, doc_clipped = _prepare_boxes(doc_boxes, doc_index, page.size, boxes_normalized)
            prepared_boxes.append(doc_boxes)
            clipped += doc_clipped
        if clipped:
            logger.warning(
                f"{clipped} box coordinate(s) fell outside the page (0-1000 after normalisation) and were clipped."
            )

        is_qa = questions is not None
        if truncation is True:
            truncation = "only_second" if is_qa else "longest_first"
        truncating = truncation not in (False, None, "do_not_truncate", TruncationStrategy.DO_NOT_TRUNCATE)
        if truncating and return_overflowing_tokens:
            self._validate_window(max_length, stride, questions)

        encoding = self.tokenizer(
            text=questions if is_qa else words,
            text_pair=words if is_qa else None,
            boxes=prepared_boxes,
            word_labels=labels,
            padding=padding,
            truncation=truncation,
            max_length=max_length,
            stride=stride,
            return_overflowing_tokens=return_overflowing_tokens,
            **kwargs,
        )
        num_windows = len(encoding["input_ids"])
        mapping = encoding.pop("overflow_to_sample_mapping", list(range(num_windows)))
        word_ids = word_index_rows(encoding, content_sequence=1 if is_qa else 0)
        self._check_coverage(word_ids, mapping, [len(doc) for doc in words])
        if "labels" in encoding and self.tokenizer.only_label_first_subword:
            padded = pad_word_index(word_ids)
            keep = first_subword_mask(padded, torch.tensor(mapping)).tolist()
            encoding["labels"] = [
                [label if keep_token else self.tokenizer.pad_token_label for label, keep_token in zip(row, keep_row)]
                for row, keep_row in zip(encoding["labels"], keep)
            ]

        page_pixels = self.image_processor(pages, apply_ocr=False, return_tensors=None)["pixel_values"]
        data = dict(encoding)
        data[WORD_INDEX_KEY] = word_ids
        data["overflow_to_sample_mapping"] = list(mapping)
        images = {"pixel_values": [page_pixels[doc] for doc in mapping]}
        if return_augmented_view:
            augmented = augment_pixel_values(
                torch.from_numpy(np.stack(images["pixel_values"])) if num_windows else torch.empty(0, 3, 1, 1),
                augmentation_generator,
                config=self.augmentation_config(),
            )
            images["pixel_values_aug"] = list(augmented.numpy())
        # The text fields convert as the tokenizer's do; the pages as the image processor's (stacked float arrays).
        features = BatchEncoding(data=data, encoding=encoding.encodings, tensor_type=return_tensors)
        features.update(BatchFeature(data=images, tensor_type=return_tensors))
        if apply_ocr:
            # Added after tensor conversion: words are strings and documents have different lengths.
            features["words"], features["boxes"] = words, prepared_boxes
        return features

    def _ocr_inputs(self, pages, text, text_pair, boxes, word_labels, ocr_lang, tesseract_config):
        """Words and normalised boxes from Tesseract; `text`, if given, is the question of each page."""
        if boxes is not None:
            raise ValueError(
                "You cannot provide bounding boxes together with `apply_ocr=True` (the default of an image processor "
                "built with `apply_ocr=True`); pass `apply_ocr=False` to use your own words and boxes."
            )
        if word_labels is not None:
            raise ValueError(
                "You cannot provide word labels together with `apply_ocr=True`; pass `apply_ocr=False` and the words."
            )
        if text_pair is not None:
            raise ValueError(
                "With `apply_ocr=True` the words come from OCR: pass the question as `text`, not `text_pair`."
            )
        ocr = [self.apply_tesseract(page, ocr_lang=ocr_lang, tesseract_config=tesseract_config) for page in pages]
        questions = None if text is None else ([text] if isinstance(text, str) else list(text))
        return [words for words, _ in ocr], [boxes for _, boxes in ocr], None, questions

    @staticmethod
    def _batch_inputs(text, text_pair, boxes, word_labels):
        """Given words and boxes, always as batches: (words, boxes, labels, questions or None)."""
        if text is None:
            raise ValueError("`text` (the words, or the question with `text_pair`) is required without OCR.")
        if boxes is None:
            raise ValueError("You must provide `boxes` (one per word) when `apply_ocr=False`.")
        is_qa = text_pair is not None
        if not is_qa and isinstance(text, str):
            raise ValueError(
                "`text` must be the list of words of a document (or a batch of such lists); to ask a question, "
                "pass it as `text` and the words as `text_pair`."
            )
        words = text_pair if is_qa else text
        if len(words) > 0 and isinstance(words[0], (list, tuple)):
            questions = ([text] if isinstance(text, str) else list(text)) if is_qa else None
            return words, boxes, word_labels, questions
        labels = None if word_labels is None else [word_labels]
        return [words], [boxes], labels, ([text] if is_qa else None)

    def augmentation_config(self, **overrides) -> AugmentationConfig:
        """The default [`AugmentationConfig`] with the normalisation of this processor's image processor, so that
        photometric jitter is applied in pixel space; pass it to [`AETNetDataCollator`] as `augmentation_config`."""
        image_processor = self.image_processor
        if image_processor.do_normalize:
            mean, std = image_processor.image_mean, image_processor.image_std
            mean = (mean,) * 3 if isinstance(mean, (int, float)) else tuple(mean)
            std = (std,) * 3 if isinstance(std, (int, float)) else tuple(std)
        else:
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        return AugmentationConfig(**{"image_mean": mean, "image_std": std, **overrides})

    def _validate_lengths(self, words, boxes, labels, questions, num_pages: int) -> None:
        if len(words) != num_pages:
            raise ValueError(
                f"Got {num_pages} image(s) but {len(words)} document(s) of words: one image per document."
            )
        if len(boxes) != len(words):
            raise ValueError(f"Got {len(words)} document(s) of words but {len(boxes)} of boxes.")
        if labels is not None and len(labels) != len(words):
            raise ValueError(f"Got {len(words)} document(s) of words but {len(labels)} of word_labels.")
        if questions is not None and len(questions) != len(words):
            raise ValueError(f"Got {len(words)} document(s) of words but {len(questions)} question(s).")
        for doc_index, doc_words in enumerate(words):
            if len(boxes[doc_index]) != len(doc_words):
                raise ValueError(
                    f"Document {doc_index} has {len(doc_words)} words but {len(boxes[doc_index])} boxes: "
                    "one box per word."
                )
            if labels is not None and len(labels[doc_index]) != len(doc_words):
                raise ValueError(
                    f"Document {doc_index} has {len(doc_words)} words but {len(labels[doc_index])} word_labels."
                )
            for word_index, word in enumerate(doc_words):
                if not isinstance(word, str):
                    raise ValueError(f"`words[{doc_index}][{word_index}]` must be a string, got {word!r}")
        for index, question in enumerate(questions or []):
            if not isinstance(question, str) or not question.strip():
                raise ValueError(f"`question[{index}]` must be a non-empty string, got {question!r}")

    @staticmethod
    def _label_ids(labels: list[list], label2id: dict[str, int] | None) -> list[list[int]]:
        """Label ids per word; a name, a float or a negative id would reach the loss as a wrong class silently."""
        known = None if label2id is None else set(label2id.values())
        ids = []
        for doc_index, doc_labels in enumerate(labels):
            doc_ids = []
            for word_index, label in enumerate(doc_labels):
                if isinstance(label, torch.Tensor) and label.ndim == 0 and not label.is_floating_point():
                    label = label.item()
                if isinstance(label, str) and label2id is not None:
                    if label not in label2id:
                        raise ValueError(
                            f"`word_labels[{doc_index}][{word_index}]` is the unknown label name {label!r}; known "
                            f"names: {sorted(label2id)[:20]}"
                        )
                    label = label2id[label]
                if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
                    hint = " (pass `label2id` to use label names)" if isinstance(label, str) else ""
                    raise ValueError(
                        f"`word_labels[{doc_index}][{word_index}]` must be an int label id{hint}, got {label!r}"
                    )
                label = int(label)
                if label != -100 and (label < 0 or (known is not None and label not in known)):
                    expected = "a value of `label2id`" if known is not None else ">= 0"
                    raise ValueError(
                        f"`word_labels[{doc_index}][{word_index}]` must be {expected} or -100, got {label}"
                    )
                doc_ids.append(label)
            ids.append(doc_ids)
        return ids

    def _replace_empty_words(self, words: list[list[str]]) -> list[list[str]]:
        """Empty strings produce no token and would silently vanish with their label; map them to `<unk>`."""
        empty = sum(word == "" for doc in words for word in doc)
        if not empty:
            return words
        logger.warning(f"{empty} empty word(s) were replaced by {self.tokenizer.unk_token!r} so that none is lost.")
        return [[word if word else self.tokenizer.unk_token for word in doc] for doc in words]

    def _validate_window(self, max_length: int, stride: int, questions) -> None:
        """The tokenizers library panics (not a Python exception) on a stride that does not fit: check first."""
        if not isinstance(stride, int) or stride < 0:
            raise ValueError(f"`stride` must be a non-negative int, got {stride!r}")
        if questions is None:
            room = max_length - self.tokenizer.num_special_tokens_to_add(pair=False)
            if stride >= room:
                raise ValueError(
                    f"`stride` ({stride}) must be smaller than the {room} word tokens that fit in `max_length` "
                    f"({max_length})."
                )
            return
        for index, question in enumerate(questions):
            question_words = question.split()
            question_length = len(
                self.tokenizer(question_words, boxes=[[0, 0, 0, 0]] * len(question_words), add_special_tokens=False)[
                    "input_ids"
                ]
            )
            room = max_length - self.tokenizer.num_special_tokens_to_add(pair=True) - question_length
            if room <= stride:
                raise ValueError(
                    f"`question[{index}]` takes {question_length} tokens, leaving {max(room, 0)} for the words with "
                    f"`max_length`={max_length}; `stride` ({stride}) must be smaller than that. Shorten the question, "
                    "raise `max_length` or lower `stride`."
                )

    @staticmethod
    def _check_coverage(word_ids: list[list[int]], mapping: list[int], words_per_doc: list[int]) -> None:
        """Warn with counts when some words appear in no window (truncation without overflow)."""
        seen = [set() for _ in words_per_doc]
        for row, doc in zip(word_ids, mapping):
            seen[doc].update(row)
        missing = {doc: n - len(seen[doc] - {-1}) for doc, n in enumerate(words_per_doc)}
        missing = {doc: n for doc, n in missing.items() if n}
        if missing:
            logger.warning(
                f"{sum(missing.values())} word(s) in {len(missing)} document(s) (indices {sorted(missing)[:10]}) did "
                "not fit in `max_length` and were dropped; use `return_overflowing_tokens=True` to keep them."
            )

    def apply_tesseract(
        self, image, ocr_lang: str | None = None, tesseract_config: str | None = None
    ) -> tuple[list[str], list[list[int]]]:
        """
        Run Tesseract (through `pytesseract`, as the stock image processor does) on one page.

        Args:
            image: a page in any format accepted by `__call__`.
            ocr_lang (`str`, *optional*): Tesseract language; defaults to `image_processor.ocr_lang` (English).
            tesseract_config (`str`, *optional*): extra flags; defaults to `image_processor.tesseract_config`.

        Returns:
            `tuple[list[str], list[list[int]]]`: the words and their boxes normalised to 0-1000 (not yet clipped).
        """
        ocr_lang = self.image_processor.ocr_lang if ocr_lang is None else ocr_lang
        tesseract_config = self.image_processor.tesseract_config if tesseract_config is None else tesseract_config
        return run_tesseract(_to_rgb_image(image, 0), ocr_lang, tesseract_config)

    def merge_window_predictions(
        self,
        logits: torch.Tensor,
        word_ids: torch.Tensor,
        overflow_to_sample_mapping: torch.Tensor,
        num_words: int | Sequence[int] | None = None,
    ) -> list[torch.Tensor]:
        """One `(num_words, num_labels)` tensor of class probabilities per document, merged from the windows' token
        logits by the rule of [`~aetnet.windowing.merge_window_predictions`]."""
        return merge_window_predictions(logits, word_ids, overflow_to_sample_mapping, num_words)

    @property
    def model_input_names(self):
        return ["input_ids", "bbox", "attention_mask", "pixel_values"]


__all__ = [
    "AETNetProcessor",
    "WORD_INDEX_KEY",
    "default_stride",
    "first_subword_mask",
    "merge_window_predictions",
    "pad_word_index",
    "run_tesseract",
    "word_index_rows",
]
