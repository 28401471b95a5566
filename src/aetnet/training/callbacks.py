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
The callbacks `AETNetTrainer` adds to the `Trainer`: the momentum (EMA) update and the temperature range after every
optimizer step, the distillation ramp, the non-finite gradient guard, and the augmenting collator's batch numbering
for exact resume.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import TrainerCallback
from transformers.utils import logging

from ..data_collator import AETNetDataCollator


logger = logging.get_logger(__name__)


def unwrap_model(model: nn.Module, accelerator=None) -> nn.Module:
    """The transformers model inside DDP / DataParallel / accelerate wrappers and PEFT adapters."""
    if accelerator is not None:
        model = accelerator.unwrap_model(model)
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    # A PEFT model holds the transformers model (with the adapters injected) as its base model.
    if hasattr(model, "get_base_model") and hasattr(model, "peft_config"):
        model = model.get_base_model()
    return model


class MomentumUpdateCallback(TrainerCallback):
    """
    Runs `model.momentum_update()` (the EMA of the momentum encoders) after every optimizer step.

    ALBEF and the official AET code update in every forward pass, so their EMA horizon shrinks with gradient
    accumulation and the momentum weights even move during evaluation; one update per optimizer step keeps the
    horizon at `1 / (1 - momentum)` steps whatever the accumulation.
    """

    def __init__(self, accelerator=None):
        self.accelerator = accelerator

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        if model is None:
            return
        model = unwrap_model(model, self.accelerator)
        update = getattr(model, "momentum_update", None) or getattr(
            getattr(model, "base_model", None), "momentum_update", None
        )
        if update is not None:
            update()


class DistillationRampCallback(TrainerCallback):
    """
    ALBEF's ramp of momentum distillation: before every optimizer step, the factor of every objective's distillation
    weight is set to `min(1, global_step / warmup_steps)` (`AETNetModel.set_distill_ramp`); `warmup_steps=None` ramps
    over the first epoch, 0 not at all. It depends on the step alone, so a resumed run ramps as an uninterrupted one.
    """

    def __init__(self, warmup_steps: int | None = None, accelerator=None):
        self.warmup_steps = warmup_steps
        self.accelerator = accelerator

    def _set_ramp(self, model, factor: float) -> None:
        model = unwrap_model(model, self.accelerator) if model is not None else None
        if hasattr(model, "set_distill_ramp"):
            model.set_distill_ramp(factor)

    def ramp(self, state) -> float:
        """The factor at `state.global_step`."""
        warmup = self.warmup_steps
        if warmup is None:  # the first epoch, once training has set the step counts
            epochs = max(state.num_train_epochs or 1, 1)
            warmup = math.ceil(state.max_steps / epochs) if state.max_steps else 0
        return 1.0 if warmup == 0 else min(1.0, state.global_step / warmup)

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self._set_ramp(model, self.ramp(state))

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._set_ramp(model, 1.0)  # a model used after training distils at its full weight


class TemperatureRangeCallback(TrainerCallback):
    """After every optimizer step, puts the learnable temperature back into its range (the step may have pushed it
    past the floor, even below 0), so that what is saved and what the next step starts from are in range."""

    def __init__(self, accelerator=None):
        self.accelerator = accelerator

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        base = getattr(unwrap_model(model, self.accelerator), "base_model", None) if model is not None else None
        if hasattr(base, "clamp_temperature_"):
            base.clamp_temperature_()


class NonFiniteGradientGuard(TrainerCallback):
    """
    Zeroes the gradients of an optimizer step when any of them is not finite (`skip_nonfinite_loss`). DDP averages
    gradients across ranks, so every rank sees the same non-finite values and skips the same step.
    """

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        grads = [param.grad for param in model.parameters() if param.grad is not None]
        if grads and not torch.stack([torch.isfinite(grad).all() for grad in grads]).all().item():
            logger.warning(f"Non-finite gradients at step {state.global_step}: this step gets zero gradients.")
            for grad in grads:
                grad.zero_()


class AugmentationStepCallback(TrainerCallback):
    """
    Keep a seeded [`AETNetDataCollator`]'s batch numbering in step with the Trainer, so that a run resumed with
    `resume_from_checkpoint` draws exactly the momentum views of an uninterrupted run (the Trainer restores its own
    RNG states, but not the collator's). At the start of every epoch, resumed ones included, the next batch is
    numbered `global_step * gradient_accumulation_steps`: the number of training batches drawn so far. Batches that
    `Trainer.evaluate` collates with the same collator are not counted.

    Args:
        collator (`AETNetDataCollator`): the training collator, built with `seed`.

    Example: `trainer.add_callback(AugmentationStepCallback(trainer.data_collator))`.
    """

    def __init__(self, collator: AETNetDataCollator):
        if collator.seed is None or collator.generator is not None:
            raise ValueError("`AugmentationStepCallback` needs a collator built with `seed` and without `generator`.")
        self.collator = collator
        self._index_before_evaluation: int | None = None

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.collator.set_batch_index(state.global_step * args.gradient_accumulation_steps)

    def on_step_end(self, args, state, control, **kwargs):
        self._index_before_evaluation = self.collator.next_batch_index

    def on_evaluate(self, args, state, control, **kwargs):
        # The Trainer evaluates with the training collator: its batches must not shift the training numbering.
        if self._index_before_evaluation is not None:
            self.collator.set_batch_index(self._index_before_evaluation)


__all__ = [
    "AugmentationStepCallback",
    "DistillationRampCallback",
    "MomentumUpdateCallback",
    "NonFiniteGradientGuard",
    "TemperatureRangeCallback",
    "unwrap_model",
]
