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
`AETNetLayoutLMv3Model`: the fusion encoder, stock LayoutLMv3 with the paper's injection points for the aligned
features. This module imports only torch and transformers, so that it ships as Hub remote code.
"""

import torch
from transformers import LayoutLMv3Model
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs


class AETNetLayoutLMv3Model(LayoutLMv3Model):
    """
    The stock LayoutLMv3Model, plus two optional inputs that are added where the paper injects the aligned features:
    `aligned_text_embeds` to the text embeddings (after their LayerNorm and dropout) and `aligned_image_embeds` to
    the visual embeddings (after the visual LayerNorm, before text and image are concatenated). Without them it is
    exactly LayoutLMv3, weights and outputs.

    LayoutLMv3Model has no input for features added after its embedding LayerNorms, and copying its forward is not an
    option. Hooks registered for the duration of one call would keep nothing on the module, but `torch.compile`
    cannot trace hook registration (a graph break, so no `fullgraph=True`); so a permanent hook on `embeddings` and
    `forward_image` read the two tensors from attributes that are set for this call only and cleared after it.
    """

    def __init__(self, config):
        super().__init__(config)
        self._aligned_text_embeds = None
        self._aligned_image_embeds = None
        if config.text_embed:
            self.embeddings.register_forward_hook(self._add_aligned_text)

    def _add_aligned_text(self, module, args, output):
        return output if self._aligned_text_embeds is None else output + self._aligned_text_embeds

    def forward_image(self, pixel_values):
        embeddings = super().forward_image(pixel_values)
        return embeddings if self._aligned_image_embeds is None else embeddings + self._aligned_image_embeds

    def forward(
        self,
        *args,
        aligned_text_embeds: torch.Tensor | None = None,
        aligned_image_embeds: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ):
        self._aligned_text_embeds, self._aligned_image_embeds = aligned_text_embeds, aligned_image_embeds
        try:
            return super().forward(*args, **kwargs)
        finally:
            self._aligned_text_embeds = self._aligned_image_embeds = None


__all__ = ["AETNetLayoutLMv3Model"]
