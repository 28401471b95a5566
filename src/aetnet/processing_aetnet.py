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
re-implementing: box validation and clipping, sliding windows that lose no word, a per-token word index to merge
window predictions back to one score per word, and the augmented momentum view.

The call lives here, as a list of named steps (pages, words and boxes, checks, boxes on the 0-1000 scale, window
settings, tokenising, coverage, first-sub-token labels, pixels); the checks of its words, boxes, labels and stride
are in `processing_inputs.py`, the page-image conversion and Tesseract in `processing_images.py`, the windows in
`windowing.py`. The processor ships as Hub remote code and transformers copies only the same-folder modules it
imports relatively, so all of them import only torch, transformers, numpy and PIL besides each other.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers.image_processing_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.tokenization_utils_base import BatchEncoding, TruncationStrategy
from transformers.utils import logging

from .augmentation import AugmentationConfig, augment_pixel_values
from .processing_images import run_tesseract, to_rgb_image, to_rgb_pages
from .processing_inputs import batch_inputs, label_ids, prepare_boxes, validate_lengths, validate_window
from .tasks import MODEL_INPUT_NAMES
from .windowing import (
    first_subword_mask,
    merge_window_predictions,
    pad_word_index,
    word_index_rows,
)


logger = logging.get_logger(__name__)

WORD_INDEX_KEY = "word_index"


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
    - puts labels only on the first sub-token of each word, also when a window starts in the middle of a word (a
      word longer than a whole window is kept, split over consecutive windows, its label in the first that holds it);
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
            images (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them): one page image per document,
                in any PIL mode or as an HW, HWC or CHW array of any common dtype, converted to 8-bit RGB as
                [`~aetnet.processing_images.to_rgb_image`] says. Its original size normalises pixel boxes.
            text (`list[str]`, `list[list[str]]` or `str`, *optional*): the words of each document, or, together
                with `text_pair` or with OCR, the question(s) for question answering.
            text_pair (`list[str]` or `list[list[str]]`, *optional*): the words when `text` holds questions.
            boxes (`list[list[float]]` or `list[list[list[float]]]`, *optional*): one `(x0, y0, x1, y1)` per word,
                in pixels of the original image unless `boxes_normalized=True`.
            word_labels (`list[int]` or `list[list[int]]`, *optional*): one label per word, for training: an int
                id (>= 0, or -100 to ignore the word), or a label name when `label2id` is given.
            label2id (`dict[str, int]`, *optional*): maps label names in `word_labels` to ids (e.g.
                `model.config.label2id`); unknown names, and ids that are none of its values, raise `ValueError`.
            boxes_normalized (`bool`, *optional*, defaults to `False`): `boxes` are on the 0-1000 scale already.
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
        """
        pages = to_rgb_pages(images)
        apply_ocr = self.image_processor.apply_ocr if apply_ocr is None else apply_ocr
        words, boxes, labels, questions = (
            self._ocr_inputs(pages, text, text_pair, boxes, word_labels, ocr_lang, tesseract_config)
            if apply_ocr
            else batch_inputs(text, text_pair, boxes, word_labels)
        )
        words, labels = self._checked_words_and_labels(words, boxes, labels, questions, len(pages), label2id)
        boxes = self._page_boxes(boxes, pages, normalized=True if apply_ocr else boxes_normalized)
        window = self._window_options(max_length, stride, padding, truncation, return_overflowing_tokens, questions)
        encoding = self._tokenize(words, boxes, labels, questions, **window, **kwargs)
        word_ids, mapping = self._word_index(encoding, questions)
        self._check_coverage(word_ids, mapping, [len(doc) for doc in words])
        self._label_first_subwords(encoding, word_ids, mapping)
        pixels = self._window_pixels(pages, mapping, return_augmented_view, augmentation_generator)
        return self._features(
            encoding, word_ids, mapping, pixels, return_tensors, (words, boxes) if apply_ocr else None
        )

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

    def _checked_words_and_labels(self, words, boxes, labels, questions, num_pages: int, label2id):
        """One page, box and label per word, label names mapped to ids, and no empty word (see the checks of
        `processing_inputs.py`); returns the words and the label ids (`None` without labels)."""
        validate_lengths(words, boxes, labels, questions, num_pages=num_pages)
        if labels is not None:
            labels = label_ids(labels, label2id)
        return self._replace_empty_words(words), labels

    @staticmethod
    def _page_boxes(boxes, pages: list, normalized: bool) -> list[list[list[int]]]:
        """Every document's boxes validated and on the 0-1000 scale of its page, with one warning that counts the
        coordinates clipped to the page."""
        prepared_boxes, clipped = [], 0
        for doc_index, (doc_boxes, page) in enumerate(zip(boxes, pages)):
            doc_boxes, doc_clipped = prepare_boxes(doc_boxes, doc_index, page.size, normalized)
            prepared_boxes.append(doc_boxes)
            clipped += doc_clipped
        if clipped:
            logger.warning(
                f"{clipped} box coordinate(s) fell outside the page (0-1000 after normalisation) and were clipped."
            )
        return prepared_boxes

    def _window_options(self, max_length, stride, padding, truncation, return_overflowing_tokens, questions) -> dict:
        """The tokenizer's window settings: the model's length by default, `truncation=True` as `"only_second"` for
        question answering (the question is repeated whole in every window), and a stride checked to fit the window
        before the tokenizers library panics on it."""
        if max_length is None:
            max_length = self.tokenizer.model_max_length
        if truncation is True:
            truncation = "longest_first" if questions is None else "only_second"
        truncating = truncation not in (False, None, "do_not_truncate", TruncationStrategy.DO_NOT_TRUNCATE)
        if truncating and return_overflowing_tokens:
            validate_window(self.tokenizer, max_length, stride, questions)
        return {
            "max_length": max_length,
            "stride": stride,
            "padding": padding,
            "truncation": truncation,
            "return_overflowing_tokens": return_overflowing_tokens,
        }

    def _tokenize(self, words, boxes, labels, questions, **kwargs) -> BatchEncoding:
        """The tokenizer on the words (after the question, for question answering), their boxes and labels."""
        is_qa = questions is not None
        return self.tokenizer(
            text=questions if is_qa else words,
            text_pair=words if is_qa else None,
            boxes=boxes,
            word_labels=labels,
            **kwargs,
        )

    @staticmethod
    def _word_index(encoding: BatchEncoding, questions) -> tuple[list[list[int]], list[int]]:
        """The document word of each token (`word_index`, see [`word_index_rows`]) and the document of each window,
        taken out of the encoding to be returned after `word_index`."""
        mapping = encoding.pop("overflow_to_sample_mapping", list(range(len(encoding["input_ids"]))))
        return word_index_rows(encoding, content_sequence=0 if questions is None else 1), mapping

    def _label_first_subwords(self, encoding: BatchEncoding, word_ids: list[list[int]], mapping: list[int]) -> None:
        """Keep each word's label on its first sub-token only, also in a window that starts inside the word (the stock
        tokenizer labels such a window's leading continuation sub-tokens)."""
        if "labels" not in encoding or not self.tokenizer.only_label_first_subword:
            return
        keep = first_subword_mask(pad_word_index(word_ids), torch.tensor(mapping)).tolist()
        encoding["labels"] = [
            [label if keep_token else self.tokenizer.pad_token_label for label, keep_token in zip(row, keep_row)]
            for row, keep_row in zip(encoding["labels"], keep)
        ]

    def _window_pixels(self, pages, mapping, return_augmented_view: bool, generator) -> dict[str, list]:
        """The page of every window as the image processor makes it, and with `return_augmented_view` its augmented
        copy for the momentum ViT."""
        page_pixels = self.image_processor(pages, apply_ocr=False, return_tensors=None)["pixel_values"]
        images = {"pixel_values": [page_pixels[doc] for doc in mapping]}
        if return_augmented_view:
            augmented = augment_pixel_values(
                torch.from_numpy(np.stack(images["pixel_values"])) if len(mapping) else torch.empty(0, 3, 1, 1),
                generator,
                config=self.augmentation_config(),
            )
            images["pixel_values_aug"] = list(augmented.numpy())
        return images

    @staticmethod
    def _features(encoding, word_ids, mapping, pixels, return_tensors, ocr) -> BatchEncoding:
        """The call's output: the tokenizer's fields and encodings, `word_index`, the windows' document and pages, and
        with OCR (`ocr` = words and boxes) the words and boxes found."""
        data = dict(encoding)
        data[WORD_INDEX_KEY] = word_ids
        data["overflow_to_sample_mapping"] = list(mapping)
        # The text fields convert as the tokenizer's do; the pages as the image processor's (stacked float arrays).
        features = BatchEncoding(data=data, encoding=encoding.encodings, tensor_type=return_tensors)
        features.update(BatchFeature(data=pixels, tensor_type=return_tensors))
        if ocr is not None:
            # Added after tensor conversion: words are strings and documents have different lengths.
            features["words"], features["boxes"] = ocr
        return features

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

    def _replace_empty_words(self, words: list[list[str]]) -> list[list[str]]:
        """Empty strings produce no token and would silently vanish with their label; map them to `<unk>`."""
        empty = sum(word == "" for doc in words for word in doc)
        if not empty:
            return words
        logger.warning(f"{empty} empty word(s) were replaced by {self.tokenizer.unk_token!r} so that none is lost.")
        return [[word if word else self.tokenizer.unk_token for word in doc] for doc in words]

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
        return run_tesseract(to_rgb_image(image, 0), ocr_lang, tesseract_config)

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
    def model_input_names(self) -> list[str]:
        """The inputs an AETNet task head reads (`aetnet.tasks.MODEL_INPUT_NAMES`), in the order of the ONNX graph."""
        return list(MODEL_INPUT_NAMES)


__all__ = [
    "AETNetProcessor",
    "WORD_INDEX_KEY",
]
