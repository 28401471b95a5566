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
How far the fine-tuned AETNet models of `compare.py` folders let the aligners' features into LayoutLMv3: each run's
`fusion_gate_openings()` (the mean absolute value of the text and image fusion gates; 0 at initialisation, 1.0 for
the paper's full-scale `add` injection), per folder and variant, mean and per seed. Runs of the stock LayoutLMv3
baseline have no gates and are left out.

    python benchmarks/fusion_gates.py benchmarks/results/pretrained-study-12ep-pagevit-cpu/funsd \
        benchmarks/results/pretrained-study-12ep-pagevit-cpu/sroie --out benchmarks/results/fusion-gates

writes `fusion-gates.json` (every run) and `fusion-gates.md` (the table).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

from transformers import AutoConfig, AutoModel
from transformers.utils import logging

from aetnet import AETNetConfig


__all__ = ["gate_openings", "main", "table"]

RUN_NAME = re.compile(r"^(?P<variant>.+)-seed(?P<seed>\d+)$")


def gate_openings(folder: Path) -> list[dict]:
    """One row per finished AETNet run under `folder/runs` (its folder, variant, seed and both openings)."""
    rows = []
    for run_dir in sorted((folder / "runs").iterdir()):
        match = RUN_NAME.match(run_dir.name)
        if not match or not (run_dir / "all_results.json").exists():
            continue
        config = AutoConfig.from_pretrained(run_dir)
        if config.model_type != AETNetConfig.model_type:
            continue
        openings = AutoModel.from_pretrained(run_dir, config=config).fusion_gate_openings()
        rows.append({"folder": folder.name, "variant": match["variant"], "seed": int(match["seed"]), **openings})
    return rows


def table(rows: list[dict]) -> str:
    """Markdown: per folder and variant, the mean opening of each gate over seeds and the per-seed values."""
    lines = ["| folder | variant | seeds | text gate | image gate | text, per seed | image, per seed |"]
    lines.append("|---|---|---|---|---|---|---|")
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["folder"], row["variant"]), []).append(row)
    for (folder, variant), runs in groups.items():
        runs.sort(key=lambda run: run["seed"])
        seeds = ",".join(str(run["seed"]) for run in runs)
        means = [statistics.fmean(run[gate] for run in runs) for gate in ("text", "image")]
        per_seed = [" ".join(f"{run[gate]:.4f}" for run in runs) for gate in ("text", "image")]
        lines.append(f"| {folder} | {variant} | {seeds} | {means[0]:.4f} | {means[1]:.4f} | {' | '.join(per_seed)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", type=Path, nargs="+", help="compare.py output folders (each with runs/).")
    parser.add_argument("--out", type=Path, required=True, help="Path of the .json and .md, without the suffix.")
    args = parser.parse_args(argv)
    missing = [str(folder) for folder in args.folders if not (folder / "runs").is_dir()]
    if missing:
        parser.error(f"folders without a runs/ folder: {missing}")
    logging.set_verbosity_error()  # loading the base model from a task checkpoint leaves the head out, as meant
    logging.disable_progress_bar()
    rows = [row for folder in args.folders for row in gate_openings(folder)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    markdown = table(rows)
    args.out.with_suffix(".md").write_text(markdown)
    print(markdown)
    return rows


if __name__ == "__main__":
    main()
