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
Fine-tune AETNet for entity labelling on FUNSD-style forms (header / question / answer, BIO tags).

The model can start from:

- an AETNet checkpoint (`--model_name_or_path`);
- three pretrained encoders (`--layout_model microsoft/layoutlmv3-base --vision_model facebook/deit-base-patch16-224
  --text_model FacebookAI/roberta-base`);
- random weights of a named size (`--model_size tiny|small|base`) with a tokenizer trained on the training words,
  which needs no download. This is the default (`tiny`).

The data are a local FUNSD folder or a Hub dataset (`--dataset_dir`), or, by default, synthetic FUNSD-like forms
rendered on the fly. Long documents are split into overlapping windows; evaluation and the written predictions
(`predictions.jsonl`) merge the windows back to one label per word, and the scores are entity-level seqeval scores
over words. `--baseline layoutlmv3` trains stock LayoutLMv3ForTokenClassification instead, from the same LayoutLMv3
and head weights as the AETNet model it replaces (see `benchmarks/compare.py`).

    python examples/run_funsd.py --output_dir outputs/aetnet-synthetic
    python examples/run_funsd.py --output_dir outputs/aetnet-funsd-small \
        --dataset_dir ../shared/data/funsd --model_size small
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
    WindowArguments,
    first_logits,
    merge_to_words,
    prepare_token_windows,
    seqeval_scores,
    write_word_predictions,
)
from utils_aetnet_model import ModelArguments, build_processor_and_model

from aetnet import AETNetForTokenClassification, AETNetTrainer
from aetnet.data import load_funsd_like, load_synthetic_funsd
from aetnet.data_collator import AETNetDataCollator
from aetnet.metrics import load_seqeval


check_min_version("5.23.0")
require_version("datasets>=3", "pip install 'aetnet[examples]'")

logger = logging.getLogger(__name__)


@dataclass
class DataTrainingArguments:
    """The data (the windows they are cut into are [`WindowArguments`])."""

    dataset_dir: str = field(
        default="",
        metadata={"help": "A FUNSD folder (training_data/, testing_data/), a Hub dataset id, or ''/'synthetic'."},
    )
    synthetic_train_size: int = field(default=96, metadata={"help": "Synthetic training forms."})
    synthetic_test_size: int = field(default=24, metadata={"help": "Synthetic test forms."})
    word_level: bool = field(
        default=False, metadata={"help": "Give each word its own box instead of its entity's (segment-level) box."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training documents."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N test documents."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for dataset.map."})
    return_entity_level_metrics: bool = field(
        default=False, metadata={"help": "Also report precision / recall / F1 per entity type."}
    )


@dataclass
class FunsdTrainingArguments(ExampleTrainingArguments):
    """
    `AETNetTrainingArguments` whose defaults train the default tiny random model on the synthetic forms in a few
    CPU minutes. From pretrained encoders use the LayoutLMv3 recipe instead (`--learning_rate 1e-5 --max_steps
    1000`). Train, evaluation and prediction all run unless switched off (`--do_predict False`).
    """

    do_eval: bool = field(default=True, metadata={"help": "Evaluate on the test split."})
    do_predict: bool = field(default=True, metadata={"help": "Write per-word predictions for the test split."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate (AdamW)."})
    num_train_epochs: float = field(default=15.0, metadata={"help": "Training epochs."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on norms, biases, gates)."})
    save_strategy: str = field(default="no", metadata={"help": "Checkpoints while training (the end is saved)."})


def main():
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, WindowArguments, FunsdTrainingArguments))
    model_args, data_args, window_args, training_args = parse_arguments(parser)
    setup_logging_and_seed(logger, training_args)

    # ---- Data ----
    if data_args.dataset_dir in ("", "synthetic"):
        raw = load_synthetic_funsd(
            data_args.synthetic_train_size,
            data_args.synthetic_test_size,
            seed=training_args.seed,
            word_level=data_args.word_level,
        )
        dataset_name, dataset_tag = "synthetic FUNSD-like forms", "synthetic-funsd"
    else:
        raw = load_funsd_like(data_args.dataset_dir, word_level=data_args.word_level)
        dataset_name, dataset_tag = "FUNSD", "funsd"
    if data_args.max_train_samples is not None:
        raw["train"] = raw["train"].select(range(min(len(raw["train"]), data_args.max_train_samples)))
    if data_args.max_eval_samples is not None:
        raw["test"] = raw["test"].select(range(min(len(raw["test"]), data_args.max_eval_samples)))
    label_list = raw["train"].features["ner_tags"].feature.names

    # ---- Processor and model ----
    processor, model, base_models = build_processor_and_model(
        model_args, AETNetForTokenClassification, raw["train"]["words"], window_args.max_seq_length, label_list
    )
    warn_if_from_scratch_learning_rate(logger, training_args, base_models)
    # Dataset tag ids -> the model's label ids (a checkpoint may order the labels differently).
    label_ids = {i: model.config.label2id[label] for i, label in enumerate(label_list)}

    with training_args.main_process_first(desc="dataset map pre-processing"):
        train_windows = prepare_token_windows(
            raw["train"], processor, window_args, label_ids, data_args.preprocessing_num_workers, "Train windows"
        )
        test_windows = prepare_token_windows(
            raw["test"], processor, window_args, label_ids, data_args.preprocessing_num_workers, "Test windows"
        )
    logger.info(f"{len(raw['train'])} training documents -> {len(train_windows)} windows")

    # ---- Metrics: entity-level seqeval over words, after merging the windows ----
    metric = load_seqeval()
    id2label = model.config.id2label
    outside_id = model.config.label2id["O"]
    gold_words = [[id2label[label_ids[tag]] for tag in tags] for tags in raw["test"]["ner_tags"]]

    def compute_metrics(prediction):
        logits = first_logits(prediction.predictions)
        predicted = merge_to_words(logits, test_windows, raw["test"], outside_id, logger)
        return seqeval_scores(metric, predicted, gold_words, id2label, data_args.return_entity_level_metrics)

    trainer = AETNetTrainer(
        model=model,
        args=training_args,
        train_dataset=train_windows if training_args.do_train else None,
        eval_dataset=test_windows if training_args.do_eval else None,
        processing_class=processor,
        data_collator=training_collator(model, processor, training_args.seed),
        compute_metrics=compute_metrics,
    )
    # Evaluation and prediction see the deterministic page only.
    eval_collator = AETNetDataCollator(tokenizer=processor.tokenizer, augment=False)

    # ---- Train ----
    if training_args.do_train:
        train_and_save(trainer, training_args, len(train_windows))

    # ---- Evaluate and predict: FUNSD has no validation split, so both use the test split, in one pass ----
    metrics = {}
    if training_args.do_eval or training_args.do_predict:
        trainer.data_collator = eval_collator
        output = trainer.predict(test_windows, metric_key_prefix="eval")
        metrics = output.metrics
        metrics["eval_samples"] = len(test_windows)
        if training_args.do_eval:
            trainer.log(dict(metrics))
            trainer.log_metrics("eval", metrics)
            trainer.save_metrics("eval", metrics)
        if training_args.do_predict and trainer.is_world_process_zero():
            predicted = merge_to_words(first_logits(output.predictions), test_windows, raw["test"], outside_id, logger)
            path = os.path.join(training_args.output_dir, "predictions.jsonl")
            write_word_predictions(path, raw["test"], gold_words, predicted, id2label)
            logger.info(f"Per-word predictions written to {path}")

    card_kwargs = {
        "tasks": "token-classification",
        "dataset": dataset_name,
        "dataset_tags": dataset_tag,
        "language": "en",
    }
    finish_run(trainer, training_args, metrics, ("precision", "recall", "f1"), base_models, **card_kwargs)
    return metrics


def _mp_fn(index):
    # For xla_spawn (TPUs)
    main()


if __name__ == "__main__":
    main()
