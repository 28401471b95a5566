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
Loading a saved checkpoint for running it: the model with the class of its task (the task table in `aetnet.tasks`),
as PyTorch weights or as an exported ONNX file, together with its processor. [`~aetnet.inference.DocumentPredictor`],
the relation predictor and `aetnet predict` load checkpoints here.
"""

from __future__ import annotations

import os

import torch
from transformers import AutoConfig

from ..processing_aetnet import AETNetProcessor
from ..tasks import RELATION_EXTRACTION, model_class, task_of


def load_checkpoint(
    model_name_or_path: str | os.PathLike,
    *,
    task: str | None = None,
    onnx: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
) -> tuple[object, AETNetProcessor, str]:
    """
    `(model, processor, task)` of the checkpoint folder `model_name_or_path`: the model with the class of its task
    (`task`, read from the config by default; see [`~aetnet.tasks.model_class`]), or with `onnx` the
    [`~aetnet.inference.onnx_export.ONNXDocumentModel`] running that file on `device` (only the config and the processor are
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


__all__ = ["load_checkpoint"]
