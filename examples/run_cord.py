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
#     "aetnet[examples]",
#     "transformers>=5.23,<6",
#     "accelerate>=1.1",
#     "datasets>=3",
#     "evaluate>=0.4",
#     "seqeval>=1.2",
# ]
# ///
"""
Fine-tune AETNet for receipt key information extraction on CORD (30 entity types, 61 BIO labels).

CORD is read from the v2 release layout (`{train,dev,test}/json/*.json` with `valid_line` -> `words` -> `quad`,
`category`; `{train,dev,test}/image/*`, see `aetnet.data.cord`), with segment-level boxes (each word gets its line's
box, as LayoutLMv3 and AET are fine-tuned). With 61 labels the token head is LayoutLMv3's MLP head.

Everything else is the FUNSD recipe of `run_funsd.py`, shared with it through `utils_aetnet.py` and
`utils_aetnet_data.py` beside it (model starts, windows, merging the windows back to words, entity-level seqeval):
the model is trained on `train/`, evaluated on `dev/` after training (and during it with `--eval_strategy`), and
`--do_predict` writes per-word predictions for `test/` with its scores. The official AET CORD run weighs the
losses `0.8 * task + 1.2 * contrastive / 6 + 0.4 * PITA`; `--loss_weights` sets the
alignment weights relative to the task loss (e.g. `--loss_weights ditc=0.25,imc=0.25,glitc=0.25,pita=0.5`).

    python examples/run_cord.py --dataset_dir data/CORD --output_dir outputs/aetnet-cord --model_size small
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

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
    first_logits,
    limit_splits,
    merge_to_words,
    prepare_token_windows,
    script_window_arguments,
    seqeval_scores,
    write_word_predictions,
)
from utils_aetnet_model import ModelArguments, build_processor_and_model

from aetnet import AETNetForTokenClassification, AETNetTrainer
from aetnet.data import load_cord
from aetnet.data_collator import AETNetDataCollator
from aetnet.metrics import load_seqeval


check_min_version("5.23.0")
require_version("datasets>=3", "pip install 'aetnet[examples]'")

logger = logging.getLogger(__name__)


@dataclass
class DataTrainingArguments:
    """The CORD folder; the windows receipts are cut into are `CordWindowArguments`."""

    dataset_dir: str | None = field(
        default=None, metadata={"help": "The CORD v2 folder with train/, dev/ and test/ (each json/ and image/)."}
    )
    word_level: bool = field(
        default=False, metadata={"help": "Give each word its own box instead of its line's (segment-level) box."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training receipts."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N dev receipts."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Use only the first N test receipts."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for dataset.map."})
    return_entity_level_metrics: bool = field(
        default=False, metadata={"help": "Also report precision / recall / F1 per entity type."}
    )


# The shared window options, the stride's help saying whose windows it joins.
CordWindowArguments = script_window_arguments(
    help_texts={
        "doc_stride": "Tokens shared by consecutive windows of a receipt (default: max_seq_length // 4, <= 128)."
    }
)


@dataclass
class CordTrainingArguments(ExampleTrainingArguments):
    """`AETNetTrainingArguments` with defaults for a small random model on CPU; from pretrained encoders use the
    LayoutLMv3 CORD recipe instead (`--learning_rate 5e-5 --max_steps 2000`)."""

    do_eval: bool = field(default=True, metadata={"help": "Evaluate on the dev split."})
    do_predict: bool = field(
        default=True, metadata={"help": "Score and write per-word predictions for the test split."}
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate (AdamW)."})
    num_train_epochs: float = field(default=30.0, metadata={"help": "Training epochs."})


def main():
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, CordWindowArguments, CordTrainingArguments))
    model_args, data_args, window_args, training_args = parse_arguments(parser)
    if not data_args.dataset_dir:
        raise ValueError("--dataset_dir (the CORD v2 folder with train/, dev/ and test/) is required.")
    setup_logging_and_seed(logger, training_args)

    # ---- Data ----
    splits = ["train"] + ["validation"] * training_args.do_eval + ["test"] * training_args.do_predict
    raw = load_cord(data_args.dataset_dir, word_level=data_args.word_level, splits=splits)
    limit_splits(raw, data_args)
    label_list = raw["train"].features["ner_tags"].feature.names

    # ---- Processor and model (the FUNSD script's three starts) ----
    processor, model, base_models = build_processor_and_model(
        model_args, AETNetForTokenClassification, raw["train"]["words"], window_args.max_seq_length, label_list
    )
    warn_if_from_scratch_learning_rate(logger, training_args, base_models)
    label_ids = {i: model.config.label2id[label] for i, label in enumerate(label_list)}
    id2label = model.config.id2label
    outside_id = model.config.label2id["O"]

    with training_args.main_process_first(desc="dataset map pre-processing"):
        windows = {
            split: prepare_token_windows(
                raw[split], processor, window_args, label_ids, data_args.preprocessing_num_workers, f"{split} windows"
            )
            for split in raw
        }
    logger.info(", ".join(f"{split}: {len(raw[split])} receipts -> {len(windows[split])} windows" for split in raw))

    # ---- Metrics: entity-level seqeval over words, after merging the windows of each receipt ----
    metric = load_seqeval()
    gold_words = {
        split: [[id2label[label_ids[tag]] for tag in tags] for tags in raw[split]["ner_tags"]] for split in raw
    }

    def scores_for(split):
        def compute_metrics(prediction):
            logits = first_logits(prediction.predictions)
            predicted = merge_to_words(logits, windows[split], raw[split], outside_id, logger)
            return seqeval_scores(metric, predicted, gold_words[split], id2label, data_args.return_entity_level_metrics)

        return compute_metrics

    trainer = AETNetTrainer(
        model=model,
        args=training_args,
        train_dataset=windows["train"] if training_args.do_train else None,
        eval_dataset=windows.get("validation"),
        processing_class=processor,
        data_collator=training_collator(model, processor, training_args.seed),
        compute_metrics=scores_for("validation") if "validation" in windows else None,
    )

    # ---- Train ----
    if training_args.do_train:
        train_and_save(trainer, training_args, len(windows["train"]))
    trainer.data_collator = AETNetDataCollator(tokenizer=processor.tokenizer, augment=False)

    # ---- Evaluate on dev, predict (and score) test ----
    metrics = {}
    if training_args.do_eval:
        metrics = trainer.evaluate()
        metrics["eval_samples"] = len(windows["validation"])
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    if training_args.do_predict:
        trainer.compute_metrics = scores_for("test")
        output = trainer.predict(windows["test"], metric_key_prefix="predict")
        trainer.log_metrics("predict", output.metrics)
        trainer.save_metrics("predict", output.metrics)
        if trainer.is_world_process_zero():
            predicted = merge_to_words(
                first_logits(output.predictions), windows["test"], raw["test"], outside_id, logger
            )
            path = os.path.join(training_args.output_dir, "predictions.jsonl")
            write_word_predictions(path, raw["test"], gold_words["test"], predicted, id2label)
            logger.info(f"Per-word predictions written to {path}")

    card_kwargs = {"tasks": "token-classification", "dataset": "CORD", "dataset_tags": "cord", "language": "en"}
    finish_run(trainer, training_args, metrics, ("precision", "recall", "f1"), base_models, **card_kwargs)
    return metrics


def _mp_fn(index):
    # For xla_spawn (TPUs)
    main()


if __name__ == "__main__":
    main()
