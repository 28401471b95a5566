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
`ViTForPagePreTraining`: stock `ViTForMaskedImageModeling` (SimMIM) with a page-level objective beside it, so that
the ViT aligner's [CLS] state tells pages apart.

Why: SimMIM's loss is on the masked patches only and never reaches the [CLS] state of the last layer, so a ViT
pre-trained by SimMIM alone gives nearly the same [CLS] state to every page. AETNet's document-level objective (DITC)
contrasts exactly that state with the text's, and cannot fall below its chance level from such an aligner (the
pre-training study in BENCHMARKS.md measures both). The page contrast trains it: the [CLS] state of the page SimMIM
sees masked must pick out the [CLS] state of the same page unmasked among the batch's pages, and the other way round
(SimCLR's symmetric InfoNCE, the masking being the augmentation, as in masked siamese networks).

What it saves is a ViT checkpoint: the encoder's weights sit under `vit.`, so `ViTModel.from_pretrained` (and the
vision side of `AETNetForTokenClassification.from_encoders_pretrained`) loads it; SimMIM's decoder and the page head
are keys `ViTModel` does not have, reported as unexpected and dropped.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import ViTForMaskedImageModeling
from transformers.modeling_outputs import ModelOutput

from .chance_levels import simmim_chance_level
from .configuration_vit_pretraining import ViTPagePreTrainingConfig


@dataclass
class ViTForPagePreTrainingOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`):
            `mim_weight * mim_loss + page_contrast_weight * page_contrast_loss`.
        mim_loss (`torch.FloatTensor` of shape `()`):
            SimMIM's L1 loss over the masked pixels (`ViTForMaskedImageModeling`'s), per masked patch of the step
            when `num_items_per_objective` was given.
        page_contrast_loss (`torch.FloatTensor` of shape `()`):
            The symmetric InfoNCE of the pages' [CLS] states, masked against unmasked.
        page_logits (`torch.FloatTensor` of shape `(num_pages, num_pages)`):
            Similarities of each masked page (rows) to each unmasked page (columns), over the temperature.
        reconstruction (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
            SimMIM's reconstructed pixels.
        hidden_states, attentions: the masked pass's, when asked for.
    """

    loss: torch.FloatTensor | None = None
    mim_loss: torch.FloatTensor | None = None
    page_contrast_loss: torch.FloatTensor | None = None
    page_logits: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class ViTForPagePreTraining(ViTForMaskedImageModeling):
    """
    SimMIM plus the page contrast (see the module's docstring), on `pixel_values` and SimMIM's `bool_masked_pos`
    ([`DataCollatorForSimMIM`]). Each step runs the encoder twice, on the masked page and on the whole page.

    Only the pages with at least one masked patch take part in the contrast: a page that a multi-process launcher
    repeats to fill the last batch loses its mask ([`PreTrainingTrainer`]), and would otherwise be its own copy's
    negative. The negatives are the other pages of the process's batch.
    """

    config: ViTPagePreTrainingConfig
    config_class = ViTPagePreTrainingConfig
    # Two objectives cannot share one `num_items_in_batch`: `PreTrainingTrainer` passes `num_items_per_objective`.
    accepts_loss_kwargs = False

    def __init__(self, config: ViTPagePreTrainingConfig):
        super().__init__(config)
        hidden = config.hidden_size
        self.page_head = nn.Sequential(
            nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, config.page_projection_dim)
        )
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.BoolTensor,
        num_items_per_objective: Mapping[str, torch.Tensor | int] | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> ViTForPagePreTrainingOutput:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`): the pages.
            bool_masked_pos (`torch.BoolTensor` of shape `(batch_size, num_patches)`): SimMIM's masked patches.
            num_items_per_objective (`Mapping[str, torch.Tensor | int]`, *optional*):
                For `"mim"` and `"page_contrast"`: the masked patches and the contrasted pages over every process
                and micro-batch of the optimizer step, as `count_objective_items` counts them; each loss is then
                this batch's share of the step's mean.
        """
        if bool_masked_pos is None:
            raise ValueError("`bool_masked_pos` is required: SimMIM and the page contrast both read the masked page")
        masked = super().forward(
            pixel_values,
            bool_masked_pos=bool_masked_pos,
            output_hidden_states=True,
            output_attentions=output_attentions,
        )
        # The masked pass's [CLS] state as `ViTModel` returns it (its last layer, then its final layer norm).
        masked_page = self.vit.layernorm(masked.hidden_states[-1][:, 0])
        whole_page = self.vit(pixel_values).last_hidden_state[:, 0]
        rows = _contrasted_pages(bool_masked_pos)
        logits, item_losses = self._page_contrast(masked_page[rows], whole_page[rows])
        num_items = dict(num_items_per_objective or {})
        mim_loss = masked.loss * _share(bool_masked_pos.sum(), num_items.get("mim"))
        page_loss = item_losses.mean() if item_losses.numel() else logits.sum() * 0.0
        page_loss = page_loss * _share(rows.sum(), num_items.get("page_contrast"))
        return ViTForPagePreTrainingOutput(
            loss=self.config.mim_weight * mim_loss + self.config.page_contrast_weight * page_loss,
            mim_loss=mim_loss,
            page_contrast_loss=page_loss,
            page_logits=logits,
            reconstruction=masked.reconstruction,
            hidden_states=masked.hidden_states if output_hidden_states else None,
            attentions=masked.attentions,
        )

    def _page_contrast(self, masked_page: torch.Tensor, whole_page: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The masked-to-whole similarities over the temperature and each page's loss (both directions, averaged)."""
        masked_z = F.normalize(self.page_head(masked_page).float(), dim=-1)
        whole_z = F.normalize(self.page_head(whole_page).float(), dim=-1)
        logits = masked_z @ whole_z.T / self.config.page_contrast_temperature
        targets = torch.arange(len(logits), device=logits.device)
        forward = F.cross_entropy(logits, targets, reduction="none")
        backward = F.cross_entropy(logits.T, targets, reduction="none")
        return logits, (forward + backward) / 2

    @staticmethod
    def count_objective_items(inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The masked patches (`"mim"`) and the pages with a masked patch (`"page_contrast"`) of `inputs`."""
        bool_masked_pos = inputs["bool_masked_pos"]
        return {"mim": bool_masked_pos.sum(), "page_contrast": _contrasted_pages(bool_masked_pos).sum()}

    @torch.no_grad()
    def chance_levels(
        self, batch: Mapping[str, torch.Tensor], log_frequencies: torch.Tensor | None = None
    ) -> dict[str, float]:
        """
        The loss of a model that ignores the page: SimMIM's ([`simmim_chance_level`], the median pixel) and the page
        contrast's, `log(pages)` (the same similarity to every page of the batch). `log_frequencies` is unused.
        """
        pages = int(_contrasted_pages(batch["bool_masked_pos"]).sum())
        return {
            "mim": simmim_chance_level(batch["pixel_values"], batch["bool_masked_pos"]),
            "page_contrast": math.log(pages) if pages else 0.0,
        }


def _contrasted_pages(bool_masked_pos: torch.Tensor) -> torch.Tensor:
    """The pages that take part in the page contrast: those with at least one masked patch (see the model's
    docstring)."""
    return bool_masked_pos.bool().any(dim=1)


def _share(local: torch.Tensor, step: torch.Tensor | int | None) -> torch.Tensor | float:
    """The weight of a batch mean over `local` items in the step's mean over `step` items (1 without a count)."""
    if step is None:
        return 1.0
    return local.float() / torch.as_tensor(step, device=local.device, dtype=torch.float32).clamp(min=1)


__all__ = ["ViTForPagePreTraining", "ViTForPagePreTrainingOutput"]
