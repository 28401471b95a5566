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
"""Tests of AETNetTrainer on one trained run (parameters, momentum, logged terms, model card) and on two processes."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import LayoutLMv3Config

from aetnet import AETNetConfig, AETNetForTokenClassification, AETNetTrainer, AETNetTrainingArguments
from aetnet.data_collator import AETNetDataCollator
from aetnet.metrics import compute_token_classification_metrics
from aetnet.training import generate_model_card


LABELS = ["O", "B-KEY", "I-KEY"]
SEQ_LEN, VOCAB, IMAGE = 12, 99, 16
OBJECTIVES = ("ditc", "imc", "glitc", "pita")
# Stock LayoutLMv3 computes its relative-position biases under no_grad, so AETNet freezes these tables.
NO_GRAD_TABLES = ("rel_pos_bias", "rel_pos_x_bias", "rel_pos_y_bias")
TRAINER_LOGGER = "aetnet.training.trainer_aetnet"


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """A 36-wide model runs several times faster on one thread than on two that share a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_model(seed: int = 0, dropout: float = 0.0, **config_kwargs) -> AETNetForTokenClassification:
    config_kwargs.setdefault("queue_size", 8)
    config = AETNetConfig.from_preset(
        "tiny", vocab_size=VOCAB, max_length=SEQ_LEN + 4, num_labels=len(LABELS), **config_kwargs
    )
    for sub in (config.layout_config, config.vision_config, config.text_config):
        sub.hidden_dropout_prob = sub.attention_probs_dropout_prob = dropout
    torch.manual_seed(seed)
    return AETNetForTokenClassification(config)


def make_documents(num_documents: int = 8, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Fake windows that share one layout (same boxes, same labelled positions), so that every document has the
    same number of labelled tokens and of occupied PITA cells: then the mean over 4 documents equals the mean of
    two means over 2, which is what makes gradient accumulation exactly comparable."""
    generator = torch.Generator().manual_seed(seed)
    corner = torch.randint(0, 900, (SEQ_LEN, 2), generator=generator)
    bbox = torch.cat([corner, corner + 80], dim=-1)
    bbox[0] = bbox[-1] = 0  # <s> and </s>
    documents = []
    for _ in range(num_documents):
        input_ids = torch.randint(5, VOCAB, (SEQ_LEN,), generator=generator)
        input_ids[0], input_ids[-1] = 0, 2
        labels = torch.randint(0, len(LABELS), (SEQ_LEN,), generator=generator)
        labels[0] = labels[-1] = labels[5] = -100  # specials and a continuation sub-token
        documents.append(
            {
                "input_ids": input_ids,
                "bbox": bbox.clone(),
                "attention_mask": torch.ones(SEQ_LEN, dtype=torch.long),
                "pixel_values": torch.randn(3, IMAGE, IMAGE, generator=generator),
                "labels": labels,
            }
        )
    return documents


def make_args(output_dir, **kwargs) -> AETNetTrainingArguments:
    defaults = dict(
        output_dir=str(output_dir),
        report_to="none",
        use_cpu=True,
        max_steps=3,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=4,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    return AETNetTrainingArguments(**{**defaults, **kwargs})


def compute_metrics(prediction):
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    return compute_token_classification_metrics(logits, prediction.label_ids, LABELS)


def count_calls(module, name: str) -> list[int]:
    calls = [0]
    original = getattr(module, name)

    def wrapped(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    setattr(module, name, wrapped)
    return calls


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 3-step run with gradient accumulation 2, the augmenting collator, evaluation and metrics."""
    model = make_model(dropout=0.1)
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    momentum_calls = count_calls(model.aetnet, "momentum_update")
    documents = make_documents()
    trainer = AETNetTrainer(
        model=model,
        args=make_args(
            tmp_path_factory.mktemp("trained"), gradient_accumulation_steps=2, eval_strategy="steps", eval_steps=3
        ),
        train_dataset=documents,
        eval_dataset=documents,
        data_collator=AETNetDataCollator(augment=True, seed=0),
        compute_metrics=compute_metrics,
    )
    trainer.train()
    return SimpleNamespace(trainer=trainer, model=model, before=before, momentum_calls=momentum_calls[0])


def test_every_trainable_parameter_changes(trained):
    params = dict(trained.model.named_parameters())
    trainable = {name for name, param in params.items() if param.requires_grad}
    unchanged = {name for name in trainable if torch.equal(trained.before[name], params[name])}
    assert not unchanged, sorted(unchanged)
    assert "aetnet.temp" in trainable
    # The tables that stock LayoutLMv3 uses under no_grad are frozen rather than left trainable and gradient-less.
    frozen = {
        name.rsplit(".", 2)[-2] for name, param in params.items() if not param.requires_grad and "_m." not in name
    }
    assert frozen == set(NO_GRAD_TABLES)


def test_momentum_weights_move_but_stay_distinct_from_online(trained):
    base = trained.model.aetnet
    params = dict(trained.model.named_parameters())
    for online, momentum in base.momentum_pairs():
        assert not any(p.requires_grad for p in momentum.parameters())
        for (name_m, param_m), param in zip(momentum.named_parameters(), online.parameters()):
            full_name = next(n for n, p in params.items() if p is param_m)
            if full_name.rsplit(".", 2)[-2] in NO_GRAD_TABLES:
                continue
            assert not torch.equal(param_m, trained.before[full_name]), f"{full_name} did not move"
            assert not torch.equal(param_m, param), f"{full_name} equals its online weights"


def test_momentum_update_runs_once_per_optimizer_step(trained):
    assert trained.trainer.state.global_step == 3
    assert trained.momentum_calls == 3  # 6 micro-batches, 3 optimizer steps


def test_every_loss_term_is_logged_in_train_and_eval(trained):
    history = trained.trainer.state.log_history
    train_logs = [entry for entry in history if "loss" in entry]
    eval_logs = [entry for entry in history if "eval_loss" in entry]
    assert len(train_logs) == 3 and len(eval_logs) == 1
    for entry in train_logs:
        for name in ("task", *OBJECTIVES):
            assert entry[f"loss_{name}"] > 0
        assert entry["nonfinite_losses"] == 0
    for name in ("task", *OBJECTIVES):
        assert eval_logs[0][f"eval_loss_{name}"] > 0
    assert "eval_f1" in eval_logs[0]
    # The logged total is the task loss plus the unit-weighted terms (up to float32 rounding).
    weighted = sum(eval_logs[0][f"eval_loss_{name}"] for name in ("task", *OBJECTIVES))
    assert eval_logs[0]["eval_loss"] == pytest.approx(weighted, rel=1e-4)


def test_model_card_is_rendered_with_measured_metrics(trained):
    trainer = trained.trainer
    trainer.create_model_card(dataset="FUNSD", dataset_tags="funsd", finetuned_from="microsoft/layoutlmv3-base")
    card = ModelCard.load(Path(trainer.args.output_dir) / "README.md")
    measured = next(entry for entry in trainer.state.log_history if "eval_f1" in entry)
    assert card.data.library_name == "transformers"
    assert {"aetnet", "layoutlmv3", "document-ai", "token-classification"} <= set(card.data.tags)
    assert card.data.base_model == "microsoft/layoutlmv3-base"
    assert card.data.datasets is None  # "funsd" is no Hub dataset id: it stays in the text only
    # Tuned from Microsoft's LayoutLMv3 weights: their licence, said in the metadata and in words.
    assert card.data.license == "cc-by-nc-sa-4.0" and "non-commercial purposes only" in card.text
    # No Hub pipeline runs an AETNet token classifier; the card shows the one the checkpoint carries.
    assert card.data.pipeline_tag is None
    assert 'pipeline("document-token-classification", model=' in card.text
    results = {result.metric_type: result for result in card.data.eval_results}
    assert results["f1"].metric_value == pytest.approx(measured["eval_f1"])
    assert results["accuracy"].metric_value == pytest.approx(measured["eval_accuracy"])
    assert results["f1"].dataset_name == "FUNSD" and results["f1"].task_type == "token-classification"
    assert f"# {card.data.model_name}\n" in card.text
    for text in ("trust_remote_code=True", "Alignment-Enriched Tuning", "2211.14777", "ditc", "transformers 5."):
        assert text in card.text
    trainer.create_model_card(dataset_tags="nielsr/funsd-layoutlmv3")  # from scratch, a Hub dataset id
    card = ModelCard.load(Path(trainer.args.output_dir) / "README.md")
    assert card.data.datasets == ["nielsr/funsd-layoutlmv3"] and card.data.license == "other"
    assert "No LayoutLMv3 weights released by Microsoft were used" in card.text


def test_model_card_is_built_from_plain_values():
    # No trainer: the class name, config, tags, hyper-parameters and log say everything; the task table the rest.
    assert "trainer" not in inspect.signature(generate_model_card).parameters
    log = [{"loss": 2.0, "step": 1, "epoch": 1.0}, {"eval_loss": 1.5, "eval_f1": 0.5, "step": 1, "epoch": 1.0}]
    common = dict(model_name="tiny", hyperparameters={"learning_rate": 0.01}, log_history=log)
    baseline = generate_model_card(
        class_name="LayoutLMv3ForQuestionAnswering", config=LayoutLMv3Config(), model_tags=["layoutlmv3"], **common
    )
    assert baseline.data.pipeline_tag == "document-question-answering"
    assert "AutoModelForQuestionAnswering" in baseline.text and "It is not an AETNet model." in baseline.text
    card = generate_model_card(
        class_name="AETNetForTokenClassification",
        config=AETNetConfig.from_preset("tiny", num_labels=3),
        model_tags=["aetnet"],
        dataset="FUNSD",
        **common,
    )
    assert card.data.pipeline_tag is None and card.data.tags == ["aetnet", "token-classification"]
    assert 'pipeline("document-token-classification", model="tiny"' in card.text
    assert [(r.task_type, r.metric_type, r.metric_value) for r in card.data.eval_results] == [
        ("token-classification", "f1", 0.5)
    ]


DDP_SCRIPT = """
import sys, torch, torch.distributed as dist
sys.path.insert(0, {tests_dir!r})
torch.set_num_threads(1)
from test_trainer_aetnet import make_model, make_documents, make_args, count_calls
from aetnet.data_collator import AETNetDataCollator
from aetnet import AETNetTrainer
dist.init_process_group("gloo")
rank = dist.get_rank()
model = make_model()
calls = count_calls(model.aetnet, "momentum_update")
forwards = [0]
def poison(module, inputs, output):  # one NaN micro-batch, on rank 0 only
    forwards[0] += 1
    return output * float("nan") if rank == 0 and forwards[0] == 2 else output
model.classifier.register_forward_hook(poison)
trainer = AETNetTrainer(
    model=model, args=make_args({output_dir!r}, gradient_accumulation_steps=2), train_dataset=make_documents(16),
    data_collator=AETNetDataCollator(augment=True, seed=0),
)
trainer.train()
state = torch.cat([
    next(model.aetnet.vision_model_m.parameters()).flatten(), model.aetnet.image_queue.flatten(),
    model.classifier.weight.flatten(),
])
gathered = [torch.empty_like(state) for _ in range(dist.get_world_size())]
dist.all_gather(gathered, state)
logs = [entry for entry in trainer.state.log_history if "loss" in entry]
row = [rank, calls[0], int(torch.equal(gathered[0], gathered[1])), int(bool(torch.isfinite(state).all())),
       int(model.aetnet.queue_filled), len(logs), int(all("loss_ditc" in entry for entry in logs)),
       sum(entry["nonfinite_losses"] for entry in logs)]
with open({output_dir!r} + f"/result_{{rank}}.txt", "w") as file:  # not stdout: the ranks' prints interleave
    file.write(" ".join(map(str, row)))
# Leaving gloo's threads to interpreter shutdown can abort a rank ("terminate called without an active exception"),
# even after the group is destroyed (1 run in 3 on HEAD under load, after the results were written): the results
# are in the files, so leave without the interpreter's teardown.
dist.barrier()
dist.destroy_process_group()
sys.stdout.flush()
sys.stderr.flush()
import os
os._exit(0)
"""


def test_two_processes_share_queues_momentum_updates_and_skipped_steps(tmp_path):
    script = tmp_path / "ddp_train.py"
    (tmp_path / "out").mkdir()
    script.write_text(DDP_SCRIPT.format(tests_dir=str(Path(__file__).parent), output_dir=str(tmp_path / "out")))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    rows = [(tmp_path / "out" / f"result_{rank}.txt").read_text().split() for rank in (0, 1)]
    # rank, momentum updates, weights and queue identical on both ranks, all finite, queue entries, train logs,
    # every log has the terms, skipped micro-batches counted over both ranks
    assert rows == [["0", "3", "1", "1", "8", "3", "1", "1"], ["1", "3", "1", "1", "8", "3", "1", "1"]]
