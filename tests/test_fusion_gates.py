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
"""benchmarks/fusion_gates.py: the gate openings of saved AETNet runs, baseline and unfinished runs left out."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_config


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fusion_gates  # noqa: E402

from aetnet import AETNetForTokenClassification  # noqa: E402


def _save_run(run_dir: Path, model, finished: bool = True) -> None:
    model.save_pretrained(run_dir)
    if finished:
        (run_dir / "all_results.json").write_text("{}")


def test_gate_openings_of_each_finished_aetnet_run(tmp_path):
    folder = tmp_path / "funsd"
    for seed, value in ((1, 0.1), (2, 0.3)):
        model = AETNetForTokenClassification(tiny_config())
        with torch.no_grad():
            model.aetnet.text_gate.fill_(value)
        _save_run(folder / "runs" / f"aetnet-seed{seed}", model)
    _save_run(folder / "runs" / "aetnet-seed3", AETNetForTokenClassification(tiny_config()), finished=False)
    _save_run(folder / "runs" / "layoutlmv3-seed1", AETNetForTokenClassification(tiny_config()).to_layoutlmv3())
    add = AETNetForTokenClassification(tiny_config(fusion_injection="add"))
    _save_run(folder / "runs" / "aetnet-add-seed1", add)

    rows = fusion_gates.main([str(folder), "--out", str(tmp_path / "gates")])

    assert [(row["variant"], row["seed"]) for row in rows] == [("aetnet-add", 1), ("aetnet", 1), ("aetnet", 2)]
    assert [row["text"] for row in rows] == pytest.approx([1.0, 0.1, 0.3])
    assert [row["image"] for row in rows] == [1.0, 0.0, 0.0]
    assert json.loads((tmp_path / "gates.json").read_text()) == rows
    table = (tmp_path / "gates.md").read_text()
    assert "| funsd | aetnet | 1,2 | 0.2000 | 0.0000 | 0.1000 0.3000 | 0.0000 0.0000 |" in table


def test_a_folder_without_runs_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        fusion_gates.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "gates")])
    assert "nowhere" in capsys.readouterr().err
