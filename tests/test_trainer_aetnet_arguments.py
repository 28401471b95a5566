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
"""Tests of AETNetTrainer's arguments: weight decay, queue size, loss weights, distillation ramp, push_to_hub."""

from __future__ import annotations

import copy
import fnmatch
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import ModelCard
from test_trainer_aetnet import (
    IMAGE,
    TRAINER_LOGGER,
    compute_metrics,
    make_args,
    make_documents,
    make_model,
    single_thread,  # noqa: F401 (autouse fixture: one torch thread)
)
from transformers import AutoModelForTokenClassification, AutoProcessor, LayoutLMv3ImageProcessorPil

import aetnet  # noqa: F401  (registers the Auto classes and the remote-code files)
from aetnet import AETNetForTokenClassification, AETNetProcessor, AETNetTrainer, MomentumUpdateCallback
from aetnet.data.tokenizer_training import train_layoutlmv3_tokenizer
from aetnet.data_collator import AETNetDataCollator
from aetnet.training import DistillationRampCallback


def test_temperature_and_gates_are_excluded_from_weight_decay(tmp_path):
    model = make_model(fusion_injection="gated")
    trainer = AETNetTrainer(model=model, args=make_args(tmp_path, weight_decay=0.1), train_dataset=make_documents())
    decay_names = set(trainer.get_decay_parameter_names(model))
    assert {"aetnet.temp", "aetnet.text_gate", "aetnet.image_gate"}.isdisjoint(decay_names)
    assert "classifier.weight" in decay_names and "aetnet.vision_proj.weight" in decay_names
    optimizer = trainer.create_optimizer()
    decay_of = {id(param): group["weight_decay"] for group in optimizer.param_groups for param in group["params"]}
    for param in (model.aetnet.temp, model.aetnet.text_gate, model.aetnet.image_gate):
        assert decay_of[id(param)] == 0.0
    assert decay_of[id(model.classifier.weight)] == 0.1
    assert not any(id(param) in decay_of for param in model.aetnet.vision_model_m.parameters())


def test_queue_follows_the_training_set_by_default(tmp_path, caplog):
    model = make_model(queue_size=64)
    with caplog.at_level(logging.WARNING, logger=TRAINER_LOGGER):
        trainer = AETNetTrainer(model=model, args=make_args(tmp_path), train_dataset=make_documents(40))
    # Half the 40 documents; the config (and so the saved model) says so, and the queue starts empty.
    assert model.config.queue_size == 20 and model.aetnet.image_queue.shape[1] == 20
    assert not model.aetnet.queues.valid().any()
    assert "queue_size 64 -> 20" in caplog.text
    trainer.train()
    assert int(model.aetnet.queue_filled) > 0
    trainer.save_model(str(tmp_path / "saved"))
    reloaded = AETNetForTokenClassification.from_pretrained(tmp_path / "saved")
    assert reloaded.config.queue_size == 20
    torch.testing.assert_close(reloaded.aetnet.image_queue, model.aetnet.image_queue)


def test_queue_kept_when_asked_warns_only_beyond_the_training_set(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger=TRAINER_LOGGER):
        AETNetTrainer(
            model=make_model(queue_size=8),
            args=make_args(tmp_path, fit_queue_to_dataset=False),
            train_dataset=make_documents(8),
        )
    assert "queue_size" not in caplog.text
    model = make_model(queue_size=16)
    with caplog.at_level(logging.WARNING, logger=TRAINER_LOGGER):
        AETNetTrainer(
            model=model, args=make_args(tmp_path, fit_queue_to_dataset=False), train_dataset=make_documents(8)
        )
    assert "queue_size (16) exceeds the number of training examples (8)" in caplog.text
    assert model.config.queue_size == 16


def test_training_arguments_validate_weights_and_alpha(tmp_path):
    with pytest.raises(ValueError, match="loss_weights\\['pita'\\]"):
        make_args(tmp_path, loss_weights="pita=-1")
    with pytest.raises(ValueError, match="name=weight"):
        make_args(tmp_path, loss_weights="pita:1")
    with pytest.raises(ValueError, match="distill_alpha"):
        make_args(tmp_path, distill_alpha=1.5)
    args = make_args(tmp_path, loss_weights="ditc=0.5")
    assert args.alignment_loss_weights == {"ditc": 0.5}  # the others stay the model config's
    assert make_args(tmp_path, loss_weights='{"ditc": 0.5, "pita": 0}').alignment_loss_weights == {
        "ditc": 0.5,
        "pita": 0,
    }
    with pytest.raises(ValueError, match="does not compute"):  # an objective the model does not have
        AETNetTrainer(model=make_model(alignment_objectives=["pita"]), args=make_args(tmp_path, loss_weights="ditc=1"))


def test_the_weights_live_in_the_model_config(tmp_path):
    model = make_model(alignment_loss_weights={"imc": 0.25})
    assert model.config.alignment_loss_weights == {"ditc": 1.0, "imc": 0.25, "glitc": 1.0, "pita": 1.0}
    # A weight given to the trainer is written into the config, so that the saved model, its `loss` and the
    # trainer's loss agree; the others keep the config's value.
    trainer = AETNetTrainer(
        model=model, args=make_args(tmp_path, loss_weights="pita=0.5"), train_dataset=make_documents(8)
    )
    assert model.config.alignment_loss_weights == {"ditc": 1.0, "imc": 0.25, "glitc": 1.0, "pita": 0.5}
    batch = AETNetDataCollator()(make_documents(4))
    model.train()
    outputs = copy.deepcopy(model)(**batch)  # before the trainer's forward fills the queues
    loss = trainer.compute_loss(model, dict(batch))
    weights = model.config.alignment_loss_weights
    expected = outputs.task_loss + sum(weights[k] * v for k, v in outputs.alignment_losses.items())
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(outputs.loss, expected, rtol=1e-5, atol=1e-6)


def test_distill_alpha_ramps_from_zero(tmp_path):
    model = make_model()
    trainer = AETNetTrainer(
        model=model, args=make_args(tmp_path, distill_alpha=0.3, alpha_warmup_steps=10), train_dataset=make_documents()
    )
    assert sum(isinstance(cb, MomentumUpdateCallback) for cb in trainer.callback_handler.callbacks) == 1
    # The argument reaches the objective and the config that is saved with the model.
    assert model.aetnet.objectives["ditc"].distill_alpha == 0.3
    assert model.config.objective_settings["ditc"]["distill_alpha"] == 0.3
    (ramp,) = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, DistillationRampCallback)]
    ramps = []
    for step in (0, 5, 10, 20):
        trainer.state.global_step = step
        ramp.on_step_begin(trainer.args, trainer.state, trainer.control, model=trainer.model)
        ramps.append(model.aetnet.distill_ramp)
    assert ramps == pytest.approx([0.0, 0.5, 1.0, 1.0])


class LocalHub:
    """Stand-in for the Hub API the Trainer uses: uploads are copies into a local folder."""

    def __init__(self, root: Path):
        self.root = root

    def create_repo(self, repo_id, **kwargs):
        (self.root / repo_id).mkdir(parents=True, exist_ok=True)
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, repo_id, folder_path, ignore_patterns=(), path_in_repo=None, **kwargs):
        target = self.root / repo_id / (path_in_repo or "")
        for path in Path(folder_path).rglob("*"):
            relative = path.relative_to(folder_path).as_posix()
            if path.is_file() and not any(fnmatch.fnmatch(relative, pattern) for pattern in ignore_patterns or ()):
                (target / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target / relative)
        return SimpleNamespace(commit_url=f"local://{repo_id}")


def test_push_to_hub_uploads_card_weights_processor_and_remote_code(tmp_path, monkeypatch):
    hub = LocalHub(tmp_path / "hub")
    monkeypatch.setattr("transformers.trainer.hf_api", lambda: hub)
    tokenizer = train_layoutlmv3_tokenizer(["key value total date name"] * 4, vocab_size=270)
    image_processor = LayoutLMv3ImageProcessorPil(apply_ocr=False, size={"height": IMAGE, "width": IMAGE})
    processor = AETNetProcessor(image_processor=image_processor, tokenizer=tokenizer)
    documents = make_documents(4)
    trainer = AETNetTrainer(
        model=make_model(),
        args=make_args(tmp_path / "out", max_steps=1, push_to_hub=True, hub_model_id="local/aetnet-tiny"),
        train_dataset=documents,
        eval_dataset=documents,
        processing_class=processor,
        data_collator=AETNetDataCollator(),
        compute_metrics=compute_metrics,
    )
    trainer.train()
    trainer.evaluate()
    trainer.push_to_hub(dataset="synthetic forms", dataset_tags="synthetic-funsd")

    repo = tmp_path / "hub" / "local" / "aetnet-tiny"
    uploaded = {path.name for path in repo.iterdir()}
    expected = {
        "README.md",
        "config.json",
        "model.safetensors",
        "processor_config.json",
        "tokenizer.json",
        "modeling_aetnet.py",
        "configuration_aetnet.py",
        "loss_utils.py",
        "processing_aetnet.py",
    }
    assert expected <= uploaded, expected - uploaded
    card = ModelCard.load(repo / "README.md")
    assert card.data.model_name == "aetnet-tiny" and "local/aetnet-tiny" in card.text
    assert {result.metric_type for result in card.data.eval_results} >= {"f1", "precision", "recall"}
    model = AutoModelForTokenClassification.from_pretrained(repo)
    assert isinstance(model, AETNetForTokenClassification)
    assert isinstance(AutoProcessor.from_pretrained(repo), AETNetProcessor)
