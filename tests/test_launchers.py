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
The README's multi-process commands on a CPU machine: `torchrun` and `accelerate launch --multi_gpu` run
`examples/run_funsd.py` as real DDP over gloo (two processes share the epoch, so 3 steps of 2 x 2 documents cover
more of it than one process would), without the unused-parameter warning and without work-arounds.
"""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
RUN = [
    str(ROOT / "examples" / "run_funsd.py"),
    "--synthetic_train_size",
    "8",
    "--synthetic_test_size",
    "2",
    "--max_steps",
    "3",
    "--per_device_train_batch_size",
    "2",
    "--logging_steps",
    "1",
    "--max_seq_length",
    "96",
    "--disable_tqdm",
    "True",
    "--seed",
    "3",
]
LAUNCHERS = {
    "torchrun": ["torchrun", "--nproc_per_node", "2"],
    "accelerate": [
        "accelerate",
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ],
}


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_two_cpu_processes_train_one_model_with_ddp(launcher, tmp_path):
    # The launcher installed beside this interpreter, also when its environment is not activated.
    beside = Path(sys.executable).parent / LAUNCHERS[launcher][0]
    executable = str(beside) if beside.exists() else shutil.which(LAUNCHERS[launcher][0]) or LAUNCHERS[launcher][0]
    command = [executable, *LAUNCHERS[launcher][1:]]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(
        [*command, *RUN, "--output_dir", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    # Two ranks of 2 documents take ceil(N / 4) steps per epoch; one process alone would take ceil(N / 2).
    results = json.loads((tmp_path / "run" / "all_results.json").read_text())
    assert results["epoch"] == pytest.approx(3 / math.ceil(results["train_samples"] / 4))
    assert "find_unused_parameters=True was specified" not in output
    assert "parallel_mode != ParallelMode.DISTRIBUTED" not in output
