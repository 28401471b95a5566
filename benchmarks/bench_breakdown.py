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
The profiler breakdown of an AETNet training step for `bench_training_step.py`: profiler ranges around the
submodules of each part (aligners, momentum encoders, fusion, objectives) added with module hooks that exist only
while one profiled step runs, the milliseconds and shares of each part, and the replay of the four objectives on
inputs captured from a real step.

Everything here measures; nothing changes the models.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections import defaultdict

import torch
from bench_lib import RANGE_PREFIX, synchronize
from torch import nn
from torch.profiler import record_function

from aetnet import AETNetForTokenClassification


# Submodules of `AETNetModel` whose forward time counts towards each part of the breakdown.
PART_MODULES = {
    "aligners": ("vision_model", "text_model", "vision_proj", "text_proj"),
    "momentum_encoders": ("vision_model_m", "text_model_m", "vision_proj_m", "text_proj_m"),
}
FORWARD_PARTS = ("aligners", "momentum_encoders", "fusion", "objectives")
STEP_PARTS = (*FORWARD_PARTS, "other_forward", "backward", "optimizer", "momentum_update", "unattributed")


@contextlib.contextmanager
def part_ranges(model: AETNetForTokenClassification):
    """Profiler ranges `bench::<part>` around the submodules of each breakdown part, for the duration of the block."""
    base, handles = model.aetnet, []

    def add(module: nn.Module, label: str) -> None:
        open_ranges = []

        def enter(*_):
            open_ranges.append(record_function(RANGE_PREFIX + label).__enter__())

        def leave(*_):
            open_ranges.pop().__exit__(None, None, None)

        handles.extend([module.register_forward_pre_hook(enter), module.register_forward_hook(leave)])

    for label, names in PART_MODULES.items():
        for name in names:
            if getattr(base, name, None) is not None:
                add(getattr(base, name), label)
    for module in objective_loss_modules(base):
        add(module, "objectives")
    add(base.layoutlmv3, "fusion")
    add(model.classifier, "fusion")
    enqueue = base.queues.enqueue

    def ranged_enqueue(*args, **kwargs):
        with record_function(RANGE_PREFIX + "objectives"):
            return enqueue(*args, **kwargs)

    base.queues.enqueue = ranged_enqueue
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        del base.queues.enqueue


def objective_loss_modules(base) -> list[nn.Module]:
    """The tensor-level loss module of every enabled objective (`objective.loss`): the objectives' own work, after
    the projections the aligners' range already counts."""
    return [objective.loss for objective in base.objectives.values()]


def breakdown(prof, wall_ms: float, device: torch.device) -> dict:
    """
    Milliseconds and shares of each step part. On CPU the parts are the ranges' wall times inside the profiled step;
    on CUDA they are the kernel times launched inside each range, and `backward` is the remaining kernel time (the
    autograd engine launches backward kernels from its own thread, outside the ranges). `unattributed` is the CPU
    time outside every range (summing the losses, Python glue); it is folded into `backward` on CUDA.
    """
    on_cuda = device.type == "cuda"
    ranges = defaultdict(float)
    kernel_ms = 0.0
    cpu = torch.autograd.DeviceType.CPU
    for event in prof.events():
        if event.name.startswith(RANGE_PREFIX):
            if event.device_type != cpu:
                continue  # the GPU-timeline copy of a range
            micros = event.device_time_total if on_cuda else event.cpu_time_total
            ranges[event.name[len(RANGE_PREFIX) :]] += micros / 1e3
        elif on_cuda and event.device_type != cpu:
            kernel_ms += event.device_time_total / 1e3
    parts = {name: ranges.get(name, 0.0) for name in (*FORWARD_PARTS, "optimizer", "momentum_update")}
    parts["other_forward"] = max(0.0, ranges.get("forward", 0.0) - sum(parts[name] for name in FORWARD_PARTS))
    total = kernel_ms if on_cuda else wall_ms
    attributed = sum(value for name, value in parts.items())
    parts["backward"] = max(0.0, total - attributed) if on_cuda else ranges.get("backward", 0.0)
    parts["unattributed"] = max(0.0, total - attributed - parts["backward"])
    parts = {name: parts[name] for name in STEP_PARTS}
    return {
        "total_ms": total,
        "basis": "CUDA kernel time" if on_cuda else "CPU wall time of the profiled step",
        "parts_ms": parts,
        "shares": {name: value / total if total else 0.0 for name, value in parts.items()},
    }


def _alias(value):
    """A detached alias (no copy) of a tensor argument, a leaf requiring grad where the original did."""
    if torch.is_tensor(value):
        return value.detach().requires_grad_(value.requires_grad and value.is_floating_point())
    return value


@contextlib.contextmanager
def objective_capture(model: AETNetForTokenClassification):
    """
    Record the inputs of every loss-module call and queue update made inside the block, as detached aliases (no copy,
    so the measured step's time and memory stay as they are). Yields the `(loss_calls, enqueue_calls)` lists.
    """
    base, loss_calls, enqueue_calls, handles = model.aetnet, [], [], []

    def record(module, args, kwargs):
        loss_calls.append((module, [_alias(a) for a in args], {k: _alias(v) for k, v in kwargs.items()}))

    for module in objective_loss_modules(base):
        handles.append(module.register_forward_pre_hook(record, with_kwargs=True))
    patched = "enqueue" in vars(base.queues)  # by `part_ranges`, when both are active
    enqueue = base.queues.enqueue

    def recorded_enqueue(*args):
        enqueue_calls.append([_alias(a) for a in args])
        return enqueue(*args)

    base.queues.enqueue = recorded_enqueue
    try:
        yield loss_calls, enqueue_calls
    finally:
        for handle in handles:
            handle.remove()
        if patched:
            base.queues.enqueue = enqueue
        else:
            del base.queues.enqueue


def time_objectives(model, loss_calls, enqueue_calls, device: torch.device, reps: int) -> float:
    """Median ms of the four objectives' forward + backward and the queue update, replayed on captured inputs."""
    leaves = [t for _, args, kwargs in loss_calls for t in (*args, *kwargs.values()) if torch.is_tensor(t)]
    leaves = [t for t in leaves if t.requires_grad]

    def once():
        total = sum(module(*args, **kwargs) for module, args, kwargs in loss_calls)
        total.backward()
        for args in enqueue_calls:
            model.aetnet.queues.enqueue(*args)
        for leaf in leaves:
            leaf.grad = None

    once()
    times = []
    for _ in range(reps):
        synchronize(device)
        start = time.perf_counter()
        once()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


__all__ = ["STEP_PARTS", "breakdown", "objective_capture", "part_ranges", "time_objectives"]
