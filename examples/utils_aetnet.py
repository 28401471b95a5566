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
Plumbing shared by the example scripts (`run_funsd.py`, `run_cord.py`, `run_rvlcdip.py`, `run_docvqa.py`), kept next
to them as transformers keeps `utils_qa.py` next to `run_qa.py`: the scripts import it from their own folder.

The scripts fine-tune different AETNet heads on different data, but start the model the same three ways (an AETNet
checkpoint, three pretrained encoder checkpoints, or random weights of a named size with a tokenizer trained on the
training words: `utils_aetnet_model.py`), parse, log, train, save and publish the same way. Those pieces live here,
parametrised by the head class; the data side (windows, merging them back to words, seqeval, prediction files) is in
`utils_aetnet_data.py`.
Each script keeps only its task: its data, its pre-processing, its metrics and the files it writes.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import datasets
import torch
import transformers
from hub_access import check_hub_access
from transformers import HfArgumentParser, PreTrainedModel, set_seed
from transformers.trainer_utils import get_last_checkpoint

from aetnet import AETNetPreTrainedModel, AETNetProcessor, AETNetTrainer, AETNetTrainingArguments
from aetnet.data_collator import AETNetDataCollator
from aetnet.training import plot_loss_curves, save_custom_pipelines


logger = logging.getLogger(__name__)


@dataclass
class ExampleTrainingArguments(AETNetTrainingArguments):
    """
    `AETNetTrainingArguments` with the defaults the example scripts share: train, evaluate and predict unless switched
    off, save only the final model, and run torch on one CPU thread. Each script sets its own learning rate and epochs.
    """

    do_train: bool = field(default=True, metadata={"help": "Run training."})
    do_eval: bool = field(default=True, metadata={"help": "Evaluate after training."})
    do_predict: bool = field(default=True, metadata={"help": "Write predictions."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Batch size per device for training."})
    per_device_eval_batch_size: int = field(default=16, metadata={"help": "Batch size per device for evaluation."})
    warmup_steps: float = field(default=0.1, metadata={"help": "Warm-up steps (a float < 1 is a ratio)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    logging_steps: float = field(default=20, metadata={"help": "Log every N steps."})
    save_strategy: str = field(
        default="no", metadata={"help": "Checkpoints during training; the final model is saved."}
    )
    torch_num_threads: int | None = field(
        default=None,
        metadata={
            "help": "CPU threads of torch ops. Default on CPU: 1, because these models' small matrices gain little "
            "from a second thread and slow down several-fold when the cores are shared; try 2 on an idle machine."
        },
    )


def parse_arguments(parser: HfArgumentParser) -> tuple:
    """The parser's dataclasses from the command line, or from a JSON file given as the only argument. Exits with one
    line when `--push_to_hub` cannot work (see [`check_hub_access`]), before any data or model is loaded."""
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        parsed = parser.parse_json_file(json_file=os.path.abspath(sys.argv[1]))
    else:
        parsed = parser.parse_args_into_dataclasses()
    for arguments in parsed:
        if isinstance(arguments, transformers.TrainingArguments):
            check_hub_access(arguments)
    return parsed


def setup_logging_and_seed(script_logger: logging.Logger, training_args: ExampleTrainingArguments) -> None:
    """Log to stdout at the process's level (the script's, datasets' and transformers' loggers), log the set-up, pin
    torch's CPU threads (`--torch_num_threads`, 1 on CPU by default), switch off pinned memory on a CPU-only run
    (which has nothing to pin for, and where the DataLoader warns about it) and seed everything."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    script_logger.setLevel(log_level)
    logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()
    script_logger.info(
        f"Process rank: {training_args.local_process_index}, device: {training_args.device}, "
        f"n_gpu: {training_args.n_gpu}, distributed: {training_args.parallel_mode.value == 'distributed'}, "
        f"bf16: {training_args.bf16}, fp16: {training_args.fp16}"
    )
    script_logger.info(f"Training/evaluation parameters {training_args}")
    if training_args.device.type == "cpu" or training_args.torch_num_threads:
        torch.set_num_threads(training_args.torch_num_threads or 1)
    if training_args.device.type == "cpu":
        training_args.dataloader_pin_memory = False
    set_seed(training_args.seed)


def training_collator(
    model: PreTrainedModel,
    processor: AETNetProcessor,
    seed: int,
    collator_class: type[AETNetDataCollator] = AETNetDataCollator,
) -> AETNetDataCollator:
    """The training collator (a `collator_class`, e.g. the relation collator): pages augmented for the momentum ViT
    (seeded by step) when `model` is AETNet, and not for the plain LayoutLMv3 baseline, which has no momentum view and
    takes no `pixel_values_aug`."""
    augment = isinstance(model, AETNetPreTrainedModel)
    return collator_class(tokenizer=processor.tokenizer, augment=augment, seed=seed)


def warn_if_from_scratch_learning_rate(
    script_logger: logging.Logger, training_args: ExampleTrainingArguments, base_models: list[str]
) -> None:
    """Warn when pretrained weights are about to be fine-tuned at the scripts' from-scratch learning rate."""
    if base_models and training_args.learning_rate > 1e-4:
        script_logger.warning(
            f"learning_rate {training_args.learning_rate} is the from-scratch default; pretrained encoders are "
            "usually fine-tuned at 1e-5 to 5e-5."
        )


def train_and_save(trainer: AETNetTrainer, training_args: ExampleTrainingArguments, num_train_samples: int) -> None:
    """Train (resuming from `--resume_from_checkpoint` or the last checkpoint in the output folder), then save the
    model, the training metrics and the trainer state."""
    checkpoint = training_args.resume_from_checkpoint
    if checkpoint is None and os.path.isdir(training_args.output_dir):
        checkpoint = get_last_checkpoint(training_args.output_dir)
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model()
    if trainer.is_world_process_zero():
        # The saved model answers `pipeline(..., trust_remote_code=True)` also where aetnet is not installed; the
        # model's config keeps the entry for later saves (`--push_to_hub` saves again).
        save_custom_pipelines(training_args.output_dir, trainer.model)
    metrics = train_result.metrics
    metrics["train_samples"] = num_train_samples
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    if trainer.is_world_process_zero():
        curves = plot_loss_curves(trainer.state.log_history, os.path.join(training_args.output_dir, "loss_curves.png"))
        if curves:
            logger.info(f"Loss curves written to {curves}")


def finish_run(
    trainer: AETNetTrainer,
    training_args: ExampleTrainingArguments,
    metrics: dict[str, float],
    printed_scores: tuple[str, ...],
    base_models: list[str],
    **card_kwargs: Any,
) -> None:
    """
    Push to the Hub (`--push_to_hub`) or write the model card locally (`card_kwargs`, fine-tuned from `base_models`),
    then print the evaluation scores named in `printed_scores` (`eval_<name>` of `metrics`, when there are metrics)
    on one line, and where the model is saved.
    """
    card_kwargs = {"finetuned_from": base_models or None, **card_kwargs}
    if training_args.push_to_hub:
        trainer.push_to_hub(**card_kwargs)
    else:
        trainer.create_model_card(**card_kwargs)
    if metrics:
        print("  ".join(f"{name} = {metrics[f'eval_{name}']:.4f}" for name in printed_scores))
    print(f"Model saved to {os.path.abspath(training_args.output_dir)}")


__all__ = [
    "ExampleTrainingArguments",
    "finish_run",
    "parse_arguments",
    "setup_logging_and_seed",
    "train_and_save",
    "training_collator",
    "warn_if_from_scratch_learning_rate",
]
