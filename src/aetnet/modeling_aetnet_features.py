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
Document features: how `AETNetModel` turns an aligner's states into the L2-normalised, projected [CLS] feature that
DITC and IMC compare, that the feature queues store and that `get_image_features` / `get_text_features` return. One
rule for the online side, the momentum side and inference (`DocumentFeaturesMixin.document_feature`).

The document state is the aligner's [CLS] state, or for the ViT with `AETNetConfig.image_feature_pooling="mean"`
the mean of its patch states (`document_state`). With `AETNetConfig.feature_centering` a running centre is
subtracted from it before the projection (`FeatureCenter`).

Encoders pre-trained without an objective on their first token (SimMIM for a ViT, masked language modelling for a
RoBERTa) give every page nearly the same [CLS] state: one direction common to all pages carries almost all of it, so
the cosine similarities that DITC and IMC compare are all close to 1 at the start, while the states with that common
part removed differ from page to page. Subtracting a running mean keeps the per-page part, as DINO centres its
teacher's outputs; whether training then keeps the features apart is an empirical question (BENCHMARKS.md). Mean
pooling reads the patch states instead, which a masked-image-modelling loss does train. The centre is a buffer
updated in training only (an exponential moving average of the online states' batch means, the first batch copied),
saved with the model and used unchanged in evaluation, so that a page's feature never depends on the batch it comes
in. Under DDP the buffer follows process 0, as BatchNorm's running statistics do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple


class FeatureCenter(nn.Module):
    """
    `forward(states)` returns `states - center` for `(..., dim)` states (online and momentum ones alike);
    `update(states)`, which the model calls once per training step with the online states, moves `center` towards
    their batch mean with `momentum` (the first update sets it).

    Args:
        dim (`int`): the states' width.
        momentum (`float`): the weight of the old centre in each update, in [0, 1).
    """

    def __init__(self, dim: int, momentum: float):
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"`feature_centering` must be a momentum in [0, 1), got {momentum}")
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(dim))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, states: torch.Tensor) -> None:
        """Move the centre towards the batch mean of `states` (the first update copies it)."""
        mean = states.detach().float().mean(dim=0).to(self.center.dtype)
        # A tensor weight, not a Python branch on `updates`: no device-to-host sync in the training step.
        weight = torch.where(self.updates > 0, 1.0 - self.momentum, 1.0).to(self.center.dtype)
        self.center.lerp_(mean, weight)
        self.updates += 1

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return states - self.center.to(states.dtype)

    def extra_repr(self) -> str:
        return f"dim={self.center.numel()}, momentum={self.momentum}"


def feature_center(dim: int, momentum: float | None) -> nn.Module:
    """A `FeatureCenter` of `dim` states, or `nn.Identity` (no state, so no new checkpoint keys) for `None`."""
    return nn.Identity() if momentum is None else FeatureCenter(dim, momentum)


class DocumentFeaturesMixin:
    """
    The document features of `AETNetModel` (which owns `vision_model`, `text_model`, their projections and momentum
    copies, and `image_center` / `text_center` from `feature_center`).
    """

    def document_state(self, states: torch.Tensor, modality: str) -> torch.Tensor:
        """`(batch, hidden)`: the state of an aligner's `(batch, length, hidden)` `states` that stands for the whole
        document: the [CLS] state, or for the image with `image_feature_pooling="mean"` the mean of the patch
        states."""
        if modality == "image" and self.config.image_feature_pooling == "mean":
            return states[:, 1:].mean(dim=1)
        return states[:, 0]

    def document_feature(self, states: torch.Tensor, modality: str, momentum: bool = False) -> torch.Tensor:
        """`(batch, embed_dim)`: the `document_state` of an aligner's `(batch, length, hidden)` `states`, centred
        (if configured), projected by the online or (`momentum=True`) momentum projection of `modality` ("image" or
        "text"), L2-normalised."""
        center = self.image_center if modality == "image" else self.text_center
        projection = getattr(self, ("vision_proj" if modality == "image" else "text_proj") + ("_m" if momentum else ""))
        return F.normalize(projection(center(self.document_state(states, modality))), dim=-1)

    def update_feature_centers(self, image_embeds: torch.Tensor | None, text_embeds: torch.Tensor | None) -> None:
        """One training step's update of the running centres from the online document states given (a no-op
        without `feature_centering`)."""
        for modality, center, states in (
            ("image", self.image_center, image_embeds),
            ("text", self.text_center, text_embeds),
        ):
            if isinstance(center, FeatureCenter) and states is not None:
                center.update(self.document_state(states, modality))

    @can_return_tuple
    def get_image_features(
        self, pixel_values: torch.Tensor, **kwargs: Unpack[TransformersKwargs]
    ) -> BaseModelOutputWithPooling:
        """
        The ViT aligner on `pixel_values`: its output (`last_hidden_state`, and `hidden_states` / `attentions` when
        asked for) with `pooler_output` the document feature, `(batch_size, embed_dim)`, that DITC compares with
        `get_text_features`.
        """
        outputs = self.vision_model(pixel_values, return_dict=True, **kwargs)
        return self._with_document_feature(outputs, "image")

    @can_return_tuple
    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Unpack[TransformersKwargs]
    ) -> BaseModelOutputWithPooling:
        """The RoBERTa aligner on `input_ids`: its output with `pooler_output` the document feature,
        `(batch_size, embed_dim)`."""
        outputs = self.text_model(input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)
        return self._with_document_feature(outputs, "text")

    def _with_document_feature(self, outputs, modality: str) -> BaseModelOutputWithPooling:
        return BaseModelOutputWithPooling(
            last_hidden_state=outputs.last_hidden_state,
            pooler_output=self.document_feature(outputs.last_hidden_state, modality),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


__all__ = ["DocumentFeaturesMixin", "FeatureCenter", "feature_center"]
