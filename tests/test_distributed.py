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
Two CPU processes (gloo) against one process with the same global batch, at the model level:

- the feature queues hold the momentum features of both ranks, rank 0's batch first, exactly where a single process
  that sees the concatenated batch puts them;
- training with gradients averaged over the ranks (what DDP does) gives, for the objectives whose value is a mean
  over documents (task loss and PITA), the losses, weights and momentum-free state of the single-process run.

DITC, IMC and GLITC take their in-batch negatives from the local batch only (the ALBEF convention; the queue is what
is shared), so their values differ from a single process by design and are compared through the queues instead.
- `DistributedDataParallel(find_unused_parameters=False)` trains 3 steps on `outputs.loss` (the whole objective) and
  keeps the ranks' weights identical.

The Trainer-level DDP run (momentum weights identical across ranks, skipped steps) is in test_trainer_aetnet.py.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import free_port
from torch.nn.parallel import DistributedDataParallel

from aetnet import AETNetConfig, AETNetForTokenClassification


SEQ_LEN, VOCAB, IMAGE, LOCAL_BATCH, WORLD, STEPS = 12, 99, 16, 2, 2, 3


def make_model(objectives) -> AETNetForTokenClassification:
    config = AETNetConfig.from_preset(
        "tiny", vocab_size=VOCAB, max_length=SEQ_LEN + 4, num_labels=3, queue_size=8, alignment_objectives=objectives
    )
    for sub in (config.layout_config, config.vision_config, config.text_config):
        sub.hidden_dropout_prob = sub.attention_probs_dropout_prob = 0.0
    torch.manual_seed(0)
    return AETNetForTokenClassification(config).train()


def global_batch(step: int) -> dict[str, torch.Tensor]:
    """WORLD * LOCAL_BATCH documents sharing one layout and labelled positions, so per-rank means average exactly."""
    generator = torch.Generator().manual_seed(100 + step)
    size = WORLD * LOCAL_BATCH
    corner = torch.randint(0, 900, (SEQ_LEN, 2), generator=generator)
    bbox = torch.cat([corner, corner + 80], dim=-1)
    bbox[0] = bbox[-1] = 0
    input_ids = torch.randint(5, VOCAB, (size, SEQ_LEN), generator=generator)
    input_ids[:, 0], input_ids[:, -1] = 0, 2
    labels = torch.randint(0, 3, (size, SEQ_LEN), generator=generator)
    labels[:, [0, 5, -1]] = -100
    return {
        "input_ids": input_ids,
        "bbox": bbox.expand(size, -1, -1).clone(),
        "attention_mask": torch.ones(size, SEQ_LEN, dtype=torch.long),
        "pixel_values": torch.randn(size, 3, IMAGE, IMAGE, generator=generator),
        "labels": labels,
    }


def train(model, batches, average_gradients) -> list[dict[str, float]]:
    """SGD steps; every term is logged. `average_gradients` is the all-reduce DDP performs (identity for 1 rank)."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    logs = []
    for batch in batches:
        outputs = model(**batch)
        terms = {"loss": outputs.loss, **{f"loss_{k}": v for k, v in outputs.alignment_losses.items()}}
        outputs.loss.backward()
        average_gradients(model)
        optimizer.step()
        optimizer.zero_grad()
        model.momentum_update()
        logs.append({key: value.detach() for key, value in terms.items()})
    return logs


def all_reduce_mean_gradients(model) -> None:
    for param in model.parameters():
        if param.grad is not None:
            dist.all_reduce(param.grad)
            param.grad /= dist.get_world_size()


def local(batch: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    return {key: value[rank * LOCAL_BATCH : (rank + 1) * LOCAL_BATCH] for key, value in batch.items()}


def queue_state(model) -> dict[str, torch.Tensor]:
    base = model.aetnet
    return {
        name: getattr(base, name).detach().clone()
        for name in ("image_queue", "text_queue", "queue_ptr", "queue_filled")
    }


def worker(rank: int, port: int, output_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        # 1. Queues: one forward with every objective, a different local batch on each rank.
        model = make_model(("ditc", "imc", "glitc", "pita"))
        model(**local(global_batch(0), rank))
        queues = queue_state(model)
        # 2. Training with averaged gradients on the objectives that are means over documents.
        model = make_model(("pita",))
        batches = [local(global_batch(step), rank) for step in range(STEPS)]
        logs = train(model, batches, all_reduce_mean_gradients)
        for entry in logs:
            for value in entry.values():
                dist.all_reduce(value)
                value /= WORLD
        weights = {name: param.detach().clone() for name, param in model.named_parameters()}
        # 3. A plain DDP loop on `outputs.loss`, every objective, without unused-parameter detection (what the
        #    Trainer uses with gradient checkpointing): every trainable parameter must get a gradient at every step.
        model = make_model(("ditc", "imc", "glitc", "pita"))
        ddp = DistributedDataParallel(model, find_unused_parameters=False)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
        for step in range(STEPS):
            ddp(**local(global_batch(step), rank)).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        ddp_weights = {name: param.detach().clone() for name, param in model.named_parameters()}
        torch.save(
            {"queues": queues, "logs": logs, "weights": weights, "ddp_weights": ddp_weights},
            os.path.join(output_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("ddp")
    mp.spawn(worker, args=(free_port(), str(output_dir)), nprocs=WORLD, join=True)
    return [torch.load(output_dir / f"rank{rank}.pt") for rank in range(WORLD)]


def test_queues_hold_both_ranks_features_in_rank_order(ranks):
    reference = make_model(("ditc", "imc", "glitc", "pita"))
    reference(**global_batch(0))
    expected = queue_state(reference)
    assert expected["queue_ptr"].item() == expected["queue_filled"].item() == WORLD * LOCAL_BATCH
    for rank, result in enumerate(ranks):
        for name, value in expected.items():
            torch.testing.assert_close(result["queues"][name], value, atol=1e-5, rtol=1e-4, msg=f"rank {rank}: {name}")
    # The written columns are not the random initial queue: rank 1's features really arrived on rank 0.
    written = slice(LOCAL_BATCH, WORLD * LOCAL_BATCH)
    assert not torch.allclose(
        ranks[0]["queues"]["image_queue"][:, written], make_model(("ditc",)).aetnet.image_queue[:, written]
    )


def test_two_ranks_train_like_one_process_with_the_global_batch(ranks):
    reference = make_model(("pita",))
    logs = train(reference, [global_batch(step) for step in range(STEPS)], lambda model: None)
    for step, entry in enumerate(logs):
        for key, value in entry.items():
            for rank, result in enumerate(ranks):
                torch.testing.assert_close(
                    result["logs"][step][key], value, atol=1e-5, rtol=1e-4, msg=f"{key} {step} {rank}"
                )
    assert logs[0]["loss"] != logs[-1]["loss"]  # the steps really trained
    for name, param in reference.named_parameters():
        for rank, result in enumerate(ranks):
            torch.testing.assert_close(
                result["weights"][name], param.detach(), atol=1e-5, rtol=1e-4, msg=f"{name} {rank}"
            )


def test_ddp_without_unused_parameter_detection_trains_every_objective(ranks):
    initial = dict(make_model(("ditc", "imc", "glitc", "pita")).named_parameters())
    first, second = (result["ddp_weights"] for result in ranks)
    for name, value in first.items():
        torch.testing.assert_close(second[name], value, msg=name)
    trainable = [name for name, param in initial.items() if param.requires_grad]
    unchanged = [name for name in trainable if torch.equal(first[name], initial[name].detach())]
    assert not unchanged
    assert {"aetnet.temp", "aetnet.vision_proj.weight", "aetnet.text_proj.weight"} <= set(trainable)
