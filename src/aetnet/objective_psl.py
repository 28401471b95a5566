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
PSL, SIMLA's pseudo-labelled keyword prediction (Khan et al., ECCV 2022, arXiv 2203.14395), as a fine-tuning
objective: from the page image alone, predict which words of its text matter most.

SIMLA takes its momentum multimodal encoder's last-layer attention from [CLS]: each head votes for its 4 most
attended tokens, the 5 most voted tokens are the image's pseudo-keywords, and a multi-label head on the projected
image [CLS] predicts them over the vocabulary (binary cross-entropy). Here the head reads the ViT aligner's
normalised projected [CLS] (`features.image_feat`) and the vocabulary is LayoutLMv3's. Token importance comes from:

- `"attention"`: the fusion model's last-layer attention from the text [CLS] (`<s>`) to the real tokens, SIMLA's
  head vote. LayoutLMv3 returns attention probabilities only with eager attention, and aetnet has no momentum fusion
  model, so this is one extra no-grad forward of the (online) fusion model on the step's inputs.
- `"momentum_text"`: attention-free, for sdpa / flash attention (the default): the cosine similarity of each token's
  output to the [CLS] output of the momentum RoBERTa aligner. It is the closest signal to SIMLA's: importance to a
  momentum encoder's document summary, where DITC trains that [CLS]; it needs no extra forward. (Rarity within the
  batch was rejected: a batch of a few windows gives no stable document frequency, and it ignores context.)
- `"auto"` (default): `"attention"` when LayoutLMv3 runs eager attention, else `"momentum_text"`.

SIMLA adds a soft target: `loss = (1 - alpha) * BCE(hard) + alpha * BCE(sigmoid(momentum head))`, the momentum
keyword head (`head_m`, an EMA copy of `head` that the model updates with its momentum encoders) on the momentum
image feature. Here the soft term is reported as the Bernoulli KL divergence, BCE minus the soft target's entropy:
the same gradient, but zero when the head agrees with its momentum copy, so that the loss can be read against its
chance level (the entropy of 50265 near-zero soft targets would otherwise dominate it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .alignment import AlignmentFeatures, AlignmentObjective, register_objective
from .loss_utils import special_token_ids


PSL_KEYWORD_SOURCES = ("auto", "attention", "momentum_text")


def top_positions(scores: torch.Tensor, candidates: torch.Tensor, count: int) -> torch.Tensor:
    """`(B, L)` bool: each row's `count` highest-scoring candidate positions (all candidates if there are fewer)."""
    scores = scores.float().masked_fill(~candidates, -math.inf)
    rank = scores.argsort(dim=1, descending=True, stable=True).argsort(dim=1)
    return (rank < count) & candidates


def attention_keywords(
    attentions: torch.Tensor, candidates: torch.Tensor, votes_per_head: int = 4, num_keywords: int = 5
) -> torch.Tensor:
    """
    SIMLA's head vote: `attentions` `(B, heads, T, T)` of the last layer, text first; every head votes for the
    `votes_per_head` candidates that the [CLS] (position 0) attends to most; the `num_keywords` most voted win, ties
    broken by the mean attention over heads. Returns `(B, L)` bool keyword positions.
    """
    length = candidates.shape[1]
    cls_attention = attentions[:, :, 0, :length].float()  # (B, heads, L)
    heads = attentions.shape[1]
    per_head = top_positions(cls_attention.flatten(0, 1), candidates.repeat_interleave(heads, 0), votes_per_head)
    votes = per_head.view(cls_attention.shape).sum(dim=1).float()
    # A mean of probabilities is below 1, so it orders tokens with equal votes and never outranks one more vote.
    return top_positions(votes + cls_attention.mean(dim=1).clamp(max=0.999), candidates, num_keywords)


def similarity_keywords(token_states: torch.Tensor, candidates: torch.Tensor, num_keywords: int = 5) -> torch.Tensor:
    """The attention-free rule: the `num_keywords` candidates whose outputs are closest (cosine) to the [CLS] output."""
    similarity = F.cosine_similarity(token_states[:, :1].float(), token_states.float(), dim=-1)
    return top_positions(similarity, candidates, num_keywords)


def keyword_targets(
    input_ids: torch.Tensor, keywords: torch.Tensor, vocab_size: int, special_ids: list[int]
) -> torch.Tensor:
    """`(B, vocab)` multi-hot: 1 for the ids at the keyword positions, 0 for the special ids."""
    targets = torch.zeros(input_ids.shape[0], vocab_size, device=input_ids.device)
    targets.scatter_add_(1, input_ids, keywords.float()).clamp_(max=1.0)
    targets[:, special_ids] = 0.0
    return targets


def bernoulli_entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """Elementwise entropy of Bernoulli variables (0 at probabilities 0 and 1)."""
    return F.binary_cross_entropy(probabilities, probabilities, reduction="none")


@register_objective("psl")
class PseudoKeywordPrediction(AlignmentObjective):
    """
    PSL: a `Linear(embed_dim, vocab)` keyword head on the ViT aligner's projected [CLS] predicts the page's
    pseudo-keywords (binary cross-entropy against the multi-hot targets, mixed with the momentum head's prediction on
    the momentum image feature).

    The loss is summed over the vocabulary and divided by `num_keywords`, so that its scale is that of a per-keyword
    cross-entropy instead of vanishing as 1 / vocab under a plain mean; the logits are offset by the label prior
    `log(k / (vocab - k))`, so that the untrained head predicts the prior instead of one half for 50265 labels; and
    the head reads `sqrt(embed_dim) * image_feat`, whose components have unit variance as a LayerNorm output's do (a
    unit-norm input makes a new head learn `sqrt(embed_dim)` times slower at fine-tuning learning rates).

    Settings:
        keyword_source (`str`, defaults to `"auto"`): where token importance comes from (see the module docstring).
        num_keywords (`int`, defaults to 5): keywords per page; `votes_per_head` (`int`, defaults to 4): head votes.
        distill_alpha (`float`, *optional*): the weight of the momentum head's soft targets (default: the config's
            `distill_alpha`, 0.4, as for DITC), scaled per step by the model's ramp (`features.distill_ramp`); 0 trains
            on the hard keywords alone.

    Costs: `2 * (embed_dim * vocab + vocab)` parameters (the head and its frozen momentum copy); with `"attention"`
    one extra no-grad LayoutLMv3 forward.
    """

    modalities = ("image", "text")  # the image predicts words of its text
    needs_momentum = True  # the momentum ViT gives the soft targets; the attention-free rule reads the momentum RoBERTa
    trains = ("vision_model", "vision_proj")

    def __init__(
        self,
        config,
        keyword_source: str = "auto",
        num_keywords: int = 5,
        votes_per_head: int = 4,
        distill_alpha: float | None = None,
    ):
        super().__init__(config)
        layout = config.layout_config
        if keyword_source not in PSL_KEYWORD_SOURCES:
            raise ValueError(
                f"`keyword_source` of psl must be one of {list(PSL_KEYWORD_SOURCES)}, got {keyword_source!r}"
            )
        for setting, value in (("num_keywords", num_keywords), ("votes_per_head", votes_per_head)):
            if not (isinstance(value, int) and 0 < value < layout.vocab_size):
                raise ValueError(f"`{setting}` of psl must be a positive int below the vocabulary size, got {value!r}")
        self.distill_alpha = config.distill_alpha if distill_alpha is None else float(distill_alpha)
        if not 0.0 <= self.distill_alpha <= 1.0:
            raise ValueError(f"`distill_alpha` of psl must be in [0, 1], got {distill_alpha!r}")
        self.keyword_source, self.num_keywords, self.votes_per_head = keyword_source, num_keywords, votes_per_head
        self.layout_config = layout  # read at call time: `attn_implementation` is settled after construction
        self.special_ids = special_token_ids(layout)
        self.head = nn.Linear(config.embed_dim, layout.vocab_size)
        self.head_m = nn.Linear(config.embed_dim, layout.vocab_size)
        self.prior_logit = math.log(num_keywords / (layout.vocab_size - num_keywords))
        self.input_scale = math.sqrt(config.embed_dim)

    def own_momentum_pairs(self, model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.head, self.head_m)]

    def resolved_source(self) -> str:
        if self.keyword_source != "auto":
            return self.keyword_source
        return "attention" if self.layout_config._attn_implementation == "eager" else "momentum_text"

    @torch.no_grad()
    def keywords(self, features: AlignmentFeatures) -> torch.Tensor:
        """`(B, L)` bool: the pseudo-keyword positions of each window."""
        f = features
        if self.resolved_source() == "momentum_text":
            return similarity_keywords(f.text_embeds_m, f.real_tokens, self.num_keywords)
        attentions = f.fusion(output_attentions=True).attentions
        if not attentions:
            raise ValueError(
                "psl with keyword_source='attention' needs LayoutLMv3's attention probabilities: build the model "
                "with attn_implementation='eager', or use keyword_source='momentum_text'"
            )
        return attention_keywords(attentions[-1], f.real_tokens, self.votes_per_head, self.num_keywords)

    def logits(self, image_feat: torch.Tensor, head: nn.Linear) -> torch.Tensor:
        return head(image_feat * self.input_scale).float() + self.prior_logit

    @torch.no_grad()
    def targets(self, features: AlignmentFeatures) -> tuple[torch.Tensor, torch.Tensor, float]:
        """`(hard, soft, alpha)`: the multi-hot keywords, the momentum head's probabilities and their weight."""
        f = features
        hard = keyword_targets(f.input_ids, self.keywords(f), self.head.out_features, self.special_ids)
        alpha = self.distill_alpha * f.distill_ramp
        soft = self.logits(f.image_feat_m, self.head_m).sigmoid() if alpha > 0 else torch.zeros_like(hard)
        soft[:, self.special_ids] = 0.0
        return hard, soft, alpha

    def forward(self, features: AlignmentFeatures) -> torch.Tensor:
        hard, soft, alpha = self.targets(features)
        logits = self.logits(features.image_feat, self.head)
        loss = F.binary_cross_entropy_with_logits(logits, (1 - alpha) * hard + alpha * soft, reduction="none")
        loss = loss - alpha * bernoulli_entropy(soft)  # the soft term as a KL divergence: same gradient
        return loss.sum(dim=-1).mean() / self.num_keywords

    @torch.no_grad()
    def chance_level(self, features: AlignmentFeatures) -> float:
        """
        The loss of the best prediction without the page: every page gets the batch's mean target (a keyword of
        every page costs nothing, one of no page costs nothing either), with the soft term counted as in `forward`.
        """
        hard, soft, alpha = self.targets(features)
        mixed = (1 - alpha) * hard + alpha * soft
        frequency = mixed.mean(dim=0, keepdim=True).expand_as(mixed)
        loss = F.binary_cross_entropy(frequency, mixed, reduction="none") - alpha * bernoulli_entropy(soft)
        return float(loss.sum(dim=-1).mean() / self.num_keywords)


__all__ = [
    "PSL_KEYWORD_SOURCES",
    "PseudoKeywordPrediction",
    "attention_keywords",
    "bernoulli_entropy",
    "keyword_targets",
    "similarity_keywords",
    "top_positions",
]
