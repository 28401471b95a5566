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
"""DITC, document-level image-text contrast: ALBEF's image-text contrastive loss with momentum distillation."""

from __future__ import annotations

import math

import torch
from torch import nn

from .alignment import AlignmentFeatures, AlignmentObjective, register_objective
from .loss_utils import as_float32, logits_against_queue, no_autocast, soft_cross_entropy


class DocumentContrastiveLoss(nn.Module):
    """
    DITC: document-level image-text contrastive loss (ALBEF's ITC with momentum distillation).

    Each online image feature must pick its own document's momentum text feature among the batch's momentum text
    features and the text queue, and symmetrically for text. With `alpha > 0` the one-hot targets are mixed with the
    momentum model's own similarity distribution (momentum distillation); `alpha = 0` is plain InfoNCE.
    """

    def forward(
        self,
        image_feat: torch.Tensor,
        text_feat: torch.Tensor,
        image_feat_m: torch.Tensor,
        text_feat_m: torch.Tensor,
        image_queue: torch.Tensor,
        text_queue: torch.Tensor,
        temp: torch.Tensor,
        alpha: float = 0.0,
        queue_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        with no_autocast(image_feat.device):
            image_feat, text_feat, image_feat_m, text_feat_m, image_queue, text_queue, temp = as_float32(
                image_feat, text_feat, image_feat_m, text_feat_m, image_queue, text_queue, temp
            )
            sim_i2t = logits_against_queue(image_feat, text_feat_m, text_queue, temp, queue_valid)
            sim_t2i = logits_against_queue(text_feat, image_feat_m, image_queue, temp, queue_valid)
            with torch.no_grad():
                one_hot = torch.zeros_like(sim_i2t)
                one_hot.fill_diagonal_(1.0)
                targets_i2t = one_hot
                targets_t2i = one_hot
                if alpha > 0:
                    sim_i2t_m = logits_against_queue(image_feat_m, text_feat_m, text_queue, temp, queue_valid)
                    sim_t2i_m = logits_against_queue(text_feat_m, image_feat_m, image_queue, temp, queue_valid)
                    targets_i2t = alpha * sim_i2t_m.softmax(dim=1) + (1 - alpha) * one_hot
                    targets_t2i = alpha * sim_t2i_m.softmax(dim=1) + (1 - alpha) * one_hot
            return (soft_cross_entropy(sim_i2t, targets_i2t) + soft_cross_entropy(sim_t2i, targets_t2i)) / 2


@register_objective("ditc")
class DocumentImageTextContrast(AlignmentObjective):
    """
    DITC: each document's online [CLS] image feature against the momentum text features of the batch and the text
    queue, and symmetrically (`DocumentContrastiveLoss`).

    Settings: `distill_alpha` (default: the config's `distill_alpha`, 0.4), the weight of the momentum model's
    similarity distribution in the targets, scaled per step by the model's ramp (`features.distill_ramp`).
    """

    modalities = ("image", "text")  # image [CLS] against text [CLS]
    needs_momentum = True

    def __init__(self, config, distill_alpha: float | None = None):
        super().__init__(config)
        self.distill_alpha = config.distill_alpha if distill_alpha is None else float(distill_alpha)
        if not 0.0 <= self.distill_alpha <= 1.0:
            raise ValueError(f"`distill_alpha` of the objective must be in [0, 1], got {self.distill_alpha}")
        self.loss = DocumentContrastiveLoss()

    def forward(self, features: AlignmentFeatures) -> torch.Tensor:
        f = features
        alpha = self.distill_alpha * f.distill_ramp
        return self.loss(
            f.image_feat,
            f.text_feat,
            f.image_feat_m,
            f.text_feat_m,
            f.image_queue,
            f.text_queue,
            f.temp,
            alpha=alpha,
            queue_valid=f.queue_valid,
        )

    def chance_level(self, features: AlignmentFeatures) -> float:
        """
        log N, N = the batch plus the valid queue entries (the columns `logits_against_queue` leaves unmasked).
        Uniform logits give a cross entropy of log N against any target distribution, so momentum distillation
        (soft targets) does not change it.
        """
        return math.log(_candidates(features))


def _candidates(features: AlignmentFeatures) -> int:
    """In-batch momentum features plus the queue entries that hold features: what each anchor is scored against."""
    valid = features.image_queue.shape[1] if features.queue_valid is None else int(features.queue_valid.sum())
    return features.image_feat.shape[0] + valid


__all__ = ["DocumentContrastiveLoss", "DocumentImageTextContrast"]
