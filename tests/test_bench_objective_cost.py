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
"""benchmarks/bench_objective_cost.py: one row per objective outside the four, from real timed steps."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_objective_cost  # noqa: E402


def test_every_extra_objective_gets_its_share_of_a_timed_step(tmp_path):
    out = tmp_path / "cost.json"
    argv = ["--size", "tiny", "--batch-size", "2", "--seq-len", "16", "--steps", "1", "--warmup", "0"]
    argv += ["--objectives", "tia,xmm_text", "--out", str(out)]
    result = bench_objective_cost.main(argv)
    assert [row["objective"] for row in result["rows"]] == ["tia", "xmm_text"]
    for row in result["rows"]:
        assert row["step_ms"] > 0 and row["base_step_ms"] > 0
        assert row["share"] == pytest.approx((row["step_ms"] - row["base_step_ms"]) / row["step_ms"])
    saved = json.loads(out.read_text())
    assert set(saved["times_ms"]) == {"aetnet-4", *(f"aetnet-4+{r['objective']}" for r in result["rows"])}
    assert "| `xmm_text` |" in out.with_suffix(".md").read_text()


def test_by_default_every_registered_objective_outside_the_four_is_measured():
    extra = bench_objective_cost.parse_args(["--out", "x"]).objectives
    assert {"tia", "tim", "xmm_text", "xmm_image", "psl"} <= set(extra) and not {"ditc", "pita"} & set(extra)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["--objectives", "ditc"], "unknown \\['ditc'\\]"),
    ],
)
def test_bad_arguments_name_the_argument(argv, message, capsys):
    with pytest.raises(SystemExit):
        bench_objective_cost.parse_args([*argv, "--out", "x"])
    assert re.search(message, capsys.readouterr().err)
