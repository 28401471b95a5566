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
Building blocks of `bench_training_step.py` and `compare.py`: the hardware of a result, synthetic inputs, the
models under test, and one training or inference step (in profiler ranges named `bench::<part>`, which
`bench_breakdown.py` reads). Timing and memory are in `bench_timing.py`, the profiler breakdown in
`bench_breakdown.py`.

Everything here measures; nothing changes the models.
"""

from __future__ import annotations

import contextlib
import copy
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.profiler import record_function
from transformers import LayoutLMv3ForTokenClassification

from aetnet import AETNetConfig, AETNetForTokenClassification


NUM_LABELS = 7
RANGE_PREFIX = "bench::"


@dataclass
class Variant:
    """One model under test: `forward` is the model itself or its `torch.compile` wrapper."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    forward: Callable
    is_aetnet: bool


def build_variants(
    size: str, attn_implementations: list[str], seq_len: int, device: torch.device, compile_models: bool
) -> list[Variant]:
    """
    Per attention implementation (transformers' `attn_implementation`), stock `LayoutLMv3ForTokenClassification`
    (`layoutlmv3-<impl>`) and AETNet (`aetnet-<impl>`), random init (the same seed), AdamW each. AETNet's EMA step
    is the explicit `momentum_update()` after the optimizer step, as `AETNetTrainer` runs it.
    """
    max_length = max(seq_len, 512)
    config = AETNetConfig.from_preset(size, max_length=max_length, num_labels=NUM_LABELS)
    layout = config.layout_config.to_dict()
    for key in ("id2label", "label2id"):
        layout.pop(key, None)
    models = []
    for implementation in attn_implementations:
        torch.manual_seed(0)
        stock_config = type(config.layout_config)(**layout, num_labels=NUM_LABELS)
        stock_config._attn_implementation = implementation
        models.append((f"layoutlmv3-{implementation}", LayoutLMv3ForTokenClassification(stock_config), False))
    for implementation in attn_implementations:
        torch.manual_seed(0)
        aetnet_config = copy.deepcopy(config)
        aetnet_config._attn_implementation = implementation
        model = AETNetForTokenClassification(aetnet_config)
        model.set_momentum_update("step")
        models.append((f"aetnet-{implementation}", model, True))
    variants = []
    for name, model, is_aetnet in models:
        model.to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-5, fused=True)
        forward = torch.compile(model) if compile_models else model
        variants.append(Variant(name, model, optimizer, forward, is_aetnet))
    return variants


def hardware(device: torch.device) -> dict:
    """The CPU model, core and thread counts, and on CUDA the GPU name and CUDA version, for a result's metadata."""
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
        cpu = names[0] if names else cpu
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def make_inputs(config: AETNetConfig, batch_size: int, seq_len: int, device: torch.device, seed: int = 0) -> dict:
    """Random but well-formed inputs: `<s> ... </s>` ids, ordered boxes (zero for special tokens), two page views."""
    layout = config.layout_config
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, layout.vocab_size, (batch_size, seq_len), generator=generator)
    input_ids[:, 0], input_ids[:, -1] = layout.bos_token_id, layout.eos_token_id
    corner = torch.randint(0, 900, (batch_size, seq_len, 2), generator=generator)
    extent = torch.randint(1, 100, (batch_size, seq_len, 2), generator=generator)
    bbox = torch.cat([corner, corner + extent], dim=-1)
    bbox[:, 0], bbox[:, -1] = 0, 0
    labels = torch.randint(0, NUM_LABELS, (batch_size, seq_len), generator=generator)
    labels[:, 0], labels[:, -1] = -100, -100
    image_size = layout.input_size
    inputs = dict(
        input_ids=input_ids,
        bbox=bbox,
        attention_mask=torch.ones(batch_size, seq_len, dtype=torch.long),
        pixel_values=torch.randn(batch_size, 3, image_size, image_size, generator=generator),
        pixel_values_aug=torch.randn(batch_size, 3, image_size, image_size, generator=generator),
        labels=labels,
    )
    return {key: value.to(device) for key, value in inputs.items()}


def autocast(device: torch.device, dtype: str):
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _model_inputs(variant: Variant, inputs: dict, with_labels: bool) -> dict:
    skip = set() if variant.is_aetnet else {"pixel_values_aug"}
    if not with_labels:
        skip |= {"labels", "pixel_values_aug"}
    return {key: value for key, value in inputs.items() if key not in skip}


def train_step(variant: Variant, inputs: dict, device: torch.device, dtype: str, forward: Callable | None = None):
    """Forward with all alignment losses, backward of task + alignment losses, AdamW step, then the EMA update."""
    forward = forward or variant.forward
    with record_function(RANGE_PREFIX + "forward"), autocast(device, dtype):
        # AETNet's `loss` in training mode is the whole objective: task + the four (unit-weighted) alignment terms.
        loss = forward(**_model_inputs(variant, inputs, with_labels=True)).loss
    with record_function(RANGE_PREFIX + "backward"):
        loss.backward()
    with record_function(RANGE_PREFIX + "optimizer"):
        variant.optimizer.step()
        variant.optimizer.zero_grad(set_to_none=True)
    if variant.is_aetnet:
        with record_function(RANGE_PREFIX + "momentum_update"):
            variant.model.momentum_update()
    return loss.detach()


@torch.inference_mode()
def inference_step(variant: Variant, inputs: dict, device: torch.device, dtype: str):
    """Eval-mode forward: no labels, no alignment losses, no momentum encoders (AETNet still runs its aligners)."""
    with autocast(device, dtype):
        return variant.forward(**_model_inputs(variant, inputs, with_labels=False)).logits


__all__ = [
    "NUM_LABELS",
    "RANGE_PREFIX",
    "Variant",
    "build_variants",
    "hardware",
    "inference_step",
    "make_inputs",
    "synchronize",
    "train_step",
]
