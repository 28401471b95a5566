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
A locality prior for LayoutLMv3's 2D relative-position bias, for models trained from random weights.

LayoutLMv3 adds to every attention score a learnt bias per head for the bucketed horizontal and vertical distance
between two tokens' boxes (text tokens' and patches' alike). transformers looks the tables up under `no_grad`, so
they never train: in a pretrained checkpoint they are what pre-training made of them, which includes attending to
what lies nearby on the page; from random weights they stay noise of standard deviation 0.02 for good. Then the
only way a text token can find its own region of the page is through the learnt 2D embeddings and patch positions,
which LayoutLMv2's text-image alignment and matching do not teach in a fine-tuning run's steps (TIA stays at its
label prior; BENCHMARKS.md has the learnability runs with and without this prior).

`spatial_bias_init="locality"` (an `AETNetConfig` field) sets both tables to `strength * exp(-|d| / scale)` in
attention-logit units per axis, `d` the distance between the two boxes' reference coordinates (x0, y1) in 0-1000
units, `scale` half a patch cell: a token attends more to the patches and words around its box, as a pretrained
LayoutLMv3 does. It only sets initial values: a checkpoint's tables replace them.

This module imports only torch and transformers, so that it ships as Hub remote code with `modeling_aetnet.py`.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import initialization as init


# Attention-logit units per axis at distance 0: both axes together give a near token about e^5 the weight of a far one.
LOCALITY_STRENGTH = 2.5


@torch.no_grad()
def locality_bias_(encoder: nn.Module, grid_size: int, strength: float = LOCALITY_STRENGTH) -> None:
    """
    Set `encoder.rel_pos_x_bias` and `rel_pos_y_bias` (LayoutLMv3Encoder's tables, `(heads, buckets)`) in place to
    the locality prior, every head alike. Each bucket's distance is the mean |d| of the distances it holds (within
    the 0-1000 page), from the encoder's own bucketing rule; transformers divides the bias by `sqrt(head_dim)`, which
    the tables are multiplied by so that `strength` is in logit units.
    """
    config = encoder.config
    head_dim = config.hidden_size // config.num_attention_heads
    distances = torch.arange(-1000, 1001)
    buckets = encoder.relative_position_bucket(
        distances, num_buckets=encoder.rel_2d_pos_bins, max_distance=encoder.max_rel_2d_pos
    )
    scale = 500.0 / grid_size  # half a patch cell, in box units
    for table in (encoder.rel_pos_x_bias, encoder.rel_pos_y_bias):
        num_buckets = table.weight.shape[1]
        held = torch.zeros(num_buckets).index_add_(0, buckets, distances.abs().float())
        count = torch.zeros(num_buckets).index_add_(0, buckets, torch.ones(len(distances)))
        mean_distance = torch.where(count > 0, held / count.clamp(min=1), torch.tensor(1000.0))
        bias = strength * math.sqrt(head_dim) * torch.exp(-mean_distance / scale)
        # transformers' `init.copy_`: a no-op on tables a checkpoint has just loaded.
        init.copy_(table.weight, bias.to(table.weight.dtype)[None].expand_as(table.weight))


__all__ = ["LOCALITY_STRENGTH", "locality_bias_"]
