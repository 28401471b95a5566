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
SIMLA's objectives as plug-ins (issue 13): `xmm_text` (masked language modelling on the fusion model), `xmm_image`
(blockwise masked patch regression) and `psl` (pseudo-keyword prediction from the image).

Masks, shapes, the task loss left untouched by the extra forwards, exact resume from the saved draw counter,
learnability against a chance level computed from the data, the three heads, gradient accumulation, save / reload,
remote code without the package, and two-process DDP.
"""

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from conftest import free_port, tiny_config, tiny_documents

from aetnet import (
    AETNetForQuestionAnswering,
    AETNetForSequenceClassification,
    AETNetForTokenClassification,
    AETNetModel,
    AETNetTrainer,
    AETNetTrainingArguments,
)
from aetnet.data_collator import AETNetDataCollator
from aetnet.objective_psl import attention_keywords, keyword_targets, similarity_keywords
from aetnet.objective_xmm_image import draw_block_mask
from aetnet.objective_xmm_text import corrupt_tokens, default_mask_token_id, draw_token_mask


SIMLA = ("xmm_text", "xmm_image", "psl")
VOCAB, MASK_ID = 99, 4


def make_model(cls=AETNetModel, objectives=SIMLA, seed=0, **kwargs):
    torch.manual_seed(seed)
    objectives = objectives if isinstance(objectives, dict) else list(objectives)
    return cls(tiny_config(alignment_objectives=objectives, **kwargs)).train()


def make_batch(count=3, seq_len=16, padded=True, seed=0):
    batch = AETNetDataCollator()(tiny_documents(count, seq_len=seq_len, seed=seed))
    if padded:  # the last window ends in padding, which no mask may touch
        batch["input_ids"][-1, -4:], batch["attention_mask"][-1, -4:] = 1, 0
    return batch


def inputs_of(batch):
    return {k: v for k, v in batch.items() if k != "labels"}


# Masks


def test_token_masks_skip_special_and_padding_tokens_and_split_80_10_10():
    batch = make_batch()
    real = batch["attention_mask"].bool() & ~torch.isin(batch["input_ids"], torch.tensor([0, 1, 2]))
    generator = torch.Generator().manual_seed(0)
    replacement = torch.arange(5, VOCAB)
    masked = corrupted = random = kept = 0
    for _ in range(300):
        mask = draw_token_mask(real, 0.15, generator)
        assert not (mask & ~real).any()
        assert torch.equal(mask.sum(1), (real.sum(1) * 0.15).round().clamp(min=1))
        ids = corrupt_tokens(batch["input_ids"], mask, MASK_ID, replacement, generator)
        assert torch.equal(ids[~mask], batch["input_ids"][~mask])
        masked += int(mask.sum())
        corrupted += int((ids[mask] == MASK_ID).sum())
        kept += int((ids[mask] == batch["input_ids"][mask]).sum())
        random += int(((ids[mask] != MASK_ID) & (ids[mask] != batch["input_ids"][mask])).sum())
    # A random replacement equals the original one time in 94: it counts as kept.
    assert corrupted / masked == pytest.approx(0.8, abs=0.03)
    assert random / masked == pytest.approx(0.1 * 93 / 94, abs=0.02)
    assert kept / masked == pytest.approx(0.1 + 0.1 / 94, abs=0.02)
    long_real = torch.ones(1, 400, dtype=torch.bool)
    assert draw_token_mask(long_real, 0.15, generator).sum() == 60


def test_block_masks_cover_30_percent_in_contiguous_blocks():
    generator = torch.Generator().manual_seed(0)
    coverage, blocks = [], []
    for _ in range(50):
        mask = draw_block_mask(14, 59, generator, min_block=16).view(14, 14)
        coverage.append(mask.float().mean().item())
        blocks.append(_components(mask))
    assert sum(coverage) / len(coverage) == pytest.approx(59 / 196, abs=0.02)
    assert min(coverage) > 0.25
    assert sum(blocks) / len(blocks) < 6  # 59 patches in a few blocks, not scattered patches


def _components(mask: torch.Tensor) -> int:
    """Number of 4-connected components of a 2-D bool mask."""
    seen, count = set(), 0
    for start in map(tuple, mask.nonzero().tolist()):
        if start in seen:
            continue
        count, stack = count + 1, [start]
        while stack:
            r, c = stack.pop()
            if (r, c) in seen or not (0 <= r < mask.shape[0] and 0 <= c < mask.shape[1]) or not mask[r, c]:
                continue
            seen.add((r, c))
            stack += [(r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)]
    return count


def test_keywords_follow_the_head_vote_and_the_cls_similarity():
    candidates = torch.tensor([[False, True, True, True, True, False]])
    attention = torch.zeros(1, 3, 6, 6)
    attention[0, :, 0, 5] = 0.9  # the most attended position is not a candidate
    attention[0, 0, 0, 1:5] = torch.tensor([0.4, 0.3, 0.2, 0.1])
    attention[0, 1, 0, 1:5] = torch.tensor([0.1, 0.4, 0.3, 0.2])
    attention[0, 2, 0, 1:5] = torch.tensor([0.1, 0.3, 0.4, 0.2])
    keywords = attention_keywords(attention, candidates, votes_per_head=1, num_keywords=2)
    assert keywords.tolist() == [[False, False, True, True, False, False]]  # 2 and 3 take two votes and one
    states = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [-1.0, 0.0], [1.0, 1.0], [1.0, 0.0]]])
    assert similarity_keywords(states, candidates, 2).tolist() == [[False, False, True, False, True, False]]
    targets = keyword_targets(torch.tensor([[0, 7, 7, 9, 3, 2]]), torch.tensor([[1, 1, 1, 0, 0, 1]]).bool(), 10, [0, 2])
    assert targets.tolist() == [[0.0] * 7 + [1.0, 0.0, 0.0]]


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"xmm_text": {"mask_ratio": 1.5}}, "`mask_ratio` of xmm_text must be in \\(0, 1\\), got 1.5"),
        ({"xmm_text": {"mask_token_id": 99}}, "`mask_token_id` of xmm_text must be an id below .* got 99"),
        ({"xmm_text": {"mask_token_id": 1}}, "other than the special ids \\[0, 1, 2\\], got 1"),
        ({"xmm_image": {"loss": "mse"}}, "`loss` of xmm_image must be one of \\['cosine', 'smooth_l1'\\], got 'mse'"),
        ({"xmm_image": {"min_block": 0}}, "`min_block` of xmm_image must be an int in \\[1, 16\\], got 0"),
        ({"psl": {"keyword_source": "idf"}}, "`keyword_source` of psl must be one of"),
        ({"psl": {"num_keywords": 0}}, "`num_keywords` of psl must be a positive int"),
    ],
)
def test_bad_settings_name_the_argument_and_value(settings, message):
    with pytest.raises(ValueError, match=message):
        AETNetModel(tiny_config(alignment_objectives=settings))


def test_clear_errors_for_what_the_model_cannot_provide():
    batch = inputs_of(make_batch(2))
    model = make_model(objectives={"psl": {"keyword_source": "attention"}})  # sdpa returns no probabilities
    with pytest.raises(ValueError, match="attn_implementation='eager'"):
        model(**batch)
    model = make_model(objectives={"xmm_image": {"target": "momentum"}})  # nothing builds the momentum ViT
    with pytest.raises(ValueError, match="target='online'"):
        model(**batch)
    assert default_mask_token_id(tiny_config().layout_config) == MASK_ID
    assert default_mask_token_id(AETNetModel.config_class.from_preset("tiny").layout_config) == 50264


# The step


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_the_task_forward_is_untouched_by_the_extra_forwards(attn_implementation):
    batch = make_batch()
    reference = {k: v.clone() for k, v in batch.items()}
    model = make_model(AETNetForTokenClassification, attn_implementation=attn_implementation)
    plain = make_model(AETNetForTokenClassification, objectives=(), attn_implementation=attn_implementation)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(".objectives." in k or "_m." in k or "queues." in k for k in unexpected)
    outputs, plain_outputs = model(**batch), plain(**batch)
    assert set(outputs.alignment_losses) == set(SIMLA)
    assert all(torch.isfinite(v) and v.ndim == 0 for v in outputs.alignment_losses.values())
    assert torch.equal(outputs.logits, plain_outputs.logits) and torch.equal(outputs.task_loss, plain_outputs.task_loss)
    for key, value in reference.items():  # nothing was changed in place
        assert torch.equal(batch[key], value), key


def test_psl_picks_the_attention_rule_with_eager_attention(monkeypatch):
    import aetnet.objective_psl as psl

    calls = []
    for name in ("attention_keywords", "similarity_keywords"):
        rule = getattr(psl, name)
        monkeypatch.setattr(psl, name, lambda *a, _rule=rule, _name=name, **k: calls.append(_name) or _rule(*a, **k))
    for attn_implementation in ("sdpa", "eager"):
        make_model(objectives=["psl"], attn_implementation=attn_implementation)(**inputs_of(make_batch(2)))
    assert calls == ["similarity_keywords", "attention_keywords"]


@pytest.mark.parametrize(
    "cls, labels",
    [
        (AETNetForTokenClassification, lambda b: {"labels": b["labels"]}),
        (AETNetForSequenceClassification, lambda b: {"labels": torch.tensor([0, 2, 1])}),
        (
            AETNetForQuestionAnswering,
            lambda b: {"start_positions": torch.tensor([1, 2, 3]), "end_positions": torch.tensor([4, 5, 6])},
        ),
    ],
)
def test_every_head_trains_a_step_with_the_objectives(cls, labels):
    model = make_model(cls, objectives=("ditc", *SIMLA), num_labels=2 if cls is AETNetForQuestionAnswering else 3)
    batch = make_batch()
    outputs = model(**inputs_of(batch), **labels(batch))
    outputs.loss.backward()
    assert set(outputs.alignment_losses) == {"ditc", *SIMLA} and torch.isfinite(outputs.loss)
    for name, param in model.aetnet.objectives.named_parameters():
        if param.requires_grad:  # not PSL's momentum head, which follows by the EMA step alone
            assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_gradient_accumulation_draws_a_mask_per_micro_batch(tmp_path):
    model = make_model(AETNetForTokenClassification)
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
    )
    trainer = AETNetTrainer(model=model, args=args, train_dataset=tiny_documents(4), data_collator=AETNetDataCollator())
    trainer.train()
    logs = trainer.state.log_history[0]
    assert all(math.isfinite(logs[f"loss_{name}"]) and logs[f"loss_{name}"] > 0 for name in SIMLA)
    assert [int(model.aetnet.objectives[name].draws) for name in ("xmm_text", "xmm_image")] == [2, 2]


# Resume, save and reload


def test_exact_resume_and_reload_keep_the_draws_the_heads_and_the_tie(tmp_path):
    model = make_model(AETNetForTokenClassification)
    batch = make_batch()
    for _ in range(2):
        model(**batch).loss.backward()
    model.save_pretrained(tmp_path)
    reloaded = AETNetForTokenClassification.from_pretrained(tmp_path).train()
    state = reloaded.aetnet.objectives.state_dict()
    for key, value in model.aetnet.objectives.state_dict().items():
        torch.testing.assert_close(state[key], value, msg=key)
    assert int(state["xmm_text.draws"]) == int(state["xmm_image.draws"]) == 2
    # The LM head owns no decoder weight: it reads LayoutLMv3's word embeddings, so it cannot come untied.
    assert not any(v.shape == (VOCAB, 36) for k, v in state.items() if k.startswith("xmm_text"))
    real = batch["attention_mask"].bool() & ~torch.isin(batch["input_ids"], torch.tensor([0, 1, 2]))
    draws = {"xmm_text": lambda o: o.mask_inputs(batch["input_ids"], real), "xmm_image": lambda o: (o.mask_patches(3),)}
    for name, draw in draws.items():
        for a, b in zip(draw(model.aetnet.objectives[name]), draw(reloaded.aetnet.objectives[name])):
            assert torch.equal(a, b), name
    with torch.no_grad():  # same weights, same draws: the next step's terms are the same
        first, second = model(**batch), reloaded(**batch)
    for name in SIMLA:
        torch.testing.assert_close(first.alignment_losses[name], second.alignment_losses[name], msg=name)
    reloaded.eval()
    before = int(reloaded.aetnet.objectives["xmm_text"].draws)
    reloaded(**batch, return_alignment_losses=True)
    assert int(reloaded.aetnet.objectives["xmm_text"].draws) == before  # evaluation draws nothing


def test_a_checkpoint_without_the_objectives_loads_them_freshly_initialised(tmp_path):
    make_model(AETNetForTokenClassification, objectives=["ditc"]).save_pretrained(tmp_path)
    model = AETNetForTokenClassification.from_pretrained(
        tmp_path, alignment_objectives=["ditc", *SIMLA], allow_missing_keys=True
    )
    objectives = model.aetnet.objectives
    assert int(objectives["xmm_text"].draws) == int(objectives["xmm_image"].draws) == 0  # not leftover memory
    for name, param in objectives.named_parameters():
        assert torch.isfinite(param).all() and param.abs().max() <= 1.0, name


def test_remote_code_trains_the_objectives_without_the_package(tmp_path):
    model = make_model(AETNetForTokenClassification)
    model.save_pretrained(tmp_path / "checkpoint")
    for name in ("objective_xmm_text.py", "objective_xmm_image.py", "objective_psl.py"):
        assert (tmp_path / "checkpoint" / name).exists(), name
    batch = make_batch()
    with torch.no_grad():
        expected = {k: v for k, v in model(**batch).alignment_losses.items()}
    torch.save({"batch": batch, "expected": expected}, tmp_path / "io.pt")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["aetnet"] = None
        import torch
        from transformers import AutoModelForTokenClassification
        checkpoint = {str(tmp_path / "checkpoint")!r}
        model = AutoModelForTokenClassification.from_pretrained(checkpoint, trust_remote_code=True)
        io = torch.load({str(tmp_path / "io.pt")!r})
        with torch.no_grad():
            losses = model.train()(**io["batch"]).alignment_losses
        for name, value in io["expected"].items():
            torch.testing.assert_close(losses[name], value)
        print("REMOTE-OK")
        """
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert "REMOTE-OK" in result.stdout, result.stderr[-3000:]


# Learnability: each objective alone on a fixed set, against a chance level computed from that set


def fixed_set():
    """Four windows, each written with a three-word vocabulary of its own (as a page repeats its words, so that the
    context tells which words a masked one may be), on pages of distinct brightness (noise pages are all alike to an
    untrained ViT)."""
    documents = tiny_documents(4, seq_len=16)
    generator = torch.Generator().manual_seed(1)
    for index, document in enumerate(documents):
        words = torch.arange(5 + 3 * index, 8 + 3 * index)
        document["input_ids"][1:-1] = words[torch.randint(3, (14,), generator=generator)]
        document["pixel_values"] += index - 1.5
    return inputs_of(AETNetDataCollator()(documents))


def _train_alone(name, steps, lr, **settings):
    config = tiny_config(alignment_objectives={name: settings})
    for sub in (config.layout_config, config.vision_config, config.text_config):
        sub.num_hidden_layers = 1  # a smaller model: the test is about the objective, not the depth
    torch.manual_seed(0)
    model = AETNetModel(config).train()
    batch = fixed_set()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        loss = model(**batch).alignment_losses[name]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return model, batch, sum(losses[-5:]) / 5, losses


def _real_tokens(batch):
    return batch["attention_mask"].bool() & ~torch.isin(batch["input_ids"], torch.tensor([0, 1, 2]))


def test_xmm_text_learns_below_the_unigram_entropy():
    # 30% masked rather than 15%: more targets per step, so that 25 steps suffice.
    model, batch, final, losses = _train_alone("xmm_text", 25, 2e-2, mask_ratio=0.3)
    _, counts = batch["input_ids"][_real_tokens(batch)].unique(return_counts=True)
    p = counts / counts.sum()
    entropy = -(p * p.log()).sum().item()  # the best that a model ignoring the context can do
    assert losses[0] > 0.9 * math.log(VOCAB) and final < 0.5 * entropy, (losses, entropy)


def test_xmm_image_learns_below_predicting_the_mean_feature():
    model, batch, final, losses = _train_alone("xmm_image", 25, 2e-2)
    with torch.no_grad():  # the targets: the ViT's standardised patch features, which this objective does not train
        patches = model.vision_model(batch["pixel_values"]).last_hidden_state[:, 1:].flatten(0, 1)
        targets = F.layer_norm(patches, patches.shape[-1:])
        chance = (1 - F.cosine_similarity(targets.mean(0, keepdim=True), targets, dim=-1)).mean().item()
    assert final < 0.7 * chance, (losses, chance)


def test_psl_learns_below_the_label_prior():
    from aetnet.objective_psl import keyword_targets, similarity_keywords

    # Hard keywords alone: the chance level below is theirs (test_objective_momentum_targets.py tests the soft ones).
    model, batch, final, losses = _train_alone("psl", 30, 3e-2, distill_alpha=0.0)
    objective = model.objectives["psl"]
    with torch.no_grad():  # the targets (psl does not train the RoBERTa aligner, so they stay fixed)
        states = model.text_model_m(batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        keywords = similarity_keywords(states, _real_tokens(batch), objective.num_keywords)
        targets = keyword_targets(batch["input_ids"], keywords, VOCAB, objective.special_ids)
        prior = targets.mean(0, keepdim=True).expand_as(targets)
        chance = F.binary_cross_entropy(prior, targets, reduction="none").sum(-1).mean().item() / objective.num_keywords
    assert final < 0.7 * chance, (losses, chance)


# Two processes


def _ddp_worker(rank: int, port: int, output_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        # With DITC, so that the shared parts it trains are in the DDP group too.
        model = make_model(AETNetForTokenClassification, objectives=("ditc", *SIMLA))
        ddp = DistributedDataParallel(model, find_unused_parameters=False)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
        for step in range(2):
            ddp(**make_batch(2, seed=10 * step + rank)).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        masks = model.aetnet.objectives["xmm_image"].mask_patches(2)
        torch.save({"weights": model.state_dict(), "masks": masks}, os.path.join(output_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_process_ddp_trains_every_objective_parameter_alike(tmp_path):
    mp.spawn(_ddp_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    first, second = (torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2))
    initial = make_model(AETNetForTokenClassification, objectives=("ditc", *SIMLA))
    for name, param in initial.named_parameters():
        torch.testing.assert_close(first["weights"][name], second["weights"][name], msg=name)
        if param.requires_grad:
            assert not torch.equal(first["weights"][name], param.detach()), name
    assert not torch.equal(first["masks"], second["masks"])  # each rank draws its own masks
