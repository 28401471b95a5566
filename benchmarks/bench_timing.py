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
Timing and memory of `bench_training_step.py`: interleaved timing of the variants, the summary of a list of times,
the bytes a model keeps across steps, and one profiled call with its transient peak memory.

Apart from the models and steps (`bench_lib.py`) because they measure any callable; nothing here changes a model.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections import defaultdict
from collections.abc import Callable

import torch
from bench_lib import Variant, synchronize
from torch.profiler import ProfilerActivity, profile


def time_interleaved(
    variants: list[Variant], step: Callable[[Variant], object], warmup: int, steps: int, device: torch.device
) -> dict[str, list[float]]:
    """
    Milliseconds per call of `step(variant)`, after `warmup` untimed rounds. The variants take turns within each
    round, in alternating order, so that load drift on a shared machine hits them alike.
    """
    times = defaultdict(list)
    for round_index in range(warmup + steps):
        order = variants if round_index % 2 == 0 else variants[::-1]
        for variant in order:
            synchronize(device)
            start = time.perf_counter()
            step(variant)
            synchronize(device)
            if round_index >= warmup:
                times[variant.name].append((time.perf_counter() - start) * 1e3)
    return dict(times)


def summarize(times_ms: list[float]) -> dict:
    ordered = sorted(times_ms)
    quartiles = statistics.quantiles(ordered, n=4) if len(ordered) > 1 else [ordered[0]] * 3
    return {
        "median_ms": statistics.median(ordered),
        "p25_ms": quartiles[0],
        "p75_ms": quartiles[2],
        "min_ms": ordered[0],
        "times_ms": [round(t, 3) for t in times_ms],
    }


def persistent_bytes(variant: Variant) -> int:
    """Bytes that live across steps: parameters, buffers, gradients still held, and optimizer state."""
    model = variant.model
    tensors = [*model.parameters(), *model.buffers()]
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    tensors += [v for state in variant.optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
    return sum(t.numel() * t.element_size() for t in tensors)


def _cpu_transient_peak(prof) -> int | None:
    """
    Peak bytes allocated and still alive within a CPU profile, from the allocator's running total in the profiler's
    allocation events (private `experimental_event_tree` API; `None` when unavailable).
    """
    try:
        from torch._C._profiler import _EventType

        stack, allocations = list(prof.profiler.kineto_results.experimental_event_tree()), []
        while stack:
            event = stack.pop()
            if event.tag == _EventType.Allocation and event.typed[1].device.type == "cpu":
                allocations.append((event.start_time_ns, event.typed[1].alloc_size, event.typed[1].total_allocated))
            stack.extend(event.children)
    except (AttributeError, ImportError, RuntimeError):
        return None
    if not allocations:
        return 0
    allocations.sort()
    start_total = allocations[0][2] - allocations[0][1]
    return max(total for _, _, total in allocations) - start_total


def measured_call(fn: Callable[[], object], device: torch.device, hooks: contextlib.AbstractContextManager):
    """
    Run `fn` once under the profiler (closing `hooks` after it) and return `(profile, wall_ms, transient_bytes)`:
    the peak bytes allocated on top of what existed before the call (CUDA caching-allocator statistics on GPU,
    the profiler's CPU allocation events on CPU).
    """
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    synchronize(device)
    if device.type == "cuda":
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    with hooks, profile(activities=activities, profile_memory=device.type == "cpu") as prof:
        start = time.perf_counter()
        fn()
        synchronize(device)
        wall_ms = (time.perf_counter() - start) * 1e3
    if device.type == "cuda":
        transient = torch.cuda.max_memory_allocated(device) - before
    else:
        transient = _cpu_transient_peak(prof)
    return prof, wall_ms, transient


__all__ = ["measured_call", "persistent_bytes", "summarize", "time_interleaved"]
