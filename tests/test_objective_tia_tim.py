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
LayoutLMv2's objectives as plug-ins: TIA (cover text segments of the fusion page, a token head tells which) and TIM
(roll pages within the batch, a head on a separate fusion forward tells matched from mismatched).

Covers match the chosen boxes and whole segments only; labels only on real boxed tokens; the task labels are
unchanged and TIM leaves the task forward as it is without TIM; same draw counter, same covers and negatives (and
the counter is saved); TIA learns on a small fixed set; three heads, gradient accumulation, save / reload, remote
code without the package, and 2-process DDP.

Both objectives' learnability on inked pages, against their chance levels, is in `test_learnability.py` (with the
locality prior of LayoutLMv3's 2D bias tables, `spatial_bias_init="locality"`, without which they do not learn
from random weights).
"""

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from conftest import free_port, tiny_config, tiny_documents
from torch.nn.parallel import DistributedDataParallel

from aetnet import (
    AETNetConfig,
    AETNetForQuestionAnswering,
    AETNetForSequenceClassification,
    AETNetForTokenClassification,
    AETNetModel,
    AETNetTrainer,
    AETNetTrainingArguments,
)
from aetnet.data_collator import AETNetDataCollator
from aetnet.objective_tia import box_pixel_mask
from aetnet.objective_tim import true_pairs


BOTH = ["tia", "tim"]


def batch_of(count: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    return AETNetDataCollator()(tiny_documents(count, seed=seed))


def segmented_batch() -> dict[str, torch.Tensor]:
    """Two pages: page 0 has 3 segments of 2, 3 and 1 tokens, page 1 a box-less (question) token, 2 segments and
    padding; `<s>`, `</s>` and padding have no box."""
    input_ids = torch.tensor([[0, 11, 12, 13, 14, 15, 16, 2], [0, 21, 22, 23, 24, 2, 1, 1]])
    boxes = {"a": [100, 100, 300, 160], "b": [400, 520, 990, 600], "c": [0, 900, 60, 1000], "d": [310, 40, 700, 90]}
    zero = [0, 0, 0, 0]
    bbox = torch.tensor(
        [
            [zero, boxes["a"], boxes["a"], boxes["b"], boxes["b"], boxes["b"], boxes["c"], zero],
            [zero, zero, boxes["d"], boxes["a"], boxes["d"], zero, zero, zero],
        ]
    )
    attention_mask = torch.tensor([[1] * 8, [1] * 6 + [0] * 2])
    pixel_values = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return dict(input_ids=input_ids, bbox=bbox, attention_mask=attention_mask, pixel_values=pixel_values)


def expected_pixels(box: list[int], size: int = 16) -> torch.Tensor:
    """The pixels of one box, written out: rows floor(y0 * size / 1000) to ceil(y1 * size / 1000)."""
    x0, y0, x1, y1 = box
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[y0 * size // 1000 : -(-y1 * size // 1000), x0 * size // 1000 : -(-x1 * size // 1000)] = True
    return mask


@pytest.mark.parametrize("cover_ratio", [0.15, 0.5, 1.0])
def test_tia_covers_whole_chosen_segments_and_exactly_their_boxes(cover_ratio):
    tia = AETNetModel(tiny_config(alignment_objectives={"tia": {"cover_ratio": cover_ratio}})).train().objectives["tia"]
    inputs = segmented_batch()
    original = {key: value.clone() for key, value in inputs.items()}
    for _ in range(5):  # several draws
        prepared, info = tia.prepare_fusion_inputs(inputs)
        covered = info["covered_tokens"]
        assert all(torch.equal(inputs[k], original[k]) for k in inputs)  # nothing changed in place
        assert prepared["pixel_values"] is not inputs["pixel_values"] and prepared["input_ids"] is inputs["input_ids"]
        for page, segment_count in ((0, 3), (1, 2)):
            boxes = {tuple(box) for box, hit in zip(inputs["bbox"][page].tolist(), covered[page].tolist()) if hit}
            assert len(boxes) == max(1, round(cover_ratio * segment_count))
            expected = torch.zeros(16, 16, dtype=torch.bool)
            for position, box in enumerate(inputs["bbox"][page].tolist()):
                in_chosen = tuple(box) in boxes and box != [0, 0, 0, 0]
                assert bool(covered[page, position]) == (in_chosen and inputs["attention_mask"][page, position] == 1)
                if in_chosen:
                    expected |= expected_pixels(box)
            assert torch.equal(info["covered_pixels"][page], expected)
            # Covered pixels hold the page's per-channel median, the others are untouched.
            median = inputs["pixel_values"][page].flatten(1).median(dim=1).values
            after = prepared["pixel_values"][page]
            assert torch.equal(after[:, expected], median[:, None].expand(-1, int(expected.sum())))
            assert torch.equal(after[:, ~expected], inputs["pixel_values"][page][:, ~expected])
    assert not covered[:, [0, 7]].any() and not covered[1, [1, 5, 6, 7]].any()  # special, box-less, padding


def test_tia_fill_value_and_pixel_mask_edges():
    config = tiny_config(alignment_objectives={"tia": {"fill_value": 1.0, "cover_ratio": 1.0}})
    tia = AETNetModel(config).train().objectives["tia"]
    prepared, info = tia.prepare_fusion_inputs(segmented_batch())
    covered = info["covered_pixels"][0]
    assert covered.any() and (prepared["pixel_values"][0][:, covered] == 1.0).all()
    # A box that ends exactly on a pixel border covers no pixel beyond it; a degenerate box still covers one pixel.
    bbox = torch.tensor([[[0, 0, 500, 250], [1000, 1000, 1000, 1000]]])
    mask = box_pixel_mask(bbox, torch.tensor([[True, False]]), 8, 8)
    assert mask.sum() == 4 * 2 and mask[0, :2, :4].all()
    point = box_pixel_mask(bbox, torch.tensor([[False, True]]), 8, 8)
    assert point.sum() == 1 and point[0, 7, 7]


@pytest.mark.parametrize(
    "objectives, message",
    [
        ({"tia": {"cover_ratio": 0.0}}, "TIA's `cover_ratio` must be a number in \\(0, 1\\], got 0.0"),
        ({"tia": {"fill_value": "white"}}, "TIA's `fill_value` must be 'median' or a finite number, got 'white'"),
        ({"tim": {"negative_ratio": 1.5}}, "TIM's `negative_ratio` must be a number in \\(0, 1\\], got 1.5"),
        ({"tim": {"seed": "a"}}, "TIM's `seed` must be an int, got 'a'"),
    ],
)
def test_bad_settings_name_the_argument_and_value(objectives, message):
    with pytest.raises(ValueError, match=message):
        AETNetModel(tiny_config(alignment_objectives=objectives))


def test_tia_loss_is_the_cross_entropy_on_real_boxed_tokens_and_task_labels_are_unchanged():
    torch.manual_seed(0)
    model = AETNetForTokenClassification(tiny_config(alignment_objectives=["tia"])).train()
    batch = segmented_batch()
    batch["labels"] = torch.randint(0, 3, (2, 8))
    original = {key: value.clone() for key, value in batch.items()}
    tia = model.aetnet.objectives["tia"]
    outputs = model(**batch, output_hidden_states=True)
    assert all(torch.equal(batch[k], original[k]) for k in batch)
    tia.draws -= 1  # the same draw again
    _, info = tia.prepare_fusion_inputs({k: v for k, v in batch.items() if k != "labels"})
    boxed = torch.tensor([[0, 1, 1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    labels = info["covered_tokens"].long().masked_fill(~boxed, -100)
    logits = tia.head(outputs.hidden_states[-1][:, :8])
    torch.testing.assert_close(outputs.alignment_losses["tia"], F.cross_entropy(logits.flatten(0, 1), labels.flatten()))


def test_tim_negatives_never_pair_a_page_with_itself():
    tim = AETNetModel(tiny_config(alignment_objectives=["tim"])).train().objectives["tim"]
    for batch_size in range(2, 9):
        for _ in range(20):
            negative, source = tim.draw_negatives(batch_size, torch.device("cpu"))
            pages = torch.arange(batch_size)
            assert int(negative.sum()) == max(1, round(0.2 * batch_size))
            assert (source[negative] != pages[negative]).all() and torch.equal(source[~negative], pages[~negative])
            assert len(set(((source - pages) % batch_size)[negative].tolist())) == 1  # one roll offset
    # Identical pages: a "negative" that shows the same text with the same image is labelled a true pair.
    batch = batch_of(3)
    for key in ("input_ids", "bbox", "attention_mask", "pixel_values"):
        batch[key][1] = batch[key][0]
    features = type("Bundle", (), batch)
    assert true_pairs(features, torch.tensor([1, 0, 0])).tolist() == [True, True, False]
    assert true_pairs(features, torch.tensor([2, 2, 1])).tolist() == [False, False, False]


def test_tim_leaves_the_task_forward_as_it_is_without_tim():
    """The negatives go through their own forward: the task logits, task loss and the task head's gradient are those
    of the same model without TIM, so no task loss is computed on a mismatched page."""
    batch = batch_of(4)
    runs = []
    for objectives in (["pita"], ["pita", "tim"]):
        torch.manual_seed(0)
        model = AETNetForTokenClassification(tiny_config(alignment_objectives=objectives)).train()
        if runs:
            model.load_state_dict(runs[0][0].state_dict(), strict=False)  # the same weights, plus TIM's head
        outputs = model(**batch)
        outputs.loss.backward()
        runs.append((model, outputs))
    (plain, plain_out), (with_tim, tim_out) = runs
    torch.testing.assert_close(tim_out.logits, plain_out.logits)
    torch.testing.assert_close(tim_out.task_loss, plain_out.task_loss)
    torch.testing.assert_close(tim_out.alignment_losses["pita"], plain_out.alignment_losses["pita"])
    torch.testing.assert_close(with_tim.classifier.weight.grad, plain.classifier.weight.grad)
    torch.testing.assert_close(tim_out.loss, tim_out.task_loss + sum(tim_out.alignment_losses.values()))


def test_tim_skips_a_batch_of_one_but_stays_on_the_graph():
    model = AETNetModel(tiny_config(alignment_objectives=["tim"])).train()
    loss = model(**{k: v for k, v in batch_of(1).items() if k != "labels"}).alignment_losses["tim"]
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert model.objectives["tim"].head.weight.grad is not None and int(model.objectives["tim"].draws) == 0


def test_same_draw_counter_same_covers_and_negatives_and_the_counter_is_saved(tmp_path):
    torch.manual_seed(0)
    model = AETNetForTokenClassification(tiny_config(alignment_objectives=BOTH)).train()
    batch = batch_of(4)
    for _ in range(3):
        model(**batch)
    objectives = model.aetnet.objectives
    assert int(objectives["tia"].draws) == int(objectives["tim"].draws) == 3
    model.save_pretrained(tmp_path)
    reloaded = AETNetForTokenClassification.from_pretrained(tmp_path)
    again = reloaded.aetnet.objectives
    assert int(again["tia"].draws) == int(again["tim"].draws) == 3
    # The heads are in the checkpoint: eval-mode losses (which draw without advancing the counter) agree.
    with torch.no_grad():
        expected = model.eval()(**batch, return_alignment_losses=True).alignment_losses
        got = reloaded.eval()(**batch, return_alignment_losses=True).alignment_losses
    assert set(got) == set(BOTH) and all(torch.equal(got[name], expected[name]) for name in BOTH)
    model.train(), reloaded.train()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    covers = [o["tia"].prepare_fusion_inputs(inputs)[1]["covered_tokens"] for o in (objectives, again)]
    negatives = [o["tim"].draw_negatives(4, torch.device("cpu")) for o in (objectives, again)]
    assert torch.equal(*covers) and all(torch.equal(a, b) for a, b in zip(*negatives))
    assert not torch.equal(covers[0], again["tia"].prepare_fusion_inputs(inputs)[1]["covered_tokens"])


HEADS = [AETNetForTokenClassification, AETNetForSequenceClassification, AETNetForQuestionAnswering]


@pytest.mark.parametrize("head", HEADS)
def test_every_head_trains_a_step_with_both_objectives(head):
    torch.manual_seed(0)
    model = head(tiny_config(num_labels=2, alignment_objectives=BOTH)).train()
    batch = {k: v for k, v in batch_of(3).items() if k != "labels"}
    if head is AETNetForTokenClassification:
        batch["labels"] = torch.randint(0, 2, batch["input_ids"].shape)
    elif head is AETNetForSequenceClassification:
        batch["labels"] = torch.tensor([0, 1, 1])
    else:
        batch["start_positions"], batch["end_positions"] = torch.tensor([1, 2, 3]), torch.tensor([2, 4, 3])
    outputs = model(**batch)
    assert set(outputs.alignment_losses) == set(BOTH)
    torch.testing.assert_close(outputs.loss, outputs.task_loss + sum(outputs.alignment_losses.values()))
    outputs.loss.backward()
    for name in BOTH:
        assert model.aetnet.objectives[name].head.weight.grad.abs().sum() > 0, name


def test_gradient_accumulation_through_the_trainer(tmp_path):
    torch.manual_seed(0)
    model = AETNetForTokenClassification(tiny_config(alignment_objectives=BOTH))
    args = AETNetTrainingArguments(
        output_dir=str(tmp_path),
        report_to="none",
        use_cpu=True,
        max_steps=1,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    trainer = AETNetTrainer(model=model, args=args, train_dataset=tiny_documents(4), data_collator=AETNetDataCollator())
    trainer.train()
    logs = trainer.state.log_history[0]
    assert all(math.isfinite(logs[f"loss_{name}"]) for name in BOTH), logs
    objectives = model.aetnet.objectives
    assert int(objectives["tia"].draws) == int(objectives["tim"].draws) == 2  # one draw per micro-batch


def page_config(objectives) -> AETNetConfig:
    """The tiny preset on 32-pixel pages (an 8 x 8 patch grid, so that covers are seen), no aligned features."""
    config = tiny_config(alignment_objectives=objectives, fusion_injection="none")
    config.layout_config.input_size = config.vision_config.image_size = 32
    return config


def learning_curve(objectives: dict, batch: dict[str, torch.Tensor], steps: int) -> list[float]:
    torch.manual_seed(0)
    model = AETNetModel(page_config(objectives)).train()
    # LayoutLMv3 initialises its patch position embeddings at zero: a pretrained one knows where its patches are,
    # which is what TIA relies on, so the test starts from position embeddings that tell the patches apart.
    with torch.no_grad():
        model.layoutlmv3.pos_embed.normal_(0.0, 1.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    (name,) = objectives
    losses = []
    for _ in range(steps):
        loss = model(**batch).alignment_losses[name]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def entropy(p: float) -> float:
    """The loss of a head that only knows the label prior: the chance level of a binary cross-entropy."""
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def test_tia_learns_to_tell_covered_segments():
    # 4 fixed noise pages, each with a left and a right half segment of 4 tokens: half of every page's tokens are
    # covered at each step, at random, so only looking at the page beats the prior.
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, 99, (4, 10), generator=generator)
    input_ids[:, 0], input_ids[:, -1] = 0, 2
    bbox = torch.zeros(4, 10, 4, dtype=torch.long)
    bbox[:, 1:9] = torch.tensor([[0, 0, 500, 1000], [500, 0, 1000, 1000]]).repeat_interleave(4, dim=0)
    batch = dict(
        input_ids=input_ids,
        bbox=bbox,
        attention_mask=torch.ones_like(input_ids),
        pixel_values=torch.randn(4, 3, 32, 32, generator=generator),
    )
    chance = entropy(0.5)  # 1 of the 2 segments of every page
    losses = learning_curve({"tia": {"cover_ratio": 0.5}}, batch, steps=60)
    assert abs(sum(losses[:5]) / 5 - chance) < 0.1
    assert sum(losses[-10:]) / 10 < 0.75 * chance, losses


def test_remote_code_loads_both_objectives_without_the_package(tmp_path):
    torch.manual_seed(0)
    model = AETNetForTokenClassification(tiny_config(alignment_objectives=BOTH)).eval()
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    assert (checkpoint / "objective_tia.py").exists() and (checkpoint / "objective_tim.py").exists()
    batch = {k: v for k, v in batch_of(3).items() if k != "labels"}
    with torch.no_grad():
        expected = model(**batch, return_alignment_losses=True).alignment_losses
    torch.save({"inputs": batch, "expected": expected}, tmp_path / "io.pt")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["aetnet"] = None  # `import aetnet` fails, as on a machine without the package
        import torch
        from transformers import AutoModelForTokenClassification
        model = AutoModelForTokenClassification.from_pretrained({str(checkpoint)!r}, trust_remote_code=True).eval()
        io = torch.load({str(tmp_path / "io.pt")!r})
        with torch.no_grad():
            losses = model(**io["inputs"], return_alignment_losses=True).alignment_losses
        assert not type(model).__module__.startswith("aetnet"), type(model).__module__
        assert set(losses) == {{"tia", "tim"}}, losses
        assert all(torch.equal(losses[name], io["expected"][name]) for name in losses), (losses, io["expected"])
        print("REMOTE-OK")
        """
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert "REMOTE-OK" in result.stdout, result.stderr[-3000:]


DDP_OBJECTIVES = ["pita", "tia", "tim"]


def ddp_worker(rank: int, port: int, output_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        # With PITA, so that the shared parts it trains (projections, temperature) are in the DDP group too.
        model = AETNetForTokenClassification(tiny_config(alignment_objectives=DDP_OBJECTIVES)).train()
        # Without unused-parameter detection (the Trainer's choice with gradient checkpointing): both heads, and
        # everything TIM's extra forward reaches, must get a gradient on every rank at every step.
        ddp = DistributedDataParallel(model, find_unused_parameters=False)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
        for step in range(2):
            ddp(**batch_of(2, seed=10 * step + rank)).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        torch.save({n: p.detach() for n, p in model.named_parameters()}, os.path.join(output_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_process_ddp_keeps_the_ranks_identical(tmp_path):
    mp.spawn(ddp_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    first, second = (torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2))
    assert first.keys() == second.keys()
    for name, weight in first.items():
        torch.testing.assert_close(weight, second[name], rtol=0, atol=0, msg=name)
    torch.manual_seed(0)
    reference = AETNetForTokenClassification(tiny_config(alignment_objectives=DDP_OBJECTIVES))
    assert not torch.equal(first["aetnet.objectives.tim.head.weight"], reference.aetnet.objectives["tim"].head.weight)
