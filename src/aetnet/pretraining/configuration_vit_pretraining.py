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
"""`ViTPagePreTrainingConfig`: a `ViTConfig` with the settings of the ViT aligner's page-level pre-training."""

from __future__ import annotations

import math
from typing import ClassVar

from huggingface_hub.dataclasses import strict
from transformers import ViTConfig

from .config_fields import own_fields


@strict
class ViTPagePreTrainingConfig(ViTConfig):
    r"""
    The configuration of [`ViTForPagePreTraining`]: every field of `ViTConfig` (the encoder, with SimMIM's
    `encoder_stride = patch_size`), plus the weights of its two objectives and the page contrast's settings. Its
    `model_type` stays `"vit"`, so that the saved `config.json` loads into stock `ViTConfig` (the extra fields become
    plain attributes there, unused).

    Args:
        mim_weight (`float`, *optional*, defaults to 1.0):
            Weight of SimMIM (L1 over the masked pixels) in `loss`.
        page_contrast_weight (`float`, *optional*, defaults to 1.0):
            Weight of the page contrast: the [CLS] state of the masked page must pick out the [CLS] state of the
            same page unmasked among the batch's pages, and the other way round (InfoNCE).
        page_contrast_temperature (`float`, *optional*, defaults to 0.1):
            Temperature of the page contrast's cosine similarities (SimCLR's 0.1).
        page_projection_dim (`int`, *optional*, defaults to 128):
            Output size of the two-layer head that projects the [CLS] states before the contrast (SimCLR's head:
            the encoder's own state keeps more than the contrast needs).
    """

    keys_to_ignore_at_inference: ClassVar[list[str]] = ["reconstruction", "hidden_states", "attentions"]

    mim_weight: float = 1.0
    page_contrast_weight: float = 1.0
    page_contrast_temperature: float = 0.1
    page_projection_dim: int = 128

    def __post_init__(self, **kwargs):
        for name in ("mim_weight", "page_contrast_weight"):
            weight = getattr(self, name)
            if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
                raise ValueError(f"`{name}` must be a finite number >= 0, got {weight!r}")
            setattr(self, name, float(weight))
        temperature = self.page_contrast_temperature
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"`page_contrast_temperature` must be a finite number > 0, got {temperature!r}")
        self.page_contrast_temperature = float(temperature)
        if not (isinstance(self.page_projection_dim, int) and self.page_projection_dim > 0):
            raise ValueError(f"`page_projection_dim` must be a positive int, got {self.page_projection_dim!r}")
        super().__post_init__(**kwargs)

    @classmethod
    def from_vit_config(cls, vit_config: ViTConfig, **kwargs) -> ViTPagePreTrainingConfig:
        """The page pre-training config of an existing ViT config (e.g. a preset's `vision_config`), `kwargs` being
        this class's own fields or ViT fields to change."""
        return cls(**{**own_fields(vit_config), **kwargs})


__all__ = ["ViTPagePreTrainingConfig"]
