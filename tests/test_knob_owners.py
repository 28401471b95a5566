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
The model owns its training knobs: the alignment loss weights, the distillation weight and ramp, the momentum update
mode and the queue length are written only by the model's setters (`modeling_aetnet_knobs.py`), the config's own
construction and the constructors that build from the config, which a scan of the source checks; the setters check
their values once, with the config's rules, and keep the config and the live modules in step. Also: the model card is
built from plain values, and the callbacks reach the collator through its public methods.
"""

import ast
import math
from pathlib import Path

import pytest
import torch
from conftest import tiny_config, tiny_documents

from aetnet import AETNetForRelationExtraction, AETNetForTokenClassification, AETNetModel
from aetnet.data_collator import AETNetDataCollator
from aetnet.modeling_aetnet_knobs import checked_by_config


ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("src/aetnet/**/*.py", "examples/*.py", "benchmarks/*.py", "scripts/*.py")
# The state the setters own: config fields, and the live attributes that follow them.
KNOBS = {
    "alignment_loss_weights",
    "objective_settings",
    "distill_alpha",
    "distill_ramp",
    "momentum_update_in_forward",
    "queue_size",
    "queues",
}
SETTERS = "src/aetnet/modeling_aetnet_knobs.py::AETNetTrainingKnobsMixin"
ALLOWED_WRITERS = {
    # The config's own construction (`__post_init__` -> `_settle_objectives`) normalises what it was given.
    ("src/aetnet/configuration_aetnet.py::AETNetConfig._settle_objectives", "alignment_loss_weights"),
    ("src/aetnet/configuration_aetnet.py::AETNetConfig._settle_objectives", "objective_settings"),
    # The one writer of each knob after construction.
    (f"{SETTERS}.set_alignment_loss_weights", "alignment_loss_weights"),
    (f"{SETTERS}.set_distill_alpha", "distill_alpha"),
    (f"{SETTERS}.set_distill_alpha", "objective_settings"),
    (f"{SETTERS}.set_distill_ramp", "distill_ramp"),
    (f"{SETTERS}.set_momentum_update", "momentum_update_in_forward"),
    (f"{SETTERS}.resize_feature_queues", "queue_size"),
    (f"{SETTERS}.resize_feature_queues", "queues"),
    # Constructors that build the live state from the config.
    ("src/aetnet/modeling_aetnet_base.py::AETNetModel.__init__", "queues"),
    ("src/aetnet/momentum.py::FeatureQueues.__init__", "queue_size"),
    ("src/aetnet/objective_ditc.py::DocumentImageTextContrast.__init__", "distill_alpha"),
    ("src/aetnet/objective_psl.py::PseudoKeywordPrediction.__init__", "distill_alpha"),
    ("src/aetnet/objective_xmm_text.py::CrossModalMaskedText.__init__", "distill_alpha"),
}
MUTATING_METHODS = {"update", "pop", "popitem", "clear", "setdefault", "__setitem__", "__delitem__"}


def _assigned(targets: list[ast.expr]) -> list[ast.expr]:
    """What assignment targets write: the items of tuples, and the container of `x[key] = ...` (not the `x` of
    `x.attr = ...`, which is only read)."""
    found = []
    for target in targets:
        while isinstance(target, (ast.Subscript, ast.Starred)):
            target = target.value
        if isinstance(target, (ast.Tuple, ast.List)):
            found += _assigned(target.elts)
        else:
            found.append(target)
    return found


def _knob_writes(path: Path) -> set[tuple[str, str]]:
    """`(file::Class.function, knob)` for every write of a knob in `path`: assignment to `x.<knob>` (also augmented,
    annotated, in a tuple or as `x.<knob>[key]`), `setattr(x, "<knob>", ...)` and in-place `x.<knob>.update(...)`."""
    relative = path.relative_to(ROOT).as_posix()
    writes = set()

    def visit(node: ast.AST, scope: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            inner = (
                scope + [child.name]
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                else scope
            )
            where = f"{relative}::{'.'.join(scope)}"
            targets = child.targets if isinstance(child, ast.Assign) else []
            if isinstance(child, (ast.AugAssign, ast.AnnAssign)):
                targets = [child.target]
            for target in _assigned(targets):
                if isinstance(target, ast.Attribute) and target.attr in KNOBS:
                    writes.add((where, target.attr))
            if isinstance(child, ast.Call):
                function, arguments = child.func, child.args
                if isinstance(function, ast.Name) and function.id == "setattr" and len(arguments) > 1:
                    if isinstance(arguments[1], ast.Constant) and arguments[1].value in KNOBS:
                        writes.add((where, arguments[1].value))
                if isinstance(function, ast.Attribute) and function.attr in MUTATING_METHODS:
                    if isinstance(function.value, ast.Attribute) and function.value.attr in KNOBS:
                        writes.add((where, function.value.attr))
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), [])
    return writes


def test_knobs_are_written_only_by_their_owners():
    writes = set().union(*(_knob_writes(path) for pattern in SCANNED for path in ROOT.glob(pattern)))
    assert writes - ALLOWED_WRITERS == set(), "knobs written outside the model's setters"
    assert ALLOWED_WRITERS - writes == set(), "an allowed writer no longer writes its knob: update the list"


def test_the_scan_sees_every_kind_of_write(tmp_path, monkeypatch):
    source = tmp_path / "src" / "aetnet" / "fake.py"
    source.parent.mkdir(parents=True)
    source.write_text(
        "class Trainer:\n"
        "    def step(self, model, config):\n"
        "        model.distill_ramp = 0.5\n"
        "        config.alignment_loss_weights['pita'] = 0.0\n"
        "        config.objective_settings.update(ditc={})\n"
        "        setattr(model, 'momentum_update_in_forward', False)\n"
        "        model.queues, config.queue_size = None, 8\n"
        "        model.queues.enqueue = print  # a read of `queues`, not a write\n"
    )
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    written = {"distill_ramp", "alignment_loss_weights", "objective_settings", "momentum_update_in_forward", "queues"}
    assert _knob_writes(source) == {("src/aetnet/fake.py::Trainer.step", knob) for knob in written | {"queue_size"}}


def test_training_code_reaches_no_private_state_of_others():
    # The card is built from plain values (no trainer internals); callbacks use the collator's public methods.
    for name in ("modelcard.py", "callbacks.py"):
        tree = ast.parse((ROOT / "src" / "aetnet" / "training" / name).read_text(encoding="utf-8"))
        private = {
            node.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id == "self")
        }
        assert not private, f"{name} reads {sorted(private)}"


def test_loss_weights_are_checked_once_and_the_config_follows():
    torch.manual_seed(0)
    model = AETNetForTokenClassification(tiny_config())
    model.set_alignment_loss_weights({"pita": 0.5, "ditc": 0})
    assert model.config.alignment_loss_weights == {"ditc": 0.0, "imc": 1.0, "glitc": 1.0, "pita": 0.5}
    assert model.aetnet.config is model.config
    for weights, message in [
        ({"pita": -1.0}, r"`alignment_loss_weights\['pita'\]` must be a finite number >= 0, got -1.0"),
        ({"imc": math.nan}, r"`alignment_loss_weights\['imc'\]` must be a finite number >= 0, got nan"),
        ({"pita": "1"}, r"`alignment_loss_weights\['pita'\]` must be a finite number >= 0, got '1'"),
        ({"tia": 1.0}, r"`alignment_loss_weights` names \['tia'\], which the model does not compute"),
    ]:
        with pytest.raises(ValueError, match=message):
            model.aetnet.set_alignment_loss_weights(weights)
    assert model.config.alignment_loss_weights["pita"] == 0.5  # a refused value changes nothing
    # The model's loss uses the weights set (a zero weight leaves its term out).
    batch = AETNetDataCollator()(tiny_documents())
    outputs = model.train()(**batch)
    expected = outputs.task_loss + sum(
        model.config.alignment_loss_weights[name] * value for name, value in outputs.alignment_losses.items()
    )
    torch.testing.assert_close(outputs.loss, expected)


def test_distill_alpha_reaches_the_objectives_and_the_saved_config(tmp_path):
    model = AETNetForTokenClassification(tiny_config(alignment_objectives=["ditc", "pita"]))
    model.set_distill_alpha(0.2)
    assert model.aetnet.objectives["ditc"].distill_alpha == 0.2
    assert model.config.objective_settings == {"ditc": {"distill_alpha": 0.2}}  # PITA does not distil
    with pytest.raises(ValueError, match=r"`distill_alpha` must be in \[0, 1\], got 1.5"):
        model.set_distill_alpha(1.5)
    model.save_pretrained(tmp_path)
    reloaded = AETNetForTokenClassification.from_pretrained(tmp_path)
    assert reloaded.aetnet.objectives["ditc"].distill_alpha == 0.2


def test_distill_ramp_and_momentum_mode_have_one_setter():
    torch.manual_seed(0)
    model = AETNetModel(tiny_config(alignment_objectives=["ditc"])).train()
    assert model.distill_ramp == 1.0 and model.momentum_update_in_forward
    model.set_distill_ramp(0.25)
    assert model.distill_ramp == 0.25
    with pytest.raises(ValueError, match=r"`distill_ramp` must be in \[0, 1\], got 1.5"):
        model.set_distill_ramp(1.5)
    with pytest.raises(ValueError, match=r"`mode` must be one of \['forward', 'step'\], got 'epoch'"):
        model.set_momentum_update("epoch")
    batch = AETNetDataCollator()(tiny_documents())
    batch.pop("labels")
    momentum = model.vision_proj_m.weight
    with torch.no_grad():
        model.vision_proj.weight.add_(1.0)  # online and momentum weights differ: an EMA step moves the copy
    model.set_momentum_update("step")
    before = momentum.clone()
    model(**batch)
    torch.testing.assert_close(momentum, before)  # no EMA step in the forward
    model.set_momentum_update("forward")
    model(**batch)
    assert not torch.equal(momentum, before)


def test_resized_queues_start_empty_and_the_config_follows(tmp_path):
    model = AETNetForTokenClassification(tiny_config(alignment_objectives=["ditc"])).to(torch.float64)
    batch = AETNetDataCollator()(tiny_documents())
    model.train()(**{key: value.double() if value.is_floating_point() else value for key, value in batch.items()})
    assert model.aetnet.queue_filled.item() == 4
    model.set_momentum_update("step")
    model.resize_feature_queues(12)
    queues = model.aetnet.queues
    assert model.config.queue_size == 12 and queues.image_queue.shape == (model.config.embed_dim, 12)
    assert queues.image_queue.dtype == torch.float64 and model.aetnet.queue_filled.item() == 0
    assert not queues.valid().any()
    with pytest.raises(ValueError, match="`queue_size` must be positive, got 0"):
        model.resize_feature_queues(0)
    model.save_pretrained(tmp_path)
    assert AETNetForTokenClassification.from_pretrained(tmp_path).aetnet.image_queue.shape[1] == 12


def test_the_relation_head_has_the_knobs_too():
    torch.manual_seed(0)
    model = AETNetForRelationExtraction(tiny_config(alignment_objectives=["ditc", "pita"]))
    model.set_alignment_loss_weights({"pita": 0.0})
    model.set_distill_alpha(0.1)
    model.set_distill_ramp(0.5)
    model.set_momentum_update("step")
    model.resize_feature_queues(10)
    base = model.aetnet
    assert base.config.alignment_loss_weights == {"ditc": 1.0, "pita": 0.0}
    assert base.objectives["ditc"].distill_alpha == 0.1 and base.distill_ramp == 0.5
    assert not base.momentum_update_in_forward and base.queues.queue_size == 10


def test_checked_by_config_is_the_config_rule():
    assert checked_by_config(alignment_loss_weights={"pita": 1}).alignment_loss_weights == {"pita": 1.0}
    with pytest.raises(ValueError, match="`queue_size` must be positive, got -3"):
        checked_by_config(queue_size=-3)
