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
Relation extraction (key-value linking, e.g. FUNSD question -> answer) on AETNet and, as its baseline, on stock
LayoutLMv3: one pair classifier, [`RelationExtractionHead`], over entity representations of the fused hidden states,
as LayoutXLM's relation decoder does.

Inputs, per window (`batch_size` windows of `text_length` tokens), padded to the longest window of the batch:

- `entity_spans` `(batch_size, max_entities, 2)`: `[start, end)` token positions of each entity in `input_ids`
  (end exclusive); ignored on padded slots.
- `entity_labels` `(batch_size, max_entities)`: the entity's type, an index into `config.entity_labels`
  (FUNSD: `["HEADER", "QUESTION", "ANSWER", "OTHER"]`); -100 marks a padded slot.
- `relations` `(batch_size, max_links, 2)`, for training: gold `(head, tail)` links as indices into the window's
  entities; rows of -1 are padding.

Candidates are all `(head, tail)` pairs whose types are one of `config.relation_types` (FUNSD: `[["QUESTION",
"ANSWER"]]`; see `relation_pairs.py`). In training the loss is the cross-entropy over all gold pairs plus, per head
entity, at most `config.relation_negatives_per_head` (k, default 16) non-links drawn uniformly at random: at most
`num_links + k * num_heads` pairs, so the pair features and logits that backward keeps grow linearly with the number
of entities (only the candidate selection, masks and random ranks without gradient, is `max_entities ** 2`).
Evaluation scores every candidate pair. With `config.relation_geometry="box"` (the default) the logits also get a
term from the two entities' boxes (their offsets and overlaps, `relation_geometry.py`), which a model trained from
random weights cannot link without; `"none"` is LayoutXLM's decoder exactly.

This module imports only torch, transformers and its sibling modules, so that `save_pretrained` ships it as Hub
remote code (`trust_remote_code=True`).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LayoutLMv3Config, LayoutLMv3Model, LayoutLMv3PreTrainedModel
from transformers.modeling_outputs import ModelOutput
from transformers.utils import can_return_tuple

from .loss_utils import weighted_objective
from .modeling_aetnet_base import AETNetModel, AETNetPreTrainedModel
from .relation_geometry import RELATION_GEOMETRIES, PairGeometry, entity_boxes
from .relation_pairs import ENTITY_PAD, relation_candidates, validate_relation_inputs


DEFAULT_ENTITY_LABELS = ["HEADER", "QUESTION", "ANSWER", "OTHER"]
DEFAULT_RELATION_TYPES = [["QUESTION", "ANSWER"]]
DEFAULT_NEGATIVES_PER_HEAD = 16
RELATION_POOLINGS = ("first", "mean")


@dataclass
class RelationExtractionOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            The whole objective: `task_loss` plus the weighted alignment terms that were computed (AETNet only).
        task_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Cross-entropy over the candidate pairs, when `relations` were given.
        logits (`torch.FloatTensor` of shape `(num_pairs, 2)`):
            No-link / link logits of every pair in `pairs`.
        scores (`torch.FloatTensor` of shape `(num_pairs,)`):
            Link probability of every pair (softmax of `logits`).
        pairs (`torch.LongTensor` of shape `(num_pairs, 3)`):
            `(window, head entity, tail entity)` of each candidate, entity indices as in `entity_labels`.
        pair_labels (`torch.LongTensor` of shape `(num_pairs,)`, *optional*):
            1 for a gold link, 0 otherwise, when `relations` were given.
        hidden_states, attentions: the encoder's, when asked for.
        alignment_losses (`dict[str, torch.FloatTensor]`, *optional*): AETNet's unweighted alignment terms.
    """

    loss: torch.FloatTensor | None = None
    task_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    scores: torch.FloatTensor | None = None
    pairs: torch.LongTensor | None = None
    pair_labels: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    alignment_losses: dict[str, torch.FloatTensor] | None = None


def relation_settings(config) -> dict:
    """The relation fields of a config (AETNet's or LayoutLMv3's), with their defaults: read in one place so that both
    heads, and the baseline built from an AETNet model, agree."""
    settings = {
        "entity_labels": list(getattr(config, "entity_labels", None) or DEFAULT_ENTITY_LABELS),
        "relation_types": [list(t) for t in getattr(config, "relation_types", None) or DEFAULT_RELATION_TYPES],
        "relation_negatives_per_head": getattr(config, "relation_negatives_per_head", DEFAULT_NEGATIVES_PER_HEAD),
        "relation_pooling": getattr(config, "relation_pooling", "first"),
        "relation_geometry": getattr(config, "relation_geometry", "box"),
    }
    unknown = [name for pair in settings["relation_types"] for name in pair if name not in settings["entity_labels"]]
    if unknown or any(len(pair) != 2 for pair in settings["relation_types"]):
        raise ValueError(
            f"`relation_types` must be [head, tail] pairs of `entity_labels` {settings['entity_labels']}, got "
            f"{settings['relation_types']}."
        )
    if settings["relation_pooling"] not in RELATION_POOLINGS:
        pooling = settings["relation_pooling"]
        raise ValueError(f"`relation_pooling` must be one of {RELATION_POOLINGS}, got {pooling!r}.")
    if settings["relation_geometry"] not in RELATION_GEOMETRIES:
        geometry = settings["relation_geometry"]
        raise ValueError(f"`relation_geometry` must be one of {RELATION_GEOMETRIES}, got {geometry!r}.")
    negatives = settings["relation_negatives_per_head"]
    if negatives is not None and (not isinstance(negatives, int) or negatives < 0):
        raise ValueError(f"`relation_negatives_per_head` must be an int >= 0 or None (all), got {negatives!r}.")
    return settings


class RelationExtractionHead(nn.Module):
    """
    The pair classifier shared by [`AETNetForRelationExtraction`] and [`LayoutLMv3ForRelationExtraction`]: an entity
    is its first-token (or mean-pooled) hidden state concatenated with a learnt embedding of its type; two MLPs map
    it to a head and a tail representation, and a biaffine form `h^T W t + U [h; t] + b` gives no-link / link logits
    (the LayoutXLM relation decoder's `BiaffineAttention`); with `relation_geometry="box"`, plus
    [`~relation_geometry.PairGeometry`] of the two entities' boxes.
    """

    def __init__(self, config, hidden_size: int, dropout: float):
        super().__init__()
        settings = relation_settings(config)
        self.pooling = settings["relation_pooling"]
        self.max_negatives_per_head = settings["relation_negatives_per_head"]
        self.num_entity_labels = len(settings["entity_labels"])
        index = {name: i for i, name in enumerate(settings["entity_labels"])}
        self.relation_type_ids = [(index[head], index[tail]) for head, tail in settings["relation_types"]]
        self.label_embeddings = nn.Embedding(self.num_entity_labels, hidden_size)
        projection = max(hidden_size // 2, 1)

        def mlp():
            return nn.Sequential(
                nn.Linear(2 * hidden_size, hidden_size),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden_size, projection),
                nn.ReLU(),
                nn.Dropout(dropout),
            )

        self.head_mlp, self.tail_mlp = mlp(), mlp()
        self.bilinear = nn.Bilinear(projection, projection, 2, bias=False)
        self.linear = nn.Linear(2 * projection, 2)
        self.geometry = PairGeometry() if settings["relation_geometry"] == "box" else None

    def entity_representations(
        self, text_states: torch.Tensor, entity_spans: torch.Tensor, entity_labels: torch.Tensor
    ) -> torch.Tensor:
        """`(batch, max_entities, 2 * hidden)`: pooled hidden state and type embedding of every entity slot."""
        real = entity_labels != ENTITY_PAD
        spans = torch.where(real[..., None], entity_spans, torch.tensor([0, 1], device=entity_spans.device))
        if self.pooling == "first":
            pooled = text_states.gather(1, spans[..., :1].expand(-1, -1, text_states.shape[-1]))
        else:
            positions = torch.arange(text_states.shape[1], device=text_states.device)
            mask = (positions >= spans[..., :1]) & (positions < spans[..., 1:])
            pooled = mask.to(text_states.dtype) @ text_states / mask.sum(-1, keepdim=True)
        return torch.cat([pooled, self.label_embeddings(entity_labels.clamp(min=0))], dim=-1)

    def forward(
        self,
        text_states: torch.Tensor,
        entity_spans: torch.Tensor,
        entity_labels: torch.Tensor,
        relations: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        bbox: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | None]:
        validate_relation_inputs(entity_spans, entity_labels, relations, text_states.shape[1], self.num_entity_labels)
        if self.geometry is not None and bbox is None:
            raise ValueError("`bbox` is required: this head scores the entities' boxes (`relation_geometry='box'`)")
        entities = self.entity_representations(text_states, entity_spans, entity_labels)
        negatives = self.max_negatives_per_head if self.training and relations is not None else None
        pairs, pair_labels = relation_candidates(entity_labels, self.relation_type_ids, relations, negatives, generator)
        heads = self.head_mlp(entities)[pairs[:, 0], pairs[:, 1]]
        tails = self.tail_mlp(entities)[pairs[:, 0], pairs[:, 2]]
        logits = self.bilinear(heads, tails) + self.linear(torch.cat([heads, tails], dim=-1))
        if self.geometry is not None:
            boxes = entity_boxes(bbox[:, : text_states.shape[1]], entity_spans, entity_labels)
            geometry = self.geometry(boxes[pairs[:, 0], pairs[:, 1]], boxes[pairs[:, 0], pairs[:, 2]])
            logits = logits + geometry.to(logits.dtype)
        task_loss = None
        if pair_labels is not None:
            # A batch without candidates gives a zero loss that still reaches every head weight (DDP needs that).
            task_loss = F.cross_entropy(logits.float(), pair_labels) if len(pairs) else logits.sum() * 0.0
        return {
            "task_loss": task_loss,
            "logits": logits,
            "scores": logits.float().softmax(-1)[:, 1],
            "pairs": pairs,
            "pair_labels": pair_labels,
        }


_FORWARD_DOC = r"""
        entity_spans (`torch.LongTensor` of shape `(batch_size, max_entities, 2)`):
            `[start, end)` token positions of each entity in `input_ids`.
        entity_labels (`torch.LongTensor` of shape `(batch_size, max_entities)`):
            Entity types (indices into `config.entity_labels`), -100 for padded slots.
        relations (`torch.LongTensor` of shape `(batch_size, max_links, 2)`, *optional*):
            Gold `(head, tail)` entity-index links, rows of -1 for padding. Gives `task_loss`; in training mode also
            the negative sampling (`config.relation_negatives_per_head`).
        relation_generator (`torch.Generator`, *optional*):
            CPU generator of the negative sampling (default: the global RNG).
"""


class _RelationExtractionMixin:
    """What the AETNet and the LayoutLMv3 relation models share around their encoder: the head and its output."""

    def _init_relation_head(self, config, hidden_size: int, dropout: float) -> None:
        # The settings live on the config, so that a saved model keeps them.
        for name, value in relation_settings(config).items():
            setattr(config, name, value)
        self.dropout = nn.Dropout(dropout)
        self.relation_head = RelationExtractionHead(config, hidden_size, dropout)

    def _relation_output(
        self, outputs: ModelOutput, input_ids, bbox, entity_spans, entity_labels, relations, generator
    ) -> RelationExtractionOutput:
        text_states = self.dropout(outputs.last_hidden_state[:, : input_ids.shape[1]])
        result = self.relation_head(text_states, entity_spans, entity_labels, relations, generator, bbox)
        alignment_losses = getattr(outputs, "alignment_losses", None)
        weights = getattr(self.config, "alignment_loss_weights", None) or {}
        return RelationExtractionOutput(
            loss=weighted_objective(result["task_loss"], alignment_losses, weights),
            **result,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            alignment_losses=alignment_losses,
        )


class AETNetForRelationExtraction(_RelationExtractionMixin, AETNetPreTrainedModel):
    """
    AETNet with a relation (key-value linking) head, [`RelationExtractionHead`], on LayoutLMv3's fused text tokens.
    No transformers Auto class fits relation extraction: load it with `AETNetForRelationExtraction.from_pretrained`,
    or with `AutoModel.from_pretrained(..., trust_remote_code=True)` where aetnet is not installed (its `auto_map`
    entry). Relation fields of the config: `entity_labels`, `relation_types`, `relation_negatives_per_head`,
    `relation_pooling`, `relation_geometry` (see the module docstring).
    """

    def __init__(self, config):
        super().__init__(config)
        self._init_relation_head(config, config.layout_config.hidden_size, config.layout_config.hidden_dropout_prob)
        self.aetnet = AETNetModel(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.aetnet.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.aetnet.set_input_embeddings(value)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        bbox: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        entity_spans: torch.LongTensor | None = None,
        entity_labels: torch.LongTensor | None = None,
        relations: torch.LongTensor | None = None,
        return_alignment_losses: bool | None = None,
        relation_generator: torch.Generator | None = None,
        **kwargs,
    ) -> RelationExtractionOutput:
        outputs = self.aetnet(
            input_ids,
            bbox=bbox,
            attention_mask=attention_mask,
            pixel_values=pixel_values,
            return_alignment_losses=return_alignment_losses,
            return_dict=True,
            **kwargs,
        )
        return self._relation_output(
            outputs, input_ids, bbox, entity_spans, entity_labels, relations, relation_generator
        )

    def to_layoutlmv3(self) -> "LayoutLMv3ForRelationExtraction":
        """
        Stock LayoutLMv3 with the same relation head, holding copies of this model's LayoutLMv3 and head weights (same
        device and dtype): the baseline trained from exactly AETNet's start (`--baseline layoutlmv3`).
        """
        config = LayoutLMv3Config(**self.config.layout_config.to_dict(), **relation_settings(self.config))
        config._attn_implementation = self.config.layout_config._attn_implementation
        baseline = LayoutLMv3ForRelationExtraction(config)
        baseline.layoutlmv3.load_state_dict(self.aetnet.layoutlmv3.state_dict())
        baseline.relation_head.load_state_dict(self.relation_head.state_dict())
        return baseline.to(device=self.device, dtype=self.dtype)


AETNetForRelationExtraction.forward.__doc__ = _FORWARD_DOC + "\n        See `AETNetModel.forward` for the others."


class LayoutLMv3ForRelationExtraction(_RelationExtractionMixin, LayoutLMv3PreTrainedModel):
    """Stock `LayoutLMv3Model` with [`RelationExtractionHead`]: the baseline of [`AETNetForRelationExtraction`]."""

    def __init__(self, config: LayoutLMv3Config):
        super().__init__(config)
        self._init_relation_head(config, config.hidden_size, config.hidden_dropout_prob)
        self.layoutlmv3 = LayoutLMv3Model(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.layoutlmv3.get_input_embeddings()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        bbox: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        entity_spans: torch.LongTensor | None = None,
        entity_labels: torch.LongTensor | None = None,
        relations: torch.LongTensor | None = None,
        relation_generator: torch.Generator | None = None,
        **kwargs,
    ) -> RelationExtractionOutput:
        outputs = self.layoutlmv3(
            input_ids, bbox=bbox, attention_mask=attention_mask, pixel_values=pixel_values, return_dict=True, **kwargs
        )
        return self._relation_output(
            outputs, input_ids, bbox, entity_spans, entity_labels, relations, relation_generator
        )


LayoutLMv3ForRelationExtraction.forward.__doc__ = _FORWARD_DOC


__all__ = [
    "AETNetForRelationExtraction",
    "LayoutLMv3ForRelationExtraction",
    "RelationExtractionHead",
    "RelationExtractionOutput",
    "relation_settings",
]
