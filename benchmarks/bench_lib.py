"""
Building blocks of `bench_training_step.py`: synthetic inputs, the models under test, one training or inference
step, interleaved timing, peak memory, and the profiler breakdown of an AETNet training step.

Everything here measures; nothing changes the models. The breakdown ranges are added with module hooks that exist
only while one profiled step runs.
"""

from __future__ import annotations

import contextlib
import copy
import os
import platform
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function
from transformers import LayoutLMv3ForTokenClassification

from aetnet.configuration_aetnet import AETNetConfig
from aetnet.modeling_aetnet import AETNetForTokenClassification


NUM_LABELS = 7
RANGE_PREFIX = "bench::"
# Submodules of `AETNetModel` whose forward time counts towards each part of the breakdown.
PART_MODULES = {
    "aligners": ("vision_model", "text_model", "vision_proj", "text_proj"),
    "momentum_encoders": ("vision_model_m", "text_model_m", "vision_proj_m", "text_proj_m"),
}
FORWARD_PARTS = ("aligners", "momentum_encoders", "fusion", "objectives")
STEP_PARTS = (*FORWARD_PARTS, "other_forward", "backward", "optimizer", "momentum_update", "unattributed")


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
        model.aetnet.momentum_update_in_forward = False
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


__all__ = [
    "NUM_LABELS",
    "STEP_PARTS",
    "Variant",
    "breakdown",
    "build_variants",
    "objective_capture",
    "inference_step",
    "make_inputs",
    "measured_call",
    "part_ranges",
    "persistent_bytes",
    "summarize",
    "time_interleaved",
    "time_objectives",
    "train_step",
]
