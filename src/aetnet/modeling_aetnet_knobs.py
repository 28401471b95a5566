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
The training knobs of every AETNet model: the weights of the alignment objectives, the momentum-distillation weight
and its ramp, when the momentum encoders take their EMA step, and the length of the feature queues.

Each knob has one writer, a method of `AETNetTrainingKnobsMixin`, which checks the value once (with the config's own
rule where the config has the field) and keeps the config and the live modules in step, so that a saved model says
what it was trained with. `AETNetTrainer` and its callbacks call these methods; so can a hand-written loop. On a head
they act on its encoder (`model.base_model`, i.e. `model.aetnet`), so `model.set_distill_alpha(0.2)` and
`model.aetnet.set_distill_alpha(0.2)` are the same call.

This module imports only torch and its siblings, so that it ships as Hub remote code with `modeling_aetnet.py`.
"""

from __future__ import annotations

import torch

from .configuration_aetnet import AETNetConfig
from .loss_utils import weighted_objective
from .momentum import FeatureQueues


MOMENTUM_UPDATE_MODES = ("forward", "step")


def checked_by_config(**fields) -> AETNetConfig:
    """
    A bare `AETNetConfig` (no objective enabled) with `fields` set: building it runs the config's own checks on them,
    so that a value given after the model was built (`alignment_loss_weights`, `distill_alpha`, `queue_size`) passes
    exactly the rule a value given to the config passes, and fails with the same error naming the field and value.
    """
    return AETNetConfig(alignment_objectives=[], **fields)


class AETNetTrainingKnobsMixin:
    """
    The setters of the training knobs, for `AETNetModel` and its heads (see the module docstring). The live state
    they write is `config.alignment_loss_weights`, `config.objective_settings` with each distilling objective's
    `distill_alpha`, `config.queue_size` with `queues`, and the encoder's `distill_ramp` and
    `momentum_update_in_forward`, which are per-run state and not saved.
    """

    def set_alignment_loss_weights(self, weights: dict[str, float]) -> None:
        """
        Set the weight of each objective named in `weights` in `config.alignment_loss_weights` (the others keep
        theirs), which the model's `loss` reads. A weight must be a finite number >= 0 (the config's rule) and name an
        objective this model computes.
        """
        enabled = self.config.alignment_objectives
        unknown = sorted(set(weights) - set(enabled))
        if unknown:
            raise ValueError(
                f"`alignment_loss_weights` names {unknown}, which the model does not compute; its objectives: {enabled}"
            )
        checked = checked_by_config(alignment_loss_weights=weights).alignment_loss_weights
        self.config.alignment_loss_weights = {**self.config.alignment_loss_weights, **checked}

    def weighted_loss(
        self, task_loss: torch.Tensor | None, alignment_losses: dict[str, torch.Tensor] | None
    ) -> torch.Tensor | None:
        """`task_loss + sum_k weight_k * loss_k` with this model's weights (`loss_utils.weighted_objective`): the model's
        `loss`, and what `AETNetTrainer` minimises when it smooths the task term itself."""
        return weighted_objective(task_loss, alignment_losses, self.config.alignment_loss_weights)

    def set_distill_alpha(self, alpha: float) -> None:
        """
        Give every enabled objective that distils (has a `distill_alpha`, e.g. DITC) the momentum-distillation weight
        `alpha`, in [0, 1] (the config's rule for `distill_alpha`), in the module and in the config's
        `objective_settings`. Objectives without distillation keep none.
        """
        checked_by_config(distill_alpha=alpha)
        settings = dict(self.config.objective_settings)
        for name, objective in self.base_model.objectives.items():
            if hasattr(objective, "distill_alpha"):
                objective.distill_alpha = alpha
                settings[name] = {**settings.get(name, {}), "distill_alpha": alpha}
        self.config.objective_settings = settings

    def set_distill_ramp(self, factor: float) -> None:
        """Scale every objective's momentum-distillation weight by `factor`, in [0, 1] (1 at construction): ALBEF ramps
        it from 0 over the first epoch (`AETNetTrainer`'s `DistillationRampCallback`)."""
        if not 0.0 <= factor <= 1.0:
            raise ValueError(f"`distill_ramp` must be in [0, 1], got {factor!r}")
        self.base_model.distill_ramp = factor

    def set_momentum_update(self, mode: str) -> None:
        """
        When the momentum encoders take their EMA step: `"forward"` (at construction), in every training forward that
        computes the alignment losses, before it (ALBEF's rule, so that a plain training loop trains the full method);
        `"step"`, only when `momentum_update()` is called, once per optimizer step, which keeps the EMA horizon
        independent of gradient accumulation (`AETNetTrainer` does that).
        """
        if mode not in MOMENTUM_UPDATE_MODES:
            raise ValueError(f"`mode` must be one of {list(MOMENTUM_UPDATE_MODES)}, got {mode!r}")
        self.base_model.momentum_update_in_forward = mode == "forward"

    def resize_feature_queues(self, queue_size: int) -> None:
        """
        Give the model new, empty feature queues of `queue_size` entries (a positive int, the config's rule), on the
        old queues' device and dtype, and record the size in `config.queue_size`. `momentum.fitted_queue_size` is the
        rule `AETNetTrainer` sizes them by.
        """
        checked_by_config(queue_size=queue_size)
        base = self.base_model
        if base.has_momentum:
            old = base.queues.image_queue
            base.queues = FeatureQueues(self.config.embed_dim, queue_size).to(device=old.device, dtype=old.dtype)
        self.config.queue_size = queue_size


__all__ = ["MOMENTUM_UPDATE_MODES", "AETNetTrainingKnobsMixin", "checked_by_config"]
