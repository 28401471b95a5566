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
The three pre-training models of a fine-tuning size preset (`AETNetConfig.from_preset`: `tiny`, `study`, `small`,
`base`), built from that preset's own sub-configs, so that what they save fits
`AETNetForTokenClassification.from_encoders_pretrained` of the same preset.
"""

from __future__ import annotations

from typing import NamedTuple

from transformers import RobertaConfig, RobertaForMaskedLM, ViTConfig, ViTForMaskedImageModeling

from ..configuration_aetnet import AETNetConfig
from .config_fields import own_fields
from .configuration_layoutlmv3_pretraining import LayoutLMv3PreTrainingConfig
from .modeling_layoutlmv3_pretraining import LayoutLMv3ForPreTraining


class PreTrainingConfigs(NamedTuple):
    """The configs of the three pre-training models of one preset."""

    layout: LayoutLMv3PreTrainingConfig
    vision: ViTConfig
    text: RobertaConfig


class PreTrainingModels(NamedTuple):
    """The three pre-training models of one preset, randomly initialised."""

    layout: LayoutLMv3ForPreTraining
    vision: ViTForMaskedImageModeling
    text: RobertaForMaskedLM


def pretraining_configs(
    preset: str, *, vocab_size: int = 50265, max_length: int = 512, **layout_kwargs
) -> PreTrainingConfigs:
    """
    The preset's `layout_config` as a [`LayoutLMv3PreTrainingConfig`] (`layout_kwargs`: its objective fields, e.g.
    `mim_target="pixels"`, `mask_token_id=...`, or any LayoutLMv3 field), its `vision_config` with SimMIM's decoder
    stride (`encoder_stride = patch_size`, which `ViTForMaskedImageModeling` needs) and its `text_config`.
    `vocab_size` and `max_length` are those of the tokenizer, as in `AETNetConfig.from_preset`.
    """
    config = AETNetConfig.from_preset(preset, vocab_size=vocab_size, max_length=max_length)
    layout = LayoutLMv3PreTrainingConfig.from_layout_config(config.layout_config, **layout_kwargs)
    vision = ViTConfig(**{**own_fields(config.vision_config), "encoder_stride": config.vision_config.patch_size})
    text = RobertaConfig(**own_fields(config.text_config))
    return PreTrainingConfigs(layout, vision, text)


def build_pretraining_models(
    preset: str, *, vocab_size: int = 50265, max_length: int = 512, **layout_kwargs
) -> PreTrainingModels:
    """Randomly initialised `LayoutLMv3ForPreTraining`, `ViTForMaskedImageModeling` and `RobertaForMaskedLM` of
    `pretraining_configs(preset, ...)`."""
    configs = pretraining_configs(preset, vocab_size=vocab_size, max_length=max_length, **layout_kwargs)
    return PreTrainingModels(
        LayoutLMv3ForPreTraining(configs.layout),
        ViTForMaskedImageModeling(configs.vision),
        RobertaForMaskedLM(configs.text),
    )


__all__ = ["PreTrainingConfigs", "PreTrainingModels", "build_pretraining_models", "pretraining_configs"]
