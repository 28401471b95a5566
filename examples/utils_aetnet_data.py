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
The data side of the example scripts' shared plumbing (see `utils_aetnet.py`): split limits, the cached Tesseract OCR
of page splits, documents cut into overlapping windows, token-classification windows merged back to one label per
word (by the package's one rule, [`aetnet.windowing.merge_window_predictions`], which `aetnet predict` applies too),
entity-level seqeval scores and the per-word prediction file.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np
import torch

from aetnet import AETNetProcessor
from aetnet.data.ocr_cache import OCRCache, ocr_dataset
from aetnet.metrics import seqeval_summary
from aetnet.processing_aetnet import WORD_INDEX_KEY
from aetnet.windowing import default_stride, merge_window_predictions


logger = logging.getLogger(__name__)


def limit_splits(raw: dict[str, Any], data_args: Any) -> dict[str, Any]:
    """Keep the first `--max_train_samples` / `--max_eval_samples` / `--max_predict_samples` examples of the train,
    validation and test splits present in `raw` (in place; returned for convenience)."""
    limits = {
        "train": data_args.max_train_samples,
        "validation": data_args.max_eval_samples,
        "test": data_args.max_predict_samples,
    }
    for split, limit in limits.items():
        if split in raw and limit is not None:
            raw[split] = raw[split].select(range(min(len(raw[split]), limit)))
    return raw


@dataclass
class OCRArguments:
    """How pages without words are read (`run_rvlcdip.py`, `run_docvqa.py`): Tesseract, cached on disk."""

    ocr_cache_dir: str | None = field(
        default=None, metadata={"help": "OCR cache folder (default: $AETNET_OCR_CACHE or ~/.cache/aetnet/ocr)."}
    )
    ocr_lang: str = field(default="eng", metadata={"help": "Tesseract language(s), e.g. eng or eng+deu."})
    tesseract_config: str = field(default="", metadata={"help": "Extra Tesseract flags, e.g. '--psm 6'."})
    ocr_num_workers: int = field(default=1, metadata={"help": "Tesseract processes run at once (about the CPU cores)."})


def ocr_splits(
    raw: dict[str, datasets.Dataset], data_args: OCRArguments, training_args: Any, script_logger: logging.Logger
) -> dict[str, datasets.Dataset]:
    """Add `words` and `bboxes` (0-1000) to every split of `raw` (in place; returned for convenience) from the OCR
    cache ([`aetnet.data.ocr_cache.OCRCache`], the package's Tesseract wrapper), the main process first, and log how many
    pages came from the cache."""
    ocr = OCRCache(data_args.ocr_cache_dir, ocr_lang=data_args.ocr_lang, tesseract_config=data_args.tesseract_config)
    with training_args.main_process_first(desc="OCR"):
        for split in raw:
            raw[split] = ocr_dataset(raw[split], ocr, num_workers=data_args.ocr_num_workers, desc=f"OCR {split}")
    script_logger.info(f"OCR cache {ocr.cache_dir}: {ocr.hits} page(s) read from it, {ocr.misses} OCR-ed now")
    return raw


def first_logits(predictions: np.ndarray | tuple[np.ndarray, ...]) -> np.ndarray:
    """The head's logits from `Trainer.predict` output, which is a tuple when the model returns more than logits."""
    return predictions[0] if isinstance(predictions, tuple) else predictions


def merge_to_words(
    logits: np.ndarray,
    windows: datasets.Dataset,
    documents: datasets.Dataset,
    outside_id: int,
    script_logger: logging.Logger | None = None,
) -> list[np.ndarray]:
    """
    Per-word label ids of every document from token-classification window logits (windows in dataset order, with
    `word_index` and `document_index` columns), merged by the rule `aetnet predict` uses too
    ([`~aetnet.windowing.merge_window_predictions`]: first sub-token probabilities averaged over windows). Words
    that fell in no window are predicted `outside_id`, with a warning per document on `script_logger` (default: this
    module's logger).
    """
    merged = merge_window_predictions(
        torch.from_numpy(logits.astype(np.float32)),
        windows[WORD_INDEX_KEY],
        torch.as_tensor(windows["document_index"]),
        num_words=[len(words) for words in documents["words"]],
    )
    predictions = []
    for document, scores in enumerate(merged):
        unseen = torch.isnan(scores).any(dim=-1)
        if unseen.any():
            (script_logger or logger).warning(
                f"Document {document}: {int(unseen.sum())} word(s) in no window are predicted 'O'."
            )
        predictions.append(torch.where(unseen, outside_id, scores.nan_to_num().argmax(-1)).numpy())
    return predictions


def doc_stride(data_args: Any) -> int:
    """`--doc_stride`, or when it is not given the overlap `aetnet predict` uses for `--max_seq_length`:
    `min(128, max_seq_length // 4)` ([`~aetnet.processing_aetnet.default_stride`])."""
    stride = getattr(data_args, "doc_stride", None)
    return default_stride(data_args.max_seq_length) if stride is None else stride


def window_kwargs(data_args: Any, overflow: bool = True) -> dict[str, Any]:
    """Processor arguments that cut a document (0-1000 boxes) into overlapping windows of `data_args.max_seq_length`
    tokens, [`doc_stride`] of them shared by consecutive windows, padded per batch unless
    `data_args.pad_to_max_length`. With `overflow=False`, one window per document: the words beyond are dropped."""
    return {
        "boxes_normalized": True,
        "max_length": data_args.max_seq_length,
        # The tokenizer checks the stride even without overflow.
        "stride": doc_stride(data_args) if overflow else 0,
        "padding": "max_length" if data_args.pad_to_max_length else False,
        "truncation": True,
        "return_overflowing_tokens": overflow,
    }


def map_to_windows(
    dataset: datasets.Dataset, process: Any, batch_size: int, num_proc: int | None, description: str
) -> datasets.Dataset:
    """`dataset.map` of a batched `process(batch, indices)` that turns documents into windows: the document columns
    are dropped, since a window row is no document row, and `indices` lets each window name its document."""
    return dataset.map(
        process,
        batched=True,
        batch_size=batch_size,
        with_indices=True,
        remove_columns=dataset.column_names,
        num_proc=num_proc,
        desc=description,
    )


def prepare_token_windows(
    dataset: datasets.Dataset,
    processor: AETNetProcessor,
    data_args: Any,
    label_ids: dict[int, int],
    num_proc: int | None,
    description: str,
) -> datasets.Dataset:
    """
    Documents with `image`, `words`, `bboxes` (0-1000) and `ner_tags` -> overlapping token-classification windows
    (`dataset.map` + the processor, `data_args.max_seq_length` / `doc_stride` / `pad_to_max_length`), keeping each
    window's `word_index` and `document_index` for `merge_to_words`. `label_ids` maps dataset tags to model label ids.
    """

    def process(batch, indices):
        encoding = processor(
            batch["image"],
            batch["words"],
            boxes=batch["bboxes"],
            word_labels=[[label_ids[tag] for tag in tags] for tags in batch["ner_tags"]],
            **window_kwargs(data_args),
        )
        encoding["document_index"] = [indices[i] for i in encoding.pop("overflow_to_sample_mapping")]
        return encoding

    return map_to_windows(dataset, process, 16, num_proc, description).with_format("torch")


def seqeval_scores(
    metric: Any,
    predicted: list[np.ndarray],
    references: list[list[str]],
    id2label: dict[int, str],
    return_entity_level_metrics: bool = False,
) -> dict[str, float]:
    """Entity-level seqeval precision, recall, F1 and accuracy of per-word label ids against per-word gold labels
    (`metric`: [`aetnet.metrics.load_seqeval`]), and with `return_entity_level_metrics` the same per entity type
    (`<TYPE>_precision`, ...), flattened as [`aetnet.metrics.seqeval_summary`] does."""
    results = metric.compute(
        predictions=[[id2label[int(i)] for i in row] for row in predicted], references=references, zero_division=0
    )
    return seqeval_summary(results, return_entity_level_metrics)


def write_word_predictions(
    path: str,
    documents: datasets.Dataset,
    gold_words: list[list[str]],
    predicted: list[np.ndarray],
    id2label: dict[int, str],
) -> None:
    """Write one JSON line per document: its `id`, `words`, gold `labels` and `predicted_labels`."""
    with open(path, "w", encoding="utf-8") as writer:
        for example, gold, ids in zip(documents.select_columns(["id", "words"]), gold_words, predicted):
            record = {
                "id": example["id"],
                "words": example["words"],
                "labels": gold,
                "predicted_labels": [id2label[int(i)] for i in ids],
            }
            writer.write(json.dumps(record) + "\n")


__all__ = [
    "OCRArguments",
    "doc_stride",
    "first_logits",
    "limit_splits",
    "map_to_windows",
    "merge_to_words",
    "ocr_splits",
    "prepare_token_windows",
    "seqeval_scores",
    "window_kwargs",
    "write_word_predictions",
]
