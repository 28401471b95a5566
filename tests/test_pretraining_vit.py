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
Tests of `ViTForPagePreTraining` (SimMIM plus the page contrast) at a tiny size: its losses and their weights, the
step normalisation, the pages left out of the contrast, the checkpoint it saves (a ViT that `ViTModel` and AETNet
load), and that its page contrast trains the [CLS] state to tell pages apart, which SimMIM alone does not.
"""

import math

import numpy as np
import pytest
import torch
from transformers import ViTForMaskedImageModeling, ViTModel

from aetnet.pretraining import (
    DataCollatorForSimMIM,
    ViTForPagePreTraining,
    ViTPagePreTrainingConfig,
    average_chance_levels,
)


IMAGE_SIZE = 32
PATCH = 4


class ViTForPagePreTrainingTester:
    """Tiny config and inputs, in the shape of transformers' `ModelTester`."""

    def __init__(self, batch_size: int = 4, **config_kwargs):
        self.batch_size = batch_size
        self.config_kwargs = config_kwargs

    def get_config(self) -> ViTPagePreTrainingConfig:
        sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
        sizes.update(image_size=IMAGE_SIZE, patch_size=PATCH, encoder_stride=PATCH, page_projection_dim=16)
        sizes.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        return ViTPagePreTrainingConfig(**{**sizes, **self.config_kwargs})

    def prepare_inputs(self, seed: int = 0) -> dict[str, torch.Tensor]:
        features = [{"pixel_values": torch.randn(3, IMAGE_SIZE, IMAGE_SIZE)} for _ in range(self.batch_size)]
        return DataCollatorForSimMIM(IMAGE_SIZE, PATCH, seed=seed)(features)


@pytest.fixture
def tester() -> ViTForPagePreTrainingTester:
    return ViTForPagePreTrainingTester()


@torch.no_grad()
def test_loss_is_the_weighted_sum_and_simmim_is_the_stock_one(tester):
    torch.manual_seed(0)
    inputs = tester.prepare_inputs()
    model = ViTForPagePreTraining(tester.get_config()).eval()
    outputs = model(**inputs)
    assert outputs.page_logits.shape == (tester.batch_size, tester.batch_size)
    assert outputs.loss == pytest.approx(float(outputs.mim_loss + outputs.page_contrast_loss))
    # SimMIM's term is exactly the stock model's loss on the same weights.
    stock = ViTForMaskedImageModeling(model.config).eval()
    stock.load_state_dict(model.state_dict(), strict=False)
    assert float(outputs.mim_loss) == pytest.approx(float(stock(**inputs).loss))
    # From random weights the pages are indistinguishable: the contrast starts near its chance level, log(pages).
    level = average_chance_levels(model, [inputs])["page_contrast"]
    assert level == pytest.approx(math.log(tester.batch_size))
    assert float(outputs.page_contrast_loss) == pytest.approx(level, rel=0.1)
    weighted = ViTForPagePreTraining(ViTForPagePreTrainingTester(mim_weight=0.5, page_contrast_weight=2.0).get_config())
    weighted.load_state_dict(model.state_dict())
    again = weighted.eval()(**inputs)
    assert float(again.loss) == pytest.approx(float(0.5 * outputs.mim_loss + 2.0 * outputs.page_contrast_loss))


@torch.no_grad()
def test_step_counts_split_the_mean_over_micro_batches(tester):
    torch.manual_seed(0)
    inputs = tester.prepare_inputs()
    model = ViTForPagePreTraining(tester.get_config()).eval()
    whole = model(**inputs)
    halves = [{key: value[i : i + 2] for key, value in inputs.items()} for i in (0, 2)]
    step = {name: sum(model.count_objective_items(half)[name] for half in halves) for name in ("mim", "page_contrast")}
    assert int(step["page_contrast"]) == tester.batch_size
    parts = [model(**half, num_items_per_objective=step) for half in halves]
    # SimMIM is a mean over the masked patches: the halves' shares add up to the whole batch's mean.
    assert float(sum(part.mim_loss for part in parts)) == pytest.approx(float(whole.mim_loss), rel=1e-4)
    # Each half's contrast (among its own 2 pages) weighs half of the step.
    alone = model(**halves[0])
    assert float(parts[0].page_contrast_loss) == pytest.approx(float(alone.page_contrast_loss) / 2, rel=1e-5)


@torch.no_grad()
def test_a_page_without_masked_patch_stays_out_of_the_contrast(tester):
    torch.manual_seed(0)
    inputs = tester.prepare_inputs()
    inputs["bool_masked_pos"][-1] = False  # a launcher's repeat of the last batch loses its mask
    model = ViTForPagePreTraining(tester.get_config()).eval()
    outputs = model(**inputs)
    assert outputs.page_logits.shape == (tester.batch_size - 1, tester.batch_size - 1)
    assert int(model.count_objective_items(inputs)["page_contrast"]) == tester.batch_size - 1
    assert model.chance_levels(inputs)["page_contrast"] == pytest.approx(math.log(tester.batch_size - 1))
    with pytest.raises(ValueError, match="`bool_masked_pos` is required"):
        model(pixel_values=inputs["pixel_values"], bool_masked_pos=None)


def test_checkpoint_is_a_vit_that_vitmodel_loads(tester, tmp_path):
    torch.manual_seed(0)
    model = ViTForPagePreTraining(tester.get_config())
    model.save_pretrained(tmp_path)
    encoder, info = ViTModel.from_pretrained(tmp_path, add_pooling_layer=False, output_loading_info=True)
    assert not info["missing_keys"]
    for name, value in encoder.state_dict().items():
        assert torch.equal(value, model.vit.state_dict()[name]), name
    reloaded = ViTForPagePreTraining.from_pretrained(tmp_path)
    assert reloaded.config.page_contrast_weight == 1.0
    for name, value in model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[name]), name


@pytest.mark.parametrize(
    "field, value",
    [("page_contrast_weight", -1.0), ("mim_weight", float("nan")), ("page_contrast_temperature", 0.0)],
)
def test_bad_settings_name_the_field_and_value(field, value):
    with pytest.raises(ValueError, match=f"`{field}` must be"):
        ViTPagePreTrainingConfig(**{field: value})


def layout_pages(count: int) -> list[dict]:
    """`count` white pages with four dark blocks each, placed at random: layouts that differ from page to page, as
    the ViT reads them (values in [-1, 1])."""
    generator = torch.Generator().manual_seed(0)
    pages = []
    for _ in range(count):
        page = torch.ones(3, IMAGE_SIZE, IMAGE_SIZE)
        for _ in range(4):
            top, left = torch.randint(0, IMAGE_SIZE - 4, (2,), generator=generator).tolist()
            height, width = torch.randint(2, 8, (2,), generator=generator).tolist()
            page[:, top : top + height, left : left + width] = -1.0
        pages.append({"pixel_values": page})
    return pages


def page_spread(model: ViTForPagePreTraining, pixel_values: torch.Tensor) -> float:
    """Mean 1 - cosine between the pages' [CLS] states (as `ViTModel` returns them, what AETNet reads)."""
    with torch.no_grad():
        states = torch.nn.functional.normalize(model.vit(pixel_values).last_hidden_state[:, 0], dim=-1)
    cosines = states @ states.T
    count = len(states)
    return float((1 - cosines).sum() / (count * (count - 1)))


@pytest.mark.parametrize("page_contrast_weight", [1.0, 0.0], ids=["page-contrast", "simmim-alone"])
def test_page_contrast_teaches_the_cls_state_to_tell_pages_apart(page_contrast_weight):
    pages = layout_pages(8)
    # A third of the page masked: at SimMIM's 60% the 16 cells of a 32-pixel page leave too little to match in
    # the few steps of a test.
    collator = DataCollatorForSimMIM(IMAGE_SIZE, PATCH, mask_ratio=0.3, seed=0)
    torch.manual_seed(0)
    config = ViTForPagePreTrainingTester(page_contrast_weight=page_contrast_weight).get_config()
    model = ViTForPagePreTraining(config)
    pixel_values = torch.stack([page["pixel_values"] for page in pages])
    before = page_spread(model, pixel_values)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(80):
        outputs = model(**collator(pages))
        optimizer.zero_grad()
        outputs.loss.backward()
        optimizer.step()
        losses.append(float(outputs.page_contrast_loss.detach()))
    after = page_spread(model, pixel_values)
    chance = math.log(len(pages))
    if page_contrast_weight:
        assert np.mean(losses[-5:]) < 0.7 * chance
        assert after > 10 * before
    else:  # SimMIM alone: the [CLS] states of the pages grow alike
        assert np.mean(losses[-5:]) > 0.95 * chance
        assert after < before
