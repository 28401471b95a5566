#!/usr/bin/env python
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

Everything else is the FUNSD recipe, reused from `run_funsd.py` next to this file (model starts, windows, merging
the windows back to words, entity-level seqeval): the model is trained on `train/`, evaluated on `dev/` after
training (and during it with `--eval_strategy`), and `--do_predict` writes per-word predictions for `test/` with its
scores. The official AET CORD run
weighs the losses `0.8 * task + 1.2 * contrastive / 6 + 0.4 * PITA` (method.md 2.5); the `*_loss_weight` arguments
set the alignment weights relative to the task loss.

    python examples/run_cord.py --dataset_dir data/CORD --output_dir outputs/aetnet-cord --model_size small
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field

import datasets
import torch
import transformers
from transformers import HfArgumentParser, set_seed
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import check_min_version
from transformers.utils.versions import require_version


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# CORD differs from FUNSD only in its reader and label set: share the FUNSD script's model set-up, windows and
# window merging rather than copy them.
from run_funsd import ModelArguments, build_processor_and_model, merge_to_words, prepare_windows  # noqa: E402

from aetnet.data.cord import load_cord  # noqa: E402
from aetnet.data_collator import AETNetDataCollator  # noqa: E402
from aetnet.metrics import load_seqeval  # noqa: E402
from aetnet.trainer_aetnet import AETNetTrainer, AETNetTrainingArguments  # noqa: E402


check_min_version("5.23.0")
require_version("datasets>=3", "pip install 'aetnet[examples]'")

logger = logging.getLogger(__name__)


@dataclass
class DataTrainingArguments:
    """The CORD folder and how receipts become model windows."""

    dataset_dir: str | None = field(
        default=None, metadata={"help": "The CORD v2 folder with train/, dev/ and test/ (each json/ and image/)."}
    )
    word_level: bool = field(
        default=False, metadata={"help": "Give each word its own box instead of its line's (segment-level) box."}
    )
    max_seq_length: int = field(default=512, metadata={"help": "Window length in tokens."})
    doc_stride: int = field(default=128, metadata={"help": "Tokens shared by consecutive windows of a receipt."})
    pad_to_max_length: bool = field(
        default=False, metadata={"help": "Pad every window to max_seq_length (default: pad each batch dynamically)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training receipts."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N dev receipts."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Use only the first N test receipts."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for dataset.map."})
    return_entity_level_metrics: bool = field(
        default=False, metadata={"help": "Also report precision / recall / F1 per entity type."}
    )


@dataclass
class CordTrainingArguments(AETNetTrainingArguments):
    """`AETNetTrainingArguments` with defaults for a small random model on CPU; from pretrained encoders use the
    LayoutLMv3 CORD recipe instead (`--learning_rate 5e-5 --max_steps 2000`)."""

    do_train: bool = field(default=True, metadata={"help": "Run training."})
    do_eval: bool = field(default=True, metadata={"help": "Evaluate on the dev split."})
    do_predict: bool = field(
        default=True, metadata={"help": "Score and write per-word predictions for the test split."}
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate (AdamW)."})
    num_train_epochs: float = field(default=30.0, metadata={"help": "Training epochs."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Batch size per device for training."})
    per_device_eval_batch_size: int = field(default=16, metadata={"help": "Batch size per device for evaluation."})
    warmup_steps: float = field(default=0.1, metadata={"help": "Warm-up steps (a float < 1 is a ratio)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    logging_steps: float = field(default=20, metadata={"help": "Log every N steps."})
    save_strategy: str = field(
        default="no", metadata={"help": "Checkpoints during training; the final model is saved."}
    )
    alpha_warmup_steps: int = field(default=100, metadata={"help": "Ramp distill_alpha from 0 over N steps."})
    torch_num_threads: int | None = field(
        default=None,
        metadata={
            "help": "CPU threads of torch ops. Default on CPU: 1, because these models' small matrices gain little "
            "from a second thread and slow down several-fold when the cores are shared; try 2 on an idle machine."
        },
    )


def main():
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, CordTrainingArguments))
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(json_file=os.path.abspath(sys.argv[1]))
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses()
    if not data_args.dataset_dir:
        raise ValueError("--dataset_dir (the CORD v2 folder with train/, dev/ and test/) is required.")

    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()
    logger.warning(
        f"Process rank: {training_args.local_process_index}, device: {training_args.device}, "
        f"n_gpu: {training_args.n_gpu}, distributed: {training_args.parallel_mode.value == 'distributed'}, "
        f"bf16: {training_args.bf16}, fp16: {training_args.fp16}"
    )
    logger.info(f"Training/evaluation parameters {training_args}")
    if training_args.device.type == "cpu" or training_args.torch_num_threads:
        torch.set_num_threads(training_args.torch_num_threads or 1)
    set_seed(training_args.seed)

    # ---- Data ----
    splits = ["train"] + ["validation"] * training_args.do_eval + ["test"] * training_args.do_predict
    raw = load_cord(data_args.dataset_dir, word_level=data_args.word_level, splits=splits)
    limits = {
        "train": data_args.max_train_samples,
        "validation": data_args.max_eval_samples,
        "test": data_args.max_predict_samples,
    }
    for split, limit in limits.items():
        if split in raw and limit is not None:
            raw[split] = raw[split].select(range(min(len(raw[split]), limit)))
    label_list = raw["train"].features["ner_tags"].feature.names

    # ---- Processor and model (the FUNSD script's three starts) ----
    processor, model, base_models = build_processor_and_model(model_args, data_args, label_list, raw["train"]["words"])
    if base_models and training_args.learning_rate > 1e-4:
        logger.warning(
            f"learning_rate {training_args.learning_rate} is the from-scratch default; pretrained encoders are "
            "usually fine-tuned at 1e-5 to 5e-5."
        )
    label_ids = {i: model.config.label2id[label] for i, label in enumerate(label_list)}
    id2label = model.config.id2label
    outside_id = model.config.label2id["O"]

    with training_args.main_process_first(desc="dataset map pre-processing"):
        windows = {
            split: prepare_windows(
                raw[split], processor, data_args, label_ids, data_args.preprocessing_num_workers, f"{split} windows"
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
            logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
            predicted = merge_to_words(processor, logits, windows[split], raw[split], outside_id)
            results = metric.compute(
                predictions=[[id2label[int(i)] for i in row] for row in predicted],
                references=gold_words[split],
                zero_division=0,
            )
            scores = {name: results[f"overall_{name}"] for name in ("precision", "recall", "f1", "accuracy")}
            if data_args.return_entity_level_metrics:
                for entity, values in results.items():
                    if isinstance(values, dict):
                        scores.update({f"{entity}_{key}": value for key, value in values.items()})
            return scores

        return compute_metrics

    trainer = AETNetTrainer(
        model=model,
        args=training_args,
        train_dataset=windows["train"] if training_args.do_train else None,
        eval_dataset=windows.get("validation"),
        processing_class=processor,
        data_collator=AETNetDataCollator(tokenizer=processor.tokenizer, augment=True, seed=training_args.seed),
        compute_metrics=scores_for("validation") if "validation" in windows else None,
    )

    # ---- Train ----
    if training_args.do_train:
        checkpoint = training_args.resume_from_checkpoint
        if checkpoint is None and os.path.isdir(training_args.output_dir):
            checkpoint = get_last_checkpoint(training_args.output_dir)
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()
        metrics = train_result.metrics
        metrics["train_samples"] = len(windows["train"])
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
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
            logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
            predicted = merge_to_words(processor, logits, windows["test"], raw["test"], outside_id)
            path = os.path.join(training_args.output_dir, "predictions.jsonl")
            with open(path, "w", encoding="utf-8") as writer:
                for example, gold, ids in zip(
                    raw["test"].select_columns(["id", "words"]), gold_words["test"], predicted
                ):
                    record = {
                        "id": example["id"],
                        "words": example["words"],
                        "labels": gold,
                        "predicted_labels": [id2label[int(i)] for i in ids],
                    }
                    writer.write(json.dumps(record) + "\n")
            logger.info(f"Per-word predictions written to {path}")

    card_kwargs = {
        "finetuned_from": base_models or None,
        "tasks": "token-classification",
        "dataset": "CORD",
        "dataset_tags": "cord",
        "language": "en",
    }
    if training_args.push_to_hub:
        trainer.push_to_hub(**card_kwargs)
    else:
        trainer.create_model_card(**card_kwargs)

    if metrics:
        print(
            f"precision = {metrics['eval_precision']:.4f}  recall = {metrics['eval_recall']:.4f}  "
            f"f1 = {metrics['eval_f1']:.4f}"
        )
    print(f"Model saved to {os.path.abspath(training_args.output_dir)}")
    return metrics


def _mp_fn(index):
    # For xla_spawn (TPUs)
    main()


if __name__ == "__main__":
    main()
