"""Tests of AETNetTrainer, AETNetTrainingArguments and MomentumUpdateCallback on a tiny model and fake documents."""

from __future__ import annotations

import copy
import fnmatch
import logging
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import (
    AutoModelForTokenClassification,
    AutoProcessor,
    LayoutLMv3ImageProcessorPil,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

import aetnet  # noqa: F401  (registers the Auto classes and the remote-code files)
from aetnet.configuration_aetnet import AETNetConfig
from aetnet.data_collator import AETNetDataCollator
from aetnet.metrics import compute_token_classification_metrics
from aetnet.modeling_aetnet import AETNetForTokenClassification
from aetnet.processing_aetnet import AETNetProcessor
from aetnet.tokenizer_utils import train_layoutlmv3_tokenizer
from aetnet.trainer_aetnet import (
    AETNetTrainer,
    AETNetTrainingArguments,
    DistillationRampCallback,
    MomentumUpdateCallback,
)


LABELS = ["O", "B-KEY", "I-KEY"]
SEQ_LEN, VOCAB, IMAGE = 12, 99, 16
OBJECTIVES = ("ditc", "imc", "glitc", "pita")
# Stock LayoutLMv3 computes its relative-position biases under no_grad, so AETNet freezes these tables.
NO_GRAD_TABLES = ("rel_pos_bias", "rel_pos_x_bias", "rel_pos_y_bias")
TRAINER_LOGGER = "aetnet.trainer_aetnet"


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
    frozen = {name.rsplit(".", 2)[-2] for name, param in params.items() if not param.requires_grad and "_m." not in name}
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
            output_dir=str(tmp_path), report_to="none", use_cpu=True, max_steps=2, per_device_train_batch_size=4,
            learning_rate=1e-2, logging_steps=1, save_strategy="no", disable_tqdm=True,
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
    assert not torch.equal(after["aetnet.vision_model_m.embeddings.cls_token"], before["aetnet.vision_model_m.embeddings.cls_token"])


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
        model=model, args=make_args(tmp_path, bf16=True), train_dataset=make_documents(),
        data_collator=AETNetDataCollator(augment=True, seed=0),
    )
    trainer.train()
    assert dtypes and set(dtypes) == {torch.bfloat16}  # the forward really ran under autocast
    for entry in (entry for entry in trainer.state.log_history if "loss" in entry):
        assert all(math.isfinite(entry[f"loss_{name}"]) for name in ("task", *OBJECTIVES))
        assert entry["nonfinite_losses"] == 0


DDP_SCRIPT = """
import sys, torch, torch.distributed as dist
sys.path.insert(0, {tests_dir!r})
torch.set_num_threads(1)
from test_trainer_aetnet import make_model, make_documents, make_args, count_calls
from aetnet.data_collator import AETNetDataCollator
from aetnet.trainer_aetnet import AETNetTrainer
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
# Leaving gloo's threads to interpreter shutdown can abort a rank ("terminate called without an active exception").
dist.barrier()
dist.destroy_process_group()
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
            model=make_model(queue_size=8), args=make_args(tmp_path, fit_queue_to_dataset=False),
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
    assert make_args(tmp_path, loss_weights='{"ditc": 0.5, "pita": 0}').alignment_loss_weights == {"ditc": 0.5, "pita": 0}
    with pytest.raises(ValueError, match="does not compute"):  # an objective the model does not have
        AETNetTrainer(model=make_model(alignment_objectives=["pita"]), args=make_args(tmp_path, loss_weights="ditc=1"))


def test_the_weights_live_in_the_model_config(tmp_path):
    model = make_model(alignment_loss_weights={"imc": 0.25})
    assert model.config.alignment_loss_weights == {"ditc": 1.0, "imc": 0.25, "glitc": 1.0, "pita": 1.0}
    # A weight given to the trainer is written into the config, so that the saved model, its `loss` and the
    # trainer's loss agree; the others keep the config's value.
    trainer = AETNetTrainer(model=model, args=make_args(tmp_path, loss_weights="pita=0.5"), train_dataset=make_documents(8))
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
        "README.md", "config.json", "model.safetensors", "processor_config.json", "tokenizer.json",
        "modeling_aetnet.py", "configuration_aetnet.py", "losses.py", "processing_aetnet.py",
    }
    assert expected <= uploaded, expected - uploaded
    card = ModelCard.load(repo / "README.md")
    assert card.data.model_name == "aetnet-tiny" and "local/aetnet-tiny" in card.text
    assert {result.metric_type for result in card.data.eval_results} >= {"f1", "precision", "recall"}
    model = AutoModelForTokenClassification.from_pretrained(repo)
    assert isinstance(model, AETNetForTokenClassification)
    assert isinstance(AutoProcessor.from_pretrained(repo), AETNetProcessor)
