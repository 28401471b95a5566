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
What each alignment objective outside AETNet's four adds to a training step: AETNet with its four default objectives
(`aetnet-4`) against the same model with one more objective (`aetnet-4+<name>`), same weights, inputs and
`attn_implementation`, timed in interleaved rounds (`bench_timing.time_interleaved`), one full training step each
(forward with every term, backward, AdamW, EMA update; `bench_lib.train_step`).

    share of <name> = (median step of aetnet-4+<name> - median step of aetnet-4) / median step of aetnet-4+<name>

It is the cost a user pays for switching the objective on, extra LayoutLMv3 forwards included (which the
loss-replay share of `bench_training_step.py` cannot see: those forwards run inside the objective).

    python benchmarks/bench_objective_cost.py --size tiny --batch-size 8 --seq-len 512 --threads 1 \
        --out benchmarks/results/objective-cost-cpu.json
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import shlex
import sys
from pathlib import Path

import torch
import transformers
from bench_lib import NUM_LABELS, Variant, hardware, make_inputs, train_step
from bench_timing import summarize, time_interleaved

from aetnet import AETNetConfig, AETNetForTokenClassification
from aetnet.alignment import registered_objectives
from aetnet.configuration_aetnet import ALIGNMENT_OBJECTIVES


def build(config: AETNetConfig, objectives: list[str], name: str, device: torch.device) -> Variant:
    """AETNet for token classification with `objectives`, seeded so that the shared weights are the same."""
    config = copy.deepcopy(config)
    config.alignment_objectives = objectives
    torch.manual_seed(0)
    model = AETNetForTokenClassification(config).to(device).train()
    model.set_momentum_update("step")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    return Variant(name, model, optimizer, model, True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="tiny", help="AETNet preset (tiny, study, small, base)")
    parser.add_argument(
        "--objectives", default=None, help="comma-separated; default: every registered objective outside the four"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--attn-implementation", default="sdpa")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, required=True, help="result JSON; a .md table is written beside it")
    args = parser.parse_args(argv)
    extra = [name for name in registered_objectives() if name not in ALIGNMENT_OBJECTIVES]
    args.objectives = extra if args.objectives is None else [name for name in args.objectives.split(",") if name]
    unknown = [name for name in args.objectives if name not in extra]
    if unknown or not args.objectives:
        parser.error(f"--objectives: unknown {unknown or 'none given'}; choose among {extra}")
    for name in ("batch_size", "seq_len", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = AETNetConfig.from_preset(args.size, max_length=max(args.seq_len, 512), num_labels=NUM_LABELS)
    config._attn_implementation = args.attn_implementation
    extra = args.objectives
    variants = [build(config, list(ALIGNMENT_OBJECTIVES), "aetnet-4", device)]
    variants += [build(config, [*ALIGNMENT_OBJECTIVES, name], f"aetnet-4+{name}", device) for name in extra]
    inputs = make_inputs(config, args.batch_size, args.seq_len, device)
    times = time_interleaved(variants, lambda v: train_step(v, inputs, device, "fp32"), args.warmup, args.steps, device)
    base = summarize(times["aetnet-4"])["median_ms"]
    rows = []
    for name in extra:
        median = summarize(times[f"aetnet-4+{name}"])["median_ms"]
        rows.append({"objective": name, "step_ms": median, "base_step_ms": base, "share": (median - base) / median})
    result = {
        "meta": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": "python " + shlex.join([sys.argv[0], *(sys.argv[1:] if argv is None else argv)]),
            "hardware": hardware(device),
            "software": f"torch {torch.__version__}, transformers {transformers.__version__}",
            "size": args.size,
            "batch_size": args.batch_size,
            "seq_len": args.seq_len,
            "attn_implementation": args.attn_implementation,
        },
        "rows": rows,
        "times_ms": times,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    lines = [
        "| objective added to the four | step ms (four) | step ms (four + it) | share of the step |",
        "|---|---|---|---|",
        *(
            f"| `{r['objective']}` | {r['base_step_ms']:.0f} | {r['step_ms']:.0f} | {100 * r['share']:.1f}% |"
            for r in rows
        ),
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


__all__ = ["build", "main"]


if __name__ == "__main__":
    main()
