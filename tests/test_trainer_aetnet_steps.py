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
"""Tests of AETNetTrainer's optimizer steps: gradient accumulation, the plain Trainer, non-finite losses, bf16."""

from __future__ import annotations

import copy
import logging
import math

import pytest
import torch
from test_trainer_aetnet import (
    OBJECTIVES,
    TRAINER_LOGGER,
    make_args,
    make_documents,
    make_model,
    single_thread,  # noqa: F401 (autouse fixture: one torch thread)
)
from transformers import Trainer, TrainerCallback, TrainingArguments

from aetnet import AETNetTrainer, AETNetTrainingArguments
from aetnet.data_collator import AETNetDataCollator


def args_for_accumulation(tmp_path, name: str, accumulation: int, **kwargs) -> AETNetTrainingArguments:
    return make_args(
        tmp_path / name,
        max_steps=1,
        learning_rate=0.0,
        max_grad_norm=0.0,  # compare raw gradients
        per_device_train_batch_size=4 // accumulation,
        gradient_accumulation_steps=accumulation,
        **kwargs,
    )


def run_one_step(args, **model_kwargs):
    """One optimizer step on 4 documents; returns the logs and the gradients just before optimizer.step()."""
    grads = {}

    class GradientProbe(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            grads.update({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})

    trainer = AETNetTrainer(
        model=make_model(**model_kwargs),
        args=args,
        train_dataset=make_documents(4),
        data_collator=AETNetDataCollator(augment=False),
        callbacks=[GradientProbe()],
    )
    trainer.train()
    return trainer.state.log_history[0], grads


def test_gradient_accumulation_equals_the_larger_batch(tmp_path):
    # PITA and the task loss are per-document means; DITC/IMC/GLITC use in-batch negatives, so they are excluded.
    logs_ga, grads_ga = run_one_step(args_for_accumulation(tmp_path, "ga", 2), alignment_objectives=["pita"])
    logs_full, grads_full = run_one_step(args_for_accumulation(tmp_path, "full", 1), alignment_objectives=["pita"])
    assert logs_ga["loss"] == pytest.approx(logs_full["loss"], rel=1e-5)
    assert logs_ga["loss_task"] == pytest.approx(logs_full["loss_task"], rel=1e-5)
    assert logs_ga["loss_pita"] == pytest.approx(logs_full["loss_pita"], rel=1e-5)
    assert grads_ga.keys() == grads_full.keys() and len(grads_ga) > 50
    for name, grad in grads_ga.items():
        torch.testing.assert_close(grad, grads_full[name], rtol=1e-4, atol=1e-6, msg=name)


def test_gradient_accumulation_does_not_double_the_loss_with_all_objectives(tmp_path):
    logs_ga, _ = run_one_step(args_for_accumulation(tmp_path, "ga", 2))
    logs_full, _ = run_one_step(args_for_accumulation(tmp_path, "full", 1))
    assert logs_ga["loss_task"] == pytest.approx(logs_full["loss_task"], rel=1e-5)
    # The contrastive terms see 1 instead of 3 in-batch negatives, so the totals differ a little, never 2x.
    assert abs(logs_ga["loss"] - logs_full["loss"]) < 0.25 * logs_full["loss"]


def test_plain_trainer_trains_the_whole_objective(tmp_path):
    model = make_model()
    documents = make_documents(4)
    batch = AETNetDataCollator()(documents)
    outputs = copy.deepcopy(model).train()(**batch)
    expected = outputs.task_loss + sum(outputs.alignment_losses.values())  # unit weights by default
    torch.testing.assert_close(outputs.loss, expected)
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(tmp_path),
            report_to="none",
            use_cpu=True,
            max_steps=2,
            per_device_train_batch_size=4,
            learning_rate=1e-2,
            logging_steps=1,
            save_strategy="no",
            disable_tqdm=True,
        ),
        train_dataset=documents,
        data_collator=AETNetDataCollator(),
    )
    trainer.train()
    first = trainer.state.log_history[0]
    assert first["loss"] == pytest.approx(outputs.loss.item(), rel=1e-4)  # task + alignment terms
    assert not any(key.startswith("loss_") for key in first)  # per-term logs are AETNetTrainer's
    after = dict(model.named_parameters())
    for name in ("classifier.weight", "aetnet.temp", "aetnet.vision_proj.weight", "aetnet.text_proj.weight"):
        assert not torch.equal(after[name], before[name]), name
    # The model runs its own EMA step in every training forward: the momentum encoders moved too.
    assert not torch.equal(
        after["aetnet.vision_model_m.embeddings.cls_token"], before["aetnet.vision_model_m.embeddings.cls_token"]
    )


def test_nonfinite_loss_is_skipped_and_counted(tmp_path, caplog):
    model = make_model()
    forwards = [0]

    def poison_second_forward(module, inputs, output):
        forwards[0] += 1
        return output * float("nan") if forwards[0] == 2 else output

    model.classifier.register_forward_hook(poison_second_forward)
    trainer = AETNetTrainer(
        model=model, args=make_args(tmp_path), train_dataset=make_documents(), data_collator=AETNetDataCollator()
    )
    with caplog.at_level(logging.WARNING, logger=TRAINER_LOGGER):
        trainer.train()
    assert sum(entry.get("nonfinite_losses", 0) for entry in trainer.state.log_history) == 1
    assert "Non-finite loss" in caplog.text and "task" in caplog.text
    assert all(torch.isfinite(param).all() for param in model.parameters())
    train_logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert all(torch.isfinite(torch.tensor(entry["loss"])) for entry in train_logs)
    assert "loss_task" not in train_logs[1]  # the skipped micro-batch is not averaged into the terms


def test_bf16_autocast_trains_with_every_term(tmp_path):
    model = make_model()
    dtypes = []
    model.classifier.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    trainer = AETNetTrainer(
        model=model,
        args=make_args(tmp_path, bf16=True),
        train_dataset=make_documents(),
        data_collator=AETNetDataCollator(augment=True, seed=0),
    )
    trainer.train()
    assert dtypes and set(dtypes) == {torch.bfloat16}  # the forward really ran under autocast
    for entry in (entry for entry in trainer.state.log_history if "loss" in entry):
        assert all(math.isfinite(entry[f"loss_{name}"]) for name in ("task", *OBJECTIVES))
        assert entry["nonfinite_losses"] == 0
