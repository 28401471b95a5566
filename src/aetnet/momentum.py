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
ALBEF's momentum machinery as two small units: `MomentumEncodersMixin` (the online / momentum module pairs, copying,
freezing and the EMA step) and `FeatureQueues`, ring buffers of the momentum encoders' normalised features, one per
modality, that give the contrastive objectives more negatives than a batch holds.

The queues live in a module of their own (`AETNetModel.queues`) rather than as buffers of the model itself: `accelerate`
places the direct parameters of a module it splits over devices (`device_map="auto"`), but not its direct buffers,
so a queue registered on `AETNetModel` would get no device.

This module imports only torch and its siblings, so that it ships as Hub remote code with `modeling_aetnet.py`.
"""

from __future__ import annotations

import torch
from torch import nn

from .loss_utils import concat_all_gather


MIN_QUEUE_SIZE = 8


def fitted_queue_size(queue_size: int, num_examples: int) -> int:
    """
    `queue_size`, but at most half the training set (and at least `MIN_QUEUE_SIZE`). A queue as long as the training
    set holds an older copy of every document, the current positive included, as a negative; with random order each
    epoch, the chance that a document meets its own older copy grows like `(queue / examples) ** 2 / 2`, about 1 in 8
    at half the training set.
    """
    return max(MIN_QUEUE_SIZE, min(queue_size, num_examples // 2))


class MomentumEncodersMixin:
    """
    For an `nn.Module` whose momentum copies are named after their online modules with an `_m` suffix (ALBEF's
    convention): the class lists the online names in `momentum_module_names`, `has_momentum` says whether the copies
    were built, and `config.momentum` is the EMA coefficient. A module that holds its feature queues as `queues` reads
    their buffers under ALBEF's names too (`image_queue`, `text_queue`, `queue_ptr`, `queue_filled`).
    """

    momentum_module_names: tuple[str, ...] = ()
    has_momentum: bool = False
    # ALBEF's names for the buffers of the module's `queues` (a `FeatureQueues`), where it has one.
    image_queue = property(lambda self: self.queues.image_queue)
    text_queue = property(lambda self: self.queues.text_queue)
    queue_ptr = property(lambda self: self.queues.queue_ptr)
    queue_filled = property(lambda self: self.queues.queue_filled)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(online, momentum) module pairs; empty when the module was built without momentum copies."""
        if not self.has_momentum:
            return []
        return [(getattr(self, name), getattr(self, f"{name}_m")) for name in self.momentum_module_names]

    @torch.no_grad()
    def copy_params(self, only: set[str] | None = None) -> None:
        """Set momentum weights equal to the online weights (all pairs, or the momentum modules named in `only`)."""
        for name in self.momentum_module_names if self.has_momentum else ():
            if only is None or f"{name}_m" in only:
                online, momentum = getattr(self, name), getattr(self, f"{name}_m")
                for param, param_m in zip(online.parameters(), momentum.parameters()):
                    param_m.copy_(param)

    def freeze_momentum(self) -> None:
        """Momentum copies are never trained: they follow the online modules by `momentum_update` alone."""
        for _, momentum in self.momentum_pairs():
            momentum.requires_grad_(False)

    @torch.no_grad()
    def momentum_features(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        pixel_values_m: torch.Tensor | None,
        prefix_tokens: int = 1,
    ) -> dict[str, torch.Tensor | nn.Module]:
        """
        What the momentum side gives the objectives (`AlignmentFeatures`' `_m` fields and the queues), for ALBEF's
        `vision_model_m` / `text_model_m` pair: the momentum ViT's patches (after `prefix_tokens`) and normalised
        projected [CLS] on `pixel_values_m`, the momentum RoBERTa's states and [CLS] feature on `input_ids`, each
        only when its input is given, and copies of the queues taken before this step writes them.
        """
        momentum = dict(
            vision_proj_m=self.vision_proj_m,
            text_proj_m=self.text_proj_m,
            image_queue=self.queues.image_queue.clone(),  # clones: enqueue overwrites them before backward
            text_queue=self.queues.text_queue.clone(),
            queue_valid=self.queues.valid(),  # a new tensor: the uint8 buffer read as bool
        )
        if pixel_values_m is not None:
            image_m = self.vision_model_m(pixel_values_m, return_dict=True).last_hidden_state
            momentum["patch_embeds_m"] = image_m[:, prefix_tokens:]
            momentum["image_feat_m"] = self.document_feature(image_m, "image", momentum=True)
        if input_ids is not None:
            text_m = self.text_model_m(input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state
            momentum["text_embeds_m"] = text_m
            momentum["text_feat_m"] = self.document_feature(text_m, "text", momentum=True)
        return momentum

    @torch.no_grad()
    def momentum_update(self) -> None:
        """
        EMA step `param_m = m * param_m + (1 - m) * param` for every momentum parameter, `m = config.momentum`, as
        one fused update. Once per optimizer step.
        """
        momentum = self.config.momentum
        pairs = [
            (param, param_m)
            for online, copy in self.momentum_pairs()
            for param, param_m in zip(online.parameters(), copy.parameters())
        ]
        if not pairs:
            return
        online_params, momentum_params = (list(group) for group in zip(*pairs))
        torch._foreach_mul_(momentum_params, momentum)
        torch._foreach_add_(momentum_params, online_params, alpha=1 - momentum)


class FeatureQueues(nn.Module):
    """
    `image_queue` and `text_queue` of shape `(embed_dim, queue_size)` (ALBEF's layout), the write position
    `queue_ptr`, `queue_filled`, the number of slots written so far (at most `queue_size`), and `queue_valid`, which
    slots hold real features: only those are ever read, so neither the zeros an empty queue starts with nor a slot
    whose write was refused (a non-finite feature) is used as a negative.
    """

    def __init__(self, embed_dim: int, queue_size: int):
        super().__init__()
        self.queue_size = queue_size
        self.register_buffer("image_queue", torch.zeros(embed_dim, queue_size))
        self.register_buffer("text_queue", torch.zeros(embed_dim, queue_size))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        self.register_buffer("queue_filled", torch.zeros(1, dtype=torch.long))
        # uint8 rather than bool: some of transformers' serialisation paths (and its common tests) mishandle bool.
        self.register_buffer("queue_valid", torch.zeros(queue_size, dtype=torch.uint8))

    def valid(self) -> torch.Tensor:
        """`(queue_size,)` bool: the entries that hold real features."""
        return self.queue_valid.bool()

    @torch.no_grad()
    def enqueue(self, image_feat_m: torch.Tensor | None, text_feat_m: torch.Tensor | None) -> None:
        """
        Write the batch's momentum features (gathered over ranks) into the ring buffers at `queue_ptr`. Any batch
        size works: a batch larger than the queue keeps its last `queue_size` features. A batch without one modality
        (None) writes nothing.
        """
        if image_feat_m is None or text_feat_m is None:
            # The queues hold image and text features in pairs: slot i of both is one page, and the contrastive
            # objectives read them as matched negatives. Writing one half would leave a stale feature of another
            # page beside it, so a batch without its page images (or its text) is not enqueued at all. (In a
            # distributed run every rank must then skip together: the write gathers over the ranks.)
            return
        image_feats, text_feats = concat_all_gather(image_feat_m), concat_all_gather(text_feat_m)
        queue_size, num_new = self.queue_size, image_feats.shape[0]
        skipped = max(0, num_new - queue_size)
        image_feats, text_feats = image_feats[skipped:], text_feats[skipped:]
        index = (self.queue_ptr + skipped + torch.arange(image_feats.shape[0], device=image_feats.device)) % queue_size
        # A non-finite feature (one bad page) would poison every later DITC/IMC loss: keep the old entry, and its
        # validity, instead.
        finite = torch.isfinite(image_feats).all(dim=1) & torch.isfinite(text_feats).all(dim=1)
        for queue, feats in ((self.image_queue, image_feats), (self.text_queue, text_feats)):
            queue[:, index] = torch.where(finite[None, :], feats.t().to(queue.dtype), queue[:, index])
        self.queue_valid[index] = (finite | self.queue_valid[index].bool()).to(self.queue_valid.dtype)
        self.queue_ptr.copy_((self.queue_ptr + num_new) % queue_size)
        self.queue_filled.copy_((self.queue_filled + num_new).clamp(max=queue_size))


__all__ = ["MIN_QUEUE_SIZE", "FeatureQueues", "MomentumEncodersMixin", "fitted_queue_size"]
