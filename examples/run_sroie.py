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
Fine-tune AETNet for receipt key information extraction on SROIE 2019 (task 3: `company`, `date`, `address`,
`total`) as token classification over 9 BIO labels.

SROIE annotates each receipt's four fields as strings; `aetnet.data.sroie` splits the OCR lines into words, finds
each field among them by its match rule and tags the words it covers (the share of fields it finds is logged and
written to `sroie_matching.json`). Boxes are segment-level by default (each word gets its line's box).

Everything else is the FUNSD recipe of `run_funsd.py`, shared with it through `utils_aetnet.py` and
`utils_aetnet_data.py` beside it. SROIE has no validation split, so evaluation and prediction both use the test
split, by default without the 7 test receipts whose images are training images (`--keep_test_duplicates` keeps
them). The scores are entity-level seqeval per field and overall, and the task-3 score: each receipt's field
strings (the words of the first predicted entity of each field, joined with spaces) against the annotated strings,
right only when equal after whitespace normalisation (`task3_precision`, `task3_recall`, `task3_f1`, per field too).
`--do_predict` writes per-word predictions (`predictions.jsonl`) and field strings (`field_predictions.jsonl`).

    python examples/run_sroie.py --dataset_dir ../shared/data/sroie --output_dir outputs/aetnet-sroie --model_size small
"""

from __future__ import annotations

import json
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
    merge_to_words,
    prepare_token_windows,
    script_window_arguments,
    seqeval_scores,
    write_word_predictions,
)
from utils_aetnet_model import ModelArguments, build_processor_and_model

from aetnet import AETNetForTokenClassification, AETNetTrainer
from aetnet.data import SROIE_FIELDS, load_sroie, read_sroie_fields
from aetnet.data_collator import AETNetDataCollator
from aetnet.metrics import fields_from_word_labels, load_seqeval, sroie_task3_scores


check_min_version("5.23.0")
require_version("datasets>=3", "pip install 'aetnet[examples]'")

logger = logging.getLogger(__name__)


@dataclass
class DataTrainingArguments:
    """The SROIE folder; the windows receipts are cut into are `SroieWindowArguments`."""

    dataset_dir: str | None = field(
        default=None,
        metadata={"help": "The SROIE folder with images/, ocr/, fields/, train.txt, test.txt, duplicate_images.tsv."},
    )
    word_level: bool = field(
        default=False, metadata={"help": "Give each word its character share of its line box, not the whole box."}
    )
    keep_test_duplicates: bool = field(
        default=False, metadata={"help": "Keep the 7 test receipts whose images are also training images."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training receipts."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N test receipts."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for dataset.map."})
    return_entity_level_metrics: bool = field(
        default=True, metadata={"help": "Also report seqeval precision / recall / F1 per field."}
    )


# The shared window options, the stride's help saying whose windows it joins.
SroieWindowArguments = script_window_arguments(
    help_texts={
        "doc_stride": "Tokens shared by consecutive windows of a receipt (default: max_seq_length // 4, <= 128)."
    }
)


@dataclass
class SroieTrainingArguments(ExampleTrainingArguments):
    """`AETNetTrainingArguments` with defaults for a small random model on CPU; from pretrained encoders use a
    pretrained learning rate instead (`--learning_rate 5e-5`)."""

    do_eval: bool = field(default=True, metadata={"help": "Evaluate on the test split."})
    do_predict: bool = field(
        default=True, metadata={"help": "Write per-word predictions and field strings for the test split."}
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate (AdamW)."})
    num_train_epochs: float = field(default=30.0, metadata={"help": "Training epochs."})


def predicted_fields(documents, predicted, id2label) -> list[dict[str, str]]:
    """Each receipt's field strings from its per-word label ids (the first entity of each field)."""
    return [
        fields_from_word_labels(words, [id2label[int(i)] for i in ids], SROIE_FIELDS)
        for words, ids in zip(documents["words"], predicted)
    ]


def write_field_predictions(path: str, ids: list[str], predicted: list[dict], gold: list[dict]) -> None:
    """One JSON line per receipt: its `id`, annotated `fields` and `predicted_fields`."""
    with open(path, "w", encoding="utf-8") as writer:
        for receipt_id, guess, truth in zip(ids, predicted, gold):
            writer.write(json.dumps({"id": receipt_id, "fields": truth, "predicted_fields": guess}) + "\n")


def main():
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, SroieWindowArguments, SroieTrainingArguments))
    model_args, data_args, window_args, training_args = parse_arguments(parser)
    if not data_args.dataset_dir:
        raise ValueError("--dataset_dir (the SROIE folder, e.g. ../shared/data/sroie) is required.")
    setup_logging_and_seed(logger, training_args)

    # ---- Data: the fields matched to words, the matching counted ----
    raw, match_stats = load_sroie(
        data_args.dataset_dir,
        word_level=data_args.word_level,
        drop_test_duplicates=not data_args.keep_test_duplicates,
    )
    if not data_args.keep_test_duplicates:
        logger.info(f"Test split: {match_stats['test'].duplicates_left_out} receipts left out (training images).")
    if training_args.should_save:
        os.makedirs(training_args.output_dir, exist_ok=True)
        with open(os.path.join(training_args.output_dir, "sroie_matching.json"), "w") as handle:
            json.dump({split: stats.to_dict() for split, stats in match_stats.items()}, handle, indent=1)
    for split, limit in (("train", data_args.max_train_samples), ("test", data_args.max_eval_samples)):
        if limit is not None:
            raw[split] = raw[split].select(range(min(len(raw[split]), limit)))
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

    # ---- Metrics: entity-level seqeval over words and the task-3 field match, after merging the windows ----
    metric = load_seqeval()
    gold_words = [[id2label[label_ids[tag]] for tag in tags] for tags in raw["test"]["ner_tags"]]
    gold_fields = [read_sroie_fields(data_args.dataset_dir, receipt_id) for receipt_id in raw["test"]["id"]]

    def compute_metrics(prediction):
        predicted = merge_to_words(
            first_logits(prediction.predictions), windows["test"], raw["test"], outside_id, logger
        )
        scores = seqeval_scores(metric, predicted, gold_words, id2label, data_args.return_entity_level_metrics)
        fields = predicted_fields(raw["test"], predicted, id2label)
        return scores | sroie_task3_scores(fields, gold_fields, SROIE_FIELDS)

    trainer = AETNetTrainer(
        model=model,
        args=training_args,
        train_dataset=windows["train"] if training_args.do_train else None,
        eval_dataset=windows["test"] if training_args.do_eval else None,
        processing_class=processor,
        data_collator=training_collator(model, processor, training_args.seed),
        compute_metrics=compute_metrics,
    )

    # ---- Train ----
    if training_args.do_train:
        train_and_save(trainer, training_args, len(windows["train"]))

    # ---- Evaluate and predict: SROIE has no validation split, so both use the test split, in one pass ----
    metrics = {}
    if training_args.do_eval or training_args.do_predict:
        trainer.data_collator = AETNetDataCollator(tokenizer=processor.tokenizer, augment=False)
        output = trainer.predict(windows["test"], metric_key_prefix="eval")
        metrics = output.metrics
        metrics["eval_samples"] = len(windows["test"])
        if training_args.do_eval:
            trainer.log(dict(metrics))
            trainer.log_metrics("eval", metrics)
            trainer.save_metrics("eval", metrics)
        if training_args.do_predict and trainer.is_world_process_zero():
            predicted = merge_to_words(
                first_logits(output.predictions), windows["test"], raw["test"], outside_id, logger
            )
            path = os.path.join(training_args.output_dir, "predictions.jsonl")
            write_word_predictions(path, raw["test"], gold_words, predicted, id2label)
            fields_path = os.path.join(training_args.output_dir, "field_predictions.jsonl")
            fields = predicted_fields(raw["test"], predicted, id2label)
            write_field_predictions(fields_path, raw["test"]["id"], fields, gold_fields)
            logger.info(f"Per-word predictions written to {path}, field strings to {fields_path}")

    card_kwargs = {"tasks": "token-classification", "dataset": "SROIE", "dataset_tags": "sroie", "language": "en"}
    finish_run(trainer, training_args, metrics, ("precision", "recall", "f1", "task3_f1"), base_models, **card_kwargs)
    return metrics


def _mp_fn(index):
    # For xla_spawn (TPUs)
    main()


if __name__ == "__main__":
    main()
