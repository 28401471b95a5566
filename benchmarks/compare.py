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
AETNet against plain LayoutLMv3 over several seeds, with ablations of the alignment objectives, on FUNSD (entity F1,
`--task funsd`; question -> answer link F1 from the gold entities, `--task funsd_re`) or a page-classification folder
such as `../shared/data/rvlcdip3` (accuracy, `--task rvlcdip`) or SROIE receipts such as `../shared/data/sroie`
(entity F1 and the task-3 field match, `--task sroie`).

Every run is the task's example script (`examples/run_funsd.py`, `run_funsd_re.py`, `run_rvlcdip.py` or
`run_sroie.py`) in its own process, with the same arguments (those after `--`) and its seed; the variants differ in
one thing each:

- `aetnet`: AETNet, its four default objectives at their default weights;
- `layoutlmv3`: `--baseline layoutlmv3`, stock LayoutLMv3 started from the very weights of the AETNet run of the same
  seed (`AETNetFor....to_layoutlmv3`): the same LayoutLMv3 initialisation, data order, steps and learning rate;
- `no-ditc`, `no-imc`, `no-glitc`, `no-pita`: AETNet with that objective's loss weight at 0 (same initialisation as
  `aetnet`; the term is still computed and logged, so its curve shows what it does untrained);
- `no-alignment`: all four weights at 0, so the aligners' features still enter LayoutLMv3 but nothing aligns them:
  what the extra encoders give without the objectives;
- `+tia`, `+tim`, `+xmm_text`, `+xmm_image`, `+psl`: the four defaults plus that objective; `tia-only`, ...: that
  objective alone, as the four plus it with the four's weights at 0, so that the model and its initial weights are
  AETNet's (objectives draw their own weights apart from the global random stream, so every shared weight and the
  task head start as in `aetnet` and `layoutlmv3`); every registered objective outside the defaults gets both;
- `aetnet-gated`, `aetnet-add`, `aetnet-no-injection`: `--fusion_injection gated` (zero-initialised gates, so that the
  model starts as its baseline; the default, so the same as `aetnet`), `add` (the paper's full-scale addition) or
  `none` (the aligners are trained but never read by LayoutLMv3); `aetnet-add-no-alignment`, `aetnet-add-weights-0.1`:
  `add`, the four weights at 0 or 0.1 (`aetnet-add-no-alignment-random-aligners`: at 0, from random aligners);
- `aetnet-joint-clip`: `--grad_clipping global`, the Trainer's clip of all gradients together, not by part; from
  pre-trained encoders (`-- --layout_model ... --vision_model ... --text_model ...`), `layoutlmv3-random`: the
  plain LayoutLMv3 baseline with random weights of the same sizes and the same tokenizer (`--random_encoders layout
  vision text`): what the pre-training buys; `aetnet-random-aligners`: AETNet on the pre-trained LayoutLMv3 with
  random aligners (`--random_encoders vision text`); `aetnet-centered`: `--feature_centering 0.9`; `aetnet-mean-pooled`:
  `--image_feature_pooling mean`; `ditc-x4`: DITC's weight at 4; `aetnet-no-distill`: `--distill_alpha 0`.

The script writes, under `--out`: `runs/<variant>-seed<seed>/` (each run's output folder and `log.txt`),
`summary.json` (every run's scores, times, hardware, loss history and the command), `summary.md` (mean and sample
standard deviation per variant; with `layoutlmv3` and two or more seeds, each variant's paired difference from it and
the verdict of `verdicts`) and `summary.png` (task and alignment losses per step, mean over seeds with the min-max
band); `--summary NAME` names the three, so that summaries can share one folder of runs. A run whose folder holds
`all_results.json` is read, not rerun (`--rerun` to start over; `--rewrite` only writes the `.md` and `.png` again
from the `.json`). `--jobs N` runs N at a time, one CPU thread each by default.

    python benchmarks/compare.py --task funsd --variants aetnet,layoutlmv3 --seeds 1,2,3 \
        --out benchmarks/results/funsd-tiny-cpu -- --dataset_dir ../shared/data/funsd --model_size tiny
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import transformers
from bench_lib import hardware

from aetnet.alignment import registered_objectives
from aetnet.configuration_aetnet import ALIGNMENT_OBJECTIVES
from aetnet.training import loss_curves


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# Per task: the example script and its evaluation scores (the first is the one the table compares).
TASKS = {
    "funsd": (EXAMPLES / "run_funsd.py", ("f1", "precision", "recall")),
    "rvlcdip": (EXAMPLES / "run_rvlcdip.py", ("accuracy", "macro_f1")),
    # Relation extraction from the gold entities: F1 over predicted (question, answer) links.
    "funsd_re": (EXAMPLES / "run_funsd_re.py", ("f1", "precision", "recall")),
    # Receipt fields: entity F1 on the test split without its training-image duplicates, and the task-3 field match.
    "sroie": (EXAMPLES / "run_sroie.py", ("f1", "task3_f1", "precision", "recall")),
}
# The ablation switches off AETNet's default objectives one at a time, by their weight.
OBJECTIVES = ALIGNMENT_OBJECTIVES
EXTRA_OBJECTIVES = [name for name in registered_objectives() if name not in OBJECTIVES]


def all_weights(weight: float) -> list[str]:
    """The options that set every default objective's loss weight to `weight`."""
    return ["--loss_weights", ",".join(f"{name}={weight:g}" for name in OBJECTIVES)]


VARIANTS_NO_ALIGNMENT = all_weights(0)
ADD_NO_ALIGNMENT = ["--fusion_injection", "add", *VARIANTS_NO_ALIGNMENT]
VARIANTS = {
    "aetnet": [],
    "layoutlmv3": ["--baseline", "layoutlmv3"],
    **{f"no-{name}": ["--loss_weights", f"{name}=0"] for name in OBJECTIVES},
    "no-alignment": VARIANTS_NO_ALIGNMENT,
    "aetnet-gated": ["--fusion_injection", "gated"],
    "aetnet-add": ["--fusion_injection", "add"],
    "aetnet-add-no-alignment": ADD_NO_ALIGNMENT,
    "aetnet-add-no-alignment-random-aligners": [*ADD_NO_ALIGNMENT, "--random_encoders", "vision", "text"],
    "aetnet-add-weights-0.1": ["--fusion_injection", "add", *all_weights(0.1)],
    "aetnet-no-injection": ["--fusion_injection", "none"],
    "aetnet-joint-clip": ["--grad_clipping", "global"],
    "layoutlmv3-random": ["--baseline", "layoutlmv3", "--random_encoders", "layout", "vision", "text"],
    "aetnet-random-aligners": ["--random_encoders", "vision", "text"],
    "aetnet-centered": ["--feature_centering", "0.9"],
    "aetnet-mean-pooled": ["--image_feature_pooling", "mean"],
    "ditc-x4": ["--loss_weights", "ditc=4"],
    "aetnet-no-distill": ["--distill_alpha", "0"],
    **{f"+{name}": ["--alignment_objectives", *OBJECTIVES, name] for name in EXTRA_OBJECTIVES},
    **{
        f"{name}-only": ["--alignment_objectives", *OBJECTIVES, name, *VARIANTS_NO_ALIGNMENT]
        for name in EXTRA_OBJECTIVES
    },
}
# Set per run (the variants' options, the output folder, the seed); given after `--` they would skew the comparison.
OWNED_ARGUMENTS = ("--output_dir", "--seed", *sorted({a for args in VARIANTS.values() for a in args if a[:2] == "--"}))


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    argv = sys.argv[1:] if argv is None else argv
    own, script_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="funsd", choices=list(TASKS), help="Which example runs (default funsd).")
    parser.add_argument("--jobs", type=int, default=1, help="Runs at a time (default 1).")
    parser.add_argument("--variants", default="aetnet,layoutlmv3", help=f"Comma-separated, among {list(VARIANTS)}.")
    parser.add_argument("--seeds", default="1,2,3", help="Comma-separated seeds; every variant runs every seed.")
    parser.add_argument("--out", type=Path, required=True, help="Folder for the runs and the summary.")
    parser.add_argument("--rerun", action="store_true", help="Run again even where a run's results exist.")
    parser.add_argument("--summary", default="summary", help="Name of the summary files (.json, .md, .png).")
    parser.add_argument(
        "--rewrite",
        action="store_true",
        help="Run nothing: write the .md and .png again from the summary's .json (after a change to the tables).",
    )
    args = parser.parse_args(own)
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown or not args.variants:
        parser.error(f"--variants: unknown {unknown or 'none given'}; choose among {list(VARIANTS)}")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if not args.seeds:
        parser.error("--seeds: give at least one seed")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    owned = [a for a in script_args if a.split("=", 1)[0] in OWNED_ARGUMENTS]
    if owned:
        parser.error(f"{owned} after `--` are set per run by this script; leave them out")
    return args, script_args


def run_once(task: str, variant: str, seed: int, run_dir: Path, script_args: list[str], rerun: bool) -> dict:
    """One run of the task's example (or its saved results): scores, wall time and training log history."""
    script, scores = TASKS[task]
    results_file = run_dir / "all_results.json"
    if rerun or not results_file.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            str(script),
            *script_args,
            *VARIANTS[variant],
            "--output_dir",
            str(run_dir),
            "--seed",
            str(seed),
            "--disable_tqdm",
            "True",
        ]
        start = time.perf_counter()
        with open(run_dir / "log.txt", "w") as log:
            log.write(shlex.join(command) + "\n")
            log.flush()
            result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            raise RuntimeError(f"{variant} seed {seed} failed (exit {result.returncode}); see {run_dir / 'log.txt'}")
        info = {
            "wall_seconds": round(time.perf_counter() - start, 1),
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            # Not torch_threads: that is this process's; the run sets its own (`--torch_num_threads`, 1 on CPU).
            "hardware": {k: v for k, v in hardware(run_device(script_args)).items() if k != "torch_threads"},
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        }
        (run_dir / "run_info.json").write_text(json.dumps(info, indent=1))
    info = json.loads((run_dir / "run_info.json").read_text())
    results = json.loads(results_file.read_text())
    state = json.loads((run_dir / "trainer_state.json").read_text())
    return {
        "variant": variant,
        "seed": seed,
        **{name: results[f"eval_{name}"] for name in scores},
        "train_runtime": results.get("train_runtime"),
        **info,
        "global_step": state["global_step"],
        "log_history": state["log_history"],
    }


def run_device(script_args: list[str]) -> torch.device:
    """Where `run_funsd.py` trains with these arguments: the GPU if there is one, unless `--use_cpu` is given."""
    use_cpu = any(arg in ("--use_cpu", "--use_cpu=True") for arg in script_args)
    return torch.device("cuda" if torch.cuda.is_available() and not use_cpu else "cpu")


def summarize(runs: list[dict], variants: list[str], scores: tuple[str, ...]) -> list[dict]:
    """Mean and sample standard deviation (0 for one seed) of each score, per variant, in `variants` order."""
    rows = []
    for variant in variants:
        mine = [run for run in runs if run["variant"] == variant]
        row = {"variant": variant, "seeds": [run["seed"] for run in mine]}
        for name in scores:
            values = [run[name] for run in mine]
            row[name] = values
            row[f"{name}_mean"] = statistics.fmean(values)
            row[f"{name}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        row["train_runtime_mean"] = statistics.fmean(run["train_runtime"] or 0.0 for run in mine)
        rows.append(row)
    return rows


def markdown(rows: list[dict], scores: tuple[str, ...]) -> str:
    """The summary table; differences in the first score are against the `layoutlmv3` and `aetnet` rows, if run."""
    main, others = scores[0], scores[1:]
    references = {row["variant"]: row[f"{main}_mean"] for row in rows if row["variant"] in ("layoutlmv3", "aetnet")}
    lines = [
        f"| variant | seeds | {main} mean +- std | {main} per seed "
        + "".join(f"| {name} " for name in others)
        + "".join(f"| {main} - {name} " for name in references)
        + "| train s (mean) |",
        "|---|---|---|---" + "|---" * (len(others) + len(references)) + "|---|",
    ]
    for row in rows:
        deltas = "".join(f"| {row[f'{main}_mean'] - value:+.4f} " for value in references.values())
        lines.append(
            f"| {row['variant']} | {','.join(map(str, row['seeds']))} "
            f"| {row[f'{main}_mean']:.4f} +- {row[f'{main}_std']:.4f} | {' '.join(f'{v:.4f}' for v in row[main])} "
            + "".join(f"| {row[f'{name}_mean']:.4f} " for name in others)
            + f"{deltas}| {row['train_runtime_mean']:.0f} |"
        )
    return "\n".join(lines)


def verdicts(rows: list[dict], score: str, baseline: str = "layoutlmv3") -> list[dict]:
    """
    Each variant's `score` minus the `baseline` run of the same seed (which starts from the same weights), and the
    studies' rule: a variant **helps** (**hurts**) when it is ahead of (behind) the baseline in every seed *and* by
    more on average than the baseline's seed spread (its sample standard deviation); otherwise it is within the
    spread. Empty without the baseline or with fewer than two seeds, where no spread can be measured.
    """
    reference = next((row for row in rows if row["variant"] == baseline), None)
    if reference is None or len(reference["seeds"]) < 2:
        return []
    by_seed = dict(zip(reference["seeds"], reference[score]))
    spread = reference[f"{score}_std"]
    results = []
    for row in rows:
        if row["variant"] == baseline:
            continue
        differences = [value - by_seed[seed] for seed, value in zip(row["seeds"], row[score]) if seed in by_seed]
        mean = statistics.fmean(differences)
        every = "ahead" if all(d > 0 for d in differences) else "behind" if all(d < 0 for d in differences) else None
        if every and abs(mean) > spread:
            verdict = "**helps**" if every == "ahead" else "**hurts**"
        else:
            verdict = "within the spread" + (f" ({every} in every seed)" if every else "")
        results.append({"variant": row["variant"], "differences": differences, "mean": mean, "verdict": verdict})
    return results


def verdicts_markdown(rows: list[dict], score: str, baseline: str = "layoutlmv3") -> str:
    """The paired differences of `verdicts` as a table, or "" where it has none."""
    results = verdicts(rows, score, baseline)
    if not results:
        return ""
    reference = next(row for row in rows if row["variant"] == baseline)
    lines = [
        f"Paired against `{baseline}` (seeds {' / '.join(map(str, reference['seeds']))}); its seed spread "
        f"(std) is {reference[f'{score}_std']:.4f}.",
        "",
        f"| variant | {score} - {baseline}, per seed | mean | verdict |",
        "|---|---|---|---|",
    ]
    for result in results:
        per_seed = " / ".join(f"{d:+.4f}" for d in result["differences"])
        lines.append(f"| {result['variant']} | {per_seed} | {result['mean']:+.4f} | {result['verdict']} |")
    return "\n".join(lines)


def plot(runs: list[dict], variants: list[str], path: Path) -> None:
    """Task and alignment loss curves, one panel per term, one line per variant (mean over seeds, min-max band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logged = {key for run in runs for entry in run["log_history"] for key in entry if key.startswith("loss_")}
    terms = ["loss_task", *sorted(logged - {"loss_task"})]
    colors = {variant: f"C{index}" for index, variant in enumerate(variants)}  # one colour per variant in every panel
    figure, axes = plt.subplots(1, len(terms), figsize=(4 * len(terms), 3.8), squeeze=False)
    for axis, term in zip(axes[0], terms):
        for variant in variants:
            curves = [loss_curves(run["log_history"]).get(term) for run in runs if run["variant"] == variant]
            curves = [curve for curve in curves if curve]
            if not curves:
                continue
            length = min(len(steps) for steps, _ in curves)
            steps = curves[0][0][:length]
            values = torch.tensor([values[:length] for _, values in curves], dtype=torch.float64)
            axis.plot(steps, values.mean(0), color=colors[variant], label=variant)
            if len(curves) > 1:
                axis.fill_between(steps, values.min(0).values, values.max(0).values, color=colors[variant], alpha=0.2)
        axis.set_title(term[5:] + (" (weight 0 in no-* runs)" if term != "loss_task" else ""), fontsize=9)
        axis.set_xlabel("optimizer step")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("training loss (unweighted)")
    handles = [matplotlib.lines.Line2D([], [], color=colors[variant], label=variant) for variant in variants]
    figure.legend(handles=handles, loc="lower center", ncol=len(variants), fontsize=9, frameon=False)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict:
    args, script_args = parse_args(argv)
    if args.rewrite:
        path = args.out / args.summary
        summary = json.loads(path.with_suffix(".json").read_text())
        write_reports(summary, path)
        return summary
    args.out.mkdir(parents=True, exist_ok=True)
    script, scores = TASKS[args.task]
    plan = [(variant, seed) for seed in args.seeds for variant in args.variants]
    runs = {}
    # Threads only wait on the runs' processes; a run's own threads are set by the example (1 on CPU).
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {
            pool.submit(
                run_once, args.task, variant, seed, args.out / "runs" / f"{variant}-seed{seed}", script_args, args.rerun
            ): (variant, seed)
            for variant, seed in plan
        }
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            run = future.result()
            runs[futures[future]] = run
            print(
                f"[{done}/{len(plan)}] {run['variant']} seed {run['seed']}: {scores[0]} {run[scores[0]]:.4f} "
                f"({run['wall_seconds']:.0f} s)",
                flush=True,
            )
    runs = [runs[key] for key in plan]
    rows = summarize(runs, args.variants, scores)
    summary = {
        "meta": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            # Called from another script (`argv` given), the command is still this script's.
            "command": "python " + shlex.join(sys.argv if argv is None else ["benchmarks/compare.py", *argv]),
            # Where the runs ran (each run's own record; a summary may be written elsewhere from copied runs).
            "run_hardware": list({json.dumps(r["hardware"], sort_keys=True): r["hardware"] for r in runs}.values()),
            "software": sorted({f"torch {run['torch']}, transformers {run['transformers']}" for run in runs}),
            "task": args.task,
            "jobs": args.jobs,
            "loadavg_at_summary": os.getloadavg(),
        },
        "rows": rows,
        "runs": runs,
    }
    path = args.out / args.summary
    path.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    write_reports(summary, path)
    return summary


def write_reports(summary: dict, path: Path) -> None:
    """The summary's tables (`.md`) and loss curves (`.png`) beside its `.json`, from what the `.json` records."""
    scores = TASKS[summary["meta"]["task"]][1]
    rows = summary["rows"]
    table = "\n\n".join(part for part in (markdown(rows, scores), verdicts_markdown(rows, scores[0])) if part)
    path.with_suffix(".md").write_text(table + "\n")
    plot(summary["runs"], [row["variant"] for row in rows], path.with_suffix(".png"))
    print(table)
    print(f"wrote {path}.json, .md and .png")


if __name__ == "__main__":
    main()
