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
from torch import nn
from transformers import LayoutLMv3Model
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs


def _add_aligned_text(embeddings: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
    """Forward hook of LayoutLMv3's text embeddings: add the aligned text features of the current call, if any."""
    aligned = embeddings._aetnet_aligned_embeds
    return output if aligned is None else output + aligned


class AETNetLayoutLMv3Model(LayoutLMv3Model):
    """
    The stock LayoutLMv3Model, plus two optional inputs that are added where the paper injects the aligned features:
    `aligned_text_embeds` to the text embeddings (after their LayerNorm and dropout) and `aligned_image_embeds` to
    the visual embeddings (after the visual LayerNorm, before text and image are concatenated). Without them it is
    exactly LayoutLMv3, weights and outputs.

    Why the two tensors are held on modules for the duration of a call rather than passed down: LayoutLMv3Model's
    forward has no input for features added after its embedding LayerNorms (its `inputs_embeds` replaces the word
    embeddings before the LayerNorm, a different function), and rebuilding that forward from its parts would copy
    it. Hooks registered for the duration of one call would keep nothing on the modules, but `torch.compile` cannot
    trace hook registration (a graph break, so no `fullgraph=True`). So `forward` sets each tensor on the module that
    reads it, the image one on this model (read by the `forward_image` override) and the text one on `embeddings`
    (read by a permanent forward hook, a plain function so that a `DataParallel` replica reads its own module), and
    puts back what it found there when the call ends, returns or raises: a call nested in another (e.g. from a hook)
    leaves the outer call's tensors in place. Both points run before the first encoder layer, so a gradient
    checkpointing recomputation during backward never reads them.
    """

    def __init__(self, config):
        super().__init__(config)
        self._aligned_image_embeds = None
        if config.text_embed:
            self.embeddings._aetnet_aligned_embeds = None
            self.embeddings.register_forward_hook(_add_aligned_text)

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
        outer = self._set_aligned(aligned_text_embeds, aligned_image_embeds)
        try:
            return super().forward(*args, **kwargs)
        finally:
            self._set_aligned(*outer)

    def _set_aligned(
        self, text: torch.Tensor | None, image: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Set the aligned features that the two injection points read; return the ones they replace."""
        outer_text = None
        if self.config.text_embed:
            outer_text, self.embeddings._aetnet_aligned_embeds = self.embeddings._aetnet_aligned_embeds, text
        outer_image, self._aligned_image_embeds = self._aligned_image_embeds, image
        return outer_text, outer_image


__all__ = ["AETNetLayoutLMv3Model"]
