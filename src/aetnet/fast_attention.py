"""
An optional `torch.nn.functional.scaled_dot_product_attention` (SDPA) path for LayoutLMv3's self-attention.

Stock LayoutLMv3 attention is eager: every layer materialises the `(batch, heads, length, length)` scores, adds the
1D relative-position and 2D spatial biases, applies the CogView PB-relax softmax and keeps the probabilities for
backward. Here the biases and the padding mask are summed once per forward into a single additive mask, and every
layer hands it to SDPA, which can run a fused (memory-efficient) kernel that never stores the probabilities.

It computes the same function: the PB-relax softmax subtracts a per-row constant before a softmax, which a softmax
ignores, and the fused kernels keep their running maxima in float32, which is what PB-relax protects in half
precision. As in stock LayoutLMv3, the relative-position bias tables get no gradient (they are looked up under
`no_grad` by the stock encoder, whose lookups this module reuses).

Attention probabilities cannot come out of a fused kernel: when a caller asks for `output_attentions`, the stock eager
path runs instead. This module imports only torch and transformers so that it can ship as Hub remote code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.layoutlmv3.modeling_layoutlmv3 import LayoutLMv3Encoder, LayoutLMv3SelfAttention

# The collector that `capture_outputs` fills: the one place that knows whether attentions are being recorded (the
# stock layers do not pass `output_attentions` down). Private to transformers, hence imported here only.
from transformers.utils.output_capturing import _active_collector


FUSION_ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa")
# Fused kernels read the bias fastest with a last-dimension stride that is a multiple of 16 elements.
_BIAS_ALIGNMENT = 16


def _attentions_requested() -> bool:
    """Whether the enclosing `LayoutLMv3Model.forward` records attention probabilities (`output_attentions`)."""
    collected = _active_collector.get()
    return collected is not None and "attentions" in collected


def _compute_dtype(hidden_states: torch.Tensor) -> torch.dtype:
    """The dtype the query/key/value projections produce: the autocast dtype when autocast is on."""
    device_type = hidden_states.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return hidden_states.dtype


def combine_attention_bias(
    attention_mask: torch.Tensor | None,
    rel_pos: torch.Tensor | None,
    rel_2d_pos: torch.Tensor | None,
    head_size: int,
    has_relative_attention_bias: bool,
    has_spatial_attention_bias: bool,
    dtype: torch.dtype,
) -> torch.Tensor | None:
    """
    The additive SDPA mask equal to what stock LayoutLMv3 adds to `q k^T / sqrt(head_size)`: the relative biases
    divided by `sqrt(head_size)` (`rel_2d_pos` only together with `rel_pos`, the stock rule) plus the extended padding
    mask (float, or bool with True = attend). Summed in float32, clamped to the finite range of `dtype` so that masked
    entries stay finite (a fully padded row then averages, as in stock, instead of giving NaN), then cast to `dtype`
    with a 16-element aligned row stride. Returns `None` when there is nothing to add.
    """
    # One fresh float32 tensor, then in-place updates: the inputs are shared by all layers and must stay intact.
    bias = None
    if has_relative_attention_bias and rel_pos is not None:
        if has_spatial_attention_bias and rel_2d_pos is not None:
            bias = rel_pos.float() + rel_2d_pos
        else:
            bias = rel_pos.to(torch.float32, copy=True)
        bias.div_(math.sqrt(head_size))
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            attention_mask = torch.where(attention_mask, 0.0, torch.finfo(torch.float32).min)
        if bias is None:
            bias = attention_mask.to(torch.float32, copy=True)
        else:
            bias.add_(attention_mask)
    if bias is None:
        return None
    bias.clamp_(min=torch.finfo(dtype).min)
    length = bias.shape[-1]
    padded = -(-length // _BIAS_ALIGNMENT) * _BIAS_ALIGNMENT
    aligned = bias.new_empty(*bias.shape[:-1], padded, dtype=dtype)[..., :length]
    return aligned.copy_(bias)


class LayoutLMv3SdpaSelfAttention(LayoutLMv3SelfAttention):
    """
    `LayoutLMv3SelfAttention` computed with SDPA. Same parameters and state dict; `attention_mask` may be the stock
    extended mask (then `rel_pos`/`rel_2d_pos` are added here) or the mask `combine_attention_bias` already built
    (`LayoutLMv3SdpaEncoder` passes it with `rel_pos=rel_2d_pos=None`). Returns `(context, None)`.
    """

    def forward(self, hidden_states, attention_mask=None, rel_pos=None, rel_2d_pos=None, **kwargs):
        if _attentions_requested():
            return super().forward(hidden_states, attention_mask, rel_pos=rel_pos, rel_2d_pos=rel_2d_pos, **kwargs)
        batch_size = hidden_states.shape[0]
        shape = (batch_size, -1, self.num_attention_heads, self.attention_head_size)
        query = self.query(hidden_states).view(shape).transpose(1, 2)
        key = self.key(hidden_states).view(shape).transpose(1, 2)
        value = self.value(hidden_states).view(shape).transpose(1, 2)
        bias = attention_mask
        if rel_pos is not None or rel_2d_pos is not None or (bias is not None and bias.dtype != query.dtype):
            bias = combine_attention_bias(
                attention_mask,
                rel_pos,
                rel_2d_pos,
                self.attention_head_size,
                self.has_relative_attention_bias,
                self.has_spatial_attention_bias,
                query.dtype,
            )
        context = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=bias,
            dropout_p=self.dropout.p if self.training else 0.0,
            scale=1.0 / math.sqrt(self.attention_head_size),
        )
        context = context.transpose(1, 2).reshape(batch_size, -1, self.all_head_size)
        return context, None


class LayoutLMv3SdpaEncoder(LayoutLMv3Encoder):
    """
    `LayoutLMv3Encoder` that builds the combined attention bias once per forward instead of once per layer, so that
    a single bias tensor, not one per layer, is kept for backward. Runs the stock loop when attentions are recorded.
    """

    def forward(self, hidden_states, bbox=None, attention_mask=None, position_ids=None, **kwargs):
        if _attentions_requested():
            return super().forward(
                hidden_states, bbox=bbox, attention_mask=attention_mask, position_ids=position_ids, **kwargs
            )
        rel_pos = self._cal_1d_pos_emb(position_ids) if self.has_relative_attention_bias else None
        rel_2d_pos = self._cal_2d_pos_emb(bbox) if self.has_spatial_attention_bias else None
        bias = combine_attention_bias(
            attention_mask,
            rel_pos,
            rel_2d_pos,
            self.config.hidden_size // self.config.num_attention_heads,
            self.has_relative_attention_bias,
            self.has_spatial_attention_bias,
            _compute_dtype(hidden_states),
        )
        del rel_pos, rel_2d_pos  # two float32 (batch, heads, length, length) tensors the layers no longer need
        kwargs.pop("patch_height", None)
        kwargs.pop("patch_width", None)
        for layer_module in self.layer:
            hidden_states = layer_module(hidden_states, bias, rel_pos=None, rel_2d_pos=None, **kwargs)
        return BaseModelOutput(last_hidden_state=hidden_states)


_SWAPS = {
    "sdpa": ((LayoutLMv3SelfAttention, LayoutLMv3SdpaSelfAttention), (LayoutLMv3Encoder, LayoutLMv3SdpaEncoder)),
    "eager": ((LayoutLMv3SdpaSelfAttention, LayoutLMv3SelfAttention), (LayoutLMv3SdpaEncoder, LayoutLMv3Encoder)),
}


def set_layoutlmv3_attention(model: nn.Module, implementation: str) -> int:
    """
    Switch every LayoutLMv3 self-attention and encoder inside `model` (a `LayoutLMv3Model`, any LayoutLMv3 head or
    an AETNet model) to `implementation`, `"eager"` (stock) or `"sdpa"`, in place. Only the classes change: the
    parameters, buffers and state dict stay the same, so the switch can be made at any time, either way. Returns the
    number of modules switched.
    """
    if implementation not in _SWAPS:
        raise ValueError(
            f"`implementation` must be one of {list(FUSION_ATTENTION_IMPLEMENTATIONS)}, got {implementation!r}"
        )
    switched = 0
    for module in model.modules():
        for source, target in _SWAPS[implementation]:
            if type(module) is source:
                module.__class__ = target
                switched += 1
    return switched


__all__ = [
    "FUSION_ATTENTION_IMPLEMENTATIONS",
    "LayoutLMv3SdpaEncoder",
    "LayoutLMv3SdpaSelfAttention",
    "combine_attention_bias",
    "set_layoutlmv3_attention",
]
