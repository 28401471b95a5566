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
"""benchmarks/pretrained_study.py: the study's stages, their skip rules and the arguments every run gets."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import compare  # noqa: E402
import pretrained_study  # noqa: E402


def test_every_variant_of_the_protocol_is_a_compare_variant():
    assert set(pretrained_study.VARIANTS) <= set(compare.VARIANTS)
    assert pretrained_study.HEADLINE[:3] == ["layoutlmv3-random", "layoutlmv3", "aetnet"]
    assert compare.VARIANTS["layoutlmv3-random"][-3:] == ["layout", "vision", "text"]


@pytest.mark.parametrize("task", ["funsd", "sroie", "funsd_re", "rvlcdip"])
def test_every_run_starts_from_the_pretrained_weights_and_reads_only_its_data(task, tmp_path):
    args = pretrained_study.parse_args(["--out", str(tmp_path), "--pretrained", str(tmp_path / "pt")])
    script_args = pretrained_study.task_arguments(args, task)
    weights = {flag: script_args[script_args.index(flag) + 1] for flag in ("--layout_model", "--vision_model")}
    assert weights == {
        "--layout_model": str(tmp_path / "pt" / "layoutlmv3"),
        "--vision_model": str(tmp_path / "pt" / "vit"),
    }
    assert script_args[script_args.index("--dataset_dir") + 1].startswith(str(args.data))
    # compare.py refuses the arguments it sets per run: none of them may be here
    assert not [arg for arg in script_args if arg in compare.OWNED_ARGUMENTS]


def test_stages_skip_what_is_finished_and_need_a_complete_pretraining(tmp_path, monkeypatch):
    folder = tmp_path / "pt"
    argv = ["--out", str(tmp_path / "out"), "--pretrained", str(folder)]
    with pytest.raises(SystemExit, match=f"funsd: {folder} holds no complete pre-training"):
        pretrained_study.main([*argv, "--stages", "funsd"])
    for name in pretrained_study.COMPONENT_FOLDERS:
        (folder / name).mkdir(parents=True)
        assert not pretrained_study.pretrained_complete(folder)
        (folder / name / "all_results.json").write_text("{}")
    assert pretrained_study.pretrained_complete(folder)

    def no_run(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(pretrained_study.subprocess, "run", no_run)
    monkeypatch.setattr(pretrained_study.bench_learnability, "main", no_run)
    for name in pretrained_study.LEARNABILITY_RUNS:
        (tmp_path / "out" / f"learnability-{name}.json").parent.mkdir(exist_ok=True)
        (tmp_path / "out" / f"learnability-{name}.json").write_text("{}")
    pretrained_study.main([*argv, "--stages", "pretrain,learnability"])


@pytest.mark.parametrize("summaries", ["headline", "headline,variants"])
def test_summaries_choose_what_a_task_stage_runs(summaries, tmp_path, monkeypatch):
    folder = tmp_path / "pt"
    for name in pretrained_study.COMPONENT_FOLDERS:
        (folder / name).mkdir(parents=True)
        (folder / name / "all_results.json").write_text("{}")
    calls = []
    monkeypatch.setattr(pretrained_study.compare, "main", calls.append)
    argv = ["--out", str(tmp_path / "out"), "--pretrained", str(folder), "--stages", "funsd_re,sroie"]
    pretrained_study.main([*argv, "--summaries", summaries])
    planned = [(argv[argv.index("--task") + 1], argv[argv.index("--summary") + 1]) for argv in calls]
    expected = [(task, summary) for task in ("funsd_re", "sroie") for summary in summaries.split(",")]
    assert planned == expected
    headline = calls[0]
    assert headline[headline.index("--variants") + 1] == ",".join(pretrained_study.HEADLINE)
    assert headline[headline.index("--seeds") + 1] == "1,2,3"  # funsd_re's headline: 3 seeds


def test_unknown_stage_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        pretrained_study.parse_args(["--out", str(tmp_path), "--stages", "funsd,pretraining"])
    assert "--stages: unknown ['pretraining']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pretrained_study.parse_args(["--out", str(tmp_path), "--summaries", "headline,ablation"])
    assert "--summaries: unknown ['ablation']" in capsys.readouterr().err


def test_arguments_after_the_separator_reach_every_run_and_weights_stay_the_protocols(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--stages", "funsd", "--", "--learning_rate", "3e-4"]
    args = pretrained_study.parse_args(argv)
    for task in pretrained_study.TASK_ARGUMENTS:
        assert pretrained_study.task_arguments(args, task)[-2:] == ["--learning_rate", "3e-4"]
    with pytest.raises(SystemExit):
        pretrained_study.parse_args(["--out", str(tmp_path), "--", "--layout_model=elsewhere"])
    assert "after `--`: ['--layout_model'] are set by this script" in capsys.readouterr().err


class FakePretraining:
    """Stands for one `run_pretraining.py` process. The first saves the processor (after the tokenizer) only after
    a while, here at its third `poll`, as the script does after reading the pages and training the tokenizer."""

    started: list[list[str]] = []

    def __init__(self, command):
        self.components = command[command.index("--components") + 1 :]
        self.output_dir = Path(command[command.index("--output_dir") + 1])
        self.polls = 0
        if "layoutlmv3" not in self.components:
            # A later group starts only once the first has saved the tokenizer and, after it, the processor.
            assert (self.output_dir / "processor" / "processor_config.json").exists()
        FakePretraining.started.append(self.components)

    def poll(self):
        self.polls += 1
        if self.polls == 3:
            (self.output_dir / "processor").mkdir(parents=True)
            (self.output_dir / "processor" / "processor_config.json").write_text("{}")
        return None

    def wait(self):
        return 0


@pytest.mark.parametrize("jobs", [1, 2])
def test_pretrain_stage_runs_layoutlmv3_beside_the_aligners_with_two_jobs(jobs, tmp_path, monkeypatch):
    FakePretraining.started = []
    monkeypatch.setattr(pretrained_study.subprocess, "Popen", FakePretraining)
    monkeypatch.setattr(pretrained_study.time, "sleep", lambda seconds: None)
    folder = tmp_path / "pt"
    pretrained_study.main(
        ["--out", str(tmp_path / "out"), "--pretrained", str(folder), "--stages", "pretrain", "--jobs", str(jobs)]
    )
    expected = [["layoutlmv3"], ["vit", "roberta"]] if jobs > 1 else [["layoutlmv3", "vit", "roberta"]]
    assert FakePretraining.started == expected
