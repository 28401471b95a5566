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
The momentum soft targets of SIMLA's PSL and XMM-text. PSL (`(1 - alpha) * BCE(hard) + alpha * BCE(sigmoid(momentum
head))`): the keyword head's momentum copy `head_m` starts equal to the head, is frozen, follows it by the model's EMA
step, is saved and re-synced when a checkpoint lacks it, and its prediction on the momentum image feature enters the
loss with the config's `distill_alpha` times the model's ramp. XMM-text with `momentum_distillation=True`: a momentum
LayoutLMv3 and LM head predict the same masked ids on the same page, mixed into the one-hot target.
"""

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config, tiny_documents
from safetensors.torch import load_file, save_file

from aetnet import AETNetForTokenClassification, AETNetModel
from aetnet.data_collator import AETNetDataCollator
from aetnet.objective_psl import bernoulli_entropy, keyword_targets, similarity_keywords


def make_model(cls=AETNetModel, seed=0, **settings):
    torch.manual_seed(seed)
    return cls(tiny_config(alignment_objectives={"psl": settings})).train()


def make_batch(count=3, seed=0):
    batch = AETNetDataCollator()(tiny_documents(count, seq_len=16, seed=seed))
    return {k: v for k, v in batch.items() if k != "labels"}


def test_the_momentum_head_starts_as_the_head_is_frozen_and_follows_by_the_ema_step():
    model = make_model()
    psl = model.objectives["psl"]
    assert torch.equal(psl.head_m.weight, psl.head.weight) and torch.equal(psl.head_m.bias, psl.head.bias)
    assert not any(p.requires_grad for p in psl.head_m.parameters())
    with torch.no_grad():
        psl.head.weight.add_(1.0)
    before = psl.head_m.weight.clone()
    model.momentum_update()
    m = model.config.momentum
    torch.testing.assert_close(psl.head_m.weight, m * before + (1 - m) * psl.head.weight)


def _hand_loss(model, batch, alpha):
    """PSL's loss computed here from its parts: the hard keywords, the momentum head on the momentum image feature."""
    psl = model.objectives["psl"]
    with torch.no_grad():
        out = model(**batch, return_alignment_losses=False)  # eval-like: no EMA step, no enqueue
        image_m = model.vision_model_m(batch["pixel_values"]).last_hidden_state[:, 0]
        image_feat_m = F.normalize(model.vision_proj_m(image_m), dim=-1)
        image_feat = F.normalize(model.vision_proj(out.image_embeds[:, 0]), dim=-1)
        text_m = model.text_model_m(batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    real = batch["attention_mask"].bool() & ~torch.isin(batch["input_ids"], torch.tensor([0, 1, 2]))
    hard = keyword_targets(batch["input_ids"], similarity_keywords(text_m, real, 5), psl.head.out_features, [0, 1, 2])
    soft = torch.sigmoid(psl.head_m(image_feat_m * psl.input_scale) + psl.prior_logit)
    soft[:, [0, 1, 2]] = 0.0
    logits = psl.head(image_feat * psl.input_scale) + psl.prior_logit
    loss = (1 - alpha) * F.binary_cross_entropy_with_logits(logits, hard, reduction="none")
    loss = loss + alpha * (F.binary_cross_entropy_with_logits(logits, soft, reduction="none") - bernoulli_entropy(soft))
    return loss.sum(-1).mean() / 5


@pytest.mark.parametrize("alpha, ramp", [(0.4, 1.0), (0.4, 0.5), (0.0, 1.0), (1.0, 1.0)])
def test_the_loss_mixes_the_hard_keywords_with_the_momentum_heads_prediction(alpha, ramp):
    model = make_model(distill_alpha=alpha)
    model.momentum_update_in_forward = False  # the hand computation reads the weights of this very step
    model.distill_ramp = ramp
    psl = model.objectives["psl"]
    with torch.no_grad():  # a momentum head that disagrees with the head, so that the soft term matters
        psl.head_m.weight.normal_(std=0.5)
    batch = make_batch()
    loss = model(**batch).alignment_losses["psl"]
    torch.testing.assert_close(loss, _hand_loss(model, batch, alpha * ramp), rtol=1e-4, atol=1e-5)
    if alpha * ramp > 0:  # the soft term changes the loss: not the hard-only value
        assert not torch.isclose(loss, _hand_loss(model, batch, 0.0), rtol=1e-3)


def test_the_soft_term_is_zero_when_the_head_agrees_with_its_momentum_copy():
    # distill_alpha=1: only the soft term; the head equals its copy at initialisation, and both views are the same
    # page (no augmentation; eval mode, so no dropout either), so the KL divergence is zero everywhere but at the
    # special ids, whose soft target is 0 (never keywords, as in the hard target).
    model = make_model(distill_alpha=1.0).eval()
    batch = make_batch()
    out = model(**batch, return_alignment_losses=True)
    psl = model.objectives["psl"]
    with torch.no_grad():
        image_feat = F.normalize(model.vision_proj(out.image_embeds[:, 0]), dim=-1)
        logits = psl.head(image_feat * psl.input_scale) + psl.prior_logit
    special_cost = F.softplus(logits[:, [0, 1, 2]]).sum(-1).mean() / 5  # BCE against a target of 0
    assert special_cost > 0.01
    torch.testing.assert_close(out.alignment_losses["psl"], special_cost, atol=1e-5, rtol=1e-4)


def test_bad_alpha_names_the_argument_and_value():
    with pytest.raises(ValueError, match=r"`distill_alpha` of psl must be in \[0, 1\], got 1.5"):
        make_model(distill_alpha=1.5)


def test_a_checkpoint_without_the_momentum_head_resyncs_it_from_the_head(tmp_path):
    model = make_model(AETNetForTokenClassification)
    with torch.no_grad():
        model.aetnet.objectives["psl"].head.weight.add_(0.5)  # the head and its copy now differ
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    assert {"aetnet.objectives.psl.head_m.weight", "aetnet.objectives.psl.head_m.bias"} <= set(state)
    reloaded = AETNetForTokenClassification.from_pretrained(tmp_path)
    psl = reloaded.aetnet.objectives["psl"]
    torch.testing.assert_close(psl.head_m.weight, model.aetnet.objectives["psl"].head_m.weight)  # saved, loaded

    # A checkpoint saved before PSL had a momentum head: the copy starts as the loaded head, frozen.
    save_file({k: v for k, v in state.items() if ".head_m." not in k}, tmp_path / "model.safetensors")
    reloaded = AETNetForTokenClassification.from_pretrained(tmp_path)
    psl = reloaded.aetnet.objectives["psl"]
    torch.testing.assert_close(psl.head_m.weight, psl.head.weight)
    torch.testing.assert_close(psl.head.weight, model.aetnet.objectives["psl"].head.weight)
    assert not psl.head_m.weight.requires_grad


# XMM-text


def test_xmm_text_distillation_needs_its_momentum_copies():
    with pytest.raises(ValueError, match=r"`distill_alpha` of xmm_text \(0.3\) needs `momentum_distillation=True`"):
        AETNetModel(tiny_config(alignment_objectives={"xmm_text": {"distill_alpha": 0.3}}))
    plain = AETNetModel(tiny_config(alignment_objectives=["xmm_text"])).objectives["xmm_text"]
    assert not hasattr(plain, "fusion_m") and not hasattr(plain, "distill_alpha")  # the trainer's alpha skips it


def test_xmm_text_mixes_the_momentum_models_prediction_on_the_same_masked_page(tmp_path):
    torch.manual_seed(0)
    config = tiny_config(alignment_objectives={"xmm_text": {"momentum_distillation": True, "mask_ratio": 0.3}})
    model = AETNetModel(config).train()
    model.momentum_update_in_forward = False
    xmm = model.objectives["xmm_text"]
    online, copy = dict(model.layoutlmv3.named_parameters()), dict(xmm.fusion_m.named_parameters())
    assert online.keys() == copy.keys() and all(torch.equal(online[k], copy[k]) for k in online)
    assert not any(p.requires_grad for p in [*xmm.fusion_m.parameters(), *xmm.head_m.parameters()])
    with torch.no_grad():  # a momentum model that predicts differently from the online one
        xmm.head_m.dense.weight.normal_(std=1.0)
    for module in model.modules():  # no dropout: the hand computation below must see the same network
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    batch = make_batch()
    loss = model(**batch).alignment_losses["xmm_text"]

    xmm.draws -= 1  # replay this step's mask
    real = batch["attention_mask"].bool() & ~torch.isin(batch["input_ids"], torch.tensor([0, 1, 2]))
    masked_ids, mask = xmm.mask_inputs(batch["input_ids"], real)
    inputs = dict(input_ids=masked_ids, bbox=batch["bbox"], attention_mask=batch["attention_mask"])
    with torch.no_grad():
        hidden = model.layoutlmv3(**inputs, pixel_values=batch["pixel_values"]).last_hidden_state[:, :16]
        hidden_m = xmm.fusion_m(**inputs, pixel_values=batch["pixel_values"]).last_hidden_state[:, :16]
        logits = xmm.head(hidden[mask], model.layoutlmv3.get_input_embeddings().weight)
        soft = xmm.head_m(hidden_m[mask], xmm.fusion_m.get_input_embeddings().weight).softmax(-1)
    hard = F.cross_entropy(logits, batch["input_ids"][mask])
    distilled = -(soft * logits.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(loss, 0.6 * hard + 0.4 * distilled, rtol=1e-4, atol=1e-5)
    assert not torch.isclose(loss, hard, rtol=1e-3)

    m, key = config.momentum, "encoder.layer.0.output.dense.weight"
    before = copy[key].clone()
    with torch.no_grad():
        online[key].add_(1.0)
    model.momentum_update()  # the copies follow by the EMA step
    torch.testing.assert_close(copy[key], m * before + (1 - m) * online[key])

    # Saved and reloaded; a checkpoint without the copies starts them from the loaded online weights.
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    assert any(k.startswith("objectives.xmm_text.fusion_m.") for k in state)
    save_file({k: v for k, v in state.items() if "_m." not in k}, tmp_path / "model.safetensors")
    reloaded = AETNetModel.from_pretrained(tmp_path)
    copy = dict(reloaded.objectives["xmm_text"].fusion_m.named_parameters())
    for name, param in reloaded.layoutlmv3.named_parameters():
        torch.testing.assert_close(copy[name], param, msg=name)
    torch.testing.assert_close(reloaded.objectives["xmm_text"].head_m.dense.weight, xmm.head.dense.weight)
