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
"""IMC, intra-modal contrast: each page's online features against the momentum features of its augmented view."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .alignment import AlignmentFeatures, AlignmentObjective, register_objective
from .loss_utils import as_float32, logits_against_queue, no_autocast


class IntraModalContrastiveLoss(nn.Module):
    """
    IMC: intra-modal contrastive loss. The online image feature must pick the momentum feature of the same page (the
    momentum encoder sees an augmented view) among the batch and the image queue; likewise for text.
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
        queue_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        with no_autocast(image_feat.device):
            image_feat, text_feat, image_feat_m, text_feat_m, image_queue, text_queue, temp = as_float32(
                image_feat, text_feat, image_feat_m, text_feat_m, image_queue, text_queue, temp
            )
            sim_i2i = logits_against_queue(image_feat, image_feat_m, image_queue, temp, queue_valid)
            sim_t2t = logits_against_queue(text_feat, text_feat_m, text_queue, temp, queue_valid)
            targets = torch.arange(image_feat.shape[0], device=image_feat.device)
            return (F.cross_entropy(sim_i2i, targets) + F.cross_entropy(sim_t2t, targets)) / 2


@register_objective("imc")
class IntraModalContrast(AlignmentObjective):
    """IMC: online image (text) [CLS] feature against the momentum image (text) features of the batch and queue."""

    modalities = ("image", "text")  # an image and a text term, averaged: half of it would be another loss
    needs_momentum = True

    def __init__(self, config):
        super().__init__(config)
        self.loss = IntraModalContrastiveLoss()

    def forward(self, features: AlignmentFeatures) -> torch.Tensor:
        f = features
        return self.loss(
            f.image_feat,
            f.text_feat,
            f.image_feat_m,
            f.text_feat_m,
            f.image_queue,
            f.text_queue,
            f.temp,
            queue_valid=f.queue_valid,
        )

    def chance_level(self, features: AlignmentFeatures) -> float:
        """log N, N = the batch plus the valid queue entries, for both the image and the text term (hard targets)."""
        queue = features.image_queue.shape[1] if features.queue_valid is None else int(features.queue_valid.sum())
        return math.log(features.image_feat.shape[0] + queue)


__all__ = ["IntraModalContrast", "IntraModalContrastiveLoss"]
