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
"""benchmarks/bench_pretraining.py: the pre-training step against the plain loop, from real timed steps."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_pretraining  # noqa: E402


def test_the_step_the_plain_loop_and_the_masking_share_are_measured(tmp_path):
    out = tmp_path / "pretraining.json"
    argv = ["--preset", "tiny", "--batch_size", "2", "--seq_len", "32", "--steps", "1", "--warmup", "1"]
    result = bench_pretraining.main([*argv, "--out", str(out)])
    for name in ("plain_loop", "pretraining"):
        assert result[name]["step_s"] > 0 and result[name]["peak_memory_gib"] > 0
        assert result[name]["pages_per_s"] == pytest.approx(2 / result[name]["step_s"])
    share = result["pretraining"]["collate_share"]
    assert 0 < share < 1 and share == pytest.approx(
        result["pretraining"]["collate_s"] / result["pretraining"]["step_s"]
    )
    assert json.loads(out.read_text())["step_ratio"] == pytest.approx(result["step_ratio"])


def test_the_features_look_like_processor_windows():
    config = bench_pretraining.pretraining_configs("tiny", vocab_size=100, max_length=16).layout
    (feature,) = bench_pretraining.make_features(config, 1, 16)
    assert feature["input_ids"][0] == config.bos_token_id and feature["input_ids"][-1] == config.eos_token_id
    assert feature["word_index"][0] == -1 and feature["word_index"][-1] == -1
    assert feature["word_index"][2] == feature["word_index"][3] != feature["word_index"][4]
    assert (feature["bbox"][2] == feature["bbox"][3]).all()  # a word's two tokens share its box
