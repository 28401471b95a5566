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
"""GLITC, global-local contrast: a document's global feature against its own patches or tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .alignment import AlignmentFeatures, AlignmentObjective, register_objective
from .loss_utils import MASKED_LOGIT, as_float32, no_autocast


class GlobalLocalContrastiveLoss(nn.Module):
    """
    GLITC for one modality: each document's global (online CLS) feature against the momentum local features (patches
    or tokens) of the same document as positives, and the local features of the other documents of the batch as
    negatives, one InfoNCE term per positive local, averaged over the valid locals of each document.

    Every positive of document n shares the same negatives, so the negative log-sum-exp is computed once per document:
    memory is B x B x N instead of the B x N x (1 + B x N) logits of a direct implementation.
    """

    def forward(
        self, global_feat: torch.Tensor, local_feat_m: torch.Tensor, local_mask: torch.Tensor, temp: torch.Tensor
    ) -> torch.Tensor:
        """
        Args:
            global_feat: (B, E) normalised online global features.
            local_feat_m: (B, N, E) normalised momentum local features.
            local_mask: (B, N) bool, True for real locals (padding and special tokens False).
            temp: scalar temperature.
        """
        with no_autocast(global_feat.device):
            global_feat, local_feat_m, temp = as_float32(global_feat, local_feat_m, temp)
            batch_size = global_feat.shape[0]
            scores = torch.einsum("ne,jke->njk", global_feat, local_feat_m) / temp  # (B anchors, B docs, N locals)
            positives = scores.diagonal(dim1=0, dim2=1).t()  # (B, N): scores[n, n, k]
            other_doc = ~torch.eye(batch_size, dtype=torch.bool, device=scores.device)
            negative_mask = other_doc[:, :, None] & local_mask[None, :, :]
            negative_lse = scores.masked_fill(~negative_mask, MASKED_LOGIT).flatten(1).logsumexp(dim=-1)
            # -log(e^pos / (e^pos + sum e^neg)) = softplus(lse(neg) - pos)
            per_local = F.softplus(negative_lse[:, None] - positives)
            mask = local_mask.float()
            per_doc = (per_local * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
            has_locals = (mask.sum(dim=1) > 0).float()
            return (per_doc * has_locals).sum() / has_locals.sum().clamp(min=1)


@register_objective("glitc")
class GlobalLocalContrast(AlignmentObjective):
    """
    GLITC: the online image [CLS] against the momentum patch features and the online text [CLS] against the momentum
    token features of the real tokens (no `<s>`, `</s>` or padding), averaged over the two modalities.
    """

    modalities = ("image", "text")  # image and text global-local terms, averaged
    needs_momentum = True

    def __init__(self, config):
        super().__init__(config)
        self.loss = GlobalLocalContrastiveLoss()

    def forward(self, features: AlignmentFeatures) -> torch.Tensor:
        f = features
        with torch.no_grad():
            patches_m = F.normalize(f.vision_proj_m(f.patch_embeds_m), dim=-1)
            tokens_m = F.normalize(f.text_proj_m(f.text_embeds_m), dim=-1)
        patch_mask = torch.ones(patches_m.shape[:2], dtype=torch.bool, device=patches_m.device)
        image_term = self.loss(f.image_feat, patches_m, patch_mask, f.temp)
        return (image_term + self.loss(f.text_feat, tokens_m, f.real_tokens, f.temp)) / 2

    def chance_level(self, features: AlignmentFeatures) -> float:
        """
        The mean of the two modalities' chance levels. Each positive local of document n competes with every valid
        local of the other documents, so uniform scores give log(1 + sum_{j != n} locals_j), averaged over the
        documents that have locals, as `GlobalLocalContrastiveLoss` averages; image locals are all patches.
        """
        batch_size, num_patches = features.patch_embeds.shape[:2]
        image = _mean_chance(torch.full((batch_size,), num_patches))
        return (image + _mean_chance(features.real_tokens.sum(dim=1).cpu())) / 2


def _mean_chance(locals_per_doc: torch.Tensor) -> float:
    """Mean over documents with locals of log(1 + the locals of the other documents): the uniform-score loss."""
    counts = locals_per_doc.double()
    negatives = counts.sum() - counts
    present = counts > 0
    return float(torch.log1p(negatives[present]).mean()) if present.any() else 0.0


__all__ = ["GlobalLocalContrast", "GlobalLocalContrastiveLoss"]
