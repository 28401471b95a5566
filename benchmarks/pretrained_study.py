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
The paper's question in miniature: AETNet against plain LayoutLMv3 when both start from the same *pre-trained*
LayoutLMv3, on forms (FUNSD entities and links), receipts (SROIE fields) and page classification (rvlcdip3).

One command, in stages (`--stages`, default all, in this order); every stage skips what it finds finished, so a
rerun continues where an interrupted one stopped and results can be committed as they come:

1. `pretrain`: `examples/run_pretraining.py` at the `study` size on the unlabeled pages of `--data` that no benchmark
   evaluates on (vrdu-pages, FUNSD training forms, rvlcdip3 train, SROIE train; docvqa-text for the RoBERTa), into
   `--pretrained` (the ViT by SimMIM and the page contrast, the script's default); skipped when each component there
   has its `all_results.json`, resumed from its last checkpoint otherwise. With `--jobs 2` or more, LayoutLMv3
   trains in one process and the two aligners in another.
2. `learnability`: `bench_learnability.py` from the pre-trained encoders, with random aligners, and with the
   aligners' [CLS] states centred (`--feature_centering`), with the ViT's mean patch state as the image's document
   feature (`--image_feature_pooling mean`): does each alignment objective fall below its chance level on real
   pages once the aligners are pre-trained?
3. `funsd`, `sroie`, `funsd_re`, `rvlcdip`: `compare.py` runs of the task's example from the same pre-trained
   weights. `headline` summary: `layoutlmv3-random` (the same model and tokenizer with random weights: what the
   pre-training buys), `layoutlmv3` and `aetnet` (both pre-trained: the paper's question), 5 seeds on FUNSD and
   SROIE, 3 elsewhere; `variants` summary, 3 seeds: those three, `aetnet-centered` (the aligners' [CLS] states
   centred), `aetnet-mean-pooled` (the ViT's mean patch state as the image's feature), `aetnet-random-aligners`
   and each objective off (`no-ditc` ...), paired against `layoutlmv3` by the
   compare harness's verdict rule. Arguments after `--` go to every fine-tuning run (a learning rate, say).

Results go under `--out` (`<task>/headline.{json,md,png}`, `<task>/variants.*`, `learnability-*.json`).
`--summaries headline` runs only the headline summaries, so that every task's headline comes before any variant.

    python benchmarks/pretrained_study.py --jobs 2 --out benchmarks/results/pretrained-study-cpu
    python benchmarks/pretrained_study.py --stages funsd --out ... -- --learning_rate 3e-4
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import bench_learnability
import compare


ROOT = Path(__file__).resolve().parents[1]
STAGES = ("pretrain", "learnability", "funsd", "sroie", "funsd_re", "rvlcdip")
SUMMARIES = ("headline", "variants")
HEADLINE = ["layoutlmv3-random", "layoutlmv3", "aetnet"]
VARIANTS = [
    *HEADLINE,
    "aetnet-centered",
    "aetnet-mean-pooled",
    "aetnet-random-aligners",
    *(f"no-{name}" for name in compare.OBJECTIVES),
]
# The pretrain stage's processes with `--jobs 2` or more: LayoutLMv3 beside the two aligners (one torch thread each).
PRETRAIN_GROUPS = (("layoutlmv3",), ("vit", "roberta"))
# Per task: the example's arguments (besides the weights) and the seeds of the headline summary.
TASK_ARGUMENTS = {
    "funsd": (lambda data: ["--dataset_dir", f"{data}/funsd", "--num_train_epochs", "8"], 5),
    # 626 receipts, about one window each: 4 epochs are about twice FUNSD's 8-epoch steps (the script's default: 30).
    "sroie": (lambda data: ["--dataset_dir", f"{data}/sroie", "--num_train_epochs", "4"], 5),
    "funsd_re": (lambda data: ["--dataset_dir", f"{data}/funsd"], 3),
    "rvlcdip": (
        lambda data: [
            "--dataset_dir",
            f"{data}/rvlcdip3",
            "--ocr_cache_dir",
            str(ROOT / "outputs" / "ocr-cache"),
            "--max_seq_length",
            "128",
        ],
        3,
    ),
}
COMPONENT_FOLDERS = ("layoutlmv3", "vit", "roberta")
# The fine-tuning scripts' options that read the pre-trained components.
WEIGHT_FLAGS = {"--layout_model": "layoutlmv3", "--vision_model": "vit", "--text_model": "roberta"}
# The learnability runs: from the pre-trained encoders, with random aligners, with the aligners' [CLS] centred, with
# the ViT's mean patch state; at the benchmark's learning rate and lower ones.
LEARNABILITY_RUNS = {
    "pretrained": [],
    "random-aligners": ["--random-encoders", "vision,text"],
    "pretrained-centered": ["--feature-centering", "0.9"],
    # The default learning rate (5e-3) suits random weights; pre-trained encoders at a fifth of it.
    "pretrained-lr1e-3": ["--learning-rate", "1e-3"],
    "pretrained-centered-lr1e-3": ["--feature-centering", "0.9", "--learning-rate", "1e-3"],
    "random-aligners-lr1e-3": ["--random-encoders", "vision,text", "--learning-rate", "1e-3"],
    # The ViT's document feature from its mean patch state (for a ViT pre-trained by SimMIM alone, whose [CLS] state
    # never trains).
    "pretrained-mean-pooled": ["--image-feature-pooling", "mean"],
    "pretrained-mean-pooled-lr1e-3": ["--image-feature-pooling", "mean", "--learning-rate", "1e-3"],
    "pretrained-mean-pooled-lr3e-4": ["--image-feature-pooling", "mean", "--learning-rate", "3e-4"],
    "pretrained-mean-pooled-lr1e-4": ["--image-feature-pooling", "mean", "--learning-rate", "1e-4"],
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else argv
    own, finetune_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, among {list(STAGES)}")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="the shared data folder")
    parser.add_argument(
        "--pretrained",
        type=Path,
        default=ROOT / "outputs" / "pretrained-study",
        help="run_pretraining.py's output folder (made by the pretrain stage when it is not complete)",
    )
    parser.add_argument("--pretrain_epochs", type=int, default=4, help="epochs of the pretrain stage")
    parser.add_argument("--out", type=Path, required=True, help="folder of the results")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (compare.py --jobs)")
    parser.add_argument(
        "--summaries",
        default=",".join(SUMMARIES),
        help=f"the task stages' summaries, comma-separated, among {list(SUMMARIES)} (headline only: every task's "
        "headline before any variant)",
    )
    args = parser.parse_args(own)
    args.finetune_args = finetune_args
    fixed = sorted({arg.split("=", 1)[0] for arg in finetune_args} & {"--dataset_dir", *WEIGHT_FLAGS})
    if fixed:
        parser.error(f"after `--`: {fixed} are set by this script from --data and --pretrained; leave them out")
    args.stages = [stage for stage in args.stages.split(",") if stage]
    unknown = sorted(set(args.stages) - set(STAGES))
    if unknown or not args.stages:
        parser.error(f"--stages: unknown {unknown or 'none given'}; choose among {list(STAGES)}")
    args.summaries = [summary for summary in args.summaries.split(",") if summary]
    unknown = sorted(set(args.summaries) - set(SUMMARIES))
    if unknown or not args.summaries:
        parser.error(f"--summaries: unknown {unknown or 'none given'}; choose among {list(SUMMARIES)}")
    if not args.data.is_dir():
        parser.error(f"--data {args.data}: no such folder")
    return args


def pretrained_complete(folder: Path) -> bool:
    """Whether every component of a `run_pretraining.py` output folder finished (wrote its `all_results.json`)."""
    return all((folder / name / "all_results.json").exists() for name in COMPONENT_FOLDERS)


def pretrain(args: argparse.Namespace) -> None:
    """The pre-training stage: the unlabeled pages of `args.data` (never an evaluated split) into `args.pretrained`."""
    if pretrained_complete(args.pretrained):
        print(f"pretrain: {args.pretrained} is complete, skipped", flush=True)
        return
    data = args.data
    command = [
        sys.executable,
        str(ROOT / "examples" / "run_pretraining.py"),
        "--train_dirs",
        *(str(data / name) for name in ("vrdu-pages", "sroie", "funsd", "rvlcdip3")),
        "--text_files",
        str(data / "docvqa-text" / "val.jsonl"),
        "--model_size",
        "study",
        "--output_dir",
        str(args.pretrained),
        "--ocr_cache_dir",
        str(ROOT / "outputs" / "ocr-cache"),
        "--num_train_epochs",
        str(args.pretrain_epochs),
        "--logging_steps",
        "10",
        "--save_steps",
        "100",
    ]
    groups = PRETRAIN_GROUPS if args.jobs > 1 else (COMPONENT_FOLDERS,)
    commands = [[*command, "--components", *group] for group in groups]
    for one in commands:
        print("pretrain:", " ".join(one), flush=True)
    # Each process resumes its components from their last checkpoints. The first trains the tokenizer (once: a
    # later process reads it from the folder), so the others start when it is saved, which the processor, saved
    # after it, tells.
    processes = [subprocess.Popen(commands[0])]
    saved = args.pretrained / "processor" / "processor_config.json"
    while len(commands) > 1 and processes[0].poll() is None and not saved.exists():
        time.sleep(5)
    processes += [subprocess.Popen(one) for one in commands[1:]]
    failed = [" ".join(group) for group, process in zip(groups, processes) if process.wait() != 0]
    if failed:
        raise SystemExit(f"pretrain: the pre-training of {failed} failed; rerun the stage to resume it")


def learnability(args: argparse.Namespace) -> None:
    """Each alignment objective alone on real FUNSD training pages (`LEARNABILITY_RUNS`: from the pre-trained
    encoders, with random aligners, with the aligners' [CLS] centred), against its chance level."""
    for name, extra in LEARNABILITY_RUNS.items():
        out = args.out / f"learnability-{name}.json"
        if out.exists():
            print(f"learnability: {out} exists, skipped", flush=True)
            continue
        options = ["--dataset_dir", str(args.data / "funsd"), "--pretrained", str(args.pretrained)]
        options += ["--spatial-bias-init", "locality", "--objectives", ",".join(compare.OBJECTIVES), "--out", str(out)]
        bench_learnability.main(options + extra)


def task_arguments(args: argparse.Namespace, task: str) -> list[str]:
    """The example's arguments of `task`: its data and epochs, and the pre-trained weights every variant starts from."""
    own = TASK_ARGUMENTS[task][0](args.data)
    weights = [x for flag, name in WEIGHT_FLAGS.items() for x in (flag, str(args.pretrained / name))]
    # The pre-trained LayoutLMv3's relative-position tables start as locality biases: so do the random variant's.
    return [*own, *weights, "--spatial_bias_init", "locality", *args.finetune_args]


def run_task(args: argparse.Namespace, task: str) -> None:
    """The headline and the variants summaries of `task` (those of `--summaries`), sharing one folder of runs (so
    shared runs run once)."""
    seeds = TASK_ARGUMENTS[task][1]
    script_args = task_arguments(args, task)
    plans = {"headline": (HEADLINE, seeds), "variants": (VARIANTS, 3)}
    for summary in args.summaries:
        variants, count = plans[summary]
        compare.main(
            [
                "--task",
                task,
                "--variants",
                ",".join(variants),
                "--seeds",
                ",".join(str(seed) for seed in range(1, count + 1)),
                "--jobs",
                str(args.jobs),
                "--out",
                str(args.out / task),
                "--summary",
                summary,
                "--",
                *script_args,
            ]
        )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "command.json").write_text(json.dumps({"argv": sys.argv if argv is None else argv}, indent=1))
    for stage in args.stages:
        if stage == "pretrain":
            pretrain(args)
        elif not pretrained_complete(args.pretrained):
            raise SystemExit(f"{stage}: {args.pretrained} holds no complete pre-training; run the pretrain stage first")
        elif stage == "learnability":
            learnability(args)
        else:
            run_task(args, stage)


__all__ = ["main", "pretrained_complete", "task_arguments"]


if __name__ == "__main__":
    main()
