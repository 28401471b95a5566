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
Mixed precision: under fp16 and bf16 autocast, on the CPU and on a GPU where one is present, every loss (task and the four alignment terms) and every gradient
stays finite in the worst case for a contrastive loss: the temperature at its floor (0.001, logits up to 1000) and
all-identical features (same document across the batch and a queue full of copies of it, so every similarity ties).
"""

from __future__ import annotations

import pytest
import torch
from conftest import DEVICES

from aetnet import AETNetConfig, AETNetForTokenClassification
from aetnet.configuration_aetnet import TEMPERATURE_RANGE


SEQ_LEN, VOCAB, IMAGE, BATCH = 12, 99, 16, 4
OBJECTIVES = {"ditc", "imc", "glitc", "pita"}


def identical_batch(device: str = "cpu") -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    corner = torch.randint(0, 900, (SEQ_LEN, 2), generator=generator)
    bbox = torch.cat([corner, corner + 80], dim=-1)
    bbox[0] = bbox[-1] = 0
    input_ids = torch.randint(5, VOCAB, (SEQ_LEN,), generator=generator)
    input_ids[0], input_ids[-1] = 0, 2
    labels = torch.randint(0, 3, (SEQ_LEN,), generator=generator)
    labels[0] = labels[-1] = -100
    document = {
        "input_ids": input_ids,
        "bbox": bbox,
        "attention_mask": torch.ones(SEQ_LEN, dtype=torch.long),
        "pixel_values": torch.randn(3, IMAGE, IMAGE, generator=generator),
        "labels": labels,
    }
    return {key: value.expand(BATCH, *value.shape).clone().to(device) for key, value in document.items()}


def model_at_the_worst_case(batch) -> AETNetForTokenClassification:
    config = AETNetConfig.from_preset("tiny", vocab_size=VOCAB, max_length=SEQ_LEN + 4, num_labels=3, queue_size=8)
    for sub in (config.layout_config, config.vision_config, config.text_config):
        sub.hidden_dropout_prob = sub.attention_probs_dropout_prob = 0.0
    torch.manual_seed(0)
    model = AETNetForTokenClassification(config).train().to(batch["input_ids"].device)
    base = model.aetnet
    with torch.no_grad():
        base.temp.fill_(TEMPERATURE_RANGE[0])
        # A queue full of this very document: the momentum features of the batch, copied into every slot.
        image_feat = base.get_image_features(batch["pixel_values"][:1]).pooler_output[0]
        text_feat = base.get_text_features(batch["input_ids"][:1], batch["attention_mask"][:1]).pooler_output[0]
        base.image_queue.copy_(image_feat[:, None].expand_as(base.image_queue))
        base.text_queue.copy_(text_feat[:, None].expand_as(base.text_queue))
        base.queue_filled.fill_(config.queue_size)
    return model


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_losses_and_gradients_stay_finite_at_the_temperature_floor_with_identical_features(dtype, device):
    assert TEMPERATURE_RANGE[0] == 0.001
    batch = identical_batch(device)
    model = model_at_the_worst_case(batch)
    dtypes = []
    model.classifier.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    with torch.autocast(device, dtype=dtype):
        outputs = model(**batch)
    assert dtypes == [dtype]  # the forward really ran in reduced precision
    assert model.aetnet.temp.item() == pytest.approx(0.001)
    assert set(outputs.alignment_losses) == OBJECTIVES
    for name, value in {"task": outputs.task_loss, **outputs.alignment_losses}.items():
        assert torch.isfinite(value), (name, value)
    outputs.loss.backward()
    for name, param in model.named_parameters():
        if param.grad is not None:
            assert torch.isfinite(param.grad).all(), name
    assert model.aetnet.temp.grad is not None
    # The batch was enqueued as finite features; nothing poisoned the queues.
    assert torch.isfinite(model.aetnet.image_queue).all() and torch.isfinite(model.aetnet.text_queue).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_reduced_precision_losses_match_float32_at_the_temperature_floor(dtype, device):
    """Finite is not enough: the alignment losses are computed in float32 inside autocast, so they stay close."""
    batch = identical_batch(device)
    reference = model_at_the_worst_case(batch)(**batch).alignment_losses
    with torch.autocast(device, dtype=dtype):
        reduced = model_at_the_worst_case(batch)(**batch).alignment_losses
    for name in OBJECTIVES:
        torch.testing.assert_close(reduced[name].float(), reference[name].float(), atol=0.15, rtol=0.05, msg=name)
