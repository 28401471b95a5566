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
Chance levels of the pre-training objectives: the loss, on a collated batch, of the best prediction that ignores the
page, so that a logged loss can be read against it (an objective whose loss stays at its chance level learns
nothing). [`LayoutLMv3ForPreTraining.chance_levels`] gives those of its three objectives; [`chance_levels`] also
those of the aligners' stock models (masked language modelling, SimMIM), and [`average_chance_levels`] averages
them over batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch

from ..alignment import prior_entropy


def masked_token_entropy(labels: torch.Tensor) -> float:
    """The entropy (nats) of the frequencies of the masked tokens (`labels != -100`): the masked-language-modelling
    loss of the best prediction of token frequencies alone, a model that reads no context."""
    return prior_entropy(torch.bincount(labels[labels != -100].flatten().cpu()))


def simmim_chance_level(pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor) -> float:
    """
    SimMIM's loss (`ViTForMaskedImageModeling`: L1 over the masked pixels) of the best constant prediction: each
    channel's median of the masked pixels. `bool_masked_pos` is `(B, num_patches)` over a square grid of patches.
    """
    batch, channels, height, width = pixel_values.shape
    grid = math.isqrt(bool_masked_pos.shape[1])
    mask = bool_masked_pos.bool().view(batch, grid, grid).cpu()
    mask = mask.repeat_interleave(height // grid, dim=1).repeat_interleave(width // grid, dim=2)
    values = pixel_values.detach().float().cpu().transpose(0, 1)[:, mask]  # (C, masked pixels)
    if values.shape[1] == 0:
        return 0.0
    return float((values - values.median(dim=1, keepdim=True).values).abs().mean())


@torch.no_grad()
def chance_levels(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """
    The chance levels of `model`'s objectives on `batch`: the model's own `chance_levels` when it has one
    ([`LayoutLMv3ForPreTraining`]); for a masked language model (`labels`, e.g. `RobertaForMaskedLM`), `"mlm"`
    (the masked tokens' frequency entropy) and `"mlm_uniform"` (`log(vocab_size)`, a uniform guess); for a masked
    image model (`bool_masked_pos` and `pixel_values`, e.g. `ViTForMaskedImageModeling`), `"mim"`
    ([`simmim_chance_level`]). `{}` for another batch.
    """
    if hasattr(model, "chance_levels"):
        return dict(model.chance_levels(batch))
    if torch.is_tensor(batch.get("labels")):
        return {"mlm": masked_token_entropy(batch["labels"]), "mlm_uniform": math.log(model.config.vocab_size)}
    if torch.is_tensor(batch.get("bool_masked_pos")) and torch.is_tensor(batch.get("pixel_values")):
        return {"mim": simmim_chance_level(batch["pixel_values"], batch["bool_masked_pos"])}
    return {}


def average_chance_levels(model: torch.nn.Module, batches: Iterable[Mapping[str, torch.Tensor]]) -> dict[str, float]:
    """[`chance_levels`] of each batch, averaged over `batches` (each level over the batches that have it)."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for batch in batches:
        for name, value in chance_levels(model, batch).items():
            sums[name] = sums.get(name, 0.0) + value
            counts[name] = counts.get(name, 0) + 1
    return {name: sums[name] / counts[name] for name in sums}


__all__ = ["average_chance_levels", "chance_levels", "masked_token_entropy", "simmim_chance_level"]
