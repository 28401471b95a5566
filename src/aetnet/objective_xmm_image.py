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
XMM-image, the image side of SIMLA's symmetric cross-modal masked modelling (Khan et al., ECCV 2022, arXiv
2203.14395), as a fine-tuning objective for LayoutLMv3: masked patch modelling conditioned on the full text.

SIMLA masks BEiT-style blocks of about 30% of the patches (75 of 256, blocks of at least 16), replaces them by a
learnable mask token and predicts DALL-E dVAE codes of the masked patches. No dVAE (nor LayoutLMv3's own MIM
tokenizer) is available, so the target here is a feature regression, as in MaskFeat / data2vec: the fusion model's
outputs at the masked patches, through `Linear(layout hidden, vision hidden)`, regress the ViT aligner's normalised
patch features of the unmasked page (cosine or smooth-L1). One extra LayoutLMv3 forward sees the masked page and the
full text; the task loss keeps the unmasked forward.

How a patch is masked: LayoutLMv3 embeds each patch by a non-overlapping convolution, adds its position embedding
and a LayerNorm. The masked patches' pixels are set to 0 (mid-grey after LayoutLMv3's 0.5 / 0.5 normalisation), so
that nothing of their content enters, and a learnable mask embedding is added at those positions through
`aligned_image_embeds` (after the visual LayerNorm): like BEiT's mask token, it marks the patch as masked and keeps
its position.

Which ViT: the momentum ViT sees `pixel_values_aug`, which the training collator crops and rotates, so its patches
no longer lie where the fusion model's do (the mismatch the seed notes name as a bug of SIMLA's dVAE view). The
default target is therefore the online ViT's patch features of the very page the fusion model sees, detached (no
gradient, like a momentum target); `target="momentum"` uses the momentum ViT, which is right only when the momentum
view keeps the page's geometry (no `pixel_values_aug`, or a photometric-only augmentation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .alignment import AlignmentFeatures, AlignmentObjective, register_objective
from .loss_utils import distributed_seed


XMM_IMAGE_LOSSES = ("cosine", "smooth_l1")
XMM_IMAGE_TARGETS = ("online", "momentum")


def draw_block_mask(
    grid_size: int,
    num_masked: int,
    generator: torch.Generator,
    min_block: int = 16,
    aspect_ratio: tuple[float, float] = (0.3, 1 / 0.3),
    max_attempts: int = 100,
) -> torch.Tensor:
    """
    BEiT's blockwise masking of one `grid_size` x `grid_size` page: rectangles of at least `min_block` patches, with a
    log-uniform aspect ratio, are added at random places until `num_masked` patches are masked (a block that would
    overshoot is redrawn; after `max_attempts` draws the mask may stay a little short). Returns `(grid_size ** 2,)`
    bool, row-major.
    """
    mask = torch.zeros(grid_size, grid_size, dtype=torch.bool)
    log_low, log_high = math.log(aspect_ratio[0]), math.log(aspect_ratio[1])
    for _ in range(max_attempts):
        remaining = num_masked - int(mask.sum())
        if remaining <= 0:
            break
        low = min(min_block, remaining)
        draws = torch.rand(4, generator=generator).tolist()
        area = low + draws[0] * (remaining - low)
        ratio = math.exp(log_low + draws[1] * (log_high - log_low))
        height = min(grid_size, max(1, round(math.sqrt(area * ratio))))
        width = min(grid_size, max(1, round(math.sqrt(area / ratio))))
        top = int(draws[2] * (grid_size - height + 1))
        left = int(draws[3] * (grid_size - width + 1))
        block = torch.zeros_like(mask)
        block[top : top + height, left : left + width] = True
        new = int((block & ~mask).sum())
        if 0 < new <= remaining:
            mask |= block
    return mask.flatten()


@register_objective("xmm_image")
class CrossModalMaskedImage(AlignmentObjective):
    """
    XMM-image: blockwise-masked patches of the fusion input, their fused outputs regress the ViT's normalised patch
    features of the unmasked page.

    Settings:
        mask_ratio (`float`, defaults to 0.3): share of the patches masked (SIMLA's 75 of 256).
        min_block (`int`, *optional*): smallest block, in patches; default BEiT's 16 of 196 scaled to the grid.
        loss (`str`, defaults to `"cosine"`): `"cosine"` (1 - cosine similarity) or `"smooth_l1"`, against the
            target patch features standardised over their channels (a LayerNorm without affine).
        target (`str`, defaults to `"online"`): which ViT gives the targets, see the module docstring.
        seed (`int`, defaults to 1): seed of the objective's generator (not xmm_text's 0, so that the two do not
            draw from the same stream).

    Costs: one extra LayoutLMv3 forward (and its backward); `hidden * vision_hidden + vision_hidden + hidden`
    parameters (the head and the mask embedding).
    """

    modalities = ("image", "text")  # the text conditions the masked patches
    needs_generator = True
    trains = ()  # only LayoutLMv3 and its own head

    def __init__(
        self,
        config,
        mask_ratio: float = 0.3,
        min_block: int | None = None,
        loss: str = "cosine",
        target: str = "online",
        seed: int = 1,
    ):
        super().__init__(config)
        layout = config.layout_config
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"`mask_ratio` of xmm_image must be in (0, 1), got {mask_ratio!r}")
        for setting, value, choices in (("loss", loss, XMM_IMAGE_LOSSES), ("target", target, XMM_IMAGE_TARGETS)):
            if value not in choices:
                raise ValueError(f"`{setting}` of xmm_image must be one of {list(choices)}, got {value!r}")
        if not getattr(layout, "visual_embed", True):
            raise ValueError("xmm_image masks LayoutLMv3's patches: it needs `layout_config.visual_embed=True`")
        self.grid_size = config.grid_size
        num_patches = self.grid_size**2
        if min_block is None:
            min_block = max(1, round(16 * num_patches / 196))
        if not (isinstance(min_block, int) and 1 <= min_block <= num_patches):
            raise ValueError(f"`min_block` of xmm_image must be an int in [1, {num_patches}], got {min_block!r}")
        self.num_masked = max(1, round(mask_ratio * num_patches))
        self.min_block, self.loss, self.target, self.seed = min_block, loss, target, int(seed)
        self.patch_size = int(layout.patch_size if isinstance(layout.patch_size, int) else layout.patch_size[0])
        # An Embedding rather than a bare Parameter: transformers' `_init_weights` initialises it (normal, 0.02).
        self.mask_embedding = nn.Embedding(1, layout.hidden_size)
        self.head = nn.Linear(layout.hidden_size, config.vision_config.hidden_size)

    def mask_patches(self, batch_size: int) -> torch.Tensor:
        """`(B, P)` bool block masks of this call, from the objective's generator (drawn on the CPU)."""
        generator = self.generator(torch.device("cpu"), distributed_seed(self.seed))
        return torch.stack(
            [draw_block_mask(self.grid_size, self.num_masked, generator, self.min_block) for _ in range(batch_size)]
        )

    def masked_pixels(self, pixel_values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The page with the masked patches' pixels set to 0 (a new tensor)."""
        grid, patch = self.grid_size, self.patch_size
        if tuple(pixel_values.shape[-2:]) != (grid * patch, grid * patch):
            raise ValueError(
                f"xmm_image masks a {grid} x {grid} grid of {patch}-pixel patches, but `pixel_values` are "
                f"{tuple(pixel_values.shape[-2:])}"
            )
        keep = (~mask).to(pixel_values.dtype).view(-1, 1, grid, grid)
        keep = keep.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)
        return pixel_values * keep

    def forward(self, features: AlignmentFeatures) -> torch.Tensor:
        f = features
        patch_targets = f.patch_embeds if self.target == "online" else f.patch_embeds_m
        if patch_targets is None:
            raise ValueError(
                "xmm_image with target='momentum' needs the momentum ViT: enable an objective that builds the "
                "momentum encoders (e.g. 'ditc'), or use target='online'"
            )
        batch_size, num_patches = patch_targets.shape[:2]
        if num_patches != self.grid_size**2:
            raise ValueError(
                f"The ViT gives {num_patches} patches but LayoutLMv3's grid has {self.grid_size**2}: xmm_image "
                "needs `vision_config` image_size / patch_size equal to `layout_config` input_size / patch_size"
            )
        mask = self.mask_patches(batch_size).to(f.pixel_values.device)
        mask_embeds = mask[..., None].to(self.mask_embedding.weight.dtype) * self.mask_embedding.weight[0]
        aligned = torch.cat([mask_embeds.new_zeros(batch_size, 1, mask_embeds.shape[-1]), mask_embeds], dim=1)
        hidden = f.fusion(
            pixel_values=self.masked_pixels(f.pixel_values, mask), aligned_image_embeds=aligned
        ).last_hidden_state
        patches = hidden[:, f.input_ids.shape[1] + 1 :]  # after the text tokens and the visual [CLS]
        prediction = self.head(patches[mask]).float()
        target = patch_targets.detach()[mask].float()
        target = F.layer_norm(target, target.shape[-1:])
        if self.loss == "cosine":
            return (1 - F.cosine_similarity(prediction, target, dim=-1)).mean()
        return F.smooth_l1_loss(prediction, target)

    def chance_level(self, features: AlignmentFeatures) -> float:
        """
        The loss of the best constant prediction over the batch's patches (masked patches are drawn from all of
        them): for `"cosine"`, 1 - the norm of the mean unit target, for `"smooth_l1"` that of the mean target.
        """
        f = features
        targets = f.patch_embeds if self.target == "online" else f.patch_embeds_m
        targets = targets.detach().flatten(0, 1).float()
        targets = F.layer_norm(targets, targets.shape[-1:])
        if self.loss == "cosine":
            return float(1 - F.normalize(targets, dim=-1).mean(dim=0).norm())
        return float(F.smooth_l1_loss(targets.mean(dim=0).expand_as(targets), targets))


__all__ = ["CrossModalMaskedImage", "XMM_IMAGE_LOSSES", "XMM_IMAGE_TARGETS", "draw_block_mask"]
