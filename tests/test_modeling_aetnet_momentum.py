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
"""AETNet models on tiny configs: alignment losses and gradients, momentum and queue rules, which tokens align."""

from __future__ import annotations

import pytest
import torch
from test_modeling_aetnet import AETNetModelTester

from aetnet import AETNetForTokenClassification, AETNetModel


@pytest.fixture
def tester():
    torch.manual_seed(0)
    return AETNetModelTester()


def test_training_step_losses_and_gradients(tester):
    model = AETNetForTokenClassification(tester.get_config()).train()
    inputs = tester.prepare_inputs()
    outputs = model(**inputs, **tester.labels_for(AETNetForTokenClassification, tester.batch_size))
    assert set(outputs.alignment_losses) == {"ditc", "imc", "glitc", "pita"}
    for name, value in outputs.alignment_losses.items():
        assert torch.isfinite(value) and value.item() > 0, name
    torch.testing.assert_close(outputs.loss, outputs.task_loss + sum(outputs.alignment_losses.values()))
    outputs.loss.backward()
    base = model.aetnet

    def has_grad(module):
        return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

    for module in (base.vision_model, base.text_model, base.vision_proj, base.text_proj, base.layoutlmv3):
        assert has_grad(module), type(module).__name__
    assert base.temp.grad is not None and base.temp.grad.abs().item() > 0
    for _, momentum in base.momentum_pairs():
        assert all(p.grad is None for p in momentum.parameters())


def test_momentum_update_is_an_exact_ema(tester):
    model = AETNetModel(tester.get_config(momentum=0.9))
    with torch.no_grad():
        for param in model.vision_model.parameters():
            param.add_(torch.randn_like(param))
    before = [
        (p.clone(), p_m.clone()) for o, m in model.momentum_pairs() for p, p_m in zip(o.parameters(), m.parameters())
    ]
    model.momentum_update()
    after = [p_m for _, m in model.momentum_pairs() for p_m in m.parameters()]
    for (online, old), new in zip(before, after):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * online, rtol=0, atol=1e-6)


def _momentum_image_features(model, pixel_values):
    with torch.no_grad():
        hidden = model.vision_model_m(pixel_values).last_hidden_state[:, 0]
        return torch.nn.functional.normalize(model.vision_proj_m(hidden), dim=-1)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_queue_accepts_any_batch_size_and_wraps(tester, batch_size):
    model = AETNetModel(tester.get_config()).train()
    for step in range(4):
        inputs = tester.prepare_inputs(batch_size=batch_size, seed=step)
        ptr = model.queue_ptr.item()
        outputs = model(**inputs)
        assert all(torch.isfinite(v) for v in outputs.alignment_losses.values())
        written = [(ptr + i) % tester.queue_size for i in range(batch_size)]
        torch.testing.assert_close(
            model.image_queue[:, written].t(), _momentum_image_features(model, inputs["pixel_values"])
        )
        assert model.queue_ptr.item() == (ptr + batch_size) % tester.queue_size
        assert model.queue_filled.item() == min((step + 1) * batch_size, tester.queue_size)


def test_batch_larger_than_queue_keeps_its_last_features(tester):
    model = AETNetModel(tester.get_config()).train()
    inputs = tester.prepare_inputs(batch_size=tester.queue_size + 2)
    model(**inputs)
    features = _momentum_image_features(model, inputs["pixel_values"])
    for i in range(2, tester.queue_size + 2):
        torch.testing.assert_close(model.image_queue[:, i % tester.queue_size], features[i])
    assert model.queue_ptr.item() == 2 and model.queue_filled.item() == tester.queue_size


def test_eval_never_changes_training_state(tester):
    model = AETNetForTokenClassification(tester.get_config()).train()
    model(**tester.prepare_inputs())
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        outputs = model(**tester.prepare_inputs(seed=3), return_alignment_losses=True)
    assert set(outputs.alignment_losses) == {"ditc", "imc", "glitc", "pita"}
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)


def test_objectives_can_be_switched_off(tester):
    model = AETNetForTokenClassification(tester.get_config(alignment_objectives=["pita"])).train()
    outputs = model(**tester.prepare_inputs())
    assert set(outputs.alignment_losses) == {"pita"}
    assert not hasattr(model.aetnet, "vision_model_m") and model.aetnet.momentum_pairs() == []


def test_aligners_run_on_the_modalities_given(tester):
    model = AETNetModel(tester.get_config()).eval()
    inputs = tester.prepare_inputs()
    text_only = model(input_ids=inputs["input_ids"], bbox=inputs["bbox"])  # as LayoutLMv3: the page is optional
    assert text_only.image_embeds is None and text_only.text_embeds is not None
    with pytest.raises(ValueError, match="`input_ids`.*`pixel_values`.*got neither"):
        model(bbox=inputs["bbox"])


def test_special_and_boxless_tokens_are_not_aligned(tester):
    model = AETNetModel(tester.get_config()).train()
    masks = []
    model.objectives["pita"].loss.register_forward_pre_hook(lambda module, args: masks.append(args[3]))
    input_ids = torch.tensor([[0, 5, 6, 7, 2, 1]])
    bbox = torch.tensor([[[0] * 4, [10, 10, 20, 20], [0] * 4, [30, 30, 40, 40], [0] * 4, [0] * 4]])
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    pixel_values = torch.randn(1, 3, tester.image_size, tester.image_size)
    model(input_ids=input_ids, bbox=bbox, attention_mask=attention_mask, pixel_values=pixel_values)
    assert masks[0].tolist() == [[False, True, False, True, False, False]]


def test_non_finite_features_never_enter_the_queue(tester):
    model = AETNetModel(tester.get_config()).train()
    before = model.image_queue.clone()
    features = torch.nn.functional.normalize(torch.randn(3, tester.embed_dim), dim=-1)
    features[1, 0] = float("nan")
    model.queues.enqueue(features, features.clone())
    assert torch.isfinite(model.image_queue).all() and torch.isfinite(model.text_queue).all()
    torch.testing.assert_close(model.image_queue[:, 1], before[:, 1])
    torch.testing.assert_close(model.image_queue[:, [0, 2]].t(), features[[0, 2]])
    assert model.queue_ptr.item() == 3
