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
# /// script
# requires-python = ">=3.10"
# dependencies = [
#     "aetnet[examples]",
#     "transformers>=5.23,<6",
#     "accelerate>=1.1",
#     "datasets>=3",
# ]
# ///
"""
Pre-train the three encoders of AETNet on unlabelled pages, in the shape of transformers' `run_mlm.py` /
`run_mim.py`: LayoutLMv3 with its own objectives (masked language and image modelling, word-patch alignment), the ViT
aligner with SimMIM and a page contrast that trains its [CLS] state (`--page_contrast_weight`, 0 for SimMIM alone)
and the RoBERTa aligner with masked language modelling. Each component named in `--components`
is trained in turn and saved in its own folder of `--output_dir` (`layoutlmv3/`, `vit/`, `roberta/`, with the
tokenizer and processor), ready for `--layout_model / --vision_model / --text_model` of the other example scripts and
for `from_encoders_pretrained`.

The pages are folders (`--train_dirs`: `images/` with `words/`, SROIE's `ocr/` or FUNSD's `annotations/`, or plain
images and PDFs whose words come from the text layer or Tesseract) or a `datasets` dataset with `image`, `words` and
`bboxes` (`--dataset_name`); the RoBERTa also reads a text corpus (`--text_files`, `.jsonl` with `text`). Splits that
a benchmark evaluates on are never read. `--streaming` reads the pages while training, for corpora larger than
memory; several processes (`torchrun`, `accelerate launch`) then share each batch that the first one reads. Without
`--tokenizer_name` (or `--layout_model`) a byte-level BPE tokenizer is trained on the corpus. A rerun resumes every
component from its last checkpoint. Each component's results (`all_results.json`) and loss-curve plot carry the chance
level of each of its objectives (the loss of a model that ignores the page), averaged over the first
`--chance_level_batches` batches.

    python examples/run_pretraining.py --train_dirs ../shared/data/vrdu-pages ../shared/data/sroie \
        --text_files ../shared/data/docvqa-text/val.jsonl --model_size study --output_dir outputs/pretrained-study
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Iterator

import datasets
import torch
from transformers import (
    HfArgumentParser,
    RobertaForMaskedLM,
    ViTForMaskedImageModeling,
)
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import check_min_version
from transformers.utils.versions import require_version
from utils_aetnet import parse_arguments, setup_logging_and_seed
from utils_pretraining import (
    COMPONENTS,
    DataCollatorForSeededLanguageModeling,
    ExampleSource,
    PreTrainingArguments,
    PreTrainingDataArguments,
    PreTrainingModelArguments,
    StreamResumeCallback,
    apply_config_overrides,
    as_dataset,
    build_tokenizer,
    component_examples,
    dataset_rows,
    first_batches,
    image_processor_of,
    text_examples,
)

from aetnet import AETNetProcessor
from aetnet.data import OCRCache, UnlabeledPagesError, find_unlabeled_pages, iter_unlabeled_pages, load_text_corpus
from aetnet.pretraining import (
    DataCollatorForLayoutLMv3PreTraining,
    DataCollatorForSimMIM,
    LayoutLMv3ForPreTraining,
    PreTrainingTrainer,
    ViTForPagePreTraining,
    ViTPagePreTrainingConfig,
    average_chance_levels,
    pretraining_configs,
    token_log_frequencies,
)
from aetnet.training import plot_loss_curves


check_min_version("5.23.0")
require_version("datasets>=3", "pip install 'aetnet[examples]'")

logger = logging.getLogger(__name__)

# The title of the loss-curve plot of each model class that `component_model` builds.
PLOT_TITLES = {
    LayoutLMv3ForPreTraining: "LayoutLMv3 pre-training losses (MLM, MIM, WPA)",
    ViTForPagePreTraining: "ViT pre-training losses (SimMIM, page contrast)",
    ViTForMaskedImageModeling: "ViT pre-training loss (SimMIM alone)",
    RobertaForMaskedLM: "RoBERTa pre-training loss (MLM)",
}


def check_arguments(model_args, data_args, training_args) -> list[str]:
    """The components to train, in order; a clear error for arguments that cannot work together."""
    unknown = sorted(set(model_args.components) - set(COMPONENTS))
    if unknown or not model_args.components:
        raise ValueError(f"--components {model_args.components!r}: choose among {' '.join(COMPONENTS)}")
    if data_args.train_dirs and data_args.dataset_name:
        raise ValueError("Give either --train_dirs or --dataset_name, not both")
    has_pages = bool(data_args.train_dirs or data_args.dataset_name)
    needs_pages = [c for c in model_args.components if c != "roberta"]
    if needs_pages and not has_pages:
        raise ValueError(
            f"--components {' '.join(needs_pages)} pre-train on pages: give --train_dirs or --dataset_name"
        )
    if not has_pages and not data_args.text_files:
        raise ValueError("No input: give --train_dirs, --dataset_name or --text_files")
    weight = model_args.page_contrast_weight
    if not (math.isfinite(weight) and weight >= 0):
        raise ValueError(f"--page_contrast_weight {weight}: give a finite number >= 0 (0: SimMIM alone)")
    if data_args.chance_level_batches < 0:
        raise ValueError(f"--chance_level_batches {data_args.chance_level_batches}: give 0 (none) or more batches")
    if data_args.streaming and training_args.max_steps <= 0:
        raise ValueError("--streaming reads a corpus of unknown length: give --max_steps")
    return [c for c in COMPONENTS if c in model_args.components]


def find_pages(data_args) -> tuple[list, datasets.Dataset | None, Counter]:
    """The page items (`UnlabeledPage`s, or row numbers of the dataset), the dataset (or `None`) and the skip counter."""
    if data_args.dataset_name:
        dataset = dataset_rows(data_args.dataset_name, data_args.dataset_split)
        items = list(range(len(dataset)))
        skipped = Counter()
    elif data_args.train_dirs:
        collection = find_unlabeled_pages(data_args.train_dirs)
        logger.info(collection.report())
        dataset, items, skipped = None, collection.pages, collection.skipped
    else:
        return [], None, Counter()
    if data_args.max_train_pages is not None:
        items = items[: data_args.max_train_pages]
    return items, dataset, skipped


def corpus_words(items, dataset, texts, ocr_cache, pdf_dpi: float):
    """The words of every page and text document, for the tokenizer (one pass over the pages)."""
    if dataset is not None:
        yield from (dataset[int(i)]["words"] for i in items)
    else:
        yield from (row["words"] for row in iter_unlabeled_pages(items, ocr_cache, None, pdf_dpi))
    yield from (text.split() for text in texts or [])


def component_model(component: str, model_args, configs):
    """The model of `component`: from its checkpoint (continued pre-training) or new, of the `--model_size` preset."""
    overrides = {}
    if component == "layoutlmv3":
        start, model_class, config = model_args.layout_model, LayoutLMv3ForPreTraining, configs.layout
    elif component == "vit" and model_args.page_contrast_weight == 0:
        start, model_class, config = model_args.vision_model, ViTForMaskedImageModeling, configs.vision
    elif component == "vit":
        overrides = {"page_contrast_weight": model_args.page_contrast_weight}  # also over a checkpoint's own
        start, model_class = model_args.vision_model, ViTForPagePreTraining
        config = ViTPagePreTrainingConfig.from_vit_config(configs.vision, **overrides)
    else:
        start, model_class, config = model_args.text_model, RobertaForMaskedLM, configs.text
    return (model_class.from_pretrained(start, **overrides), [start]) if start else (model_class(config), [])


def component_collator(component: str, model, tokenizer, data_args, seed: int):
    """The masking collator of `component`, seeded so that a resumed run draws the masks of an uninterrupted one."""
    if component == "layoutlmv3":
        return DataCollatorForLayoutLMv3PreTraining.from_config(
            model.config,
            mlm_probability=data_args.mlm_probability,
            mim_probability=data_args.mim_probability,
            seed=seed,
        )
    if component == "vit":
        return DataCollatorForSimMIM.from_config(model.config, mask_ratio=data_args.mask_ratio, seed=seed)
    return DataCollatorForSeededLanguageModeling(tokenizer, mlm_probability=data_args.text_mlm_probability, seed=seed)


def check_batch(dataset, streaming: bool, items: list, training_args, component: str) -> None:
    """Refuse a corpus smaller than one batch (of all processes together)."""
    batch = training_args.per_device_train_batch_size * int(os.environ.get("WORLD_SIZE", "1"))
    if streaming and training_args.accelerator_config.split_batches:
        batch = training_args.per_device_train_batch_size
    size = len(items) if streaming else len(dataset)
    if size < batch and (not streaming or component == "vit"):
        raise ValueError(
            f"--per_device_train_batch_size {training_args.per_device_train_batch_size}: the {component} corpus has "
            f"{size} example(s), fewer than one batch of {batch}; give more pages or a smaller batch"
        )


def corpus_token_ids(dataset, batches: list[dict]) -> Iterator:
    """The token ids of the training corpus: the `input_ids` of the dataset in memory, or of a stream the original
    tokens (masked ones restored from the labels) of the batches read for the chance levels."""
    if isinstance(dataset, datasets.Dataset) and "input_ids" in dataset.column_names:
        yield from dataset.with_format(None).select_columns(["input_ids"])["input_ids"]
        return
    for batch in batches:
        labels = batch.get("mlm_labels", batch.get("labels"))
        yield torch.where(labels != -100, labels, batch["input_ids"])


def component_chance_levels(component: str, trainer, tokenizer, data_args, training_args) -> dict[str, float]:
    """Each objective's chance level, averaged over the first `--chance_level_batches` training batches, masked as
    the run's first batches are (a fresh collator of the run's seed): the loss of a model that ignores the page; for
    MLM, a model that learns the training corpus' token frequencies."""
    if data_args.chance_level_batches <= 0 or not trainer.is_world_process_zero():
        return {}
    model = trainer.accelerator.unwrap_model(trainer.model)
    collator = component_collator(component, model, tokenizer, data_args, training_args.seed)
    batches = first_batches(
        trainer.train_dataset,
        collator,
        training_args.per_device_train_batch_size,
        data_args.chance_level_batches,
    )
    frequencies = None
    if component != "vit":
        tokens = corpus_token_ids(trainer.train_dataset, batches)
        frequencies = token_log_frequencies(tokens, model.config.vocab_size, tokenizer.all_special_ids)
    levels = average_chance_levels(model, batches, frequencies)
    logger.info(f"{component}: chance levels over {len(batches)} batch(es): {levels}")
    return levels


def main():
    parser = HfArgumentParser((PreTrainingModelArguments, PreTrainingDataArguments, PreTrainingArguments))
    model_args, data_args, training_args = parse_arguments(parser)
    setup_logging_and_seed(logger, training_args)
    components = check_arguments(model_args, data_args, training_args)
    # The launchers (`torchrun`, `accelerate launch`) set WORLD_SIZE; the process group starts later, in the Trainer.
    num_processes = int(os.environ.get("WORLD_SIZE", "1"))
    if data_args.streaming and num_processes > 1:
        # The first process reads each global batch of the stream and hands every process its share: each page is
        # read once per epoch, and the masks are those of one process with the same global batch.
        training_args.accelerator_config.dispatch_batches = True
        training_args.accelerator_config.split_batches = True
        training_args.per_device_train_batch_size *= num_processes
    output_dir = training_args.output_dir

    # ---- Data ----
    items, dataset, skipped = find_pages(data_args)
    texts = load_text_corpus(data_args.text_files) if data_args.text_files else None
    ocr_cache = OCRCache(data_args.ocr_cache_dir) if data_args.ocr else None

    # ---- Tokenizer, processor ----
    with training_args.main_process_first(desc="tokenizer"):
        tokenizer = build_tokenizer(
            model_args, corpus_words(items, dataset, texts, ocr_cache, data_args.pdf_dpi), output_dir
        )
    configs = pretraining_configs(
        model_args.model_size, vocab_size=len(tokenizer), max_length=model_args.max_seq_length
    )
    apply_config_overrides(configs, model_args.config_overrides)
    if model_args.layout_model:  # continued pre-training keeps the checkpoint's page size
        configs = configs._replace(
            layout=LayoutLMv3ForPreTraining.config_class.from_pretrained(model_args.layout_model)
        )
    processor = AETNetProcessor(image_processor=image_processor_of(configs.layout.input_size), tokenizer=tokenizer)
    if training_args.should_save:
        processor.save_pretrained(os.path.join(output_dir, "processor"))

    all_metrics = {}
    for component in components:
        # ---- Model, examples, collator ----
        model, base_models = component_model(component, model_args, configs)
        vision_size = getattr(model.config, "image_size", configs.vision.image_size)
        source = ExampleSource(
            component,
            processor,
            image_processor_of(vision_size),
            model_args.max_seq_length,
            data_args.streaming,
            ocr_cache,
            # Each component counts its own reading of the pages (a stream counts again at every epoch).
            Counter(skipped or {}),
            data_args.pdf_dpi,
            dataset,
        )
        from_text = component == "roberta" and texts is not None
        generator, inputs = (text_examples, texts) if from_text else (component_examples, items)
        argument = "--text_files" if from_text else ("--dataset_name" if dataset is not None else "--train_dirs")
        with training_args.main_process_first(desc=f"{component} examples"):
            train_dataset = as_dataset(generator, inputs, source, data_args.streaming, argument)
        check_batch(train_dataset, data_args.streaming, inputs, training_args, component)
        training_args.output_dir = os.path.join(output_dir, component)
        processing_class = {"layoutlmv3": processor, "vit": source.image_processor}.get(component, tokenizer)
        trainer = PreTrainingTrainer(
            model=model,
            args=training_args,
            train_dataset=train_dataset,
            processing_class=processing_class,
            data_collator=component_collator(component, model, tokenizer, data_args, training_args.seed),
        )

        if data_args.streaming and hasattr(trainer.data_collator, "set_batch_index"):
            trainer.add_callback(StreamResumeCallback(trainer.data_collator))

        # ---- Train, resuming from the component's last checkpoint ----
        checkpoint = training_args.resume_from_checkpoint
        if checkpoint is None and os.path.isdir(training_args.output_dir):
            checkpoint = get_last_checkpoint(training_args.output_dir)
        if checkpoint is not None:
            logger.info(f"{component}: resuming from {checkpoint}")
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()
        metrics = dict(train_result.metrics)
        metrics["train_pages" if generator is component_examples else "train_documents"] = len(inputs)
        if not data_args.streaming:
            metrics["train_examples"] = len(train_dataset)
        metrics["skipped_pages"] = sum(source.skipped.values())
        if source.skipped:
            logger.warning(f"{component}: pages left out: {dict(source.skipped)}")
        # Read by the first process only, which writes the results and the plot.
        levels = component_chance_levels(component, trainer, tokenizer, data_args, training_args)
        metrics.update({f"chance_level_{name}": value for name, value in levels.items()})
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        if trainer.is_world_process_zero():
            curves = plot_loss_curves(
                trainer.state.log_history,
                os.path.join(training_args.output_dir, "loss_curves.png"),
                title=PLOT_TITLES[type(model)],
                levels=levels,
            )
            if curves:
                logger.info(f"{component}: loss curves written to {curves}")
            trainer.create_model_card(
                model_name=f"{component}-pretrained",
                finetuned_from=base_models[0] if base_models else None,
                tags=["aetnet", "pretraining", component],
                dataset=", ".join(
                    data_args.text_files if from_text else data_args.train_dirs or [data_args.dataset_name]
                ),
            )
        all_metrics[component] = metrics
    training_args.output_dir = output_dir
    print(f"Pre-trained {', '.join(components)} saved to {os.path.abspath(output_dir)}")
    return all_metrics


def _mp_fn(index):
    # For xla_spawn (TPUs)
    main()


if __name__ == "__main__":
    try:
        main()
    except UnlabeledPagesError as error:
        raise SystemExit(f"error: {error}") from None
