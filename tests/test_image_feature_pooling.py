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
"""`AETNetConfig.image_feature_pooling`: the image's document feature from the ViT's [CLS] state or from the mean of
its patch states, the same on the online side, the momentum side (the queue) and in `get_image_features`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import random_pages

from aetnet import AETNetConfig, AETNetModel


def _model(**kwargs) -> AETNetModel:
    torch.manual_seed(0)
    return AETNetModel(AETNetConfig.from_preset("tiny", vocab_size=99, queue_size=8, **kwargs)).train()


def test_config_names_an_unknown_pooling_and_defaults_to_cls():
    with pytest.raises(ValueError, match="`image_feature_pooling` must be one of \\['cls', 'mean'\\], got 'max'"):
        AETNetConfig.from_preset("tiny", image_feature_pooling="max")
    assert AETNetConfig.from_preset("tiny").image_feature_pooling == "cls"


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_the_image_feature_is_the_pooled_state_online_in_the_queue_and_at_inference(pooling, tmp_path):
    model = _model(image_feature_pooling=pooling)
    inputs = random_pages(model.config)
    model(**inputs)
    states = model.vision_model(inputs["pixel_values"]).last_hidden_state
    pooled = states[:, 1:].mean(dim=1) if pooling == "mean" else states[:, 0]
    expected = F.normalize(model.vision_proj(pooled), dim=-1)
    with torch.no_grad():
        features = model.eval().get_image_features(inputs["pixel_values"]).pooler_output
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-5)
    # Right after construction the momentum copies equal the online encoders: the queue holds the same features.
    torch.testing.assert_close(model.queues.image_queue[:, 0], expected[0].detach(), rtol=1e-4, atol=1e-5)
    # The text side keeps its [CLS] state whatever the image pooling.
    text = model.text_model(inputs["input_ids"]).last_hidden_state[:, 0]
    torch.testing.assert_close(
        model.get_text_features(inputs["input_ids"]).pooler_output,
        F.normalize(model.text_proj(text), dim=-1),
        rtol=1e-4,
        atol=1e-5,
    )
    model.save_pretrained(tmp_path)
    assert AETNetModel.from_pretrained(tmp_path).config.image_feature_pooling == pooling


def test_centring_follows_the_pooled_state():
    model = _model(image_feature_pooling="mean", feature_centering=0.9)
    inputs = random_pages(model.config)
    model(**inputs)
    states = model.vision_model(inputs["pixel_values"]).last_hidden_state
    torch.testing.assert_close(model.image_center.center, states[:, 1:].mean(dim=1).mean(0), rtol=1e-4, atol=1e-5)
