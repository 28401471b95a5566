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
`spatial_bias_init="locality"`: LayoutLMv3's 2D relative-position tables (which transformers never trains) start
as a prior to attend near a token's box; a checkpoint's tables are kept on loading; bad values are named.
"""

import math

import pytest
import torch
from conftest import tiny_config

from aetnet import AETNetConfig, AETNetForTokenClassification, AETNetModel
from aetnet.spatial_bias import LOCALITY_STRENGTH


def test_locality_tables_fall_with_the_distance_and_are_the_same_for_every_head():
    torch.manual_seed(0)
    model = AETNetModel(tiny_config(spatial_bias_init="locality"))
    encoder = model.layoutlmv3.encoder
    for table in (encoder.rel_pos_x_bias.weight, encoder.rel_pos_y_bias.weight):
        assert torch.equal(table, table[:1].expand_as(table))
        distances = torch.tensor([0, 10, 60, 200, 900])
        buckets = encoder.relative_position_bucket(
            distances, num_buckets=encoder.rel_2d_pos_bins, max_distance=encoder.max_rel_2d_pos
        )
        values = table[0, buckets]
        assert (values[:-1] >= values[1:]).all() and values[-1] < 0.01 * values[0], values
        head_dim = model.config.layout_config.hidden_size // model.config.layout_config.num_attention_heads
        assert values[0] == pytest.approx(LOCALITY_STRENGTH * math.sqrt(head_dim))
        # The same distance to the left and to the right weighs the same.
        left = encoder.relative_position_bucket(
            -distances, num_buckets=encoder.rel_2d_pos_bins, max_distance=encoder.max_rel_2d_pos
        )
        torch.testing.assert_close(table[0, left], values)
    random = AETNetModel(tiny_config()).layoutlmv3.encoder.rel_pos_x_bias.weight
    assert random.std() < 0.05  # transformers' initialisation, the default


def test_a_token_attends_to_the_patches_around_its_box():
    torch.manual_seed(0)
    config = tiny_config(spatial_bias_init="locality", attn_implementation="eager")
    model = AETNetModel(config).eval()
    grid = config.grid_size  # 4 x 4 cells of 250 units on the 16 px page
    bbox = torch.tensor([[[0, 0, 0, 0], [760, 760, 790, 790], [0, 0, 0, 0]]])  # the token lies in cell (3, 3)
    outputs = model.layoutlmv3(
        input_ids=torch.tensor([[0, 7, 2]]), bbox=bbox, pixel_values=torch.zeros(1, 3, 16, 16), output_attentions=True
    )
    # Token 1's attention to the 16 patches (after the 3 text tokens and the image [CLS]), mean over heads.
    to_patches = outputs.attentions[0][0, :, 1, 3 + 1 :].mean(0).view(grid, grid)
    # Most of it goes to the box's column and to the two rows around it (LayoutLMv3 compares boxes by x0 and y1, so
    # the row above, whose bottom is nearer this box's bottom, gets a share), the far corner almost nothing.
    total = to_patches.sum()
    assert to_patches[:, 3].sum() > 0.7 * total and to_patches[2:].sum() > 0.7 * total, to_patches
    assert to_patches[3, 3] > 10 * to_patches[0, 0], to_patches
    random = AETNetModel(tiny_config(attn_implementation="eager")).eval()
    uniform = (
        random.layoutlmv3(
            input_ids=torch.tensor([[0, 7, 2]]),
            bbox=bbox,
            pixel_values=torch.zeros(1, 3, 16, 16),
            output_attentions=True,
        )
        .attentions[0][0, :, 1, 3 + 1 :]
        .mean(0)
        .view(grid, grid)
    )
    assert uniform[:, 3].sum() < 0.4 * uniform.sum()  # without the prior: about a quarter, no preference


def test_a_checkpoints_tables_are_kept_on_loading(tmp_path):
    torch.manual_seed(0)
    model = AETNetForTokenClassification(tiny_config(spatial_bias_init="locality"))
    with torch.no_grad():
        model.aetnet.layoutlmv3.encoder.rel_pos_x_bias.weight.mul_(-1.0)
    model.save_pretrained(tmp_path)
    reloaded = AETNetForTokenClassification.from_pretrained(tmp_path)
    assert reloaded.config.spatial_bias_init == "locality"
    torch.testing.assert_close(
        reloaded.aetnet.layoutlmv3.encoder.rel_pos_x_bias.weight, model.aetnet.layoutlmv3.encoder.rel_pos_x_bias.weight
    )


def test_bad_value_names_the_field():
    with pytest.raises(ValueError, match="spatial_bias_init"):
        AETNetConfig(spatial_bias_init="gaussian")
