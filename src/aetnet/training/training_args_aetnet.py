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
`AETNetTrainingArguments`: the transformers `TrainingArguments` plus the knobs of the AETNet objective (loss
weights, distillation ramp, temperature learning rate, non-finite guard) and the launch defaults for several
processes on a CPU-only machine.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from ..modeling_aetnet_knobs import checked_by_config


@dataclass
class AETNetTrainingArguments(TrainingArguments):
    r"""
    [`TrainingArguments`] plus the knobs of the AETNet objective.

    > Weights of the alignment objectives (the total loss is `task + sum_k weight_k * loss_k`)

    The single source of the weights is the model config, `AETNetConfig.alignment_loss_weights`: a weight given
    here (`loss_weights="pita=0,ditc=0.5"`) is handed to the model's `set_alignment_loss_weights` when the trainer is
    built, so that the saved model, its `loss` and this trainer all use it. Each objective is already the mean of its
    two directions, so unit weights are the paper's `L_so + L_ditc + L_imc + L_glitc + L_pita`; the official FUNSD
    code puts the three contrastive objectives at 1/3.

    > Momentum distillation

    `distill_alpha` overrides the distillation weight of every objective that has one (e.g. DITC's soft targets;
    the model's `set_distill_alpha` writes it into its config's `objective_settings`), and `alpha_warmup_steps` ramps
    those weights linearly from 0 (`AETNetModel.set_distill_ramp`), by default over the first epoch as ALBEF and
    SIMLA do.

    > Feature queues

    `fit_queue_to_dataset` (on by default) shortens a queue longer than half the training set to that size (the
    model's `resize_feature_queues`): a queue as long as the training set holds an older copy of every document, the
    positive included, as a negative.

    > Temperature

    The learnable temperature is put back into its range after every optimizer step (so that a checkpoint never holds
    a value outside it); `temperature_learning_rate` gives it a learning rate of its own.

    > Gradient clipping

    `grad_clipping="separate"` (the default) clips the task model's gradients (LayoutLMv3, fusion gates, task head)
    and the alignment side's (aligners, projections, temperature, objective heads) each to `max_grad_norm / sqrt(2)`,
    so that the larger alignment gradients never shrink the task's step (`gradient_clipping.py`); `"global"` is the
    Trainer's joint clip. The parts' norms before clipping are logged as `grad_norm_task` and `grad_norm_alignment`
    (`grad_norm` is then the norm after). fp16 with a gradient scaler, DeepSpeed and FSDP keep the joint clip.

    > Several processes

    Launched by `torchrun` or `accelerate launch` on a machine without a GPU, the arguments switch to `use_cpu` (DDP
    over gloo), and `ddp_find_unused_parameters` defaults to False: AETNet's `loss` reaches every trainable
    parameter. (Set it to True for a model that leaves some unused, e.g. an objective switched off by a zero weight.)

    > Robustness

    `skip_nonfinite_loss` replaces a NaN or infinite total loss by a zero loss with a warning, counts it in the logs
    as `nonfinite_losses`, and zeroes the gradients of any optimizer step that still gets non-finite ones (so that
    the weights are never corrupted, also under DDP, where all ranks skip the same step).
    """

    loss_weights: str | None = field(
        default=None,
        metadata={
            "help": "Weights of alignment objectives as `name=weight` pairs separated by commas (e.g. `pita=0,"
            "ditc=0.5`) or a JSON object; objectives left out keep the model config's weight (paper: 1 each)."
        },
    )
    distill_alpha: float | None = field(
        default=None,
        metadata={
            "help": "Momentum-distillation weight of the objectives that distil (DITC); None: the model config's."
        },
    )
    alpha_warmup_steps: int | None = field(
        default=None,
        metadata={
            "help": "Ramp distill_alpha linearly from 0 over this many optimizer steps; None (default): over the "
            "first epoch, as ALBEF and SIMLA do; 0: no ramp."
        },
    )
    temperature_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the contrastive temperature `temp` (its own group); None: learning_rate."},
    )
    fit_queue_to_dataset: bool = field(
        default=True,
        metadata={
            "help": "Shorten a feature queue longer than half the training set to that size (False: keep it, warn "
            "when it exceeds the training set)."
        },
    )
    skip_nonfinite_loss: bool = field(
        default=True,
        metadata={"help": "Replace a NaN/inf training loss by a zero loss and count it (nonfinite_losses)."},
    )
    grad_clipping: str = field(
        default="separate",
        metadata={
            "help": "'separate': clip the task model's and the alignment side's gradients each on their own (so the "
            "alignment gradients never shrink the task's step); 'global': the Trainer's joint clip.",
            "choices": ["separate", "global"],
        },
    )

    def __post_init__(self):
        # `torchrun` / `accelerate launch` with several processes on a machine without a GPU: run DDP over gloo (the
        # Trainer would otherwise train one independent model per process, all into the same folder).
        launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if launched and not self.use_cpu and not torch.cuda.is_available() and not torch.backends.mps.is_available():
            self.use_cpu = True
        # AETNet's `loss` reaches every trainable parameter, so DDP needs no search for unused ones (which costs a
        # graph traversal per step and warns when it finds none).
        if self.ddp_find_unused_parameters is None:
            self.ddp_find_unused_parameters = False
        super().__post_init__()
        # Parse now, and pass the values through the model config's own checks (the rules the model's setters apply
        # when the trainer hands them over), so that a bad one fails here, before any model or data is loaded.
        given = {"alignment_loss_weights": self.alignment_loss_weights or None, "distill_alpha": self.distill_alpha}
        checked_by_config(**{name: value for name, value in given.items() if value is not None})
        if self.alpha_warmup_steps is not None and self.alpha_warmup_steps < 0:
            raise ValueError(f"`alpha_warmup_steps` must be >= 0 or None, got {self.alpha_warmup_steps}")
        if self.grad_clipping not in ("separate", "global"):
            raise ValueError(f"`grad_clipping` must be 'separate' or 'global', got {self.grad_clipping!r}")
        if self.temperature_learning_rate is not None and not self.temperature_learning_rate >= 0:
            raise ValueError(f"`temperature_learning_rate` must be >= 0 or None, got {self.temperature_learning_rate}")

    @property
    def alignment_loss_weights(self) -> dict[str, float]:
        """`loss_weights` parsed as `{"name": weight}`: only the objectives given there (the others keep the config's).
        Parsing only: `__post_init__` checks the values, with the rules of the model config."""
        text = (self.loss_weights or "").strip()
        if not text:
            return {}
        try:
            pairs = (
                json.loads(text)
                if text.startswith("{")
                else dict(item.split("=", 1) for item in text.replace(" ", "").split(",") if item)
            )
            weights = {str(name): float(weight) for name, weight in pairs.items()}
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"`loss_weights` must be `name=weight` pairs separated by commas or a JSON object, got {text!r}"
            ) from error
        return weights


__all__ = ["AETNetTrainingArguments"]
