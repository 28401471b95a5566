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
weighted alignment terms that were computed, in training mode all of them whose modalities the inputs hold),
`task_loss` the task loss alone, `alignment_losses` the unweighted terms (as `FlavaForPreTraining` exposes
`loss_info`) and `skipped_objectives` the terms left out for a missing modality.
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
    The encoder's output. Its first field is `last_hidden_state`, as for every transformers base model (and
    LayoutLMv3Model's): `outputs[0]` is what the heads read, computed from the returned `hidden_states`; `loss`, the
    alignment objective that training the base model alone minimises, is an extra field, as the VQ-VAE outputs carry
    `embedding_loss` after their main output.

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, text_length + 1 + num_patches, hidden_size)`):
            LayoutLMv3's output: the text tokens, then the visual [CLS] and patch tokens (those present).
        hidden_states, attentions: LayoutLMv3's, when asked for: the embeddings and layers that `last_hidden_state`
            came from.
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            The weighted sum of the alignment objectives (`config.alignment_loss_weights`) that were computed.
        image_embeds (`torch.FloatTensor` of shape `(batch_size, 1 + num_patches, hidden_size)`, *optional*):
            The online ViT aligner's output ([CLS] then patches), when the aligners ran on a page image.
        text_embeds (`torch.FloatTensor` of shape `(batch_size, text_length, hidden_size)`, *optional*):
            The online RoBERTa aligner's output, when the aligners ran on text.
        alignment_losses (`dict[str, torch.FloatTensor]`, *optional*):
            One unweighted scalar per enabled objective that was computed (`config.alignment_objectives`); computed
            in training mode, or in eval mode with `return_alignment_losses=True`.
        skipped_objectives (`tuple[str, ...]`, *optional*):
            The enabled objectives that were asked for but not computed because the inputs lack a modality they
            read (`AlignmentObjective.modalities`: no `pixel_values`, or no `input_ids`); they have no entry in
            `alignment_losses` rather than a zero. None when nothing was skipped.
    """

    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    loss: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    alignment_losses: dict[str, torch.FloatTensor] | None = None
    skipped_objectives: tuple[str, ...] | None = None


@dataclass
class AETNetTokenClassifierOutput(TokenClassifierOutput):
    """`TokenClassifierOutput` with `loss` the whole objective, plus `task_loss`, `alignment_losses` and
    `skipped_objectives` (see above)."""

    task_loss: torch.FloatTensor | None = None
    alignment_losses: dict[str, torch.FloatTensor] | None = None
    skipped_objectives: tuple[str, ...] | None = None


@dataclass
class AETNetSequenceClassifierOutput(SequenceClassifierOutput):
    """`SequenceClassifierOutput` with `loss` the whole objective, plus `task_loss`, `alignment_losses` and
    `skipped_objectives`."""

    task_loss: torch.FloatTensor | None = None
    alignment_losses: dict[str, torch.FloatTensor] | None = None
    skipped_objectives: tuple[str, ...] | None = None


@dataclass
class AETNetQuestionAnsweringModelOutput(QuestionAnsweringModelOutput):
    """`QuestionAnsweringModelOutput` with `loss` the whole objective, plus `task_loss`, `alignment_losses` and
    `skipped_objectives`."""

    task_loss: torch.FloatTensor | None = None
    alignment_losses: dict[str, torch.FloatTensor] | None = None
    skipped_objectives: tuple[str, ...] | None = None


__all__ = [
    "AETNetModelOutput",
    "AETNetQuestionAnsweringModelOutput",
    "AETNetSequenceClassifierOutput",
    "AETNetTokenClassifierOutput",
]
