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
TIA, text-image alignment (LayoutLMv2, Xu et al., ACL 2021, arXiv 2012.14740): cover the page-image regions of
some text segments and let a token head on LayoutLMv3's fused text outputs tell, for every token, whether its
region was covered. The fusion model has to look at the right place of the page for each token, which is a
fine-grained, token-level alignment of text and image.

LayoutLMv2 covers random text lines; here a segment is the tokens that share one box (FUNSD / CORD boxes are segment
level, an OCR line gives one box per line), and about `cover_ratio` of each page's segments are covered, at least
one on a page that has any. Covering happens in pixel space on the fusion model's `pixel_values` only (the ViT
aligner and the momentum view keep the uncovered page, or PITA's cell targets would no longer match the page) and
needs no extra forward: the covered page replaces the fusion input of the step, so the task loss also sees covered
pages (about `cover_ratio` of the boxed text regions per page); the task labels are not changed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .alignment import AlignmentFeatures, AlignmentObjective, prior_entropy, register_objective
from .loss_utils import special_token_ids


def box_segments(bbox: torch.Tensor, boxed: torch.Tensor) -> torch.Tensor:
    """
    `(B, L)` long: for every boxed token, the position of the first boxed token of its page with the same box (its
    segment's representative); -1 for tokens that are not boxed.
    """
    same = (bbox[:, :, None, :] == bbox[:, None, :, :]).all(dim=-1) & boxed[:, None, :]  # (B, L, L)
    first = same.int().argmax(dim=-1)  # the first True along the row
    return torch.where(boxed, first, torch.full_like(first, -1))


def choose_segments(
    segments: torch.Tensor, cover_ratio: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """
    `(B, L)` bool: the tokens whose segment is covered. Each page covers `round(cover_ratio * segments)` of its
    distinct segments, at least one when it has any, chosen uniformly with `generator`.
    """
    positions = torch.arange(segments.shape[1], device=segments.device)
    representative = segments == positions  # one token per segment
    count = representative.sum(dim=1)
    quota = torch.where(count > 0, (count * cover_ratio).round().long().clamp(min=1), count)
    scores = torch.rand(segments.shape, generator=generator, device=segments.device)
    scores = scores.masked_fill(~representative, 2.0)  # non-representatives rank after every segment
    rank = scores.argsort(dim=1).argsort(dim=1)
    chosen = representative & (rank < quota[:, None])
    return chosen.gather(1, segments.clamp(min=0)) & (segments >= 0)


def box_pixel_mask(bbox: torch.Tensor, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """
    `(B, height, width)` bool: the pixels of the boxes (0-1000 units) of the selected `tokens`. A box covers the
    pixel rows `floor(y0 * height / 1000)` to `ceil(y1 * height / 1000)` (exclusive) and likewise for columns, so the
    whole box is covered, and at least one pixel per side.
    """

    def spans(start: torch.Tensor, end: torch.Tensor, size: int) -> torch.Tensor:
        first = (start * size).div(1000, rounding_mode="floor").clamp(0, size - 1)
        last = (-((-end * size).div(1000, rounding_mode="floor"))).clamp(max=size)  # ceil division
        last = torch.maximum(last, first + 1)
        index = torch.arange(size, device=bbox.device)
        return ((index >= first[..., None]) & (index < last[..., None])).float()  # (B, L, size)

    x0, y0, x1, y1 = bbox.long().unbind(-1)
    rows = spans(y0, y1, height) * tokens[..., None].float()
    cols = spans(x0, x1, width)
    return torch.bmm(rows.transpose(1, 2), cols) > 0  # a pixel is covered if any selected box has its row and column


def boxed_real_tokens(inputs: dict[str, torch.Tensor], special_ids: torch.Tensor) -> torch.Tensor:
    """Attended, non-special tokens with a non-zero box: the model's `boxed_tokens`, from the fusion inputs."""
    input_ids, bbox = inputs["input_ids"], inputs["bbox"]
    special = torch.isin(input_ids, special_ids.to(input_ids.device))
    return inputs["attention_mask"].bool() & ~special & (bbox != 0).any(dim=-1)


@register_objective("tia")
class TextImageAlignment(AlignmentObjective):
    """
    TIA: a `Linear(hidden, 2)` token head on the fused text outputs predicts whether each real, boxed token's
    segment was covered on the fusion model's page (label 1) or not (0); cross-entropy over those tokens. A token is
    covered exactly when its segment (the tokens sharing its box) was chosen; a token of an unchosen segment whose
    box overlaps a covered region counts as not covered.

    Settings:
        cover_ratio (`float`, defaults to 0.15): the share of each page's segments that are covered (LayoutLMv2's
            15% of lines), in (0, 1].
        fill_value (`float` or `"median"`, defaults to `"median"`): what covered pixels become, in the tensor's
            normalised units. `"median"`: each page's per-channel median, its background colour for text-dense
            pages, whatever the processor's normalisation; a number: that value on every channel (1.0 is white
            for LayoutLMv3's mean = std = 0.5; 0.0 would be mid-grey).
        seed (`int`, defaults to 0): the seed of the covers' generator.
    """

    modalities = ("image", "text")  # covers the image regions of text segments
    needs_generator = True
    trains = ()  # only LayoutLMv3 and its own head

    def __init__(self, config, cover_ratio: float = 0.15, fill_value: float | str = "median", seed: int = 0):
        super().__init__(config)
        if not (isinstance(cover_ratio, (int, float)) and 0.0 < cover_ratio <= 1.0):
            raise ValueError(f"TIA's `cover_ratio` must be a number in (0, 1], got {cover_ratio!r}")
        if fill_value != "median" and not (isinstance(fill_value, (int, float)) and math.isfinite(fill_value)):
            raise ValueError(f"TIA's `fill_value` must be 'median' or a finite number, got {fill_value!r}")
        if not isinstance(seed, int):
            raise ValueError(f"TIA's `seed` must be an int, got {seed!r}")
        self.cover_ratio, self.fill_value, self.seed = float(cover_ratio), fill_value, seed
        layout = config.layout_config
        special = torch.tensor(special_token_ids(layout), dtype=torch.long)
        self.register_buffer("special_ids", special, persistent=False)
        self.head = nn.Linear(layout.hidden_size, 2)

    def prepare_fusion_inputs(self, inputs: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
        """Cover the chosen segments of the fusion input's page; `info` has `covered_tokens` and `covered_pixels`."""
        pixel_values, bbox = inputs["pixel_values"], inputs["bbox"]
        segments = box_segments(bbox, boxed_real_tokens(inputs, self.special_ids))
        covered_tokens = choose_segments(segments, self.cover_ratio, self.generator(pixel_values.device, self.seed))
        covered_pixels = box_pixel_mask(bbox, covered_tokens, *pixel_values.shape[-2:])
        if self.fill_value == "median":
            fill = pixel_values.flatten(2).median(dim=-1).values[..., None, None]  # (B, C, 1, 1)
        else:
            fill = torch.tensor(float(self.fill_value), dtype=pixel_values.dtype, device=pixel_values.device)
        covered = torch.where(covered_pixels[:, None], fill, pixel_values)  # a new tensor; the input is untouched
        return {**inputs, "pixel_values": covered}, {"covered_tokens": covered_tokens, "covered_pixels": covered_pixels}

    def forward(self, features: AlignmentFeatures) -> torch.Tensor:
        covered = features.prepared[self.name]["covered_tokens"]
        text = features.fusion_hidden_states[:, : features.input_ids.shape[1]]
        logits = self.head(text).float()
        labels = covered.long().masked_fill(~features.boxed_tokens, -100)
        if not features.boxed_tokens.any():  # no boxed text (e.g. box-less questions only): 0, still on the graph
            return logits.sum() * 0.0
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)

    def chance_level(self, features: AlignmentFeatures) -> float:
        """The entropy of this step's covered / not covered labels: a head that never looks at the page."""
        covered = features.prepared[self.name]["covered_tokens"][features.boxed_tokens]
        return prior_entropy(torch.stack([covered.sum(), (~covered).sum()]))


__all__ = ["TextImageAlignment", "box_pixel_mask", "box_segments", "boxed_real_tokens", "choose_segments"]
