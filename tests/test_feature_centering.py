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
"""`AETNetConfig.feature_centering`: the running centre subtracted from the aligners' [CLS] states, and the document features built on it."""

from __future__ import annotations

import pytest
import torch
from conftest import random_pages

from aetnet import AETNetConfig, AETNetModel
from aetnet.modeling_aetnet_features import FeatureCenter


def test_the_first_update_sets_the_centre_and_later_ones_move_it_by_the_momentum():
    center = FeatureCenter(3, momentum=0.75)
    first = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    center.update(first)
    torch.testing.assert_close(center.center, torch.tensor([2.0, 2.0, 2.0]))
    center.update(torch.zeros(4, 3))
    torch.testing.assert_close(center.center, torch.tensor([1.5, 1.5, 1.5]))
    assert int(center.updates) == 2
    # Subtracting never updates, whatever the mode, and works on any leading shape.
    states = torch.ones(2, 5, 3)
    torch.testing.assert_close(center.train()(states), states - 1.5)
    assert int(center.updates) == 2


def test_a_common_direction_is_removed_and_the_per_page_part_kept():
    """Pages that share one large common state are nearly parallel; centred, they are not."""
    generator = torch.Generator().manual_seed(0)
    common = 100.0 * torch.randn(16, generator=generator)
    states = common + torch.randn(8, 16, generator=generator)
    center = FeatureCenter(16, momentum=0.9)
    center.update(states)
    cosine = torch.nn.functional.cosine_similarity
    assert cosine(states[0], states[1], dim=0) > 0.99
    assert cosine(center(states)[0], center(states)[1], dim=0).abs() < 0.9


def test_the_centre_is_saved_with_the_module():
    center = FeatureCenter(4, momentum=0.9)
    center.update(torch.randn(3, 4))
    state = center.state_dict()
    assert set(state) == {"center", "updates"}
    restored = FeatureCenter(4, momentum=0.9)
    restored.load_state_dict(state)
    torch.testing.assert_close(restored.center, center.center)


@pytest.mark.parametrize("value", [1.0, -0.1])
def test_config_rejects_a_momentum_outside_0_1(value):
    with pytest.raises(ValueError, match=f"`feature_centering` must be None or a momentum in \\[0, 1\\), got {value}"):
        AETNetConfig.from_preset("tiny", feature_centering=value)
    assert AETNetConfig.from_preset("tiny").feature_centering is None


def test_the_model_centres_online_and_momentum_features_and_updates_only_in_training(tmp_path):
    torch.manual_seed(0)
    config = AETNetConfig.from_preset("tiny", vocab_size=99, queue_size=8, feature_centering=0.9)
    model = AETNetModel(config).train()
    inputs = random_pages(config)
    model(**inputs)
    assert int(model.image_center.updates) == int(model.text_center.updates) == 1
    cls = model.vision_model(inputs["pixel_values"]).last_hidden_state[:, 0]
    torch.testing.assert_close(model.image_center.center, cls.mean(0), rtol=1e-4, atol=1e-5)
    model.eval()
    with torch.no_grad():
        features = model.get_image_features(inputs["pixel_values"]).pooler_output
        model(**inputs, return_alignment_losses=True)
    assert int(model.image_center.updates) == 1
    expected = torch.nn.functional.normalize(model.vision_proj(cls - model.image_center.center), dim=-1)
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-5)
    # the queue holds centred momentum features: momentum == online right after construction
    torch.testing.assert_close(model.queues.image_queue[:, 0], expected[0].detach(), rtol=1e-4, atol=1e-5)

    model.save_pretrained(tmp_path)
    reloaded = AETNetModel.from_pretrained(tmp_path)
    torch.testing.assert_close(reloaded.image_center.center, model.image_center.center)


def test_without_centering_the_checkpoint_has_no_new_keys():
    model = AETNetModel(AETNetConfig.from_preset("tiny", vocab_size=99, queue_size=8))
    assert not [key for key in model.state_dict() if "center" in key]
