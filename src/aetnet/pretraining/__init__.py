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
Pre-training on unlabelled pages: LayoutLMv3's own objectives (masked language modelling, masked image modelling and
word-patch alignment) with [`LayoutLMv3ForPreTraining`] and its data collator, and the aligners' pre-training: the
ViT by SimMIM ([`DataCollatorForSimMIM`]) with the page contrast that trains its [CLS] state
([`ViTForPagePreTraining`]; stock `ViTForMaskedImageModeling` for SimMIM alone), the RoBERTa by `RobertaForMaskedLM`
(transformers' `DataCollatorForLanguageModeling`); the three models of a size preset (`build_pretraining_models`)
and a `Trainer` that normalises and logs each objective ([`PreTrainingTrainer`]), and the chance level of each
objective (`chance_levels`). Nothing here ships with a checkpoint: what these models save load into stock
transformers classes (`LayoutLMv3Model`, `ViTModel`, `RobertaModel`).
"""

from .aligners import DataCollatorForSimMIM, simmim_mask
from .chance_levels import (
    average_chance_levels,
    chance_levels,
    masked_token_entropy,
    mlm_chance_level,
    simmim_chance_level,
    token_log_frequencies,
)
from .configuration_layoutlmv3_pretraining import LayoutLMv3PreTrainingConfig
from .configuration_vit_pretraining import ViTPagePreTrainingConfig
from .data_collator_layoutlmv3_pretraining import DataCollatorForLayoutLMv3PreTraining, MaskingStepCallback
from .masking import (
    MIM_TARGETS,
    MaskingGenerators,
    SeededMasksMixin,
    block_patch_mask,
    box_patch_coverage,
    mim_targets,
    span_lengths,
    span_mask,
    word_patch_alignment_labels,
)
from .modeling_layoutlmv3_pretraining import (
    LayoutLMv3ForPreTraining,
    LayoutLMv3ForPreTrainingOutput,
    WordPatchAlignmentHead,
)
from .modeling_vit_pretraining import ViTForPagePreTraining, ViTForPagePreTrainingOutput
from .presets import PreTrainingConfigs, PreTrainingModels, build_pretraining_models, pretraining_configs
from .trainer_pretraining import OBJECTIVE_LOSSES, PreTrainingTrainer


__all__ = [
    "MIM_TARGETS",
    "OBJECTIVE_LOSSES",
    "DataCollatorForLayoutLMv3PreTraining",
    "DataCollatorForSimMIM",
    "LayoutLMv3ForPreTraining",
    "LayoutLMv3ForPreTrainingOutput",
    "LayoutLMv3PreTrainingConfig",
    "MaskingGenerators",
    "MaskingStepCallback",
    "PreTrainingConfigs",
    "PreTrainingModels",
    "PreTrainingTrainer",
    "SeededMasksMixin",
    "ViTForPagePreTraining",
    "ViTForPagePreTrainingOutput",
    "ViTPagePreTrainingConfig",
    "WordPatchAlignmentHead",
    "average_chance_levels",
    "block_patch_mask",
    "box_patch_coverage",
    "build_pretraining_models",
    "chance_levels",
    "masked_token_entropy",
    "mim_targets",
    "mlm_chance_level",
    "pretraining_configs",
    "simmim_chance_level",
    "simmim_mask",
    "span_lengths",
    "span_mask",
    "token_log_frequencies",
    "word_patch_alignment_labels",
]
