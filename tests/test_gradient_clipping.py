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
"""Gradient clipping by part (`grad_clipping`): which parameters are whose, and what the trainer's step sees."""

from __future__ import annotations

import math

import pytest
import torch
from test_trainer_aetnet import make_model
from test_trainer_aetnet_steps import args_for_accumulation, run_one_step
from transformers import LayoutLMv3Config, LayoutLMv3ForTokenClassification

from aetnet import AETNetTrainingArguments
from aetnet.training import clip_gradient_parts, gradient_parts


def test_the_parts_split_the_trainable_parameters_between_task_and_alignment():
    model = make_model(fusion_injection="gated", alignment_objectives=["ditc", "tim"])
    parts = gradient_parts(model)
    names = {id(p): n for n, p in model.named_parameters()}
    task, alignment = ({names[id(p)] for p in parts[k]} for k in ("task", "alignment"))
    assert not task & alignment
    assert task | alignment == {n for n, p in model.named_parameters() if p.requires_grad}
    assert "aetnet.temp" in alignment and any(n.startswith("aetnet.objectives.tim.") for n in alignment)
    assert any(n.startswith("aetnet.vision_model.") for n in alignment)
    assert any(n.startswith("aetnet.text_proj.") for n in alignment)
    assert {"aetnet.text_gate", "aetnet.image_gate"} <= task and any(n.startswith("classifier.") for n in task)
    fusion = ("aetnet.layoutlmv3.", "classifier.", "aetnet.text_gate", "aetnet.image_gate")
    assert all(n.startswith(fusion) for n in task)
    # The momentum copies have no gradients and are in neither part.
    assert not any("_m." in n for n in task | alignment)
    plain = LayoutLMv3ForTokenClassification(
        LayoutLMv3Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    )
    assert gradient_parts(plain) == {}


def test_each_part_is_clipped_to_its_share_of_the_norm():
    small, large = torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(9))
    small.grad, large.grad = torch.full((4,), 0.1), torch.full((9,), 10.0)
    norms = clip_gradient_parts({"task": [small], "alignment": [large]}, max_norm=1.0)
    assert norms["task"].item() == pytest.approx(0.2) and norms["alignment"].item() == pytest.approx(30.0)
    assert small.grad.norm().item() == pytest.approx(0.2)  # below its share 1 / sqrt(2): untouched
    assert large.grad.norm().item() == pytest.approx(1 / math.sqrt(2), rel=1e-5)
    with pytest.raises(ValueError, match="`max_norm` must be > 0, got 0"):
        clip_gradient_parts({"task": [small]}, max_norm=0)


def _part_norms(model, grads):
    parts = gradient_parts(model)
    names = {id(p): n for n, p in model.named_parameters()}
    return {
        part: torch.stack([grads[names[id(p)]].norm() for p in params if names[id(p)] in grads]).norm().item()
        for part, params in parts.items()
    }


@pytest.mark.parametrize("clipping", ["separate", "global"])
def test_the_optimizer_sees_each_part_clipped_on_its_own(tmp_path, clipping):
    raw_logs, raw = run_one_step(args_for_accumulation(tmp_path, "raw", 1))
    args = args_for_accumulation(tmp_path, clipping, 1)
    args.max_grad_norm, args.grad_clipping = 1.0, clipping
    logs, clipped = run_one_step(args)
    model = make_model()
    before, after = _part_norms(model, raw), _part_norms(model, clipped)
    assert before["alignment"] > 1.0  # the alignment side's gradient is the larger and needs clipping
    if clipping == "separate":
        for part in ("task", "alignment"):
            assert after[part] == pytest.approx(min(before[part], 1 / math.sqrt(2)), rel=1e-4)
            assert logs[f"grad_norm_{part}"] == pytest.approx(before[part], rel=1e-4)
    else:  # the Trainer's joint clip: both parts scaled by the same factor
        factor = 1.0 / math.hypot(before["task"], before["alignment"])
        for part in ("task", "alignment"):
            assert after[part] == pytest.approx(before[part] * factor, rel=1e-4)
        assert "grad_norm_task" not in logs
    assert logs["grad_norm"] == pytest.approx(raw_logs["grad_norm"] if clipping == "global" else 1.0, rel=1e-3)


def test_bad_grad_clipping_names_the_argument(tmp_path):
    with pytest.raises(ValueError, match="`grad_clipping` must be 'separate' or 'global', got 'parts'"):
        AETNetTrainingArguments(output_dir=str(tmp_path), grad_clipping="parts", report_to="none", use_cpu=True)
