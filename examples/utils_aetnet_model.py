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
How the example scripts start their model (`ModelArguments`, `build_processor_and_model`): from an AETNet
checkpoint, from three pretrained encoder checkpoints (some of them only for their configuration:
`--random_encoders`), or from random weights of a named size with a tokenizer trained on the training words; and the
plain LayoutLMv3 baseline from the same weights (`--baseline layoutlmv3`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import transformers
from transformers import LayoutLMv3ImageProcessorPil, PreTrainedModel

from aetnet import AETNetConfig, AETNetProcessor
from aetnet.alignment import registered_objectives
from aetnet.configuration_aetnet import ALIGNMENT_OBJECTIVES
from aetnet.data import train_layoutlmv3_tokenizer
from aetnet.modeling_aetnet_loading import ENCODERS
from aetnet.tasks import TASKS, family_of_class, spec_of_class


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
    feature_centering: float | None = field(
        default=None,
        metadata={
            "help": "Momentum of the running centre subtracted from the aligners' [CLS] states before the contrastive "
            "projections (new model; e.g. 0.9; default none, as the paper)."
        },
    )
    image_feature_pooling: str | None = field(
        default=None,
        metadata={
            "help": "The image's document feature from the ViT's [CLS] state (the paper) or its mean patch state "
            "(new model; 'mean' for a ViT pre-trained with SimMIM alone, which never trains its [CLS]).",
            "choices": ["cls", "mean"],
        },
    )
    baseline: str | None = field(
        default=None,
        metadata={
            "help": "Train this plain model instead of AETNet, from the same LayoutLMv3 and head weights.",
            "choices": ["layoutlmv3"],
        },
    )


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
                "--queue_size, --alignment_objectives, --fusion_injection, --spatial_bias_init, "
                "--feature_centering, --image_feature_pooling and "
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
        ("feature_centering", model_args.feature_centering),
        ("image_feature_pooling", model_args.image_feature_pooling),
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


__all__ = ["ModelArguments", "build_processor_and_model"]
