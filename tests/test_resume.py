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
Exact resume, evaluation and checkpoint loading with AETNetTrainer on a tiny model (CPU, deterministic):

- N steps, a checkpoint, `resume_from_checkpoint`, M more steps give the losses, weights, momentum weights, queues,
  queue pointer, fill count and temperature of one uninterrupted N + M step run with the same seed, with dropout on
  and the augmenting collator (numbered batches, kept in step by `AugmentationStepCallback`);
- evaluation between training steps changes no training state;
- checkpoints are safetensors, and a checkpoint that does not match its config raises instead of re-initialising.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from aetnet import AETNetConfig, AETNetForTokenClassification, AETNetTrainer, AETNetTrainingArguments
from aetnet.data_collator import AETNetDataCollator
from aetnet.modeling_aetnet_loading import CheckpointMismatchError
from aetnet.training import AugmentationStepCallback


SEQ_LEN, VOCAB, IMAGE, N, M = 12, 99, 16, 2, 3
STATE = ("image_queue", "text_queue", "queue_ptr", "queue_filled", "temp")


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_model(dropout: float = 0.1) -> AETNetForTokenClassification:
    config = AETNetConfig.from_preset("tiny", vocab_size=VOCAB, max_length=SEQ_LEN + 4, num_labels=3, queue_size=6)
    for sub in (config.layout_config, config.vision_config, config.text_config):
        sub.hidden_dropout_prob = sub.attention_probs_dropout_prob = dropout  # its RNG must be restored too
    torch.manual_seed(0)
    return AETNetForTokenClassification(config)


def make_documents(num_documents: int = 8) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    documents = []
    for _ in range(num_documents):
        corner = torch.randint(0, 900, (SEQ_LEN, 2), generator=generator)
        bbox = torch.cat([corner, corner + 80], dim=-1)
        bbox[0] = bbox[-1] = 0
        input_ids = torch.randint(5, VOCAB, (SEQ_LEN,), generator=generator)
        input_ids[0], input_ids[-1] = 0, 2
        labels = torch.randint(0, 3, (SEQ_LEN,), generator=generator)
        labels[0] = labels[-1] = -100
        documents.append(
            {
                "input_ids": input_ids,
                "bbox": bbox,
                "attention_mask": torch.ones(SEQ_LEN, dtype=torch.long),
                "pixel_values": torch.randn(3, IMAGE, IMAGE, generator=generator),
                "labels": labels,
            }
        )
    return documents


class StopAfter(TrainerCallback):
    """Interrupts training after `steps` optimizer steps, as a killed job would (its checkpoint is on disk)."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_step_end(self, args, state, control, **kwargs):
        control.should_training_stop = state.global_step >= self.steps


def make_trainer(output_dir, documents, dropout: float = 0.1) -> AETNetTrainer:
    args = AETNetTrainingArguments(
        output_dir=str(output_dir),
        report_to="none",
        use_cpu=True,
        max_steps=N + M,  # 8 documents in batches of 2: the run crosses an epoch boundary after the checkpoint
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="steps",
        save_steps=N,
        save_only_model=False,
        disable_tqdm=True,
        seed=0,
        full_determinism=True,
    )
    collator = AETNetDataCollator(augment=True, seed=0)
    return AETNetTrainer(
        model=make_model(dropout),
        args=args,
        train_dataset=documents,
        data_collator=collator,
    )


def train_logs(trainer) -> dict[int, dict[str, float]]:
    return {entry["step"]: entry for entry in trainer.state.log_history if "loss" in entry}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    documents = make_documents()
    full = make_trainer(tmp_path_factory.mktemp("full"), documents)
    full.train()
    interrupted = make_trainer(tmp_path_factory.mktemp("interrupted"), documents)
    interrupted.add_callback(StopAfter(N))
    interrupted.train()
    assert interrupted.state.global_step == N
    resumed = make_trainer(tmp_path_factory.mktemp("resumed"), documents)
    resumed.train(resume_from_checkpoint=f"{interrupted.args.output_dir}/checkpoint-{N}")
    return full, resumed


def test_resumed_run_logs_the_same_losses(runs):
    full, resumed = runs
    # The trainer keeps a seeded augmenting collator's batch numbering in step by itself.
    assert any(isinstance(cb, AugmentationStepCallback) for cb in resumed.callback_handler.callbacks)
    full_logs, resumed_logs = train_logs(full), train_logs(resumed)
    assert sorted(full_logs) == list(range(1, N + M + 1))
    assert sorted(resumed_logs) == list(range(1, N + M + 1))  # steps 1..N come from the checkpoint's state
    for step in range(1, N + M + 1):
        expected, actual = full_logs[step], resumed_logs[step]
        keys = [key for key in expected if key.startswith("loss") or key in ("grad_norm", "learning_rate")]
        assert {"loss", "loss_task", "loss_ditc", "loss_imc", "loss_glitc", "loss_pita"} <= set(keys)
        for key in keys:
            assert math.isclose(actual[key], expected[key], rel_tol=1e-5, abs_tol=1e-6), (step, key)


def test_resumed_run_ends_in_the_same_training_state(runs):
    full, resumed = runs
    full_model, resumed_model = full.model, resumed.model
    assert resumed.state.global_step == full.state.global_step == N + M
    for name in STATE:
        torch.testing.assert_close(
            getattr(resumed_model.aetnet, name), getattr(full_model.aetnet, name), rtol=1e-5, atol=1e-6, msg=name
        )
    assert int(full_model.aetnet.queue_filled) == 6  # N + M steps of 2 fill the queue of 6: the wrap is covered
    resumed_params = dict(resumed_model.named_parameters())
    momentum = [name for name, _ in full_model.named_parameters() if "_m." in name]
    assert momentum
    for name, param in full_model.named_parameters():
        torch.testing.assert_close(resumed_params[name], param, rtol=1e-5, atol=1e-6, msg=name)


def test_collator_numbers_batches_the_same_with_dataloader_workers(monkeypatch):
    """Batch i gets the view of `(seed, i)` whichever process collates it: 2 workers alternate batches 0, 1, 2, 3."""
    features = [{"pixel_values": torch.zeros(3, 8, 8), "input_ids": [0, 5, 2]} for _ in range(2)]
    single = AETNetDataCollator(augment=True, seed=0)
    expected = [single(features)["pixel_values_aug"] for _ in range(4)]
    workers = [AETNetDataCollator(augment=True, seed=0) for _ in range(2)]  # each worker holds a copy
    for batch in range(4):
        worker_id = batch % 2
        info = type("WorkerInfo", (), {"id": worker_id, "num_workers": 2})()
        monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda info=info: info)
        torch.testing.assert_close(workers[worker_id](features)["pixel_values_aug"], expected[batch], rtol=0, atol=0)
    assert not torch.equal(expected[0], expected[1])
    resumed = AETNetDataCollator(augment=True, seed=0)
    resumed.set_batch_index(2)
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: None)
    torch.testing.assert_close(resumed(features)["pixel_values_aug"], expected[2], rtol=0, atol=0)
    with pytest.raises(ValueError, match="needs a collator built with `seed`"):
        AugmentationStepCallback(AETNetDataCollator(augment=True))


# --------------------------------------------------------------------------------------------- evaluation


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


class CheckAroundEvaluation(TrainerCallback):
    """Snapshots the training state right before each mid-training evaluation and compares it right after."""

    def __init__(self, model):
        self.model, self.before, self.checked = model, None, 0

    def on_step_end(self, args, state, control, **kwargs):
        self.before = snapshot(self.model)

    def on_evaluate(self, args, state, control, **kwargs):
        for name, value in snapshot(self.model).items():
            assert torch.equal(value, self.before[name]), name
        self.checked += 1


def test_evaluation_between_steps_changes_no_training_state(tmp_path):
    """Queues, pointer, fill count, temperature, weights and momentum weights are untouched by evaluate(), and a run
    that evaluates after every step trains exactly like one that never evaluates: dropout included (evaluate()
    restores the random states that its data loader draws from) and augmenting collator included."""
    documents = make_documents()
    plain = make_trainer(tmp_path / "plain", documents, dropout=0.1)
    plain.args.save_strategy = "no"
    plain.train()
    evaluated = make_trainer(tmp_path / "evaluated", documents, dropout=0.1)
    evaluated.args.save_strategy = "no"
    evaluated.args.eval_strategy, evaluated.args.eval_steps = "steps", 1
    evaluated.eval_dataset = documents[:3]
    check = CheckAroundEvaluation(evaluated.model)
    evaluated.add_callback(check)
    evaluated.train()
    assert check.checked == N + M
    assert sum("eval_loss_ditc" in entry for entry in evaluated.state.log_history) == N + M
    plain_logs, evaluated_logs = train_logs(plain), train_logs(evaluated)
    for step, entry in plain_logs.items():
        assert math.isclose(evaluated_logs[step]["loss"], entry["loss"], rel_tol=1e-5, abs_tol=1e-6), step
    expected = snapshot(plain.model)
    for name, value in snapshot(evaluated.model).items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6, msg=name)


# --------------------------------------------------------------------------------------------- loading


def test_checkpoints_are_safetensors_only(runs):
    full, _ = runs
    files = {path.name for path in (Path(full.args.output_dir) / f"checkpoint-{N}").iterdir()}
    assert "model.safetensors" in files
    assert not any(name.endswith((".bin", ".pt")) and name.startswith(("pytorch_model", "model")) for name in files)


@pytest.mark.parametrize(
    "sub_config, key, value, kind, expected_key",
    [
        ("text_config", "num_hidden_layers", 3, "missing", "aetnet.text_model.encoder.layer.2."),
        ("layout_config", "num_hidden_layers", 1, "unexpected", "aetnet.layoutlmv3.encoder.layer.1."),
        ("text_config", "intermediate_size", 40, "mismatched", "aetnet.text_model.encoder.layer.0.intermediate"),
    ],
)
def test_checkpoint_that_does_not_match_its_config_raises(tmp_path, sub_config, key, value, kind, expected_key):
    make_model().save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    config = json.loads(config_file.read_text())
    config[sub_config][key] = value
    config_file.write_text(json.dumps(config))
    # Resized weights raise what transformers raises (RuntimeError); missing or unexpected ones AETNet's own
    # CheckpointMismatchError, a ValueError.
    error = RuntimeError if kind == "mismatched" else CheckpointMismatchError
    with pytest.raises(error, match=rf"does not match the config .* {kind} \(\d+\): \[.*'{re.escape(expected_key)}"):
        AETNetForTokenClassification.from_pretrained(tmp_path)
    if kind != "mismatched":  # the escape hatches load, with the named weights freshly initialised
        assert issubclass(error, ValueError)
        AETNetForTokenClassification.from_pretrained(tmp_path, allow_missing_keys=True)
        model, info = AETNetForTokenClassification.from_pretrained(tmp_path, output_loading_info=True)
        assert any(k.startswith(expected_key) for k in info[f"{kind}_keys"])


def test_head_weights_may_be_missing_when_fine_tuning_a_base_checkpoint(tmp_path):
    base = make_model().aetnet
    base.save_pretrained(tmp_path)
    model, info = AETNetForTokenClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight"]
    torch.testing.assert_close(model.aetnet.image_queue, base.image_queue)
