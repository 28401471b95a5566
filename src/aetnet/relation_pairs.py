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
The candidate pairs of relation extraction and the checks of its inputs (see
[`~aetnet.modeling_aetnet_relation.AETNetForRelationExtraction`] for the input format): which `(head, tail)` entity
pairs a window offers, their gold labels, and the bounded negative sampling of training.

This module imports only torch, so that checkpoints can ship it as remote code with the relation model.
"""

import torch


ENTITY_PAD = -100
RELATION_PAD = -1


def validate_relation_inputs(
    entity_spans: torch.Tensor,
    entity_labels: torch.Tensor,
    relations: torch.Tensor | None,
    text_length: int,
    num_entity_labels: int,
) -> None:
    """Check shapes and values of the relation inputs; errors name the argument and the offending value."""
    if entity_spans is None or entity_labels is None:
        raise ValueError("Relation extraction needs `entity_spans` and `entity_labels`.")
    if entity_spans.ndim != 3 or entity_spans.shape[-1] != 2 or entity_labels.shape != entity_spans.shape[:2]:
        raise ValueError(
            f"`entity_spans` must be (batch, max_entities, 2) and `entity_labels` (batch, max_entities); got "
            f"{tuple(entity_spans.shape)} and {tuple(entity_labels.shape)}."
        )
    real = entity_labels != ENTITY_PAD
    bad = real & ((entity_labels < 0) | (entity_labels >= num_entity_labels))
    if bad.any():
        index = bad.nonzero()[0].tolist()
        raise ValueError(
            f"`entity_labels`{index} = {entity_labels[tuple(index)].item()}: must be in [0, {num_entity_labels}) "
            f"or {ENTITY_PAD} (padding)."
        )
    start, end = entity_spans.unbind(-1)
    bad = real & ((start < 0) | (end <= start) | (end > text_length))
    if bad.any():
        index = bad.nonzero()[0].tolist()
        raise ValueError(
            f"`entity_spans`{index} = {entity_spans[tuple(index)].tolist()}: must be [start, end) with "
            f"0 <= start < end <= {text_length} (the text length of `input_ids`)."
        )
    if relations is None:
        return
    if relations.ndim != 3 or relations.shape[-1] != 2 or relations.shape[0] != entity_labels.shape[0]:
        raise ValueError(f"`relations` must be (batch, max_links, 2), got {tuple(relations.shape)}.")
    padded = (relations == RELATION_PAD).all(-1)
    in_range = (relations >= 0) & (relations < entity_labels.shape[1])
    bad = ~padded & ~in_range.all(-1)
    if not bad.any():
        rows = torch.arange(relations.shape[0], device=relations.device)[:, None, None]
        is_real = real[rows, relations.clamp(0, entity_labels.shape[1] - 1)].all(-1)
        bad = ~padded & ~is_real
    if bad.any():
        index = bad.nonzero()[0].tolist()
        raise ValueError(
            f"`relations`{index} = {relations[tuple(index)].tolist()}: must be (head, tail) indices of real "
            f"entities of that window (not padding), or [{RELATION_PAD}, {RELATION_PAD}] for padding."
        )


def relation_candidates(
    entity_labels: torch.Tensor,
    relation_type_ids: list[tuple[int, int]],
    relations: torch.Tensor | None = None,
    max_negatives_per_head: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """
    The candidate pairs of a batch and, with `relations`, their 0/1 targets.

    Candidates are the `(head, tail)` pairs (`head != tail`) whose entity types are one of `relation_type_ids`. With
    `max_negatives_per_head` (training), a head entity keeps all its gold links and at most that many of its other
    candidates, drawn uniformly without replacement, so the number of pairs is at most
    `num_links + max_negatives_per_head * num_heads`; `None` keeps every candidate. A gold link whose types are not a
    relation type raises an error (it could never be predicted).

    Returns:
        `pairs` `(num_pairs, 3)` (`window, head, tail`, sorted) and `pair_labels` `(num_pairs,)` or `None`.
    """
    batch, num_entities = entity_labels.shape
    device = entity_labels.device
    allowed = torch.zeros(batch, num_entities, num_entities, dtype=torch.bool, device=device)
    for head_id, tail_id in relation_type_ids:
        allowed |= (entity_labels == head_id)[:, :, None] & (entity_labels == tail_id)[:, None, :]
    allowed &= ~torch.eye(num_entities, dtype=torch.bool, device=device)
    if relations is None:
        return allowed.nonzero(), None
    gold = torch.zeros_like(allowed)
    rows, links = (~(relations == RELATION_PAD).all(-1)).nonzero(as_tuple=True)
    gold[rows, relations[rows, links, 0], relations[rows, links, 1]] = True
    if (gold & ~allowed).any():
        window, head, tail = (gold & ~allowed).nonzero()[0].tolist()
        raise ValueError(
            f"`relations` of window {window} links entity {head} (label id {entity_labels[window, head].item()}) to "
            f"entity {tail} (label id {entity_labels[window, tail].item()}), which is not one of the relation types "
            f"{relation_type_ids} (label ids)."
        )
    keep = allowed
    if max_negatives_per_head is not None:
        negatives = allowed & ~gold
        # A random rank per candidate; a negative is kept when it ranks among the first k of its head's negatives.
        noise = torch.rand(negatives.shape, generator=generator, device="cpu").to(device)
        noise = noise.masked_fill(~negatives, 2.0)
        rank = noise.argsort(dim=-1).argsort(dim=-1)
        keep = gold | (negatives & (rank < max_negatives_per_head))
    pairs = keep.nonzero()
    return pairs, gold[pairs[:, 0], pairs[:, 1], pairs[:, 2]].long()


__all__ = ["ENTITY_PAD", "RELATION_PAD", "relation_candidates", "validate_relation_inputs"]
