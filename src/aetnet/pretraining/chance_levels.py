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
from collections.abc import Iterable, Mapping, Sequence

import torch

from ..alignment import prior_entropy


def masked_token_entropy(labels: torch.Tensor) -> float:
    """The entropy (nats) of the frequencies of the masked tokens (`labels != -100`) of one batch: the loss of the
    best constant prediction of *these* tokens, below what a model that learns the corpus' token frequencies can
    reach (a small sample's frequencies fit it better than the corpus'); [`token_log_frequencies`] gives that level."""
    return prior_entropy(torch.bincount(labels[labels != -100].flatten().cpu()))


def token_log_frequencies(
    sequences: Iterable[Sequence[int]], vocab_size: int, special_ids: Iterable[int] = ()
) -> torch.Tensor:
    """
    The log-frequency of each token of the vocabulary in a corpus of token-id `sequences` (a training set's
    `input_ids`), special tokens (never masked) left out, add-one smoothed: the prediction of a masked-language model
    that learns the unigram prior of its training corpus and reads no context. Its cross-entropy on the masked tokens
    ([`mlm_chance_level`]) is the MLM chance level.
    """
    counts = torch.ones(vocab_size, dtype=torch.float64)
    for sequence in sequences:
        # An id outside the vocabulary is an upstream bug: the shapes then differ and this raises.
        counts += torch.bincount(torch.as_tensor(sequence, dtype=torch.long).flatten(), minlength=vocab_size)
    special = torch.as_tensor(sorted(set(special_ids)), dtype=torch.long)
    counts[special] = 0
    return (counts / counts.sum()).log()


def mlm_chance_level(labels: torch.Tensor, log_frequencies: torch.Tensor | None = None) -> float:
    """The MLM loss, on the masked tokens of `labels`, of a model that predicts token frequencies alone: the
    cross-entropy under the corpus' `log_frequencies` ([`token_log_frequencies`]) when given, otherwise the batch's
    own frequency entropy ([`masked_token_entropy`], lower)."""
    if log_frequencies is None:
        return masked_token_entropy(labels)
    masked = labels[labels != -100].flatten().cpu()
    return float(-log_frequencies[masked].mean()) if masked.numel() else 0.0


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
def chance_levels(
    model: torch.nn.Module, batch: Mapping[str, torch.Tensor], log_frequencies: torch.Tensor | None = None
) -> dict[str, float]:
    """
    The chance levels of `model`'s objectives on `batch`: the model's own `chance_levels` when it has one
    ([`LayoutLMv3ForPreTraining`]); for a masked language model (`labels`, e.g. `RobertaForMaskedLM`), `"mlm"`
    ([`mlm_chance_level`] with the corpus' `log_frequencies`) and `"mlm_uniform"` (`log(vocab_size)`, a uniform
    guess); for a masked image model (`bool_masked_pos` and `pixel_values`, e.g. `ViTForMaskedImageModeling`),
    `"mim"` ([`simmim_chance_level`]). `{}` for another batch.
    """
    if hasattr(model, "chance_levels"):
        return dict(model.chance_levels(batch, log_frequencies))
    if torch.is_tensor(batch.get("labels")):
        level = mlm_chance_level(batch["labels"], log_frequencies)
        return {"mlm": level, "mlm_uniform": math.log(model.config.vocab_size)}
    if torch.is_tensor(batch.get("bool_masked_pos")) and torch.is_tensor(batch.get("pixel_values")):
        return {"mim": simmim_chance_level(batch["pixel_values"], batch["bool_masked_pos"])}
    return {}


def average_chance_levels(
    model: torch.nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    log_frequencies: torch.Tensor | None = None,
) -> dict[str, float]:
    """[`chance_levels`] of each batch, averaged over `batches` (each level over the batches that have it)."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for batch in batches:
        for name, value in chance_levels(model, batch, log_frequencies).items():
            sums[name] = sums.get(name, 0.0) + value
            counts[name] = counts.get(name, 0) + 1
    return {name: sums[name] / counts[name] for name in sums}


__all__ = [
    "average_chance_levels",
    "chance_levels",
    "masked_token_entropy",
    "mlm_chance_level",
    "simmim_chance_level",
    "token_log_frequencies",
]
