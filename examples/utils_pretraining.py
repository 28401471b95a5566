#!/usr/bin/env python
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
"""
Helpers of `run_pretraining.py`: its arguments, the datasets of each pre-trained component (LayoutLMv3 windows, ViT
pages, RoBERTa text chunks), in memory or streamed, and the tokenizer trained on the corpus.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import datasets
import torch
from tqdm.auto import tqdm
from transformers import (
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    LayoutLMv3ImageProcessorPil,
    TrainerCallback,
    TrainingArguments,
)

from aetnet import AETNetProcessor
from aetnet.data import (
    OCRCache,
    UnlabeledPagesError,
    iter_unlabeled_pages,
    load_page_image,
    train_layoutlmv3_tokenizer,
    with_page_pixels,
)
from aetnet.pretraining import MaskingGenerators, SeededMasksMixin


logger = logging.getLogger(__name__)

COMPONENTS = ("layoutlmv3", "vit", "roberta")


@dataclass
class PreTrainingModelArguments:
    """What is pre-trained, and from where: random weights of a size preset, or existing checkpoints."""

    components: list[str] = field(
        default_factory=lambda: list(COMPONENTS),
        metadata={"help": "Models to pre-train, among layoutlmv3 vit roberta (each gets its own folder)."},
    )
    model_size: str = field(
        default="tiny",
        metadata={"help": "Random-weight preset.", "choices": ["tiny", "study", "small", "base"]},
    )
    layout_model: str | None = field(default=None, metadata={"help": "LayoutLMv3 checkpoint to continue from."})
    vision_model: str | None = field(default=None, metadata={"help": "ViT checkpoint to continue from."})
    text_model: str | None = field(default=None, metadata={"help": "RoBERTa checkpoint to continue from."})
    page_contrast_weight: float = field(
        default=1.0,
        metadata={
            "help": "ViT: weight of the page contrast beside SimMIM (ViTForPagePreTraining), which trains the [CLS] "
            "state that AETNet's DITC reads; 0: SimMIM alone (stock ViTForMaskedImageModeling)."
        },
    )
    tokenizer_name: str | None = field(
        default=None,
        metadata={"help": "Tokenizer folder or Hub id; default: --layout_model's, else one trained on the corpus."},
    )
    tokenizer_vocab_size: int = field(default=8000, metadata={"help": "Vocabulary of a tokenizer trained here."})
    max_seq_length: int = field(default=512, metadata={"help": "Tokens per LayoutLMv3 window and RoBERTa chunk."})
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "Settings of the models trained from random weights, e.g. "
            "hidden_dropout_prob=0,attention_probs_dropout_prob=0 (each applies to the components whose config has it)."
        },
    )


@dataclass
class PreTrainingDataArguments:
    """The pages (folders or a `datasets` dataset) and the text corpus, and the masking rates."""

    train_dirs: list[str] | None = field(
        default=None,
        metadata={"help": "Folders of pages: images/ + words/ (or ocr/, annotations/), or plain images and PDFs."},
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "A `datasets` dataset (saved folder or Hub id) with image, words, bboxes."}
    )
    dataset_split: str = field(default="train", metadata={"help": "The split of --dataset_name."})
    text_files: list[str] | None = field(
        default=None,
        metadata={"help": "Text corpus of the RoBERTa (.jsonl with `text`, or plain text); default: the page words."},
    )
    streaming: bool = field(default=False, metadata={"help": "Read the pages while training (needs --max_steps)."})
    max_train_pages: int | None = field(default=None, metadata={"help": "Use only the first N pages."})
    ocr: bool = field(default=True, metadata={"help": "OCR pages without words (Tesseract, cached)."})
    ocr_cache_dir: str | None = field(default=None, metadata={"help": "OCR cache folder ($AETNET_OCR_CACHE)."})
    pdf_dpi: float = field(default=200.0, metadata={"help": "Resolution of rendered PDF pages."})
    mlm_probability: float = field(default=0.3, metadata={"help": "LayoutLMv3's share of masked tokens."})
    mim_probability: float = field(default=0.4, metadata={"help": "LayoutLMv3's share of masked patches."})
    text_mlm_probability: float = field(default=0.15, metadata={"help": "RoBERTa's share of masked tokens."})
    mask_ratio: float = field(default=0.6, metadata={"help": "ViT's (SimMIM) share of masked cells."})
    chance_level_batches: int = field(
        default=8,
        metadata={
            "help": "First training batches (masked with the run's seed) whose chance levels are averaged; 0: none."
        },
    )


@dataclass
class PreTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the defaults of pre-training from random weights on a CPU-sized corpus; every
    component keeps its checkpoints in its own folder, from which a rerun resumes."""

    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep `word_index` and the page columns for the collators."}
    )
    learning_rate: float = field(default=5e-4, metadata={"help": "Peak learning rate (AdamW)."})
    num_train_epochs: float = field(default=10.0, metadata={"help": "Epochs of each component."})
    warmup_steps: float = field(default=0.05, metadata={"help": "Warm-up steps (a float < 1 is a ratio)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})
    save_steps: float = field(default=500, metadata={"help": "Checkpoint every N steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept per component."})
    torch_num_threads: int | None = field(default=None, metadata={"help": "CPU threads of torch ops (CPU: 1)."})

    def __post_init__(self):
        # `torchrun` / `accelerate launch` with several processes on a machine without a GPU: DDP over gloo, as
        # `AETNetTrainingArguments` does (the Trainer would otherwise train one independent model per process).
        launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if launched and not self.use_cpu and not torch.cuda.is_available() and not torch.backends.mps.is_available():
            self.use_cpu = True
        super().__post_init__()


@dataclass
class DataCollatorForSeededLanguageModeling(SeededMasksMixin, DataCollatorForLanguageModeling):
    """
    transformers' `DataCollatorForLanguageModeling` (for `RobertaForMaskedLM`) whose masks come from one seeded
    generator per batch ([`MaskingGenerators`]), as those of the other pre-training collators: with its
    `set_batch_index` and `state_dict`, [`PreTrainingTrainer`] keeps it in step, and a resumed run draws the masks of an
    uninterrupted one (the stock collator's single generator would restart from its seed).
    """

    def __post_init__(self):
        super().__post_init__()
        self.generators = MaskingGenerators(0 if self.seed is None else self.seed)

    def torch_call(self, examples):
        self.generator = self.generators.next_batch()[0]
        self._generator_pid = os.getpid()
        return super().torch_call(examples)


class StreamResumeCallback(TrainerCallback):
    """
    Keep the masks of a resumed streaming run those of an uninterrupted one. To resume a stream, the Trainer draws
    and drops the batches already trained on, from the start of the stream, and the collator masks each of them: the
    collator's numbering ([`MaskingStepCallback`] sets it to the resumed step) must then restart at the stream's
    start, so that the dropped batches take their old numbers and the next one its own.
    """

    def __init__(self, collator):
        self.collator = collator
        self._first_epoch = True

    def on_train_begin(self, args, state, control, **kwargs):
        self._first_epoch = True

    def on_epoch_begin(self, args, state, control, **kwargs):
        if self._first_epoch and state.global_step > 0 and not args.ignore_data_skip:
            self.collator.set_batch_index(0)
        self._first_epoch = False


@dataclass
class ExampleSource:
    """
    How pages become the training examples of one component: `component` (see `COMPONENTS`), the `processor` (its
    tokenizer also cuts the RoBERTa's text), the `image_processor` of the ViT, `max_length` tokens per window or
    chunk, `with_pixels` (compute the pixel values now, when streaming, or leave the page for `with_page_pixels`).
    Pages are read with `ocr_cache` and `pdf_dpi`, and those left out are counted in `skipped`; with `dataset`, the
    pages are its row numbers.
    """

    component: str
    processor: AETNetProcessor
    image_processor: LayoutLMv3ImageProcessorPil
    max_length: int
    with_pixels: bool
    ocr_cache: OCRCache | None = None
    skipped: Counter = field(default_factory=Counter)
    pdf_dpi: float = 200.0
    dataset: datasets.Dataset | None = None


def component_examples(items: list, source: ExampleSource) -> Iterator[dict]:
    """The examples of `pages` (`UnlabeledPage`s, or row numbers of `source.dataset`) for `source.component`; a
    generator, so that a stream reads each page once, when its examples are drawn."""
    if source.dataset is None:
        rows = iter_unlabeled_pages(items, source.ocr_cache, source.skipped, source.pdf_dpi)
    else:
        rows = _dataset_rows(source.dataset, items, source.skipped)
    if source.component == "layoutlmv3":
        yield from layout_windows(rows, source.processor, source.max_length, source.with_pixels)
    elif source.component == "vit":
        yield from vision_pages(rows, source.image_processor, source.with_pixels)
    else:
        yield from text_chunks((row["words"] for row in rows), source.processor.tokenizer, source.max_length)


def text_examples(items: list[str], source: ExampleSource) -> Iterator[dict]:
    """The RoBERTa's examples of a text corpus (`items`, the documents)."""
    yield from text_chunks(items, source.processor.tokenizer, source.max_length)


def _dataset_rows(dataset: datasets.Dataset, indices: list[int], skipped: Counter) -> Iterator[dict]:
    for index in indices:
        row = dataset[int(index)]
        if not row["words"]:
            skipped["page(s) without any word"] += 1
            logger.warning(f"--dataset_name: row {index} has no word; skipped.")
            continue
        yield row


def dataset_rows(name: str, split: str) -> list[dict] | datasets.Dataset:
    """A `datasets` dataset of pages (`image`, `words`, `bboxes` on 0-1000), from a saved folder or the Hub."""
    if split in ("test", "validation", "dev"):
        raise UnlabeledPagesError(f"--dataset_split {split!r}: an evaluated split is never pre-trained on")
    if os.path.isdir(name):
        dataset = datasets.load_from_disk(name)
        dataset = dataset[split] if isinstance(dataset, datasets.DatasetDict) else dataset
    else:
        dataset = datasets.load_dataset(name, split=split)
    missing = {"image", "words", "bboxes"} - set(dataset.column_names)
    if missing:
        raise UnlabeledPagesError(f"--dataset_name {name!r}: the dataset lacks the column(s) {sorted(missing)}")
    return dataset.cast_column("image", datasets.Image(decode=False))


def build_tokenizer(model_args: PreTrainingModelArguments, words: Iterator[list[str]], output_dir: str):
    """The tokenizer: `--tokenizer_name`, `--layout_model`'s, one saved by an earlier (resumed) run in
    `output_dir/tokenizer`, or a byte-level BPE trained on `words` (saved there, so that a resumed run keeps it)."""
    name = model_args.tokenizer_name or model_args.layout_model
    saved = os.path.join(output_dir, "tokenizer")
    if name is None and os.path.isdir(saved):
        name = saved
    if name is not None:
        return AutoTokenizer.from_pretrained(name)
    tokenizer = train_layoutlmv3_tokenizer(
        words, vocab_size=model_args.tokenizer_vocab_size, model_max_length=model_args.max_seq_length
    )
    tokenizer.save_pretrained(saved)
    return tokenizer


def apply_config_overrides(configs, overrides: str | None) -> None:
    """Set `--config_overrides` (`key=value,...`, as transformers' `run_mlm.py`) on each config that has the key; a
    key that none of them has is an error."""
    if not overrides:
        return
    pairs = [pair.split("=", 1) for pair in overrides.split(",")]
    for pair in pairs:
        if len(pair) != 2 or not any(hasattr(config, pair[0]) for config in configs):
            raise ValueError(f"--config_overrides {overrides!r}: {'='.join(pair)!r} is no `key=value` of a config")
    for config in configs:
        own = ",".join(f"{key}={value}" for key, value in pairs if hasattr(config, key))
        if own:
            config.update_from_string(own)


def first_batches(dataset, collator, batch_size: int, num_batches: int) -> list[dict]:
    """The first `num_batches` batches of `batch_size` examples of `dataset` (in memory or streamed), in the
    dataset's order, collated by `collator` (a fresh one: the masks of its seed's first batches)."""
    if isinstance(dataset, datasets.IterableDataset):
        examples = list(itertools.islice(iter(dataset), batch_size * num_batches))
    else:
        examples = [dataset[i] for i in range(min(len(dataset), batch_size * num_batches))]
    chunks = [examples[i : i + batch_size] for i in range(0, len(examples), batch_size)]
    return [collator(chunk) for chunk in chunks if chunk]


def image_processor_of(size: int) -> LayoutLMv3ImageProcessorPil:
    """Pages as `size` x `size` pixels, normalised as LayoutLMv3 does (also the ViT's input in AETNet)."""
    return LayoutLMv3ImageProcessorPil(apply_ocr=False, size={"height": size, "width": size})


def layout_windows(rows, processor: AETNetProcessor, max_length: int, with_pixels: bool) -> Iterator[dict]:
    """Each page cut into consecutive windows of `max_length` tokens (no overlap: every word is seen once), as the
    processor outputs them (`input_ids`, `bbox`, `attention_mask`, `word_index`, and `pixel_values` or `image`)."""
    for row in rows:
        image = load_page_image(row["image"])
        encoding = processor(
            image,
            row["words"],
            boxes=row["bboxes"],
            boxes_normalized=True,
            max_length=max_length,
            stride=0,
            truncation=True,
            return_overflowing_tokens=True,
            return_tensors=None,
        )
        for i in range(len(encoding["input_ids"])):
            window = {key: encoding[key][i] for key in ("input_ids", "bbox", "attention_mask", "word_index")}
            window.update({"pixel_values": encoding["pixel_values"][i]} if with_pixels else {"image": row["image"]})
            yield window


def vision_pages(rows, image_processor: LayoutLMv3ImageProcessorPil, with_pixels: bool) -> Iterator[dict]:
    """One row per page: its pixel values, or its image for `with_page_pixels`."""
    for row in rows:
        if with_pixels:
            pixels = image_processor(load_page_image(row["image"]), apply_ocr=False, return_tensors=None)
            yield {"pixel_values": pixels["pixel_values"][0]}
        else:
            yield {"image": row["image"]}


def text_chunks(texts, tokenizer, max_length: int) -> Iterator[dict]:
    """Each document cut into consecutive chunks of `max_length` tokens, for `RobertaForMaskedLM`. The LayoutLMv3
    tokenizer takes words with boxes: the boxes are placeholders, the RoBERTa reads the ids only."""
    for text in texts:
        words = text.split() if isinstance(text, str) else list(text)
        if not words:
            continue
        encoding = tokenizer(
            words,
            boxes=[[0, 0, 0, 0]] * len(words),
            max_length=max_length,
            truncation=True,
            return_overflowing_tokens=True,
            stride=0,
        )
        for ids in encoding["input_ids"]:
            yield {"input_ids": ids}


def as_dataset(generator, items: list, source: ExampleSource, streaming: bool, argument: str):
    """The examples of `generator(items, source)` as a `datasets.IterableDataset` (read while training, the items
    are its shards) or as a `datasets.Dataset` in memory whose `image` column becomes `pixel_values` when read."""
    if streaming:
        return datasets.IterableDataset.from_generator(generator, gen_kwargs={"items": items, "source": source})
    examples = list(generator(tqdm(items, desc=f"{source.component} examples", unit="item"), source))
    if not examples:
        raise UnlabeledPagesError(f"{argument}: no {source.component} example in the input ({dict(source.skipped)})")
    dataset = datasets.Dataset.from_list(examples)
    image_processor = source.image_processor if source.component == "vit" else source.processor.image_processor
    if image_processor is not None and "image" in dataset.column_names:
        dataset = with_page_pixels(dataset, image_processor)
    return dataset


__all__ = [
    "COMPONENTS",
    "DataCollatorForSeededLanguageModeling",
    "PreTrainingArguments",
    "PreTrainingDataArguments",
    "PreTrainingModelArguments",
    "StreamResumeCallback",
    "ExampleSource",
    "apply_config_overrides",
    "as_dataset",
    "build_tokenizer",
    "component_examples",
    "dataset_rows",
    "first_batches",
    "image_processor_of",
    "layout_windows",
    "text_chunks",
    "text_examples",
    "vision_pages",
]
