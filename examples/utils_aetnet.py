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
training words), parse, log, train, save and publish the same way. Those pieces live here, parametrised by the head
class; the data side (windows, merging them back to words, seqeval, prediction files) is in `utils_aetnet_data.py`.
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
from transformers import HfArgumentParser, LayoutLMv3ImageProcessorPil, PreTrainedModel, set_seed
from transformers.trainer_utils import get_last_checkpoint

from aetnet import AETNetConfig, AETNetPreTrainedModel, AETNetProcessor, AETNetTrainer, AETNetTrainingArguments
from aetnet.alignment import registered_objectives
from aetnet.configuration_aetnet import ALIGNMENT_OBJECTIVES
from aetnet.data import train_layoutlmv3_tokenizer
from aetnet.data_collator import AETNetDataCollator
from aetnet.modeling_aetnet_loading import ENCODERS
from aetnet.tasks import TASKS, family_of_class, spec_of_class
from aetnet.training import plot_loss_curves, save_custom_pipelines


logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    """Where the model starts from. Give at most one of the three starts; none means `--model_size`."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "An AETNet checkpoint (folder or Hub id), saved with its processor."}
    )
    layout_model: str | None = field(
        default=None, metadata={"help": "LayoutLMv3 checkpoint (with --vision_model and --text_model)."}
    )
    vision_model: str | None = field(default=None, metadata={"help": "ViT / DeiT checkpoint of the image aligner."})
    text_model: str | None = field(default=None, metadata={"help": "RoBERTa checkpoint of the text aligner."})
    random_encoders: list[str] | None = field(
        default=None,
        metadata={
            "help": "Encoders of --layout_model ... that keep random weights (only their config and tokenizer are "
            "read): to measure what pre-training buys.",
            "choices": ["layout", "vision", "text"],
        },
    )
    model_size: str = field(
        default="tiny",
        metadata={
            "help": "Random-weight preset when no checkpoint is given.",
            "choices": ["tiny", "study", "small", "base"],
        },
    )
    tokenizer_vocab_size: int = field(
        default=4000, metadata={"help": "Vocabulary of the tokenizer trained on the training words (--model_size)."}
    )
    queue_size: int | None = field(
        default=None,
        metadata={
            "help": "Feature queue length of a new model; default: the config's 4096, which the trainer shortens to "
            "half the training windows (--fit_queue_to_dataset)."
        },
    )
    alignment_objectives: list[str] | None = field(
        default=None,
        metadata={
            "help": "Objectives of a new model, among the registered ones: "
            f"{' '.join(registered_objectives())} (default: {' '.join(ALIGNMENT_OBJECTIVES)})."
        },
    )
    fusion_injection: str | None = field(
        default=None,
        metadata={"help": "How aligned features enter LayoutLMv3 (new model).", "choices": ["add", "gated", "none"]},
    )
    spatial_bias_init: str | None = field(
        default=None,
        metadata={
            "help": "Initial values of LayoutLMv3's 2D relative-position bias tables of a new model (never trained: "
            "'locality' lets TIA / TIM learn from random weights).",
            "choices": ["random", "locality"],
        },
    )
    baseline: str | None = field(
        default=None,
        metadata={
            "help": "Train this plain model instead of AETNet, from the same LayoutLMv3 and head weights.",
            "choices": ["layoutlmv3"],
        },
    )


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


def build_processor_and_model(
    model_args: ModelArguments,
    model_class: type[PreTrainedModel],
    train_words: list[list[str]],
    max_seq_length: int,
    label_list: list[str] | None = None,
    head_config: dict | None = None,
) -> tuple[AETNetProcessor, PreTrainedModel, list[str]]:
    """
    Processor and `model_class` model (an AETNet head) for the three starts of `model_args`; returns them with the
    base model names for the model card (empty for random weights). With `--baseline layoutlmv3` the model is stock
    LayoutLMv3 with the same head, started from that AETNet model's LayoutLMv3 and head weights
    (`AETNetFor....to_layoutlmv3`), so that the two are compared from one initialisation.

    `train_words` train the tokenizer of a random-weight model; `label_list` sets the labels of a classification head
    (and must match a checkpoint's) and is `None` for question answering. `head_config` holds the script's own config
    fields of a new model (e.g. `{"relation_geometry": "none"}`; `None` values are left at their defaults). A new
    model's feature queue keeps the config's length unless `--queue_size` is given: `AETNetTrainer` fits it to the
    training set (`--fit_queue_to_dataset`).
    """
    spec = spec_of_class(model_class.__name__)
    if spec is None or family_of_class(model_class.__name__) != "AETNet":
        heads = [row.head_class_name() for row in TASKS.values()]
        raise ValueError(f"model_class must be one of {heads}, got {model_class}.")
    encoders = [model_args.layout_model, model_args.vision_model, model_args.text_model]
    if model_args.random_encoders and not any(encoders):
        raise ValueError(f"--random_encoders {' '.join(model_args.random_encoders)} applies to --layout_model ...")
    if model_args.model_name_or_path and any(encoders):
        raise ValueError("Give either --model_name_or_path or --layout_model/--vision_model/--text_model, not both.")
    new_config = _new_model_config(model_args, head_config)
    if model_args.model_name_or_path:
        if new_config:
            raise ValueError(
                "--queue_size, --alignment_objectives, --fusion_injection, --spatial_bias_init and "
                f"{sorted(head_config or {})} configure "
                f"a new model; the checkpoint {model_args.model_name_or_path} keeps its own."
            )
        # Relation extraction has no Auto class: the head class is its own loader.
        loader = spec.loader() or model_class
        processor, model = _from_checkpoint(model_args.model_name_or_path, loader, label_list)
        base_models = [model_args.model_name_or_path]
    elif any(encoders):
        if not all(encoders):
            raise ValueError(f"--layout_model, --vision_model and --text_model go together, got {encoders}.")
        processor = _pretrained_processor(model_args.layout_model)
        model = model_class.from_encoders_pretrained(
            *encoders, random_encoders=model_args.random_encoders or (), **_label_kwargs(label_list), **new_config
        )
        # The model card names only the checkpoints whose weights the model starts from.
        base_models = [path for name, path in zip(ENCODERS, encoders) if name not in (model_args.random_encoders or ())]
    else:
        processor, model = _from_scratch(model_args, model_class, train_words, max_seq_length, label_list, new_config)
        base_models = []
    if model_args.baseline == "layoutlmv3":
        model = model.to_layoutlmv3()
        logger.info("Training the plain LayoutLMv3 baseline, from the same LayoutLMv3 and head weights as AETNet.")
    return processor, model, base_models


def _label_kwargs(label_list: list[str] | None) -> dict[str, Any]:
    """The config fields of a classification head's labels (none for question answering)."""
    if label_list is None:
        return {}
    id2label = dict(enumerate(label_list))
    return {
        "num_labels": len(label_list),
        "id2label": id2label,
        "label2id": {label: i for i, label in id2label.items()},
    }


def _new_model_config(model_args: ModelArguments, head_config: dict | None) -> dict[str, Any]:
    """The config fields a new model takes from the command line and the script (those given)."""
    fields = (
        ("queue_size", model_args.queue_size),
        ("alignment_objectives", model_args.alignment_objectives),
        ("fusion_injection", model_args.fusion_injection),
        ("spatial_bias_init", model_args.spatial_bias_init),
        *(head_config or {}).items(),
    )
    return {key: value for key, value in fields if value is not None}


def _from_checkpoint(
    path: str, loader: type[PreTrainedModel], label_list: list[str] | None
) -> tuple[AETNetProcessor, PreTrainedModel]:
    """An AETNet checkpoint and its processor, loaded through its task's Auto class (so that it is whatever model its
    config names); a classification checkpoint must have the dataset's labels."""
    processor = AETNetProcessor.from_pretrained(path)
    model = loader.from_pretrained(path)
    if label_list is not None and sorted(model.config.label2id) != sorted(label_list):
        raise ValueError(
            f"The checkpoint's labels {sorted(model.config.label2id)} are not the dataset's {label_list}; "
            "start from encoders (--layout_model ...) to train a new head."
        )
    return processor, model


def _pretrained_processor(layout_model: str) -> AETNetProcessor:
    """The processor of a pretrained LayoutLMv3: its tokenizer and image processor, without OCR (the data has words)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(layout_model)
    image_processor = LayoutLMv3ImageProcessorPil.from_pretrained(layout_model, apply_ocr=False)
    return AETNetProcessor(image_processor=image_processor, tokenizer=tokenizer)


def _from_scratch(
    model_args: ModelArguments,
    model_class: type[PreTrainedModel],
    train_words: list[list[str]],
    max_seq_length: int,
    label_list: list[str] | None,
    new_config: dict[str, Any],
) -> tuple[AETNetProcessor, PreTrainedModel]:
    """Random weights of the `--model_size` preset, with a tokenizer trained on the training words."""
    tokenizer = train_layoutlmv3_tokenizer(
        train_words, vocab_size=model_args.tokenizer_vocab_size, model_max_length=max_seq_length
    )
    config = AETNetConfig.from_preset(
        model_args.model_size,
        vocab_size=len(tokenizer),
        max_length=max_seq_length,
        **_label_kwargs(label_list),
        **new_config,
    )
    size = config.layout_config.input_size
    image_processor = LayoutLMv3ImageProcessorPil(apply_ocr=False, size={"height": size, "width": size})
    return AETNetProcessor(image_processor=image_processor, tokenizer=tokenizer), model_class(config)


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
    "ModelArguments",
    "build_processor_and_model",
    "finish_run",
    "parse_arguments",
    "setup_logging_and_seed",
    "train_and_save",
    "training_collator",
    "warn_if_from_scratch_learning_rate",
]
