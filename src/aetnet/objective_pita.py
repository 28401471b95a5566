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
"""PITA, patch-level image-text alignment: each image patch against the mean of the OCR tokens inside it."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .alignment import AlignmentFeatures, AlignmentObjective, register_objective
from .loss_utils import MASKED_LOGIT, as_float32, no_autocast


PITA_LOSSES = ("infonce", "cosine")
PITA_SPAN_POLICIES = ("center", "drop", "all")


def assign_tokens_to_cells(bbox: torch.Tensor, grid_size: int, span_policy: str = "center") -> torch.Tensor:
    """
    Map token boxes (0-1000 units) to the patch cells of a `grid_size` x `grid_size` page grid, cells of
    1000 / grid_size units. Returns a (B, L) long tensor of row-major cell indices, or -1 for a token that `"drop"`
    ignores because its box spans several cells. A box that ends exactly on a cell border stays in the earlier cell;
    a box centre exactly on a border goes to the later cell. (`"all"` is handled by `token_cell_overlap`.)
    """
    bbox = bbox.long()
    x0, y0, x1, y1 = bbox.unbind(-1)
    last = grid_size - 1
    if span_policy == "center":
        col = ((x0 + x1) * grid_size).div(2000, rounding_mode="floor").clamp(0, last)
        row = ((y0 + y1) * grid_size).div(2000, rounding_mode="floor").clamp(0, last)
        return row * grid_size + col
    if span_policy != "drop":
        raise ValueError(f"`span_policy` must be 'center' or 'drop' here, got {span_policy!r}")
    c0, r0, c1, r1 = _cell_spans(x0, y0, x1, y1, grid_size)
    cells = r0 * grid_size + c0
    return torch.where((c0 == c1) & (r0 == r1), cells, torch.full_like(cells, -1))


def _cell_spans(x0, y0, x1, y1, grid_size: int):
    last = grid_size - 1
    c0 = (x0 * grid_size).div(1000, rounding_mode="floor").clamp(0, last)
    r0 = (y0 * grid_size).div(1000, rounding_mode="floor").clamp(0, last)
    c1 = torch.maximum((x1 * grid_size - 1).div(1000, rounding_mode="floor").clamp(0, last), c0)
    r1 = torch.maximum((y1 * grid_size - 1).div(1000, rounding_mode="floor").clamp(0, last), r0)
    return c0, r0, c1, r1


def token_cell_overlap(bbox: torch.Tensor, token_mask: torch.Tensor, grid_size: int) -> torch.Tensor:
    """(B, cells, L) float matrix: 1 where a valid token's box overlaps the cell (the `"all"` span policy)."""
    x0, y0, x1, y1 = bbox.long().unbind(-1)
    c0, r0, c1, r1 = _cell_spans(x0, y0, x1, y1, grid_size)
    index = torch.arange(grid_size, device=bbox.device)
    in_cols = (index[None, None, :] >= c0[..., None]) & (index[None, None, :] <= c1[..., None])  # (B, L, G)
    in_rows = (index[None, None, :] >= r0[..., None]) & (index[None, None, :] <= r1[..., None])
    overlap = (in_rows[..., :, None] & in_cols[..., None, :]).flatten(2)  # (B, L, G*G), row-major cells
    return (overlap & token_mask[..., None]).transpose(1, 2).float()


def pool_tokens_per_cell(
    token_feat: torch.Tensor, bbox: torch.Tensor, token_mask: torch.Tensor, grid_size: int, span_policy: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Mean token feature of every patch cell. Returns `(cell_feat, cell_count)` of shapes (B, G*G, E) and (B, G*G).

    "center" and "drop" scatter each token into one cell with `index_add_` (invalid tokens go to a discarded extra
    row, so nothing synchronises with the host); "all" multiplies by the sparse-in-spirit overlap matrix.
    """
    batch_size, seq_len, dim = token_feat.shape
    num_cells = grid_size * grid_size
    if span_policy == "all":
        overlap = token_cell_overlap(bbox, token_mask, grid_size).to(token_feat.dtype)
        return torch.bmm(overlap, token_feat), overlap.sum(dim=-1)
    cells = assign_tokens_to_cells(bbox, grid_size, span_policy)
    valid = token_mask & (cells >= 0)
    offsets = torch.arange(batch_size, device=cells.device)[:, None] * num_cells
    flat = torch.where(valid, cells + offsets, torch.full_like(cells, batch_size * num_cells)).flatten()
    sums = token_feat.new_zeros(batch_size * num_cells + 1, dim).index_add_(0, flat, token_feat.reshape(-1, dim))
    counts = token_feat.new_zeros(batch_size * num_cells + 1).index_add_(0, flat, valid.flatten().to(token_feat.dtype))
    return sums[:-1].view(batch_size, num_cells, dim), counts[:-1].view(batch_size, num_cells)


class PatchTokenAlignmentLoss(nn.Module):
    """
    PITA: patch-level image-text alignment. Each image patch cell is paired with the mean feature of the OCR tokens
    whose boxes fall in it (special, padding and box-less tokens excluded); cells without tokens are left out.

    `loss="infonce"`: bidirectional InfoNCE over the occupied cells of the same page (patch -> occupied cells' text,
    text -> all patches), on normalised features with the learnable temperature. `loss="cosine"`: the paper's
    positive-only form, 1 - mean cosine similarity over occupied cells.
    """

    def __init__(self, grid_size: int, loss: str = "infonce", span_policy: str = "center"):
        super().__init__()
        self.grid_size = grid_size
        self.loss = loss
        self.span_policy = span_policy

    def forward(
        self,
        patch_feat: torch.Tensor,
        token_feat: torch.Tensor,
        bbox: torch.Tensor,
        token_mask: torch.Tensor,
        temp: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            patch_feat: (B, G*G, E) patch features in row-major grid order (no CLS).
            token_feat: (B, L, E) token features.
            bbox: (B, L, 4) token boxes in 0-1000 units.
            token_mask: (B, L) bool, True for tokens that may be aligned.
            temp: scalar temperature (InfoNCE only).
        """
        with no_autocast(patch_feat.device):
            patch_feat, token_feat = as_float32(patch_feat, token_feat)
            cell_sum, cell_count = pool_tokens_per_cell(token_feat, bbox, token_mask, self.grid_size, self.span_policy)
            occupied = cell_count > 0  # (B, C)
            patch_feat = F.normalize(patch_feat, dim=-1)
            cell_feat = F.normalize(cell_sum / cell_count.clamp(min=1)[..., None], dim=-1)
            if self.loss == "cosine":
                # 1 - mean cosine over the occupied cells; a batch without any (no boxed text) contributes 0.
                cosine = (patch_feat * cell_feat).sum(dim=-1)
                return ((1 - cosine) * occupied).sum() / occupied.sum().clamp(min=1)
            logits = torch.bmm(patch_feat, cell_feat.transpose(1, 2)) / temp.float()  # (B, patch cell, text cell)
            targets = torch.arange(logits.shape[1], device=logits.device).expand(logits.shape[0], -1)
            i2t = F.cross_entropy(
                logits.masked_fill(~occupied[:, None, :], MASKED_LOGIT).flatten(0, 1),
                targets.flatten(),
                reduction="none",
            )
            t2i = F.cross_entropy(logits.transpose(1, 2).flatten(0, 1), targets.flatten(), reduction="none")
            rows = occupied.flatten().float()
            return ((i2t + t2i) * rows).sum() / (2 * rows.sum().clamp(min=1))


@register_objective("pita")
class PatchTokenAlignment(AlignmentObjective):
    """
    PITA on the online projected patches and tokens of the boxed real tokens (`PatchTokenAlignmentLoss`).

    Settings (`alignment_objectives={"pita": {...}}`):
        loss (`str`, defaults to `"infonce"`): the form of the objective. `"infonce"`: bidirectional InfoNCE between
            each occupied cell's image patch and its mean token feature, the other occupied cells of the page as
            negatives (the official code's form, on normalised features with the learnable temperature, empty
            cells masked). `"cosine"`: the paper's form, 1 - mean cosine similarity over occupied cells; it has no
            negatives and so can collapse.
        span_policy (`str`, defaults to `"center"`): the cell of a token whose box spans several cells: `"center"`
            the cell holding the box centre, `"drop"` the token is ignored (the official code; drops most
            segment-level boxes), `"all"` the token counts in every cell it overlaps.
    """

    modalities = ("image", "text")  # patches against the tokens inside them

    def __init__(self, config, loss: str = "infonce", span_policy: str = "center"):
        super().__init__(config)
        for setting, value, choices in (("loss", loss, PITA_LOSSES), ("span_policy", span_policy, PITA_SPAN_POLICIES)):
            if value not in choices:
                raise ValueError(f"PITA's `{setting}` must be one of {list(choices)}, got {value!r}")
        self.loss = PatchTokenAlignmentLoss(config.grid_size, loss, span_policy)
        if loss == "cosine":  # no temperature in the cosine form
            self.trains = tuple(part for part in self.trains if part != "temp")

    def forward(self, features: AlignmentFeatures) -> torch.Tensor:
        f = features
        return self.loss(f.vision_proj(f.patch_embeds), f.text_proj(f.text_embeds), f.bbox, f.boxed_tokens, f.temp)

    def chance_level(self, features: AlignmentFeatures) -> float:
        """
        `"cosine"`: 1, the loss of features with zero expected cosine (random directions). `"infonce"`: uniform logits
        give, per occupied cell of a page with K occupied cells out of C, log K for patch -> text (the empty cells are
        masked) and log C for text -> patch; averaged over the occupied cells as the loss averages them.
        """
        if self.loss.loss == "cosine":
            return 1.0
        f = features
        ones = torch.ones(*f.bbox.shape[:2], 1, device=f.bbox.device)
        _, counts = pool_tokens_per_cell(ones, f.bbox, f.boxed_tokens, self.loss.grid_size, self.loss.span_policy)
        occupied = (counts > 0).sum(dim=1).double().cpu()  # K per page
        if occupied.sum() == 0:
            return 0.0
        per_page = occupied * (torch.log(occupied.clamp(min=1)) + math.log(counts.shape[1]))
        return float(per_page.sum() / (2 * occupied.sum()))


__all__ = [
    "PITA_LOSSES",
    "PITA_SPAN_POLICIES",
    "PatchTokenAlignment",
    "PatchTokenAlignmentLoss",
    "assign_tokens_to_cells",
    "pool_tokens_per_cell",
    "token_cell_overlap",
]
