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
What the alignment objectives (`objective_*.py`) share, public so that a plug-in objective can use it too: the
float32 contrastive numerics, the distributed gather and seed, the token ids no objective masks or predicts, and
`weighted_objective`, the one place where the task loss and the weighted terms are combined.

Every contrastive objective computes its logits in float32 with autocast disabled: the temperature can fall to its
floor, where a half-precision logit overflows long before a float32 one does. Masked logits use a large finite value
rather than -inf so that fully masked rows (a batch of one document, a page without text) give a zero loss, not NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


MASKED_LOGIT = -1e4


def as_float32(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """The tensors in float32, in order: a contrastive loss is computed in float32 whatever the autocast dtype."""
    return [t.float() for t in tensors]


def no_autocast(device: torch.device) -> torch.autocast:
    """A context without autocast on `device`'s type, so that the float32 logits are not cast back to half precision."""
    return torch.autocast(device_type=device.type, enabled=False)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a target distribution per row (momentum distillation's soft targets), batch mean."""
    return -(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def logits_against_queue(
    anchor: torch.Tensor,
    batch_m: torch.Tensor,
    queue: torch.Tensor,
    temp: torch.Tensor,
    queue_valid: torch.Tensor | None,
) -> torch.Tensor:
    """
    Similarities of `anchor` (B, E) to the momentum features of the batch (B, E) then the queue (E, Q), divided by
    `temp`; the queue entries that hold no feature yet (`queue_valid` False) get `MASKED_LOGIT`.
    """
    logits = torch.cat([anchor @ batch_m.t(), anchor @ queue], dim=1) / temp
    if queue_valid is not None:
        column_valid = torch.cat([queue_valid.new_ones(batch_m.shape[0]), queue_valid])
        logits = logits.masked_fill(~column_valid, MASKED_LOGIT)
    return logits


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


def distributed_seed(seed: int) -> int:
    """`seed` made distinct per process of a distributed run, so that the ranks do not all draw the same masks."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return seed + 100_003 * torch.distributed.get_rank()
    return seed


def special_token_ids(layout_config) -> list[int]:
    """The ids of `<s>`, `</s>` and `<pad>` in LayoutLMv3's config (the tokens that no objective masks or predicts)."""
    ids = (layout_config.bos_token_id, layout_config.eos_token_id, layout_config.pad_token_id)
    return sorted({i for i in ids if i is not None})


def weighted_objective(
    task_loss: torch.Tensor | None, alignment_losses: dict[str, torch.Tensor] | None, weights: dict[str, float]
) -> torch.Tensor | None:
    """
    AETNet's training objective, `task_loss + sum_k weights[k] * alignment_losses[k]`: the one place that combines
    the terms, for the models' `loss` and `AETNetTrainer` alike. A term whose weight is 0 is left out of the graph
    (so that an objective switched off by its weight costs no backward pass); None when there is nothing to add.
    """
    loss = task_loss
    for name, value in (alignment_losses or {}).items():
        weight = weights.get(name, 1.0)
        if weight:
            loss = weight * value if loss is None else loss + weight * value
    return loss


__all__ = [
    "MASKED_LOGIT",
    "as_float32",
    "concat_all_gather",
    "distributed_seed",
    "logits_against_queue",
    "no_autocast",
    "soft_cross_entropy",
    "special_token_ids",
    "weighted_objective",
]
