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
Where two entities lie relative to each other, as a term of the relation logits (`config.relation_geometry="box"`,
the default; `"none"` is LayoutXLM's decoder exactly).

Why: LayoutLMv3 embeds a box through lookup tables of its coordinates, so "this answer is on the question's line,
right of it" is a comparison of table rows that a model has to learn before it can link anything. Pretrained weights
have learnt it; a model trained from random weights on a few hundred forms has not, while a rule on the boxes alone
links most answers (`benchmarks/bench_re_geometry.py` measures both). The head therefore also reads the pair's geometry directly: the offsets between
the two boxes and how much they overlap on each axis, through a small MLP that adds to the no-link / link logits.

An entity's box is the union of its tokens' boxes (`bbox`, 0-1000 units), so the inputs are those the model already
takes. This module imports only torch, so that checkpoints can ship it as remote code.
"""

import torch
from torch import nn


RELATION_GEOMETRIES = ("none", "box")
# Offsets of the tail's box from the head's (centres, near edges), both boxes' sizes, their overlap on each axis.
NUM_GEOMETRY_FEATURES = 10


def entity_boxes(bbox: torch.Tensor, entity_spans: torch.Tensor, entity_labels: torch.Tensor) -> torch.Tensor:
    """
    `(batch, max_entities, 4)` float boxes in 0-1 page units: the union of each entity's token boxes (`bbox` of
    shape `(batch, text_length, 4)` in 0-1000 units, `entity_spans` `[start, end)` token positions); padded entity
    slots (label -100) get `[0, 0, 0, 0]`.
    """
    positions = torch.arange(bbox.shape[1], device=bbox.device)
    inside = (positions >= entity_spans[..., :1]) & (positions < entity_spans[..., 1:])  # (B, E, L)
    inside = inside & (entity_labels >= 0)[..., None]
    boxes = bbox.float()[:, None]  # (B, 1, L, 4)
    far = torch.tensor(2000.0, device=bbox.device)
    low = torch.where(inside[..., None], boxes[..., :2], far).amin(2)
    high = torch.where(inside[..., None], boxes[..., 2:], -far).amax(2)
    union = torch.cat([low, high], dim=-1)
    return torch.where(inside.any(-1, keepdim=True), union, torch.zeros_like(union)) / 1000.0


def pair_geometry(head_boxes: torch.Tensor, tail_boxes: torch.Tensor) -> torch.Tensor:
    """
    `(num_pairs, NUM_GEOMETRY_FEATURES)`, from `(num_pairs, 4)` boxes in 0-1 units: the tail's centre minus the
    head's (x, y), the gaps from the head's far edges to the tail's near ones (x: tail left - head right, y: tail top
    - head bottom), the widths and heights of both, all in tenths of the page (offsets of a few hundredths of a page
    matter, and the MLP's initialisation expects inputs of about unit size); and the overlap of the two boxes on each
    axis as a share of the shorter extent (1: one contains the other; negative: a gap, clamped at -2).
    """
    head_size, tail_size = head_boxes[:, 2:] - head_boxes[:, :2], tail_boxes[:, 2:] - tail_boxes[:, :2]
    centre_offset = (tail_boxes[:, :2] + tail_boxes[:, 2:] - head_boxes[:, :2] - head_boxes[:, 2:]) / 2
    edge_gap = tail_boxes[:, :2] - head_boxes[:, 2:]
    overlap = torch.minimum(head_boxes[:, 2:], tail_boxes[:, 2:]) - torch.maximum(head_boxes[:, :2], tail_boxes[:, :2])
    overlap = overlap / torch.minimum(head_size, tail_size).clamp(min=1e-3)
    scaled = 10.0 * torch.cat([centre_offset, edge_gap, head_size, tail_size], dim=-1)
    return torch.cat([scaled, overlap.clamp(-2.0, 1.0)], dim=-1)


class PairGeometry(nn.Module):
    """An MLP from [`pair_geometry`] to no-link / link logits, added to the biaffine's."""

    def __init__(self, hidden_size: int = 64):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(NUM_GEOMETRY_FEATURES, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, 2),
        )

    def forward(self, head_boxes: torch.Tensor, tail_boxes: torch.Tensor) -> torch.Tensor:
        return self.mlp(pair_geometry(head_boxes, tail_boxes))


__all__ = ["NUM_GEOMETRY_FEATURES", "PairGeometry", "RELATION_GEOMETRIES", "entity_boxes", "pair_geometry"]
