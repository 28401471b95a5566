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
# limitations under the License.
# /// script
# requires-python = ">=3.10"
# dependencies = [
#     "aetnet[examples,ocr]",
#     "transformers>=5.23,<6",
#     "accelerate>=1.1",
#     "datasets>=3",
#     "tqdm",
# ]
# ///
"""
Fine-tune AETNet for extractive document question answering on DocVQA, from the official JSON files and page images.

Each page is OCR-ed with Tesseract (cached on disk by page content, `--ocr_cache_dir`), the free-text gold answer is
located in the OCR words by the normalised, fuzzy span finder of `aetnet.data.docvqa` (questions whose answer is
not found are skipped for training and counted), and the model learns start/end positions over the words of
overlapping windows (`--max_seq_length`, `--doc_stride`). Predictions take the best span over a question's windows
and map it back to the page's words; evaluation reports ANLS (the official DocVQA metric) and exact match, over all
questions, found or not.

The model starts as in `run_funsd.py`: an AETNet checkpoint, three pretrained encoders, or random weights of a named
size (`--model_size`) with a tokenizer trained on the training words and questions.

    python examples/run_docvqa.py --output_dir outputs/docvqa-smoke \
        --train_file ../shared/data/docvqa-smallval/val_v1.0.json \
        --validation_file ../shared/data/docvqa-smallval/val_v1.0.json --max_steps 20
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from transformers import HfArgumentParser
from transformers.utils import check_min_version
from transformers.utils.versions import require_version
from utils_aetnet import (
    ExampleTrainingArguments,
    finish_run,
    parse_arguments,
    setup_logging_and_seed,
    train_and_save,
    training_collator,
    warn_if_from_scratch_learning_rate,
)
from utils_aetnet_data import (
    OCRArguments,
    limit_splits,
    map_to_windows,
    ocr_splits,
    script_window_arguments,
    window_kwargs,
)
from utils_aetnet_model import ModelArguments, build_processor_and_model

from aetnet import AETNetForQuestionAnswering, AETNetTrainer
from aetnet.data import (
    add_answer_spans,
    answer_token_positions,
    load_docvqa,
    postprocess_qa_predictions,
    with_page_pixels,
)
from aetnet.data_collator import AETNetDataCollator
from aetnet.metrics import anls, compute_docvqa_metrics
from aetnet.processing_aetnet import WORD_INDEX_KEY


check_min_version("5.23.0")
require_version("datasets>=3", "pip install 'aetnet[examples]'")

logger = logging.getLogger(__name__)


@dataclass
class DataTrainingArguments(OCRArguments):
    """The DocVQA files, their OCR (`OCRArguments`) and answer matching; the windows are `DocVQAWindowArguments`."""

    train_file: str | None = field(default=None, metadata={"help": "DocVQA annotation file for training (JSON)."})
    validation_file: str | None = field(default=None, metadata={"help": "DocVQA annotation file for evaluation."})
    test_file: str | None = field(default=None, metadata={"help": "DocVQA file to predict (answers not needed)."})
    image_root: str | None = field(
        default=None, metadata={"help": "Folder image paths are relative to (default: the file's)."}
    )
    min_answer_similarity: float = field(
        default=0.8,
        metadata={"help": "Lowest normalised Levenshtein similarity of a fuzzy answer match (1 = exact only)."},
    )
    max_answer_length: int = field(default=30, metadata={"help": "Longest predicted answer, in tokens."})
    n_best_size: int = field(default=20, metadata={"help": "Start and end candidates tried per window."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training questions."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N evaluation questions."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Use only the first N test questions."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for dataset.map."})


# The shared window options; the help says that a window holds the question too, and whose windows the stride joins.
DocVQAWindowArguments = script_window_arguments(
    help_texts={
        "max_seq_length": "Window length in tokens (question included).",
        "doc_stride": "Tokens shared by consecutive windows of a page (default: max_seq_length // 4, <= 128).",
    }
)


@dataclass
class DocVQATrainingArguments(ExampleTrainingArguments):
    """`AETNetTrainingArguments` with defaults for a tiny random model on CPU; from pretrained encoders use the
    LayoutLMv3 DocVQA recipe instead (`--learning_rate 2e-5`)."""

    do_train: bool = field(default=True, metadata={"help": "Run training (needs --train_file)."})
    do_eval: bool = field(default=True, metadata={"help": "Evaluate on --validation_file (ANLS, exact match)."})
    do_predict: bool = field(default=True, metadata={"help": "Predict --test_file (official submission format)."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate (AdamW)."})
    num_train_epochs: float = field(default=20.0, metadata={"help": "Training epochs."})
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Keep False: page pixels are loaded from the `image` column when a batch is drawn."},
    )


def prepare_windows(dataset, processor, window_args, num_proc, description):
    """Questions -> windows of (question, page words), with the answer's token positions where the answer is known,
    each window's `word_index` and `example_index`; `with_page_pixels` adds the page pixels when a batch is drawn."""
    # The boxes are already on the 0-1000 scale, so the processor needs nothing from the page but its pixels, which
    # are dropped here: a blank stand-in saves decoding every page once per question.
    blank = Image.new("RGB", (8, 8), "white")

    def process(batch, indices):
        encoding = processor(
            [blank] * len(batch["question"]),
            text=batch["question"],
            text_pair=batch["words"],
            boxes=batch["bboxes"],
            **window_kwargs(window_args),
        )
        mapping = encoding["overflow_to_sample_mapping"]
        positions = [
            answer_token_positions(ids, batch["answer_start_word"][doc], batch["answer_end_word"][doc])
            for ids, doc in zip(encoding[WORD_INDEX_KEY], mapping)
        ]
        return {
            "input_ids": encoding["input_ids"],
            "attention_mask": encoding["attention_mask"],
            "bbox": encoding["bbox"],
            WORD_INDEX_KEY: encoding[WORD_INDEX_KEY],
            "example_index": [indices[doc] for doc in mapping],
            "start_positions": [start for start, _ in positions],
            "end_positions": [end for _, end in positions],
            "image": [batch["image"][doc] for doc in mapping],
        }

    windows = map_to_windows(dataset, process, 32, num_proc, description)
    return windows, with_page_pixels(windows, processor.image_processor)


def predict_answers(trainer, windows, pixel_windows, examples, data_args, metric_key_prefix):
    """Run the model on the windows and return (one answer dict per question, the trainer's metrics)."""
    output = trainer.predict(pixel_windows, metric_key_prefix=metric_key_prefix)
    start_logits, end_logits = output.predictions[:2]
    answers = postprocess_qa_predictions(
        start_logits,
        end_logits,
        windows[WORD_INDEX_KEY],
        windows["example_index"],
        examples["words"],
        n_best_size=data_args.n_best_size,
        max_answer_length=data_args.max_answer_length,
    )
    return answers, output.metrics


def main():
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, DocVQAWindowArguments, DocVQATrainingArguments))
    model_args, data_args, window_args, training_args = parse_arguments(parser)
    setup_logging_and_seed(logger, training_args)

    # ---- Data: questions, their pages' OCR (cached), and where the answers are in the words ----
    files = {"train": data_args.train_file, "validation": data_args.validation_file, "test": data_args.test_file}
    needed = {"train": training_args.do_train, "validation": training_args.do_eval, "test": training_args.do_predict}
    for split in ("train", "validation"):
        if needed[split] and files[split] is None:
            raise ValueError(f"--do_{'train' if split == 'train' else 'eval'} needs --{split}_file.")
    # Limit before OCR, so that only the kept questions' pages are read.
    raw = {
        split: load_docvqa(path, image_root=data_args.image_root)
        for split, path in files.items()
        if path is not None and needed[split]
    }
    limit_splits(raw, data_args)
    ocr_splits(raw, data_args, training_args, logger)
    if "train" in raw:
        raw["train"] = add_answer_spans(raw["train"], data_args.min_answer_similarity, drop_unmatched=True)
        if len(raw["train"]) == 0:
            raise ValueError("No training question has its answer in the OCR words; nothing to train on.")
    for split in ("validation", "test"):
        if split in raw:
            has_answers = all(raw[split]["answers"])
            if split == "validation" and not has_answers:
                raise ValueError("Every validation question needs gold answers for ANLS; use --test_file otherwise.")
            if has_answers:
                raw[split] = add_answer_spans(raw[split], data_args.min_answer_similarity, drop_unmatched=False)
            else:
                raw[split] = raw[split].add_column("answer_start_word", [-1] * len(raw[split]))
                raw[split] = raw[split].add_column("answer_end_word", [-1] * len(raw[split]))

    if not raw:
        raise ValueError("Nothing to do: give --train_file, --validation_file or --test_file with its --do_* flag.")

    # ---- Processor and model ----
    source = raw["train"] if "train" in raw else next(iter(raw.values()))
    train_texts = list(source["words"]) + [question.split() for question in source["question"]]
    processor, model, base_models = build_processor_and_model(
        model_args,
        AETNetForQuestionAnswering,
        train_texts,
        window_args.max_seq_length,
    )
    warn_if_from_scratch_learning_rate(logger, training_args, base_models)
    with training_args.main_process_first(desc="dataset map pre-processing"):
        windows = {
            split: prepare_windows(
                raw[split], processor, window_args, data_args.preprocessing_num_workers, f"{split} windows"
            )
            for split in raw
        }
    for split, (plain, _) in windows.items():
        answered = int(np.count_nonzero(np.asarray(plain["start_positions"]) > 0))
        logger.info(f"{split}: {len(raw[split])} questions -> {len(plain)} windows, {answered} holding their answer")

    trainer = AETNetTrainer(
        model=model,
        args=training_args,
        train_dataset=windows["train"][1] if "train" in windows else None,
        processing_class=processor,
        data_collator=training_collator(model, processor, training_args.seed),
    )

    # ---- Train ----
    if training_args.do_train:
        train_and_save(trainer, training_args, len(windows["train"][0]))
    trainer.data_collator = AETNetDataCollator(tokenizer=processor.tokenizer, augment=False)

    # ---- Evaluate: ANLS and exact match over every question, answer found in the OCR words or not ----
    metrics = {}
    if "validation" in windows:
        examples = raw["validation"]
        answers, metrics = predict_answers(trainer, *windows["validation"], examples, data_args, "eval")
        predicted = [answer["answer"] for answer in answers]
        scores = compute_docvqa_metrics(predicted, examples["answers"])
        metrics.update({f"eval_{name}": value for name, value in scores.items()})
        metrics["eval_answers_in_ocr"] = float(np.mean(np.asarray(examples["answer_start_word"]) >= 0))
        metrics["eval_samples"] = len(examples)
        trainer.log(dict(metrics))
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        if trainer.is_world_process_zero():
            path = os.path.join(training_args.output_dir, "eval_predictions.json")
            records = [
                {
                    "questionId": example["question_id"],
                    "question": example["question"],
                    "answer": answer["answer"],
                    "gold_answers": example["answers"],
                    "anls": anls([answer["answer"]], [example["answers"]]),
                }
                for example, answer in zip(examples, answers)
            ]
            with open(path, "w", encoding="utf-8") as writer:
                json.dump(records, writer, indent=1)
            logger.info(f"Validation answers written to {path}")

    # ---- Predict: the official submission format, [{"questionId": ..., "answer": ...}] ----
    if "test" in windows:
        answers, _ = predict_answers(trainer, *windows["test"], raw["test"], data_args, "predict")
        if trainer.is_world_process_zero():
            path = os.path.join(training_args.output_dir, "test_predictions.json")
            with open(path, "w", encoding="utf-8") as writer:
                records = [
                    {"questionId": question_id, "answer": answer["answer"]}
                    for question_id, answer in zip(raw["test"]["question_id"], answers)
                ]
                json.dump(records, writer, indent=1)
            logger.info(f"Test answers written to {path}")

    card_kwargs = {
        "tasks": "document-question-answering",
        "dataset": "DocVQA",
        "dataset_tags": "docvqa",
        "language": "en",
    }
    finish_run(trainer, training_args, metrics, ("anls", "exact_match"), base_models, **card_kwargs)
    return metrics


def _mp_fn(index):
    # For xla_spawn (TPUs)
    main()


if __name__ == "__main__":
    main()
