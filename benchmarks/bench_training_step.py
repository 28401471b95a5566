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
AETNet vs stock LayoutLMv3: training-step and inference time, peak memory and a profiler breakdown, in one process
and on the same inputs.

For every size x dtype x batch size the script builds stock `LayoutLMv3ForTokenClassification` and
`AETNetForTokenClassification` per `--attn-implementation` (transformers' own attention selector, for LayoutLMv3 and,
in AETNet, all five encoders; random init, all four alignment objectives, AdamW, momentum update after each step).
Ratios are AETNet over stock LayoutLMv3 with sdpa, the attention a user gets by default. It times them in interleaved
rounds after warm-up, reports medians, measures the peak memory of one more step, profiles one AETNet step into
parts, replays the four objectives (forward + backward + queue update) on the captured inputs, and writes a JSON
file (and a PNG with `--plot`).

    python benchmarks/bench_training_step.py --device cuda --sizes base --batch-sizes 1,8 --dtypes bf16,fp32 \
        --attn-implementation sdpa,eager --out benchmarks/results/h100.json --plot
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import platform
import shlex
import sys
from pathlib import Path

import torch
import transformers
from bench_breakdown import STEP_PARTS, breakdown, objective_capture, part_ranges, time_objectives
from bench_lib import build_variants, hardware, inference_step, make_inputs, train_step
from bench_timing import measured_call, persistent_bytes, summarize, time_interleaved


# The targets, AETNet / stock LayoutLMv3. They are stated for base sizes, bf16, 512 tokens and 224 px on an
# H100 (training at batch 8, inference at batch 1 and 8); other cases are reported against the same numbers.
GOALS = {"train_time": 2.0, "train_memory": 1.6, "inference_time": 1.8, "objectives_share": 0.05}
MIB = 2**20


def _csv(kind):
    def parse(text: str) -> list:
        try:
            return [kind(item) for item in text.split(",") if item]
        except ValueError as error:
            message = f"expected a comma-separated list of {kind.__name__}: {text!r}"
            raise argparse.ArgumentTypeError(message) from error

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=_csv(str), default=["tiny", "small"], help="AETNet presets: tiny,small,base")
    parser.add_argument("--batch-sizes", type=_csv(int), default=[1, 8])
    parser.add_argument("--seq-len", type=int, default=512, help="text tokens per page (pages are 1 + patches more)")
    parser.add_argument("--dtypes", type=_csv(str), default=["fp32", "bf16"], help="fp32, bf16 (autocast)")
    parser.add_argument("--modes", type=_csv(str), default=["train", "inference"])
    parser.add_argument("--steps", type=int, default=5, help="timed rounds (each variant once per round)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument(
        "--attn-implementation",
        type=_csv(str),
        default=["sdpa", "eager"],
        help="attn_implementation of the stock and AETNet variants (sdpa is the reference)",
    )
    parser.add_argument("--objective-reps", type=int, default=5, help="timed replays of the objectives")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU); default: torch's")
    parser.add_argument("--compile", action="store_true", help="torch.compile every model's forward (all variants)")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the profiled step and objective replay")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/latest.json"))
    parser.add_argument("--plot", action="store_true", help="also write <out>.png")
    parser.add_argument("--replot", type=Path, default=None, help="re-render <json>.md and .png from a result; no run")
    args = parser.parse_args(argv)
    for name, values, allowed in (
        ("--sizes", args.sizes, {"tiny", "small", "base"}),
        ("--dtypes", args.dtypes, {"fp32", "bf16"}),
        ("--modes", args.modes, {"train", "inference"}),
        ("--attn-implementation", args.attn_implementation, {"eager", "sdpa"}),
    ):
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            parser.error(f"{name} takes a non-empty subset of {sorted(allowed)}, got {values}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda was asked for but torch.cuda.is_available() is False")
    if args.steps < 1 or args.warmup < 0 or min(args.batch_sizes) < 1 or args.seq_len < 2:
        parser.error(f"need --steps >= 1, --warmup >= 0, batch sizes >= 1, --seq-len >= 2; got {vars(args)}")
    return args


def attention_classes(model) -> dict:
    """The `attn_implementation` each encoder of `model` runs."""
    if not hasattr(model, "aetnet"):
        return {"layoutlmv3": model.config._attn_implementation}
    names = ("layoutlmv3", "vision_model", "text_model", "vision_model_m", "text_model_m")
    return {name: getattr(model.aetnet, name).config._attn_implementation for name in names}


def reference_name(names) -> str:
    """The stock variant every ratio divides by: sdpa when measured (transformers' default), else the first."""
    stock = [name for name in names if name.startswith("layoutlmv3-")]
    return "layoutlmv3-sdpa" if "layoutlmv3-sdpa" in stock else stock[0]


def run_case(variants, args, device, size, dtype, batch_size) -> tuple[list[dict], list[dict]]:
    """Time, measure and profile every requested mode of one size x dtype x batch size."""
    config = next(v for v in variants if v.is_aetnet).model.config
    inputs = make_inputs(config, batch_size, args.seq_len, device)
    case = {
        "size": size,
        "dtype": dtype,
        "batch_size": batch_size,
        "seq_len": args.seq_len,
        "image_size": config.layout_config.input_size,
    }
    rows, breakdowns = [], []
    for mode in args.modes:
        training = mode == "train"
        for variant in variants:
            variant.model.train(training)

        def step(variant, forward=None):
            if training:
                return train_step(variant, inputs, device, dtype, forward)
            return inference_step(variant, inputs, device, dtype)

        times = time_interleaved(variants, step, args.warmup, args.steps, device)
        for variant in variants:
            profiled = training and variant.is_aetnet and not args.no_breakdown
            hooks = contextlib.ExitStack()
            if profiled:
                hooks.enter_context(part_ranges(variant.model))
                objective_calls = hooks.enter_context(objective_capture(variant.model))
            # Ranges hang on module hooks, which compiled graphs skip: the profiled step runs the eager module.
            forward = variant.model if profiled else None
            prof, wall_ms, transient = measured_call(lambda: step(variant, forward), device, hooks)
            persistent = (
                persistent_bytes(variant)
                if training
                else sum(t.numel() * t.element_size() for t in (*variant.model.parameters(), *variant.model.buffers()))
            )
            row = {
                **case,
                "mode": mode,
                "model": variant.name,
                **summarize(times[variant.name]),
                "persistent_mib": persistent / MIB,
                "transient_peak_mib": None if transient is None else transient / MIB,
                "peak_memory_mib": None if transient is None else (persistent + transient) / MIB,
            }
            rows.append(row)
            if profiled:
                objectives_ms = time_objectives(variant.model, *objective_calls, device, args.objective_reps)
                breakdowns.append(
                    {
                        **case,
                        "model": variant.name,
                        **breakdown(prof, wall_ms, device),
                        "objectives_fwd_bwd_ms": objectives_ms,
                        "objectives_fwd_bwd_share": objectives_ms / row["median_ms"],
                    }
                )
            print(
                f"{size:>5} {dtype:>4} b{batch_size:<2} {mode:<9} {variant.name:<13} "
                f"{row['median_ms']:9.1f} ms  peak {row['peak_memory_mib'] or float('nan'):8.1f} MiB",
                flush=True,
            )
    return rows, breakdowns


def ratios(rows: list[dict], breakdowns: list[dict]) -> list[dict]:
    """AETNet / stock LayoutLMv3 per case and AETNet variant, with the goal each ratio is held against."""
    reference = reference_name(r["model"] for r in rows)
    stock = {(r["size"], r["dtype"], r["batch_size"], r["mode"]): r for r in rows if r["model"] == reference}
    shares = {(b["size"], b["dtype"], b["batch_size"], b["model"]): b["objectives_fwd_bwd_share"] for b in breakdowns}
    out = []
    for row in rows:
        if not row["model"].startswith("aetnet-"):
            continue
        key = (row["size"], row["dtype"], row["batch_size"], row["mode"])
        base = stock[key]
        entry = {
            "size": row["size"],
            "dtype": row["dtype"],
            "batch_size": row["batch_size"],
            "mode": row["mode"],
            "model": row["model"],
            "time_ratio": row["median_ms"] / base["median_ms"],
        }
        if row["peak_memory_mib"] is not None and base["peak_memory_mib"]:
            entry["memory_ratio"] = row["peak_memory_mib"] / base["peak_memory_mib"]
        if row["mode"] == "train":
            entry["time_goal_met"] = entry["time_ratio"] <= GOALS["train_time"]
            if "memory_ratio" in entry:
                entry["memory_goal_met"] = entry["memory_ratio"] <= GOALS["train_memory"]
            share = shares.get((row["size"], row["dtype"], row["batch_size"], row["model"]))
            if share is not None:
                entry["objectives_share"] = share
                entry["objectives_goal_met"] = share <= GOALS["objectives_share"]
        else:
            entry["time_goal_met"] = entry["time_ratio"] <= GOALS["inference_time"]
        out.append(entry)
    return out


def _verdict(value: float | None, goal: float, fmt: str = ".2f") -> str:
    if value is None:
        return "n/a"
    return f"{value:{fmt}} (<= {goal:{fmt}}) {'met' if value <= goal else 'NOT met'}"


def _mib(row: dict) -> str:
    return "n/a" if row["peak_memory_mib"] is None else f"{row['peak_memory_mib']:.0f}"


def markdown(results: dict) -> str:
    """The tables BENCHMARKS.md shows: per-case medians and ratios against the goals, then the step breakdown."""
    lines = [
        "| size | dtype | batch | mode | stock ms | AETNet variant | AETNet ms | time ratio (goal) "
        "| peak MiB stock / AETNet | memory ratio (goal) | objectives fwd+bwd share (goal) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = {(r["size"], r["dtype"], r["batch_size"], r["mode"], r["model"]): r for r in results["rows"]}
    reference = reference_name(r["model"] for r in results["rows"])
    for ratio in results["ratios"]:
        key = (ratio["size"], ratio["dtype"], ratio["batch_size"], ratio["mode"])
        stock, aet = rows[(*key, reference)], rows[(*key, ratio["model"])]
        train = ratio["mode"] == "train"
        time_goal = GOALS["train_time" if train else "inference_time"]
        memory = ratio.get("memory_ratio")
        if train:
            memory_cell = _verdict(memory, GOALS["train_memory"])
        else:
            memory_cell = "n/a" if memory is None else f"{memory:.2f}"
        share_cell = _verdict(ratio.get("objectives_share"), GOALS["objectives_share"], ".1%") if train else "n/a"
        lines.append(
            f"| {' | '.join(str(k) for k in key)} | {stock['median_ms']:.1f} | {ratio['model']} | "
            f"{aet['median_ms']:.1f} | {_verdict(ratio['time_ratio'], time_goal)} | {_mib(stock)} / {_mib(aet)} | "
            f"{memory_cell} | {share_cell} |"
        )
    if results["breakdowns"]:
        lines += [
            "",
            "| size | dtype | batch | AETNet variant | basis | " + " | ".join(STEP_PARTS) + " |",
            "|---|---|---|---|---|" + "---|" * len(STEP_PARTS),
        ]
        for b in results["breakdowns"]:
            shares = " | ".join(f"{b['shares'][part]:.1%}" for part in STEP_PARTS)
            case = f"{b['size']} | {b['dtype']} | {b['batch_size']} | {b['model']} | {b['basis']}"
            lines.append(f"| {case} | {shares} |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = results["ratios"]
    fig, (ax_ratio, ax_parts) = plt.subplots(2, 1, figsize=(max(8, 0.6 * len(entries) + 3), 9))
    labels = [f"{e['size']} {e['dtype']} b{e['batch_size']}\n{e['mode'][:5]} {e['model'][7:]}" for e in entries]
    xs = range(len(entries))
    ax_ratio.bar([x - 0.2 for x in xs], [e["time_ratio"] for e in entries], width=0.4, label="time ratio")
    memory = [e.get("memory_ratio", 0) for e in entries]
    ax_ratio.bar([x + 0.2 for x in xs], memory, width=0.4, label="peak memory ratio")
    for name, value, style in (
        ("train time goal", GOALS["train_time"], "--"),
        ("inference time goal", GOALS["inference_time"], ":"),
        ("train memory goal", GOALS["train_memory"], "-."),
    ):
        ax_ratio.axhline(value, color="gray", linestyle=style, linewidth=1, label=f"{name} ({value})")
    ax_ratio.set_xticks(list(xs), labels, fontsize=7)
    ax_ratio.set_ylabel("AETNet / stock LayoutLMv3")
    ax_ratio.legend(fontsize=7)
    ax_ratio.set_title(f"{results['meta']['device_name']} - {results['meta']['date']}", fontsize=9)
    bottoms = [0.0] * len(results["breakdowns"])
    names = [f"{b['size']} {b['dtype']} b{b['batch_size']}\n{b['model']}" for b in results["breakdowns"]]
    for part in STEP_PARTS:
        values = [b["shares"][part] for b in results["breakdowns"]]
        ax_parts.bar(names, values, bottom=bottoms, label=part)
        bottoms = [b + v for b, v in zip(bottoms, values)]
    ax_parts.set_ylabel("share of one AETNet training step")
    ax_parts.tick_params(axis="x", labelsize=7)
    ax_parts.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.replot is not None:
        results = json.loads(args.replot.read_text())
        args.replot.with_suffix(".md").write_text(markdown(results) + "\n")
        plot(results, args.replot.with_suffix(".png"))
        print(f"wrote {args.replot.with_suffix('.md')} and {args.replot.with_suffix('.png')}")
        return results
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    info = hardware(device)
    results = {
        "meta": {
            "date": datetime.date.today().isoformat(),
            "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
            "device": args.device,
            "device_name": info.get("gpu", info["cpu"]),
            "hardware": info,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
            "loadavg_start": os.getloadavg(),
            "goals": GOALS,
            "memory_method": (
                "persistent (parameters, buffers, grads, AdamW state) + transient peak of one step: "
                + (
                    "torch.cuda.max_memory_allocated minus memory_allocated before the step"
                    if args.device == "cuda"
                    else "peak of the CPU allocator's running total in torch.profiler allocation events"
                )
            ),
        },
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rows": [],
        "breakdowns": [],
    }
    for size in args.sizes:
        variants = build_variants(size, args.attn_implementation, args.seq_len, device, args.compile)
        results["meta"].setdefault("attention", {})[size] = {v.name: attention_classes(v.model) for v in variants}
        for dtype in args.dtypes:
            for batch_size in args.batch_sizes:
                rows, breakdowns = run_case(variants, args, device, size, dtype, batch_size)
                results["rows"] += rows
                results["breakdowns"] += breakdowns
        del variants
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    results["meta"]["loadavg_end"] = os.getloadavg()
    results["ratios"] = ratios(results["rows"], results["breakdowns"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    table = markdown(results)
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)
    if args.plot:
        plot(results, args.out.with_suffix(".png"))
    print(f"wrote {args.out}" + (f" and {args.out.with_suffix('.png')}" if args.plot else ""))
    return results


if __name__ == "__main__":
    main()
