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
What a saved checkpoint is, for running it: its task (read from the head class in `config.architectures`) and the
model class of that task, the inputs its forward pass takes, the longest window it reads, the device to run it on, and
loading it, as PyTorch weights or as an exported ONNX file, together with its processor.

Relation extraction (`AETNetForRelationExtraction`, or its stock LayoutLMv3 baseline) is a task too, though no
transformers Auto class fits it: its class is taken from `modeling_aetnet_relation.py` by the architecture's name
(imported only then), and it has no ONNX export.

[`~aetnet.inference.DocumentPredictor`], the ONNX exporter and the pipelines all ask these questions of a
checkpoint; they live here so that each is answered once. Shipped as remote code with the pipelines, this module
imports only torch, transformers and its sibling modules.
"""

from __future__ import annotations

import os

import torch
from transformers import (
    AutoConfig,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .processing_aetnet import AETNetProcessor


TASKS = {
    "token-classification": AutoModelForTokenClassification,
    "sequence-classification": AutoModelForSequenceClassification,
    "question-answering": AutoModelForQuestionAnswering,
}
# No Auto class: `model_class` resolves it by the architecture's name.
RELATION_EXTRACTION = "relation-extraction"
ALL_TASKS = (*TASKS, RELATION_EXTRACTION)
_RELATION_CLASSES = ("AETNetForRelationExtraction", "LayoutLMv3ForRelationExtraction")
_ARCHITECTURE_SUFFIXES = {
    "ForTokenClassification": "token-classification",
    "ForSequenceClassification": "sequence-classification",
    "ForQuestionAnswering": "question-answering",
    "ForDocumentQuestionAnswering": "question-answering",
    "ForRelationExtraction": RELATION_EXTRACTION,
}
MODEL_INPUT_NAMES = ("input_ids", "bbox", "attention_mask", "pixel_values")


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype_and_batch_size(dtype: str | torch.dtype | None, batch_size: int) -> torch.dtype | None:
    """The predictors' shared argument check: `dtype` as a torch dtype (names as in `DTYPES`), `batch_size` >= 1."""
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"`dtype` must be one of {list(DTYPES)}, got {dtype!r}")
        dtype = DTYPES[dtype]
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}")
    return dtype


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`None`/`"auto"` picks CUDA, then MPS, then CPU; anything else is passed to `torch.device`."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def task_of(config) -> str:
    """The task of a checkpoint, from the head class named in `config.architectures`."""
    for architecture in getattr(config, "architectures", None) or []:
        for suffix, task in _ARCHITECTURE_SUFFIXES.items():
            if architecture.endswith(suffix):
                return task
    raise ValueError(
        f"Cannot tell the task of this checkpoint from `architectures`={getattr(config, 'architectures', None)}; "
        f"pass `task` (one of {list(ALL_TASKS)})."
    )


def model_class(task: str, config=None):
    """
    The class that loads a checkpoint of `task`: the transformers Auto class, or for relation extraction the class
    named in `config.architectures` (`AETNetForRelationExtraction` by default, `LayoutLMv3ForRelationExtraction` for
    the stock baseline), which has `from_pretrained` but no `from_config` (build it with `cls(config)`).
    """
    if task in TASKS:
        return TASKS[task]
    if task != RELATION_EXTRACTION:
        raise ValueError(f"`task` must be one of {list(ALL_TASKS)}, got {task!r}")
    from . import modeling_aetnet_relation

    names = [name for name in getattr(config, "architectures", None) or [] if name in _RELATION_CLASSES]
    return getattr(modeling_aetnet_relation, names[0] if names else _RELATION_CLASSES[0])


def text_positions(config, tokenizer) -> int:
    """Longest window (in tokens) a model with `config` and `tokenizer` take: RoBERTa-style positions start after the
    padding index."""
    config = getattr(config, "layout_config", config)
    positions = getattr(config, "max_position_embeddings", 514) - 2
    return min(positions, tokenizer.model_max_length)


def load_checkpoint(
    model_name_or_path: str | os.PathLike,
    *,
    task: str | None = None,
    onnx: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
) -> tuple[object, AETNetProcessor, str]:
    """
    `(model, processor, task)` of the checkpoint folder `model_name_or_path`: the model with the class of its task
    (`task`, read from the config by default; see [`model_class`]), or with `onnx` the
    [`~aetnet.onnx_export.ONNXDocumentModel`] running that file on `device` (only the config and the processor are
    then read from the folder; not for relation extraction, which has no ONNX export).
    """
    path = str(model_name_or_path)
    config = AutoConfig.from_pretrained(path)
    task = task_of(config) if task is None else task
    cls = model_class(task, config)
    if onnx is not None:
        if task == RELATION_EXTRACTION:
            raise ValueError(f"{RELATION_EXTRACTION} checkpoints have no ONNX export: run their PyTorch weights")
        from .onnx_export import ONNXDocumentModel

        model = ONNXDocumentModel(onnx, config, device=device)
    else:
        model = cls.from_pretrained(path)
    try:
        processor = AETNetProcessor.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{path} has no usable processor (save it with `processor.save_pretrained`): {error}"
        ) from error
    return model, processor, task


__all__ = [
    "ALL_TASKS",
    "DTYPES",
    "MODEL_INPUT_NAMES",
    "RELATION_EXTRACTION",
    "TASKS",
    "load_checkpoint",
    "model_class",
    "resolve_device",
    "resolve_dtype_and_batch_size",
    "task_of",
    "text_positions",
]
