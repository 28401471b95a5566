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
The output dataclasses of the AETNet models: transformers' standard outputs plus the alignment terms.

The heads' outputs are transformers' own with two fields more: `loss` is the whole objective (the task loss plus the
weighted alignment terms that were computed, all of them in training mode), `task_loss` the task loss alone and
`alignment_losses` the unweighted terms (as `FlavaForPreTraining` exposes `loss_info`).
"""

from dataclasses import dataclass

import torch
from transformers.modeling_outputs import (
    ModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)


@dataclass
class AETNetModelOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            The weighted sum of the alignment objectives (`config.alignment_loss_weights`), when they were computed:
            what training the base model alone minimises.
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, text_length + 1 + num_patches, hidden_size)`):
            LayoutLMv3's output: the text tokens, then the visual [CLS] and patch tokens.
        hidden_states, attentions: LayoutLMv3's, when asked for.
        image_embeds (`torch.FloatTensor` of shape `(batch_size, 1 + num_patches, hidden_size)`, *optional*):
            The online ViT aligner's output ([CLS] then patches), when the aligners ran.
        text_embeds (`torch.FloatTensor` of shape `(batch_size, text_length, hidden_size)`, *optional*):
            The online RoBERTa aligner's output, when the aligners ran.
        alignment_losses (`dict[str, torch.FloatTensor]`, *optional*):
            One unweighted scalar per enabled objective (`config.alignment_objectives`); computed in training mode,
            or in eval mode with `return_alignment_losses=True`.
    """

    loss: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    alignment_losses: dict[str, torch.FloatTensor] | None = None


@dataclass
class AETNetTokenClassifierOutput(TokenClassifierOutput):
    """`TokenClassifierOutput` with `loss` the whole objective, plus `task_loss` and `alignment_losses` (see above)."""

    task_loss: torch.FloatTensor | None = None
    alignment_losses: dict[str, torch.FloatTensor] | None = None


@dataclass
class AETNetSequenceClassifierOutput(SequenceClassifierOutput):
    """`SequenceClassifierOutput` with `loss` the whole objective, plus `task_loss` and `alignment_losses`."""

    task_loss: torch.FloatTensor | None = None
    alignment_losses: dict[str, torch.FloatTensor] | None = None


@dataclass
class AETNetQuestionAnsweringModelOutput(QuestionAnsweringModelOutput):
    """`QuestionAnsweringModelOutput` with `loss` the whole objective, plus `task_loss` and `alignment_losses`."""

    task_loss: torch.FloatTensor | None = None
    alignment_losses: dict[str, torch.FloatTensor] | None = None


__all__ = [
    "AETNetModelOutput",
    "AETNetQuestionAnsweringModelOutput",
    "AETNetSequenceClassifierOutput",
    "AETNetTokenClassifierOutput",
]
