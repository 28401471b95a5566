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
The package's rooms: the root holds exactly what ships with a checkpoint as remote code (computed here with
transformers' own `get_relative_import_files` from what `save_pretrained` and `save_custom_pipelines` write), every
other module lives in a sub-package, the import graph has no cycle, and training never imports the inference,
command-line or drawing code.
"""

import ast
from pathlib import Path

import pytest
from processing_helpers import processor, tokenizer  # noqa: F401 (pytest fixtures)
from test_modeling_aetnet import HEADS, AETNetModelTester, _head_config
from transformers.dynamic_module_utils import get_relative_import_files

import aetnet
from aetnet import AETNetForRelationExtraction
from aetnet.training import save_custom_pipelines


PACKAGE = Path(aetnet.__file__).parent
SUB_PACKAGES = {"commands", "data", "inference", "metrics", "pretraining", "relations", "training", "visualization"}
# Which rooms each sub-package may import besides the root (docs/architecture.md draws it). Training in particular
# never imports the code that runs, serves or draws trained models.
ALLOWED_ROOMS = {
    "commands": {"data", "inference", "visualization"},
    "data": {"metrics"},
    "inference": {"relations"},
    "metrics": set(),
    "pretraining": set(),
    "relations": set(),
    "training": {"data", "metrics"},
    "visualization": set(),
}


def _shipped_modules(folder: Path) -> set[str]:
    """The modules a checkpoint folder carries, closed under their relative imports."""
    shipped = set()
    for source in folder.glob("*.py"):
        shipped |= {source.name, *(Path(path).name for path in get_relative_import_files(str(source)))}
    return shipped


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A saved checkpoint of every head, each with its processor and its pipeline code."""
    tester = AETNetModelTester()
    folders = []
    for head in HEADS:
        folders.append(tmp_path_factory.mktemp(head.__name__))
        model = head(_head_config(tester, head))
        model.save_pretrained(folders[-1])
        save_custom_pipelines(folders[-1], model)
    folders.append(tmp_path_factory.mktemp("relation"))
    AETNetForRelationExtraction(tester.get_config()).save_pretrained(folders[-1])
    return folders


def test_root_is_exactly_what_ships(checkpoints, processor, tmp_path):  # noqa: F811
    processor.save_pretrained(tmp_path)
    shipped = set().union(*(_shipped_modules(folder) for folder in [*checkpoints, tmp_path]))
    root = {path.name for path in PACKAGE.glob("*.py")} - {"__init__.py"}
    assert shipped == root, {"shipped, not in the root": shipped - root, "in the root, never shipped": root - shipped}


def test_every_other_module_has_a_sub_package():
    folders = {path.parent.name for path in PACKAGE.rglob("*.py") if path.parent != PACKAGE}
    assert folders == SUB_PACKAGES
    for folder in SUB_PACKAGES:
        assert (PACKAGE / folder / "__init__.py").exists(), folder


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The package modules `path` imports, at module level or inside functions, relative or absolute."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from . import x` imports the module x, not the package.
            candidates = [target] * bool(node.module) + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found |= {name for name in candidates if name.startswith("aetnet") and name != module}
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: {target for target in _imports(path) if target in modules} for name, path in modules.items()}


def test_no_import_cycle():
    graph = _graph()
    # A package's `__init__` importing its own modules is how it shows its public face, not a cycle.
    edges = {
        name: {target for target in targets if not target.startswith(f"{name}.")} for name, targets in graph.items()
    }
    state: dict[str, str] = {}

    def visit(name, trail):
        state[name] = "open"
        for target in sorted(edges[name]):
            assert state.get(target) != "open", f"import cycle: {' -> '.join([*trail, name, target])}"
            if target not in state:
                visit(target, [*trail, name])
        state[name] = "done"

    for name in sorted(edges):
        if name not in state:
            visit(name, [])


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in SUB_PACKAGES else "root"


def test_rooms_import_only_what_the_architecture_allows():
    assert set(ALLOWED_ROOMS) == SUB_PACKAGES
    for name, targets in _graph().items():
        room = _room(name)
        if room == "root":
            continue
        bad = sorted(t for t in targets if _room(t) not in {"root", room, *ALLOWED_ROOMS[room]})
        assert not bad, f"{name} ({room}/) imports {bad}"


def test_root_modules_import_only_their_siblings():
    """Remote code is copied as one flat folder: a shipped module can import only same-folder modules."""
    for name, targets in _graph().items():
        if name.count(".") == 1 and name.split(".")[1] not in SUB_PACKAGES:
            for target in targets:
                assert target.count(".") == 1, f"{name} imports {target}, which does not ship"


def _code_lines(node: ast.AST) -> int:
    """A function's lines without its docstring."""
    lines = node.end_lineno - node.lineno + 1
    body = getattr(node, "body", [])
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        lines -= body[0].end_lineno - body[0].lineno + 1
    return lines


def test_files_and_functions_read_in_one_sitting():
    """Source files stay under 400 lines and functions under 80 (docstrings aside), the example scripts' `main`
    functions excepted."""
    repository = PACKAGE.parents[1]
    for path in [
        *PACKAGE.rglob("*.py"),
        *(repository / "examples").glob("*.py"),
        *(repository / "benchmarks").glob("*.py"),
    ]:
        text = path.read_text(encoding="utf-8")
        assert len(text.splitlines()) <= 400, f"{path.name}: {len(text.splitlines())} lines"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if path.name.startswith("run_") and node.name == "main":
                    continue
                assert _code_lines(node) <= 80, f"{path.name}: {node.name} has {_code_lines(node)} lines"


def test_the_public_face_of_the_package_root():
    """What `from aetnet import ...` gave before the package had rooms still comes from there (the trainer, the
    predictor and the exporter lazily)."""
    names = (
        "AETNetConfig AETNetForQuestionAnswering AETNetForRelationExtraction AETNetForSequenceClassification "
        "AETNetForTokenClassification AETNetModel AETNetPreTrainedModel AETNetProcessor AETNetTrainer "
        "AETNetTrainingArguments DocumentPredictor LayoutLMv3ForRelationExtraction MomentumUpdateCallback export_onnx "
        "predict"
    ).split()
    assert set(names) <= set(aetnet.__all__)
    for name in names:
        assert getattr(aetnet, name) is not None, name
