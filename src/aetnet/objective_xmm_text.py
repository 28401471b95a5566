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
XMM-text, the text side of SIMLA's symmetric cross-modal masked modelling (Khan et al., "Single-Stream Multi-Level
Alignment for Vision-Language Pretraining", ECCV 2022, arXiv 2203.14395), as a fine-tuning objective for LayoutLMv3.

SIMLA masks 15% of a caption's tokens (80% `<mask>`, 10% a random token, 10% kept) and reconstructs them with a text
encoder that cross-attends to the image. LayoutLMv3 is single-stream and already sees the page, so here the fusion
model itself reads the masked ids beside the full, unmasked page image (one extra LayoutLMv3 forward; the task loss
keeps the unmasked forward) and a RoBERTa-style LM head, tied to LayoutLMv3's word embeddings, predicts the original
tokens at the masked positions.

SIMLA mixes the one-hot target with the momentum model's prediction (weight alpha). AETNet's momentum encoders are
the ViT and RoBERTa aligners, which never see the masked ids, so that prediction needs a momentum copy of LayoutLMv3
and of the LM head: with `momentum_distillation=True` the objective holds them (`fusion_m`, `head_m`; EMA copies
that the model updates with its momentum encoders) and the target becomes `(1 - alpha) * one-hot + alpha * the
momentum model's softmax` on the same masked ids and page, alpha the config's `distill_alpha` as for DITC. It is off
by default: it doubles LayoutLMv3's parameters (the copy is frozen) and adds one no-grad LayoutLMv3 forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LayoutLMv3Model
from transformers.activations import ACT2FN

from .alignment import AlignmentFeatures, AlignmentObjective, prior_entropy, register_objective
from .loss_utils import distributed_seed, special_token_ids


# `<mask>` of the RoBERTa / LayoutLMv3 BPE vocabulary (50265 ids), and of `aetnet.data.train_layoutlmv3_tokenizer`.
ROBERTA_MASK_TOKEN_ID = 50264
ROBERTA_VOCAB_SIZE = 50265
TRAINED_TOKENIZER_MASK_TOKEN_ID = 4


def default_mask_token_id(layout_config) -> int:
    """
    `<mask>`'s id for a LayoutLMv3 config, which does not record it: the config's own `mask_token_id` if it has one;
    50264 for the full RoBERTa vocabulary (LayoutLMv3's tokenizer); otherwise 4, the id that
    `train_layoutlmv3_tokenizer` gives it (its special tokens are `<s> <pad> </s> <unk> <mask>`).
    """
    mask_token_id = getattr(layout_config, "mask_token_id", None)
    if mask_token_id is not None:
        return int(mask_token_id)
    return ROBERTA_MASK_TOKEN_ID if layout_config.vocab_size >= ROBERTA_VOCAB_SIZE else TRAINED_TOKENIZER_MASK_TOKEN_ID


def draw_token_mask(maskable: torch.Tensor, mask_ratio: float, generator: torch.Generator) -> torch.Tensor:
    """
    `(B, L)` bool: `round(mask_ratio * n)` of each document's `n` maskable tokens (at least one when `n > 0`), chosen
    uniformly. An exact count rather than BERT's independent coin flips, so that a short window always has a target.
    """
    maskable = maskable.cpu()
    scores = torch.rand(maskable.shape, generator=generator).masked_fill(~maskable, -1.0)
    available = maskable.sum(dim=1)
    count = torch.where(available > 0, (available * mask_ratio).round().clamp(min=1), available)
    rank = scores.argsort(dim=1, descending=True).argsort(dim=1)
    return (rank < count[:, None]) & maskable


def corrupt_tokens(
    input_ids: torch.Tensor,
    mask: torch.Tensor,
    mask_token_id: int,
    replacement_ids: torch.Tensor,
    generator: torch.Generator,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
) -> torch.Tensor:
    """
    BERT's corruption of the masked positions: `mask_fraction` become `mask_token_id`, `random_fraction` a token
    drawn uniformly from `replacement_ids` (the vocabulary without special tokens), the rest stay as they are.
    Returns new ids; `input_ids` is not modified.
    """
    choice = torch.rand(mask.shape, generator=generator)
    random_ids = replacement_ids.cpu()[torch.randint(len(replacement_ids), mask.shape, generator=generator)]
    mask = mask.cpu()
    corrupted = input_ids.cpu().clone()
    corrupted[mask & (choice < mask_fraction)] = mask_token_id
    random_positions = mask & (choice >= mask_fraction) & (choice < mask_fraction + random_fraction)
    corrupted[random_positions] = random_ids[random_positions]
    return corrupted.to(input_ids.device)


class TiedLMHead(nn.Module):
    """
    RoBERTa's LM head (dense, activation, LayerNorm, decoder) whose decoder weight is LayoutLMv3's word embedding
    matrix, read at every call, plus a bias of its own. `RobertaLMHead` is not reused because it owns a decoder
    weight: untied, it would be `vocab x hidden` dead parameters and a copy to keep in sync after loading.
    """

    def __init__(self, hidden_size: int, vocab_size: int, layer_norm_eps: float, hidden_act: str = "gelu"):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = ACT2FN[hidden_act]
        self.layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        # One row of an Embedding rather than a bare Parameter: transformers' `_init_weights` initialises it (normal,
        # std 0.02) when a checkpoint lacks it, where a bare Parameter would keep the uninitialised memory of loading.
        self.bias = nn.Embedding(1, vocab_size)

    def forward(self, hidden_states: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        bias = self.bias.weight[0]
        if word_embeddings.shape[0] != bias.shape[0]:
            raise ValueError(
                f"The LM head's bias has {bias.shape[0]} entries but the word embeddings "
                f"{word_embeddings.shape[0]} rows: xmm_text does not support resizing the token embeddings"
            )
        hidden_states = self.layer_norm(self.activation(self.dense(hidden_states)))
        return F.linear(hidden_states, word_embeddings, bias)


@register_objective("xmm_text")
class CrossModalMaskedText(AlignmentObjective):
    """
    XMM-text: masked language modelling on LayoutLMv3 with the full page image, cross-entropy on the masked tokens.

    Settings:
        mask_ratio (`float`, defaults to 0.15): share of each window's real tokens (attended, not `<s>`, `</s>` or
            padding) that are masked.
        mask_token_id (`int`, *optional*): `<mask>`'s id; default `default_mask_token_id(config.layout_config)`
            (50264 for the RoBERTa vocabulary, 4 for a tokenizer trained by `train_layoutlmv3_tokenizer`).
        mask_fraction, random_fraction (`float`, default 0.8 and 0.1): of the masked tokens, the share replaced by
            `<mask>` and by a random ordinary token (the rest are kept), BERT's 80/10/10.
        seed (`int`, defaults to 0): seed of the objective's generator (see `AlignmentObjective.generator`).
        momentum_distillation (`bool`, defaults to `False`): mix the momentum model's prediction into the target.
        distill_alpha (`float`, *optional*): its weight, with `momentum_distillation` only (default: the config's
            `distill_alpha`, 0.4), scaled per step by the model's ramp (`features.distill_ramp`).

    Costs: one extra LayoutLMv3 forward (and its backward); `hidden^2 + 3 * hidden + vocab` parameters. With
    `momentum_distillation`, one more no-grad LayoutLMv3 forward and as many frozen parameters as LayoutLMv3 and
    the head.
    """

    modalities = ("image", "text")  # the page conditions the masked text; without it this is plain masked-LM
    needs_generator = True
    trains = ()  # only LayoutLMv3 and its own head

    def __init__(
        self,
        config,
        mask_ratio: float = 0.15,
        mask_token_id: int | None = None,
        mask_fraction: float = 0.8,
        random_fraction: float = 0.1,
        seed: int = 0,
        momentum_distillation: bool = False,
        distill_alpha: float | None = None,
    ):
        super().__init__(config)
        layout = config.layout_config
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"`mask_ratio` of xmm_text must be in (0, 1), got {mask_ratio!r}")
        if not (0.0 <= mask_fraction and 0.0 <= random_fraction and mask_fraction + random_fraction <= 1.0):
            raise ValueError(
                "`mask_fraction` and `random_fraction` of xmm_text must be >= 0 with a sum <= 1, got "
                f"{mask_fraction!r} and {random_fraction!r}"
            )
        mask_token_id = default_mask_token_id(layout) if mask_token_id is None else mask_token_id
        self.special_ids = special_token_ids(layout)
        valid = isinstance(mask_token_id, int) and 0 <= mask_token_id < layout.vocab_size
        if not valid or mask_token_id in self.special_ids:
            raise ValueError(
                f"`mask_token_id` of xmm_text must be an id below `layout_config.vocab_size` ({layout.vocab_size}) "
                f"other than the special ids {self.special_ids}, got {mask_token_id!r}"
            )
        self.mask_ratio, self.mask_token_id, self.seed = float(mask_ratio), mask_token_id, int(seed)
        self.mask_fraction, self.random_fraction = float(mask_fraction), float(random_fraction)
        self.head = TiedLMHead(layout.hidden_size, layout.vocab_size, layout.layer_norm_eps, layout.hidden_act)
        if not momentum_distillation:
            if distill_alpha is not None:
                raise ValueError(
                    f"`distill_alpha` of xmm_text ({distill_alpha!r}) needs `momentum_distillation=True`, the momentum "
                    "copies whose prediction it weights"
                )
            return
        # Only with the copies: `AETNetTrainer` gives `--distill_alpha` to every objective that has the attribute.
        self.distill_alpha = config.distill_alpha if distill_alpha is None else float(distill_alpha)
        if not 0.0 <= self.distill_alpha <= 1.0:
            raise ValueError(f"`distill_alpha` of xmm_text must be in [0, 1], got {distill_alpha!r}")
        self.fusion_m = LayoutLMv3Model(layout)  # no injection: the extra forwards inject nothing either
        self.head_m = TiedLMHead(layout.hidden_size, layout.vocab_size, layout.layer_norm_eps, layout.hidden_act)

    def own_momentum_pairs(self, model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
        if not hasattr(self, "fusion_m"):
            return []
        return [(model.layoutlmv3, self.fusion_m), (self.head, self.head_m)]

    def mask_inputs(self, input_ids: torch.Tensor, real_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(masked_ids, mask)` for this call, from the objective's generator (each training call draws anew)."""
        # On the CPU: the same masks on every device.
        generator = self.generator(torch.device("cpu"), distributed_seed(self.seed))
        maskable = real_tokens & (input_ids != self.mask_token_id)
        mask = draw_token_mask(maskable, self.mask_ratio, generator)
        vocab_size = self.head.bias.embedding_dim  # the bias is one row of `vocab_size` entries
        ordinary = torch.ones(vocab_size, dtype=torch.bool)
        ordinary[[*self.special_ids, self.mask_token_id]] = False
        masked_ids = corrupt_tokens(
            input_ids,
            mask,
            self.mask_token_id,
            ordinary.nonzero().squeeze(1),
            generator,
            self.mask_fraction,
            self.random_fraction,
        )
        return masked_ids, mask.to(input_ids.device)

    def forward(self, features: AlignmentFeatures) -> torch.Tensor:
        f = features
        masked_ids, mask = self.mask_inputs(f.input_ids, f.real_tokens)
        hidden = f.fusion(input_ids=masked_ids).last_hidden_state[:, : f.input_ids.shape[1]]
        # Logits only at the masked positions: `(B, L, vocab)` would be ~0.8 GB in float32 at 8 x 512 x 50265.
        logits = self.head(hidden[mask], f.word_embeddings.weight)
        if logits.shape[0] == 0:  # no real token in the batch: a zero that still reaches the head's parameters
            return logits.sum() * 0.0
        alpha = getattr(self, "distill_alpha", 0.0) * f.distill_ramp
        if alpha == 0:
            return F.cross_entropy(logits.float(), f.input_ids[mask])
        with torch.no_grad():
            inputs = dict(input_ids=masked_ids, bbox=f.bbox, attention_mask=f.attention_mask)
            hidden_m = self.fusion_m(**inputs, pixel_values=f.pixel_values).last_hidden_state[:, : mask.shape[1]]
            soft = self.head_m(hidden_m[mask], self.fusion_m.get_input_embeddings().weight).float().softmax(dim=-1)
        targets = (1 - alpha) * F.one_hot(f.input_ids[mask], logits.shape[-1]).float() + alpha * soft
        return F.cross_entropy(logits.float(), targets)

    def chance_level(self, features: AlignmentFeatures) -> float:
        """
        The entropy of the batch's token frequencies over the maskable tokens, from which the masked positions are
        drawn uniformly: a model that predicts the unigram prior and reads neither context nor page. It is the chance
        level of the one-hot target; with momentum distillation the loss also holds the soft target's entropy.
        """
        f = features
        tokens = f.input_ids[f.real_tokens & (f.input_ids != self.mask_token_id)]
        return prior_entropy(torch.bincount(tokens.cpu()))


__all__ = [
    "CrossModalMaskedText",
    "TiedLMHead",
    "corrupt_tokens",
    "default_mask_token_id",
    "draw_token_mask",
]
