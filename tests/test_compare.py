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
"""benchmarks/compare.py: AETNet vs the LayoutLMv3 baseline over seeds, 2-step runs on a few synthetic forms."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import compare  # noqa: E402


RUN_ARGS = [
    "--synthetic_train_size",
    "4",
    "--synthetic_test_size",
    "2",
    "--max_steps",
    "2",
    "--per_device_train_batch_size",
    "2",
    "--logging_steps",
    "1",
    "--max_seq_length",
    "96",
    "--doc_stride",
    "16",
]


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    argv = ["--variants", "aetnet,layoutlmv3", "--seeds", "5", "--jobs", "2", "--out", str(out), "--", *RUN_ARGS]
    summary = compare.main(argv)
    return out, summary


def test_runs_both_variants_and_writes_the_summary(comparison):
    out, summary = comparison
    assert [row["variant"] for row in summary["rows"]] == ["aetnet", "layoutlmv3"]
    assert {(run["variant"], run["seed"]) for run in summary["runs"]} == {("aetnet", 5), ("layoutlmv3", 5)}
    for run in summary["runs"]:
        assert 0.0 <= run["f1"] <= 1.0 and run["global_step"] == 2 and run["wall_seconds"] > 0
    saved = json.loads((out / "summary.json").read_text())
    assert saved["rows"] == summary["rows"] and "--seeds 5" in saved["meta"]["command"]
    assert [hardware["cpu_count"] for hardware in saved["meta"]["run_hardware"]] == [os.cpu_count()]
    table = (out / "summary.md").read_text()
    assert "| aetnet | 5 |" in table and "| layoutlmv3 | 5 |" in table and "+0.0000" in table and "| f1 mean" in table
    assert (out / "summary.png").stat().st_size > 10_000


def test_the_baseline_is_plain_layoutlmv3_and_only_aetnet_logs_alignment_terms(comparison):
    out, summary = comparison
    runs = out / "runs"
    configs = {v: json.loads((runs / f"{v}-seed5" / "config.json").read_text()) for v in ("aetnet", "layoutlmv3")}
    assert configs["aetnet"]["model_type"] == "aetnet" and configs["layoutlmv3"]["model_type"] == "layoutlmv3"
    logged = {run["variant"]: {key for entry in run["log_history"] for key in entry} for run in summary["runs"]}
    assert {"loss_ditc", "loss_imc", "loss_glitc", "loss_pita"} <= logged["aetnet"]
    assert not any(key.startswith("loss_") and key != "loss_task" for key in logged["layoutlmv3"])


def test_existing_runs_are_read_not_rerun(comparison):
    out, summary = comparison
    log = out / "runs" / "aetnet-seed5" / "log.txt"
    before = log.stat().st_mtime_ns
    argv = ["--variants", "aetnet", "--seeds", "5", "--out", str(out), "--summary", "aetnet-only", "--", *RUN_ARGS]
    again = compare.main(argv)
    assert log.stat().st_mtime_ns == before
    assert [row["variant"] for row in json.loads((out / "aetnet-only.json").read_text())["rows"]] == ["aetnet"]
    assert (out / "summary.json").exists()  # the first summary stays
    assert again["runs"][0]["f1"] == next(r["f1"] for r in summary["runs"] if r["variant"] == "aetnet")


def test_ablation_variants_zero_one_weight_each():
    assert compare.VARIANTS["no-pita"] == ["--loss_weights", "pita=0"]
    assert compare.VARIANTS["no-alignment"] == ["--loss_weights", "ditc=0,imc=0,glitc=0,pita=0"]


def test_every_extra_registered_objective_is_added_to_the_four_and_run_alone():
    assert compare.VARIANTS["+tia"] == ["--alignment_objectives", "ditc", "imc", "glitc", "pita", "tia"]
    # Alone: the four at weight 0 beside it, so that the model and its initial weights are AETNet's.
    assert compare.VARIANTS["psl-only"] == [
        "--alignment_objectives",
        "ditc",
        "imc",
        "glitc",
        "pita",
        "psl",
        "--loss_weights",
        "ditc=0,imc=0,glitc=0,pita=0",
    ]
    extra = {"tia", "tim", "xmm_text", "xmm_image", "psl"}
    # At least the built-in ones: objectives that other tests register show up too, as a user's would.
    assert extra <= {v[1:] for v in compare.VARIANTS if v.startswith("+")}
    assert extra <= {v[: -len("-only")] for v in compare.VARIANTS if v.endswith("-only")}


def test_classification_table_compares_accuracy_against_both_references():
    runs = [
        {"variant": v, "seed": s, "accuracy": a, "macro_f1": a - 0.1, "train_runtime": 10.0}
        for v, s, a in [("aetnet", 1, 0.8), ("aetnet", 2, 0.6), ("layoutlmv3", 1, 0.5), ("layoutlmv3", 2, 0.5)]
    ]
    rows = compare.summarize(runs, ["aetnet", "layoutlmv3"], compare.TASKS["rvlcdip"][1])
    assert rows[0]["accuracy_mean"] == pytest.approx(0.7) and rows[0]["accuracy_std"] == pytest.approx(0.1414, abs=1e-4)
    table = compare.markdown(rows, compare.TASKS["rvlcdip"][1]).splitlines()
    assert table[0].startswith("| variant | seeds | accuracy mean +- std | accuracy per seed | macro_f1 ")
    assert "| accuracy - aetnet | accuracy - layoutlmv3 |" in table[0]
    assert table[2].startswith("| aetnet | 1,2 | 0.7000 +- 0.1414 | 0.8000 0.6000 | 0.6000 | +0.0000 | +0.2000 |")


def accuracy_rows(per_variant: dict[str, list[float]]) -> list[dict]:
    runs = [
        {"variant": v, "seed": seed, "accuracy": a, "macro_f1": a, "train_runtime": 1.0}
        for v, values in per_variant.items()
        for seed, a in enumerate(values, 1)
    ]
    return compare.summarize(runs, list(per_variant), compare.TASKS["rvlcdip"][1])


def test_verdicts_need_every_seed_and_more_than_the_baseline_spread():
    # The baseline's sample std over its seeds is 0.1.
    rows = accuracy_rows(
        {
            "layoutlmv3": [0.5, 0.6, 0.7],
            "big": [0.7, 0.8, 0.9],  # +0.2 in every seed: beyond the spread
            "small": [0.55, 0.65, 0.75],  # +0.05 in every seed: ahead, but within the spread
            "mixed": [1.0, 0.55, 1.0],  # +0.25 on average, but behind in one seed
            "worse": [0.3, 0.4, 0.5],  # -0.2 in every seed
        }
    )
    found = {result["variant"]: result for result in compare.verdicts(rows, "accuracy")}
    assert list(found) == ["big", "small", "mixed", "worse"]
    assert found["big"]["differences"] == pytest.approx([0.2, 0.2, 0.2]) and found["big"]["verdict"] == "**helps**"
    assert found["small"]["verdict"] == "within the spread (ahead in every seed)"
    assert found["mixed"]["mean"] == pytest.approx(0.25) and found["mixed"]["verdict"] == "within the spread"
    assert found["worse"]["verdict"] == "**hurts**"
    table = compare.verdicts_markdown(rows, "accuracy").splitlines()
    assert table[0] == "Paired against `layoutlmv3` (seeds 1 / 2 / 3); its seed spread (std) is 0.1000."
    assert "| big | +0.2000 / +0.2000 / +0.2000 | +0.2000 | **helps** |" in table
    # No spread to judge by: one seed, or no baseline.
    assert compare.verdicts(accuracy_rows({"layoutlmv3": [0.5], "big": [0.9]}), "accuracy") == []
    assert compare.verdicts_markdown(accuracy_rows({"aetnet": [0.5, 0.6]}), "accuracy") == ""


def test_rewrite_writes_the_tables_again_from_the_json_and_runs_nothing(tmp_path):
    rows = accuracy_rows({"layoutlmv3": [0.5, 0.6], "aetnet": [0.8, 0.9]})
    runs = [
        {"variant": row["variant"], "seed": seed, "log_history": [{"step": 1, "loss": 1.0, "loss_task": 1.0}]}
        for row in rows
        for seed in row["seeds"]
    ]
    (tmp_path / "study.json").write_text(json.dumps({"meta": {"task": "rvlcdip"}, "rows": rows, "runs": runs}))
    compare.main(["--rewrite", "--out", str(tmp_path), "--summary", "study"])
    table = (tmp_path / "study.md").read_text()
    assert (
        "| layoutlmv3 | 1,2 | 0.5500 +- 0.0707 |" in table
        and "| aetnet | +0.3000 / +0.3000 | +0.3000 | **helps** |" in table
    )
    assert (tmp_path / "study.png").stat().st_size > 1_000 and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--variants", "aetnet,bert", "--out", "x"], "unknown \\['bert'\\]"),
        (["--seeds", "1,two", "--out", "x"], "--seeds must be comma-separated integers"),
        (["--out", "x", "--", "--seed", "3"], "set per run by this script"),
        (["--out", "x", "--", "--loss_weights=pita=0.5"], "set per run by this script"),
        (["--out", "x", "--jobs", "0"], "--jobs must be at least 1, got 0"),
        (["--out", "x", "--task", "cord"], "invalid choice: 'cord'"),
    ],
)
def test_bad_arguments_name_the_argument(argv, message, capsys):
    with pytest.raises(SystemExit):
        compare.parse_args(argv)
    assert re.search(message, capsys.readouterr().err)


@pytest.mark.parametrize("task", sorted(compare.TASKS))
def test_every_variant_parses_in_every_task_script(task, monkeypatch, tmp_path):
    from test_example_arguments import script_parser

    parser = script_parser(compare.TASKS[task][0].stem, monkeypatch)

    def training_arguments(variant: str):
        argv = [*compare.VARIANTS[variant], "--dataset_dir", "x", "--output_dir", str(tmp_path)]
        (parsed,) = [a for a in parser.parse_args_into_dataclasses(argv) if hasattr(a, "distill_alpha")]
        return parsed

    for variant in compare.VARIANTS:  # an option a script lacks exits the parser
        training_arguments(variant)
    assert training_arguments("aetnet-no-distill").distill_alpha == 0.0
    assert training_arguments("ditc-x4").loss_weights == "ditc=4"
    assert training_arguments("aetnet").distill_alpha is None
