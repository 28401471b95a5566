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
Make a saved checkpoint answer `transformers.pipeline(..., trust_remote_code=True)` where aetnet is not installed:
name its pipeline in `config.json` (`custom_pipelines`, from the task table in `aetnet.tasks`) and copy
`pipeline_aetnet.py` with the modules it imports next to the weights.

The pipeline module is located, not imported: saving a checkpoint does not load the inference code.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

from transformers.dynamic_module_utils import get_relative_import_files

from ..tasks import TASKS, task_of


PIPELINE_MODULE = "aetnet.pipeline_aetnet"


def _pipeline_file() -> str:
    return importlib.util.find_spec(PIPELINE_MODULE).origin


def custom_pipelines_entry(task: str) -> dict:
    """The `custom_pipelines` value of `config.json` for a checkpoint of `task` (`"token-classification"` or
    `"question-answering"`); empty for tasks without a pipeline here."""
    spec = TASKS.get(task)
    if spec is None or spec.pipeline is None:
        return {}
    module = Path(_pipeline_file()).stem
    return {spec.pipeline: {"impl": f"{module}.{spec.pipeline_class}", "pt": [spec.auto_class], "type": "multimodal"}}


def save_custom_pipelines(save_directory: str | os.PathLike, model=None) -> dict:
    """
    Name the pipeline of the checkpoint saved in `save_directory` in its `config.json` (`custom_pipelines`:
    `document-question-answering` for a question answering head, `document-token-classification` for token
    classification; nothing for other heads) and copy the pipeline module and the modules it imports next to it.

    Call it after `model.save_pretrained(save_directory)`. Pass `model` to also set `model.config.custom_pipelines`,
    so that later saves of the same model (e.g. `Trainer.push_to_hub`) keep the entry.

    Returns:
        `dict`: the `custom_pipelines` entry written (empty when the head has no pipeline here).
    """
    folder = Path(save_directory)
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    try:
        task = task_of(SimpleNamespace(architectures=config.get("architectures")))
    except ValueError:
        return {}
    entry = custom_pipelines_entry(task)
    if not entry:
        return {}
    config["custom_pipelines"] = entry
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    pipeline_file = _pipeline_file()
    for source in [pipeline_file, *get_relative_import_files(pipeline_file)]:
        target = folder / Path(source).name
        if Path(source).resolve() != target.resolve():
            shutil.copyfile(source, target)
    if model is not None:
        model.config.custom_pipelines = entry
    return entry


__all__ = ["custom_pipelines_entry", "save_custom_pipelines"]
