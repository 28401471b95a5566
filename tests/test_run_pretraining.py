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
"""Tests of `examples/run_pretraining.py` on a handful of synthetic pages at the tiny size: the folders it writes are
usable encoders, a resumed run continues the masks and the data order exactly, two streaming processes read what one
does, and bad input fails with a message naming the argument."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_example
from test_pretraining_data import write_pages

from aetnet.data import UnlabeledPagesError


ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "run_pretraining.py"
COMMON = ["--max_seq_length", "64", "--logging_steps", "1", "--report_to", "none", "--disable_tqdm", "True"]
COMMON += ["--seed", "3", "--per_device_train_batch_size", "2"]


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pages")
    write_pages(folder, count=6)
    return folder


def run(monkeypatch, *arguments: str) -> dict:
    """`main()` of the script in this process, with `arguments` as its command line."""
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *COMMON, *map(str, arguments)])
    return load_example("run_pretraining").main()


def logged(output_dir: Path, component: str = "layoutlmv3") -> list[dict]:
    """The training logs of a component (one per step here), from its final trainer state."""
    history = json.loads((output_dir / component / "trainer_state.json").read_text())["log_history"]
    return [entry for entry in history if "loss" in entry]


def test_every_component_is_saved_ready_for_the_example_scripts(pages, tmp_path, monkeypatch):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": f"total amount due {i} dollars"}) for i in range(8)))
    output = tmp_path / "run"
    metrics = run(monkeypatch, "--train_dirs", pages, "--text_files", corpus, "--max_steps", 2, "--output_dir", output)
    assert sorted(metrics) == ["layoutlmv3", "roberta", "vit"]
    for component in ("layoutlmv3", "vit", "roberta"):
        folder = output / component
        for name in ("config.json", "model.safetensors", "README.md", "loss_curves.png", "all_results.json"):
            assert (folder / name).is_file(), f"{component}/{name}"
    assert {"loss_mlm", "loss_mim", "loss_wpa"} <= set(logged(output)[0])
    assert {"loss_mim", "loss_page_contrast"} <= set(logged(output, "vit")[0])
    assert metrics["layoutlmv3"]["skipped_pages"] == 0
    # The chance levels of the first batches, in each component's results (and drawn on its loss curves).
    levels = {
        "layoutlmv3": {"mlm", "mlm_uniform", "mim", "wpa"},
        "vit": {"mim", "page_contrast"},
        "roberta": {"mlm", "mlm_uniform"},
    }
    for component, names in levels.items():
        results = json.loads((output / component / "all_results.json").read_text())
        assert {key[13:] for key in results if key.startswith("chance_level_")} == names, component
        assert all(results[f"chance_level_{name}"] > 0 for name in names), component
    layout = json.loads((output / "layoutlmv3" / "all_results.json").read_text())
    assert layout["chance_level_mlm"] < layout["chance_level_mlm_uniform"]
    assert (output / "tokenizer" / "tokenizer.json").is_file() and (output / "processor").is_dir()

    from utils_aetnet_model import _pretrained_processor

    from aetnet import AETNetForTokenClassification

    processor = _pretrained_processor(str(output / "layoutlmv3"))
    model = AETNetForTokenClassification.from_encoders_pretrained(
        str(output / "layoutlmv3"), str(output / "vit"), str(output / "roberta"), num_labels=3
    )
    assert model.config.layout_config.vocab_size == len(processor.tokenizer)

    # Continued pre-training from the folders just written.
    encoders = [
        "--layout_model",
        output / "layoutlmv3",
        "--vision_model",
        output / "vit",
        "--text_model",
        output / "roberta",
    ]
    again = run(monkeypatch, "--train_dirs", pages, *encoders, "--max_steps", 1, "--output_dir", tmp_path / "again")
    assert sorted(again) == ["layoutlmv3", "roberta", "vit"]
    assert not (tmp_path / "again" / "tokenizer").exists()  # the checkpoint's own tokenizer


@pytest.mark.parametrize("streaming", [False, True], ids=["in-memory", "streaming"])
def test_resumed_run_continues_masks_and_data_order(pages, tmp_path, monkeypatch, streaming):
    arguments = ["--train_dirs", pages, "--max_steps", 4, "--save_steps", 2, "--components", "layoutlmv3"]
    arguments += ["--streaming"] if streaming else ["roberta"]
    run(monkeypatch, *arguments, "--output_dir", tmp_path / "whole")
    shutil.copytree(tmp_path / "whole", tmp_path / "resumed")
    for component in ("layoutlmv3", "roberta")[: 1 + (not streaming)]:
        shutil.rmtree(tmp_path / "resumed" / component / "checkpoint-4")
    run(monkeypatch, *arguments, "--output_dir", tmp_path / "resumed")
    whole, resumed = logged(tmp_path / "whole"), logged(tmp_path / "resumed")
    assert [entry["step"] for entry in resumed] == [1, 2, 3, 4]
    for a, b in zip(whole[2:], resumed[2:]):
        for key in ("loss", "loss_mlm", "loss_mim", "loss_wpa"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), (a["step"], key)
    if not streaming:
        whole, resumed = logged(tmp_path / "whole", "roberta"), logged(tmp_path / "resumed", "roberta")
        assert [entry["step"] for entry in resumed] == [1, 2, 3, 4]
        assert [entry["loss"] for entry in resumed] == pytest.approx([entry["loss"] for entry in whole], rel=1e-5)


# 6 pages give 21 windows: 8 global batches of 4 windows cross an epoch boundary after a last batch of 1, which the
# launcher pads with a repeated window for the second process (that repeat must count for nothing). No dropout, so
# that the processes' halves compute what one process computes on the whole batch.
DISTRIBUTED = ["--components", "layoutlmv3", "--streaming", "--max_steps", 8, "--save_strategy", "no"]
DISTRIBUTED += ["--config_overrides", "hidden_dropout_prob=0,attention_probs_dropout_prob=0"]
LAUNCHERS = {
    "torchrun": ["torchrun", "--nproc_per_node", "2"],
    # `--cpu` would start a single process; `--multi_gpu` starts DDP, over gloo on a machine without a GPU.
    "accelerate": ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    + ["--mixed_precision", "no", "--dynamo_backend", "no"],
}


@pytest.fixture(scope="module")
def one_streaming_process(pages, tmp_path_factory) -> list[dict]:
    """The logs of one process with the global batch of the two-process runs (4 windows), for both launchers."""
    output = tmp_path_factory.mktemp("one-process")
    with pytest.MonkeyPatch.context() as monkeypatch:
        run(
            monkeypatch, "--train_dirs", pages, *DISTRIBUTED, "--per_device_train_batch_size", 4, "--output_dir", output
        )
    return logged(output)


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_two_streaming_processes_read_each_page_once_and_match_one(launcher, pages, one_streaming_process, tmp_path):
    beside = Path(sys.executable).parent / LAUNCHERS[launcher][0]
    executable = str(beside) if beside.exists() else shutil.which(LAUNCHERS[launcher][0]) or LAUNCHERS[launcher][0]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    # Two processes of 2 windows each: the first reads each global batch of 4 from the stream and shares it.
    arguments = [*COMMON, "--train_dirs", pages, *DISTRIBUTED, "--output_dir", "two"]
    result = subprocess.run(
        [executable, *LAUNCHERS[launcher][1:], str(SCRIPT), *map(str, arguments)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    one, two = one_streaming_process, logged(tmp_path / "two")
    assert [entry["epoch"] for entry in two] == [entry["epoch"] for entry in one]
    assert one[-1]["epoch"] > 1
    # The same windows and masks per step, and each objective normalised over both processes' items: the losses
    # of one process, to float rounding.
    for a, b in zip(one, two):
        for key in ("loss", "loss_mlm", "loss_mim", "loss_wpa", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-4), (a["step"], key)


def test_bad_input_names_the_argument_and_value(pages, tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    output = ["--output_dir", tmp_path / "out", "--max_steps", 1]
    with pytest.raises(UnlabeledPagesError, match=r"--train_dirs '.*empty': the folder holds no page"):
        run(monkeypatch, "--train_dirs", tmp_path / "empty", *output)
    with pytest.raises(ValueError, match=r"--per_device_train_batch_size 64: the vit corpus has 6 example\(s\)"):
        run(monkeypatch, "--train_dirs", pages, "--components", "vit", *output, "--per_device_train_batch_size", 64)
    with pytest.raises(ValueError, match=r"--config_overrides 'hidden_dropout_prob=0,nope=1': 'nope=1' is no"):
        run(monkeypatch, "--train_dirs", pages, "--config_overrides", "hidden_dropout_prob=0,nope=1", *output)
    with pytest.raises(ValueError, match=r"--page_contrast_weight -1.0: give a finite number >= 0"):
        run(monkeypatch, "--train_dirs", pages, "--components", "vit", "--page_contrast_weight", -1, *output)
    with pytest.raises(ValueError, match="--chance_level_batches -1: give 0"):
        run(monkeypatch, "--train_dirs", pages, "--chance_level_batches", -1, *output)
    with pytest.raises(ValueError, match="--streaming .* give --max_steps"):
        run(monkeypatch, "--train_dirs", pages, "--streaming", "--output_dir", tmp_path / "out")
    write_pages(tmp_path / "scans", count=1, words=None)
    with pytest.raises(
        UnlabeledPagesError, match=r"--train_dirs '.*scans': page .* no word from a words file.*OCR is off"
    ):
        run(monkeypatch, "--train_dirs", tmp_path / "scans", "--ocr", "False", *output)


def test_datasets_dataset_of_pages_is_read(tmp_path, monkeypatch):
    from aetnet.data import generate_synthetic_forms

    forms = generate_synthetic_forms(4, seed=1, image_size=(600, 800)).remove_columns("ner_tags")
    forms.save_to_disk(str(tmp_path / "forms"))
    output = tmp_path / "run"
    arguments = ["--dataset_name", tmp_path / "forms", "--components", "layoutlmv3", "vit", "--max_steps", 1]
    metrics = run(monkeypatch, *arguments, "--output_dir", output)
    assert metrics["vit"]["train_examples"] == 4
    assert (output / "vit" / "model.safetensors").is_file()
    config = json.loads((output / "vit" / "config.json").read_text())
    assert config["architectures"] == ["ViTForPagePreTraining"] and config["model_type"] == "vit"
    # Without the page contrast, stock SimMIM.
    simmim = [
        "--dataset_name",
        tmp_path / "forms",
        "--components",
        "vit",
        "--max_steps",
        1,
        "--page_contrast_weight",
        0,
    ]
    run(monkeypatch, *simmim, "--output_dir", tmp_path / "simmim")
    config = json.loads((tmp_path / "simmim" / "vit" / "config.json").read_text())
    assert config["architectures"] == ["ViTForMaskedImageModeling"]
    with pytest.raises(UnlabeledPagesError, match="--dataset_split 'test': an evaluated split"):
        run(monkeypatch, *arguments, "--dataset_split", "test", "--output_dir", output)
