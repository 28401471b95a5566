"""
The four AETNet alignment objectives as small modules over tensors, plus the distributed gather they need.

Every objective computes its logits in float32 with autocast disabled: the temperature can fall to 0.001, so a
half-precision logit overflows long before a float32 one does. Masked logits use a large finite value rather than
-inf so that fully masked rows (a batch of one document, a page without text) give a zero loss, not NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


MASKED_LOGIT = -1e4


def concat_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from every rank along dim 0 (no gradient); the identity outside torch.distributed."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return tensor
    world_size = torch.distributed.get_world_size()
    if world_size == 1:
        return tensor
    gathered = [torch.empty_like(tensor) for _ in range(world_size)]
    torch.distributed.all_gather(gathered, tensor.contiguous())
    return torch.cat(gathered, dim=0)


def _float32(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.float() for t in tensors]


def _no_autocast(device: torch.device):
    return torch.autocast(device_type=device.type, enabled=False)


def _soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def _logits_against_queue(
    anchor: torch.Tensor, batch_m: torch.Tensor, queue: torch.Tensor, temp: torch.Tensor, queue_valid: torch.Tensor | None
) -> torch.Tensor:
    """Similarities of `anchor` (B, E) to the momentum features of the batch (B, E) then the queue (E, Q)."""
    logits = torch.cat([anchor @ batch_m.t(), anchor @ queue], dim=1) / temp
    if queue_valid is not None:
        column_valid = torch.cat([queue_valid.new_ones(batch_m.shape[0]), queue_valid])
        logits = logits.masked_fill(~column_valid, MASKED_LOGIT)
    return logits


class DocumentContrastiveLoss(nn.Module):
    """
    DITC: document-level image-text contrastive loss (ALBEF's ITC with momentum distillation).

    Each online image feature must pick its own document's momentum text feature among the batch's momentum text
    features and the text queue, and symmetrically for text. With `alpha > 0` the one-hot targets are mixed with the
    momentum model's own similarity distribution (momentum distillation); `alpha = 0` is plain InfoNCE.
    """

    def forward(
        self,
        image_feat: torch.Tensor,
        text_feat: torch.Tensor,
        image_feat_m: torch.Tensor,
        text_feat_m: torch.Tensor,
        image_queue: torch.Tensor,
        text_queue: torch.Tensor,
        temp: torch.Tensor,
        alpha: float = 0.0,
        queue_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        with _no_autocast(image_feat.device):
            image_feat, text_feat, image_feat_m, text_feat_m, image_queue, text_queue, temp = _float32(
                image_feat, text_feat, image_feat_m, text_feat_m, image_queue, text_queue, temp
            )
            sim_i2t = _logits_against_queue(image_feat, text_feat_m, text_queue, temp, queue_valid)
            sim_t2i = _logits_against_queue(text_feat, image_feat_m, image_queue, temp, queue_valid)
            with torch.no_grad():
                one_hot = torch.zeros_like(sim_i2t)
                one_hot.fill_diagonal_(1.0)
                targets_i2t = one_hot
                targets_t2i = one_hot
                if alpha > 0:
                    sim_i2t_m = _logits_against_queue(image_feat_m, text_feat_m, text_queue, temp, queue_valid)
                    sim_t2i_m = _logits_against_queue(text_feat_m, image_feat_m, image_queue, temp, queue_valid)
                    targets_i2t = alpha * sim_i2t_m.softmax(dim=1) + (1 - alpha) * one_hot
                    targets_t2i = alpha * sim_t2i_m.softmax(dim=1) + (1 - alpha) * one_hot
            return (_soft_cross_entropy(sim_i2t, targets_i2t) + _soft_cross_entropy(sim_t2i, targets_t2i)) / 2


class IntraModalContrastiveLoss(nn.Module):
    """
    IMC: intra-modal contrastive loss. The online image feature must pick the momentum feature of the same page (the
    momentum encoder sees an augmented view) among the batch and the image queue; likewise for text.
    """

    def forward(
        self,
        image_feat: torch.Tensor,
        text_feat: torch.Tensor,
        image_feat_m: torch.Tensor,
        text_feat_m: torch.Tensor,
        image_queue: torch.Tensor,
        text_queue: torch.Tensor,
        temp: torch.Tensor,
        queue_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        with _no_autocast(image_feat.device):
            image_feat, text_feat, image_feat_m, text_feat_m, image_queue, text_queue, temp = _float32(
                image_feat, text_feat, image_feat_m, text_feat_m, image_queue, text_queue, temp
            )
            sim_i2i = _logits_against_queue(image_feat, image_feat_m, image_queue, temp, queue_valid)
            sim_t2t = _logits_against_queue(text_feat, text_feat_m, text_queue, temp, queue_valid)
            targets = torch.arange(image_feat.shape[0], device=image_feat.device)
            return (F.cross_entropy(sim_i2i, targets) + F.cross_entropy(sim_t2t, targets)) / 2


class GlobalLocalContrastiveLoss(nn.Module):
    """
    GLITC for one modality: each document's global (online CLS) feature against the momentum local features (patches
    or tokens) of the same document as positives, and the local features of the other documents of the batch as
    negatives, one InfoNCE term per positive local, averaged over the valid locals of each document.

    Every positive of document n shares the same negatives, so the negative log-sum-exp is computed once per document:
    memory is B x B x N instead of the B x N x (1 + B x N) logits of a direct implementation.
    """

    def forward(
        self, global_feat: torch.Tensor, local_feat_m: torch.Tensor, local_mask: torch.Tensor, temp: torch.Tensor
    ) -> torch.Tensor:
        """
        Args:
            global_feat: (B, E) normalised online global features.
            local_feat_m: (B, N, E) normalised momentum local features.
            local_mask: (B, N) bool, True for real locals (padding and special tokens False).
            temp: scalar temperature.
        """
        with _no_autocast(global_feat.device):
            global_feat, local_feat_m, temp = _float32(global_feat, local_feat_m, temp)
            batch_size = global_feat.shape[0]
            scores = torch.einsum("ne,jke->njk", global_feat, local_feat_m) / temp  # (B anchors, B docs, N locals)
            positives = scores.diagonal(dim1=0, dim2=1).t()  # (B, N): scores[n, n, k]
            other_doc = ~torch.eye(batch_size, dtype=torch.bool, device=scores.device)
            negative_mask = other_doc[:, :, None] & local_mask[None, :, :]
            negative_lse = scores.masked_fill(~negative_mask, MASKED_LOGIT).flatten(1).logsumexp(dim=-1)
            # -log(e^pos / (e^pos + sum e^neg)) = softplus(lse(neg) - pos)
            per_local = F.softplus(negative_lse[:, None] - positives)
            mask = local_mask.float()
            per_doc = (per_local * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
            has_locals = (mask.sum(dim=1) > 0).float()
            return (per_doc * has_locals).sum() / has_locals.sum().clamp(min=1)


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
        with _no_autocast(patch_feat.device):
            patch_feat, token_feat = _float32(patch_feat, token_feat)
            cell_sum, cell_count = pool_tokens_per_cell(token_feat, bbox, token_mask, self.grid_size, self.span_policy)
            occupied = cell_count > 0  # (B, C)
            patch_feat = F.normalize(patch_feat, dim=-1)
            cell_feat = F.normalize(cell_sum / cell_count.clamp(min=1)[..., None], dim=-1)
            if self.loss == "cosine":
                cosine = (patch_feat * cell_feat).sum(dim=-1)
                return 1 - (cosine * occupied).sum() / occupied.sum().clamp(min=1)
            logits = torch.bmm(patch_feat, cell_feat.transpose(1, 2)) / temp.float()  # (B, patch cell, text cell)
            targets = torch.arange(logits.shape[1], device=logits.device).expand(logits.shape[0], -1)
            i2t = F.cross_entropy(
                logits.masked_fill(~occupied[:, None, :], MASKED_LOGIT).flatten(0, 1), targets.flatten(), reduction="none"
            )
            t2i = F.cross_entropy(logits.transpose(1, 2).flatten(0, 1), targets.flatten(), reduction="none")
            rows = occupied.flatten().float()
            return ((i2t + t2i) * rows).sum() / (2 * rows.sum().clamp(min=1))


__all__ = [
    "DocumentContrastiveLoss",
    "GlobalLocalContrastiveLoss",
    "IntraModalContrastiveLoss",
    "PatchTokenAlignmentLoss",
    "assign_tokens_to_cells",
    "concat_all_gather",
    "pool_tokens_per_cell",
    "token_cell_overlap",
]
