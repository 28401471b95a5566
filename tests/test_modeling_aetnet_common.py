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
transformers' own `ModelTesterMixin` and `ConfigTester` (from the source distribution of the installed version, see
`transformers_tests.py`) against the four AETNet classes, with a tester modelled on `LayoutLMv3ModelTester`.

Every skip that is not one of transformers' own capability skips is listed in `AETNET_SKIPS` /
`AETNET_PARTIAL_SKIPS` below, with its reason. The capability skips of a CPU run (transformers 5.24.0): an
accelerator, several accelerators or MPS; flash attention 2/3/4 or the `kernels` library; DeepSpeed; tensor-parallel
plans, MoE experts and router logits, grouped_mm; RoPE, sliding windows, position-embedding resizing and caches
(AETNet has none of them); `_keep_in_fp32_modules` (none declared); `test_torch_compile_for_training` (marked slow);
`test_can_init_all_missing_weights` ("not a prioritized model"); and `test_sdpa_can_dispatch_non_composite_models`,
whose skip message says "does not support SDPA" because AETNet is composite: `test_sdpa_can_dispatch_composite_models`
runs instead.
"""

import copy
import unittest

import torch
from transformers import LayoutLMv3Config, RobertaConfig, ViTConfig
from transformers.testing_utils import torch_device
from transformers_tests import ensure_common_tests

from aetnet import (
    AETNetConfig,
    AETNetForQuestionAnswering,
    AETNetForSequenceClassification,
    AETNetForTokenClassification,
    AETNetModel,
)


ensure_common_tests()

from transformers_common_tests.test_configuration_common import ConfigTester  # noqa: E402
from transformers_common_tests.test_modeling_common import (  # noqa: E402
    ModelTesterMixin,
    floats_tensor,
    ids_tensor,
    random_attention_mask,
)


# test name -> why it cannot apply to AETNet. Nothing else is skipped by this file.
AETNET_SKIPS = {
    "test_inputs_embeds": "the RoBERTa aligner reads input_ids; inputs_embeds alone cannot feed it",
    "test_inputs_embeds_matches_input_ids": "the RoBERTa aligner reads input_ids; inputs_embeds alone cannot feed it",
}
# test name -> (model classes it leaves out, why). The test runs unchanged on the other classes.
AETNET_PARTIAL_SKIPS = {
    "test_training_gradient_checkpointing": (
        ("AETNetModel",),
        "the base model's loss is the alignment objectives, which never reach LayoutLMv3, the checkpointed layer "
        "the test probes; the three heads' loss does",
    ),
}
for _name in ("use_reentrant_false", "use_reentrant_true"):
    AETNET_PARTIAL_SKIPS[f"test_training_gradient_checkpointing_{_name}"] = AETNET_PARTIAL_SKIPS[
        "test_training_gradient_checkpointing"
    ]


class AETNetCommonModelTester:
    """Tiny dimensions as `LayoutLMv3ModelTester` (hidden 36 = 4 * 6 + 2 * 6, 4-pixel pages, 2-pixel patches)."""

    def __init__(
        self,
        parent,
        batch_size=2,
        num_channels=3,
        image_size=4,
        patch_size=2,
        text_seq_length=7,
        is_training=True,
        vocab_size=99,
        hidden_size=36,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        coordinate_size=6,
        shape_size=6,
        num_labels=2,
        type_sequence_label_size=2,
        embed_dim=16,
        queue_size=8,
        range_bbox=1000,
    ):
        self.__dict__.update({k: v for k, v in locals().items() if k != "self"})
        self.image_seq_length = (image_size // patch_size) ** 2 + 1
        self.seq_length = text_seq_length + self.image_seq_length

    def get_config(self) -> AETNetConfig:
        shared = dict(
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
        )
        layout = LayoutLMv3Config(
            **shared,
            vocab_size=self.vocab_size,
            coordinate_size=self.coordinate_size,
            shape_size=self.shape_size,
            input_size=self.image_size,
            patch_size=self.patch_size,
            max_position_embeddings=512,
        )
        vision = ViTConfig(**shared, image_size=self.image_size, patch_size=self.patch_size)
        text = RobertaConfig(**shared, vocab_size=self.vocab_size, max_position_embeddings=512)
        return AETNetConfig(
            layout_config=layout,
            vision_config=vision,
            text_config=text,
            embed_dim=self.embed_dim,
            queue_size=self.queue_size,
            num_labels=self.num_labels,
        )

    def prepare_config_and_inputs_for_common(self):
        input_ids = ids_tensor([self.batch_size, self.text_seq_length], self.vocab_size)
        corners = ids_tensor([self.batch_size, self.text_seq_length, 2, 2], self.range_bbox)
        bbox = torch.cat([corners.min(dim=2).values, corners.max(dim=2).values], dim=-1)
        inputs = {
            "input_ids": input_ids,
            "bbox": bbox,
            "pixel_values": floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size]),
            "attention_mask": random_attention_mask([self.batch_size, self.text_seq_length]),
        }
        return self.get_config(), inputs


class AETNetModelCommonTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (
        AETNetModel,
        AETNetForSequenceClassification,
        AETNetForTokenClassification,
        AETNetForQuestionAnswering,
    )
    _is_composite = True
    test_torchscript = False

    def setUp(self):
        name = self._testMethodName
        if name in AETNET_SKIPS:
            self.skipTest(AETNET_SKIPS[name])
        if name in AETNET_PARTIAL_SKIPS:
            left_out = AETNET_PARTIAL_SKIPS[name][0]
            self.all_model_classes = tuple(c for c in self.all_model_classes if c.__name__ not in left_out)
        self.model_tester = AETNetCommonModelTester(self)
        self.config_tester = ConfigTester(self, config_class=AETNetConfig, has_text_modality=False)

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = copy.deepcopy(inputs_dict)
        if return_labels:
            batch_size = self.model_tester.batch_size
            if model_class is AETNetForQuestionAnswering:
                inputs_dict["start_positions"] = torch.zeros(batch_size, dtype=torch.long, device=torch_device)
                inputs_dict["end_positions"] = torch.zeros(batch_size, dtype=torch.long, device=torch_device)
            elif model_class is AETNetForSequenceClassification:
                inputs_dict["labels"] = torch.zeros(batch_size, dtype=torch.long, device=torch_device)
            elif model_class is AETNetForTokenClassification:
                shape = (batch_size, self.model_tester.text_seq_length)
                inputs_dict["labels"] = torch.zeros(shape, dtype=torch.long, device=torch_device)
        return inputs_dict

    def test_config(self):
        self.config_tester.run_common_tests()
