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
The aligners' own pre-training with stock transformers models: the ViT by SimMIM (`ViTForMaskedImageModeling`,
whose masks [`DataCollatorForSimMIM`] draws) and the RoBERTa by masked language modelling (`RobertaForMaskedLM`,
with transformers' own `DataCollatorForLanguageModeling`). Both save ordinary transformers checkpoints that load into
`ViTModel` / `RobertaModel`, and so into `AETNetForTokenClassification.from_encoders_pretrained`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .masking import IMAGE_STREAM, MaskingGenerators, SeededMasksMixin


def simmim_mask(
    batch_size: int, grid_size: int, mask_grid_size: int, mask_ratio: float, generator: torch.Generator
) -> torch.Tensor:
    """
    SimMIM's random masking: the page is cut into `mask_grid_size ** 2` square cells (32 px in SimMIM), exactly
    `round(mask_ratio * cells)` of them are chosen uniformly, and every model patch inside a chosen cell is masked.
    Returns `(B, grid_size ** 2)` bool, row-major (`ViTForMaskedImageModeling`'s `bool_masked_pos`).
    """
    if grid_size % mask_grid_size:
        raise ValueError(f"The mask grid ({mask_grid_size}) must divide the patch grid ({grid_size})")
    cells = mask_grid_size**2
    count = max(1, round(mask_ratio * cells))
    scores = torch.rand(batch_size, cells, generator=generator)
    chosen = scores.argsort(dim=1)[:, :count]
    mask = torch.zeros(batch_size, cells, dtype=torch.bool).scatter_(1, chosen, True)
    scale = grid_size // mask_grid_size
    mask = mask.view(batch_size, mask_grid_size, mask_grid_size)
    return mask.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2).flatten(1)


@dataclass
class DataCollatorForSimMIM(SeededMasksMixin):
    """
    Stack `pixel_values` and add SimMIM's `bool_masked_pos` (`simmim_mask`), for `ViTForMaskedImageModeling`. The
    masks come from seeded per-batch generators ([`MaskingGenerators`]) that resume exactly, as those of
    [`DataCollatorForLayoutLMv3PreTraining`] (`MaskingStepCallback` works with both).

    Args:
        image_size (`int`): the pages' side in pixels (the ViT's `image_size`).
        patch_size (`int`): the ViT's patch size.
        mask_patch_size (`int`, *optional*): the side of a masked cell in pixels; SimMIM's 32 for 16-pixel patches,
            by default twice the patch size so that small presets keep SimMIM's proportions. A multiple of
            `patch_size` that divides `image_size`.
        mask_ratio (`float`, *optional*, defaults to 0.6): share of the cells masked (SimMIM's).
        seed (`int`, *optional*, defaults to 0): the masks' seed.
    """

    image_size: int
    patch_size: int
    mask_patch_size: int | None = None
    mask_ratio: float = 0.6
    seed: int = 0
    generators: MaskingGenerators = field(init=False, repr=False)

    def __post_init__(self):
        if self.mask_patch_size is None:
            self.mask_patch_size = 2 * self.patch_size
        if self.mask_patch_size % self.patch_size or self.image_size % self.mask_patch_size:
            raise ValueError(
                f"`mask_patch_size` ({self.mask_patch_size}) must be a multiple of `patch_size` ({self.patch_size}) "
                f"that divides `image_size` ({self.image_size})"
            )
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"`mask_ratio` must be in (0, 1), got {self.mask_ratio!r}")
        self.generators = MaskingGenerators(self.seed)

    @classmethod
    def from_config(cls, config, **kwargs) -> DataCollatorForSimMIM:
        """The collator for a ViT config (its image and patch sizes); `kwargs` are the other arguments."""
        return cls(image_size=int(config.image_size), patch_size=int(config.patch_size), **kwargs)

    def __call__(self, features: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("Cannot collate an empty list of features")
        pixel_values = torch.stack([torch.as_tensor(f["pixel_values"], dtype=torch.float32) for f in features])
        (generator,) = self.generators.next_batch((IMAGE_STREAM,))
        mask = simmim_mask(
            len(features),
            self.image_size // self.patch_size,
            self.image_size // self.mask_patch_size,
            self.mask_ratio,
            generator,
        )
        return {"pixel_values": pixel_values, "bool_masked_pos": mask}


__all__ = ["DataCollatorForSimMIM", "simmim_mask"]
