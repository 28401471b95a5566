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
of page splits, the window options every script parses ([`WindowArguments`]), documents cut into overlapping windows,
token-classification windows merged back to one label per word (by the package's one rule,
[`aetnet.windowing.merge_window_predictions`], which `aetnet predict` applies too), entity-level seqeval scores and
the per-word prediction file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, get_type_hints

import datasets
import numpy as np
import torch

from aetnet import AETNetProcessor
from aetnet.data import OCRCache, ocr_dataset
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
    cache ([`aetnet.data.OCRCache`], the package's Tesseract wrapper), the main process first, and log how many
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


@dataclass
class WindowArguments:
    """
    How a document becomes model windows: windows of `--max_seq_length` tokens, consecutive windows of a document
    sharing `--doc_stride` tokens, padded per batch unless `--pad_to_max_length`. The window options of every example
    script are these fields, declared here once; a script that reads only some of them, or explains one in its own
    words, parses the variant [`script_window_arguments`] builds from them.
    """

    max_seq_length: int = field(default=512, metadata={"help": "Window length in tokens."})
    doc_stride: int | None = field(
        default=None,
        metadata={"help": "Tokens shared by consecutive windows (default: max_seq_length // 4, <= 128)."},
    )
    pad_to_max_length: bool = field(
        default=False, metadata={"help": "Pad every window to max_seq_length (default: pad each batch dynamically)."}
    )


def script_window_arguments(options: Sequence[str] | None = None, help_texts: dict[str, str] | None = None) -> type:
    """
    The [`WindowArguments`] dataclass one script hands to `HfArgumentParser`: only the `options` it reads (default:
    all; a page classifier has no stride to share), with the script's own help text (`help_texts`, by option) where
    its windows are something more specific (a receipt's, a page's, holding the question). Names, types and defaults
    are always `WindowArguments`' own, so that every script spells and defaults a window option the same way.

    `WindowArguments` itself is returned when the script keeps every option and its help. Otherwise the variant is a
    new dataclass of the same name and fields, since a dataclass field can be overridden in a subclass but not
    removed from it.
    """
    fields = {f.name: f for f in dataclasses.fields(WindowArguments)}
    options = set(fields) if options is None else set(options)
    help_texts = help_texts or {}
    unknown = sorted(options.union(help_texts).difference(fields))
    if unknown:
        raise ValueError(f"{unknown} are not WindowArguments fields ({', '.join(fields)}).")
    if options == set(fields) and all(text == fields[name].metadata["help"] for name, text in help_texts.items()):
        return WindowArguments
    # The field types resolved here, since the annotations of this module are strings (postponed evaluation).
    types = get_type_hints(WindowArguments)
    variant = [
        (
            name,
            types[name],
            field(default=f.default, metadata={**f.metadata, "help": help_texts.get(name, f.metadata["help"])}),
        )
        for name, f in fields.items()
        if name in options
    ]
    return dataclasses.make_dataclass(
        WindowArguments.__name__,
        variant,
        namespace={"__doc__": WindowArguments.__doc__, "__module__": __name__},
    )


def doc_stride(window_args: Any) -> int:
    """`--doc_stride`, or when it is not given the overlap `aetnet predict` uses for `--max_seq_length`:
    `min(128, max_seq_length // 4)` ([`~aetnet.windowing.default_stride`])."""
    stride = getattr(window_args, "doc_stride", None)
    return default_stride(window_args.max_seq_length) if stride is None else stride


def window_kwargs(window_args: Any, overflow: bool = True) -> dict[str, Any]:
    """Processor arguments that cut a document (0-1000 boxes) into overlapping windows of
    `window_args.max_seq_length` tokens, [`doc_stride`] of them shared by consecutive windows, padded per batch
    unless `window_args.pad_to_max_length` ([`WindowArguments`]). With `overflow=False`, one window per document: the
    words beyond are dropped."""
    return {
        "boxes_normalized": True,
        "max_length": window_args.max_seq_length,
        # The tokenizer checks the stride even without overflow.
        "stride": doc_stride(window_args) if overflow else 0,
        "padding": "max_length" if window_args.pad_to_max_length else False,
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
    window_args: Any,
    label_ids: dict[int, int],
    num_proc: int | None,
    description: str,
) -> datasets.Dataset:
    """
    Documents with `image`, `words`, `bboxes` (0-1000) and `ner_tags` -> overlapping token-classification windows
    (`dataset.map` + the processor, `window_args`: [`WindowArguments`]), keeping each
    window's `word_index` and `document_index` for `merge_to_words`. `label_ids` maps dataset tags to model label ids.
    """

    def process(batch, indices):
        encoding = processor(
            batch["image"],
            batch["words"],
            boxes=batch["bboxes"],
            word_labels=[[label_ids[tag] for tag in tags] for tags in batch["ner_tags"]],
            **window_kwargs(window_args),
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
    "WindowArguments",
    "doc_stride",
    "first_logits",
    "limit_splits",
    "map_to_windows",
    "merge_to_words",
    "ocr_splits",
    "prepare_token_windows",
    "script_window_arguments",
    "seqeval_scores",
    "window_kwargs",
    "write_word_predictions",
]
