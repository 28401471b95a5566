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
Gradient clipping by part: the task model (LayoutLMv3, the fusion gates, the task head) and the alignment side (the
ViT and RoBERTa aligners, their projections, the temperature, the objectives' own heads) are each clipped on their
own (`AETNetTrainingArguments.grad_clipping="separate"`, the default).

Why: the Trainer clips the norm of all gradients together (`max_grad_norm`, 1.0 by default). AETNet's alignment
gradients are several times the task's and grow as training goes, so a joint clip divides the task's gradient by
the alignment's norm, an ever smaller factor that Adam reads as a decaying learning rate of LayoutLMv3: with the
joint clip AETNet trails its baseline even when the aligners' features never enter LayoutLMv3, and without
clipping, or with clipping by part, it does not. Each part is clipped to `max_grad_norm / sqrt(number of parts)`,
so that their total never exceeds `max_grad_norm` and the Trainer's own clip, which still runs, never rescales one
part by the other.
"""

from __future__ import annotations

import math

import torch
from accelerate.utils import DistributedType
from torch import nn
from transformers.utils import logging

from ..modeling_aetnet_base import AETNetModel


logger = logging.get_logger(__name__)

# The AETNetModel children that only the alignment objectives train (the momentum copies have no gradients).
ALIGNMENT_MODULES = ("vision_model", "text_model", "vision_proj", "text_proj", "objectives")


def gradient_parts(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """
    The trainable parameters of `model` (any module holding one `AETNetModel`: a task head, a PEFT or DDP wrapper),
    as `{"task": [...], "alignment": [...]}`; `{}` for a model without an AETNetModel.
    """
    bases = [module for module in model.modules() if isinstance(module, AETNetModel)]
    if len(bases) != 1:
        return {}
    base = bases[0]
    alignment = [p for name in ALIGNMENT_MODULES if hasattr(base, name) for p in getattr(base, name).parameters()]
    alignment.append(base.temp)
    alignment_ids = {id(p) for p in alignment}
    return {
        "task": [p for p in model.parameters() if p.requires_grad and id(p) not in alignment_ids],
        "alignment": [p for p in alignment if p.requires_grad],
    }


def clip_gradient_parts(parts: dict[str, list[nn.Parameter]], max_norm: float) -> dict[str, torch.Tensor]:
    """Clip each part's gradient norm to `max_norm / sqrt(len(parts))`; returns the norms before clipping."""
    if not max_norm > 0:
        raise ValueError(f"`max_norm` must be > 0, got {max_norm}")
    limit = max_norm / math.sqrt(len(parts))
    norms = {}
    for name, params in parts.items():
        with_grad = [p for p in params if p.grad is not None]
        if with_grad:
            norms[name] = torch.nn.utils.clip_grad_norm_(with_grad, limit)
    return norms


def separate_clipping_parts(model: nn.Module, args, accelerator) -> dict[str, list[nn.Parameter]]:
    """[`gradient_parts`] for a training run, or `{}` (the Trainer's joint clip, with a warning) where the gradients
    are scaled (fp16's gradient scaler) or sharded (DeepSpeed, FSDP), which a clip by part cannot read."""
    sharded = accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)
    if args.fp16 or sharded:
        logger.warning(
            "grad_clipping='separate' needs unscaled, unsharded gradients (no fp16 scaler, DeepSpeed or FSDP): "
            "this run clips all gradients together (the Trainer's max_grad_norm)."
        )
        return {}
    return gradient_parts(model)


__all__ = ["ALIGNMENT_MODULES", "clip_gradient_parts", "gradient_parts", "separate_clipping_parts"]
