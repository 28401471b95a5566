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
"""`LayoutLMv3PreTrainingConfig`: a `LayoutLMv3Config` with the settings of LayoutLMv3's pre-training objectives."""

from __future__ import annotations

import math
from typing import ClassVar

from huggingface_hub.dataclasses import strict
from transformers import LayoutLMv3Config

from ..configuration_aetnet import SPATIAL_BIAS_INITS
from .config_fields import own_fields
from .masking import MIM_TARGETS


@strict
class LayoutLMv3PreTrainingConfig(LayoutLMv3Config):
    r"""
    The configuration of [`LayoutLMv3ForPreTraining`]: every field of `LayoutLMv3Config` (the encoder), plus the
    pre-training objectives' weights and the MIM target. Its `model_type` stays `"layoutlmv3"`, so that the saved
    `config.json` loads into stock `LayoutLMv3Config` (the extra fields become plain attributes there, unused).

    Args:
        mlm_weight (`float`, *optional*, defaults to 1.0):
            Weight of masked language modelling in `loss` (the paper sums the three objectives unweighted).
        mim_weight (`float`, *optional*, defaults to 1.0):
            Weight of masked image modelling.
        wpa_weight (`float`, *optional*, defaults to 1.0):
            Weight of word-patch alignment.
        mim_target (`str`, *optional*, defaults to `"normalized_pixels"`):
            What MIM predicts for each masked patch. LayoutLMv3 predicts the discrete code that DiT's image tokenizer
            (a dVAE of 8,192 codes) gives the patch; that tokenizer is not available here, so the patch's pixels are
            regressed instead: `"normalized_pixels"` (MAE's `norm_pix_loss`: each patch standardised over its own
            pixels, mean squared error) or `"pixels"` (SimMIM: the pixels as the model reads them, L1 loss).
        mask_token_id (`int`, *optional*):
            `<mask>`'s id in the vocabulary, which `LayoutLMv3Config` does not record; defaults to 50264 for the full
            RoBERTa vocabulary and to 4 for a tokenizer trained by `train_layoutlmv3_tokenizer`
            (`aetnet.objective_xmm_text.default_mask_token_id`). Only the data collator uses it.
        spatial_bias_init (`str`, *optional*, defaults to `"locality"`):
            The initial 2D relative-position tables of the encoder (`aetnet.spatial_bias`). transformers looks them up
            under `no_grad`, so they never train: from random weights they would stay noise in the pre-trained
            encoder for good, where LayoutLMv3's own pre-training taught them to attend to what lies nearby on the
            page. `"locality"` starts (and so keeps) them at that prior; `"random"` is transformers' initialisation.
            A checkpoint's tables replace either.
    """

    # The Trainer's prediction loop would gather every other output field as "logits": hidden states of every
    # page and vocabulary scores of every masked token. Pre-training is evaluated by its losses.
    keys_to_ignore_at_inference: ClassVar[list[str]] = [
        "mlm_logits",
        "mim_logits",
        "wpa_logits",
        "last_hidden_state",
        "hidden_states",
        "attentions",
    ]

    mlm_weight: float = 1.0
    mim_weight: float = 1.0
    wpa_weight: float = 1.0
    mim_target: str = "normalized_pixels"
    mask_token_id: int | None = None
    spatial_bias_init: str = "locality"

    def __post_init__(self, **kwargs):
        for name in ("mlm_weight", "mim_weight", "wpa_weight"):
            weight = getattr(self, name)
            if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
                raise ValueError(f"`{name}` must be a finite number >= 0, got {weight!r}")
            setattr(self, name, float(weight))
        if self.mim_target not in MIM_TARGETS:
            raise ValueError(f"`mim_target` must be one of {list(MIM_TARGETS)}, got {self.mim_target!r}")
        if self.spatial_bias_init not in SPATIAL_BIAS_INITS:
            raise ValueError(
                f"`spatial_bias_init` must be one of {list(SPATIAL_BIAS_INITS)}, got {self.spatial_bias_init!r}"
            )
        super().__post_init__(**kwargs)

    @classmethod
    def from_layout_config(cls, layout_config: LayoutLMv3Config, **kwargs) -> LayoutLMv3PreTrainingConfig:
        """The pre-training config of an existing LayoutLMv3 config (e.g. a preset's `layout_config`), `kwargs` being
        this class's own fields."""
        return cls(**{**own_fields(layout_config), **kwargs})


__all__ = ["LayoutLMv3PreTrainingConfig"]
