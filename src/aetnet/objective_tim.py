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
TIM, text-image matching (LayoutLMv2, Xu et al., ACL 2021, arXiv 2012.14740): a binary head on LayoutLMv3's fused
output tells whether the page image and the text come from the same document, which is a coarse, document-level
alignment of text and image (it overlaps with DITC: report both in ablations).

Negatives are made by rolling the batch's page images by a random non-zero offset for about `negative_ratio` of the
pages (at least one when the batch has two or more), so that every negative shows a page its text does not come
from. A batch of one has no other page: the term is skipped (0, connected to the head so that DDP without
unused-parameter detection still sees a gradient for it).

The pairs go through ONE separate fusion forward of the whole batch (the negatives' pages rolled, the others
unchanged), so the task loss is never computed on a mismatched page. Positives come from that forward too, not from
the step's main forward, because the main forward differs in ways the head could read instead of the match: it has
the aligned features added (`fusion_injection`), computed from the true page, and other objectives may have changed
its page (TIA covers regions). The cost is one more LayoutLMv3 forward and backward on the batch per step.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .alignment import AlignmentFeatures, AlignmentObjective, prior_entropy, register_objective


def true_pairs(features: Any, source: torch.Tensor) -> torch.Tensor:
    """
    `(B,)` bool: whether page i's text with page `source[i]`'s image is still a true pair of the batch, i.e. some page
    has exactly that text (ids, boxes, mask) and exactly that image (duplicated pages, blank images, templates).
    """

    def same(tensor: torch.Tensor) -> torch.Tensor:  # (B, B): pages m and n hold identical values
        flat = tensor.flatten(1)
        # One row at a time: a (B, B, values) comparison of whole pages would not fit for large batches.
        return torch.stack([(flat == row).all(dim=-1) for row in flat])

    text = same(features.input_ids) & same(features.bbox) & same(features.attention_mask)
    image = same(features.pixel_values)
    exists = (text.float() @ image.float()) > 0  # (text of i, image of n) appear together on some page m
    return exists.gather(1, source[:, None]).squeeze(1)


@register_objective("tim")
class TextImageMatching(AlignmentObjective):
    """
    TIM: a `Linear(2 * hidden, 2)` head on `[text [CLS], mean of the patch outputs]` of a separate fusion forward
    whose negatives see another page of the batch; cross-entropy over the batch (label 1: matched, 0: mismatched).

    The head reads the patch outputs beside [CLS], as LayoutLMv2's reads the visual embeddings: the patches attend
    to the text as well, so their mean is the image side's own fused evidence of a match. LayoutLMv2's mean of the
    *initial* visual embeddings is left out: it depends on the image alone, so in a linear head it can only add a
    per-image bias, never evidence of a match, and it would cost LayoutLMv3's hidden states.

    Settings:
        negative_ratio (`float`, defaults to 0.2): the share of the pages made negatives (LayoutLMv2's 15% replaced
            plus 5% dropped, all replaced here), in (0, 1].
        seed (`int`, defaults to 0): the seed of the negatives' generator.
    """

    modalities = ("image", "text")  # matches a page's text with its image
    needs_generator = True
    trains = ()  # only LayoutLMv3 and its own head

    def __init__(self, config, negative_ratio: float = 0.2, seed: int = 0):
        super().__init__(config)
        if not (isinstance(negative_ratio, (int, float)) and 0.0 < negative_ratio <= 1.0):
            raise ValueError(f"TIM's `negative_ratio` must be a number in (0, 1], got {negative_ratio!r}")
        if not isinstance(seed, int):
            raise ValueError(f"TIM's `seed` must be an int, got {seed!r}")
        self.negative_ratio, self.seed = float(negative_ratio), seed
        self.head = nn.Linear(2 * config.layout_config.hidden_size, 2)

    def draw_negatives(self, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """
        `(negative, source)`, both `(B,)`: which pages become negatives, and whose image each page shows (itself
        unless negative; for negatives `(i - offset) mod B` with one offset in [1, B - 1], never i). Needs B >= 2.
        """
        generator = self.generator(device, self.seed)
        count = min(batch_size, max(1, round(self.negative_ratio * batch_size)))
        negative = torch.zeros(batch_size, dtype=torch.bool, device=device)
        negative[torch.randperm(batch_size, generator=generator, device=device)[:count]] = True
        offset = torch.randint(1, batch_size, (), generator=generator, device=device)
        pages = torch.arange(batch_size, device=device)
        return negative, torch.where(negative, (pages - offset) % batch_size, pages)

    def pool(self, hidden_states: torch.Tensor, text_length: int) -> torch.Tensor:
        """`(B, 2H)`: the text [CLS] (position 0) and the mean of the patch outputs (after the visual [CLS])."""
        return torch.cat([hidden_states[:, 0], hidden_states[:, text_length + 1 :].mean(dim=1)], dim=-1)

    def forward(self, features: AlignmentFeatures) -> torch.Tensor:
        text_length = features.input_ids.shape[1]
        batch_size = features.pixel_values.shape[0]
        if batch_size < 2:  # no other page to mismatch with
            return self.head(self.pool(features.fusion_hidden_states, text_length)).sum() * 0.0
        negative, source = self.draw_negatives(batch_size, features.pixel_values.device)
        labels = (~negative | true_pairs(features, source)).long()
        outputs = features.fusion(pixel_values=features.pixel_values[source])
        logits = self.head(self.pool(outputs.last_hidden_state, text_length)).float()
        return F.cross_entropy(logits, labels)

    def chance_level(self, features: AlignmentFeatures) -> float:
        """
        The entropy of the matched / mismatched labels, whose counts `draw_negatives` fixes (a page that is still a
        true pair after the roll is rare and ignored): a head that cannot tell a match.
        """
        batch_size = features.pixel_values.shape[0]
        if batch_size < 2:
            return 0.0
        negatives = min(batch_size, max(1, round(self.negative_ratio * batch_size)))
        return prior_entropy(torch.tensor([negatives, batch_size - negatives]))


__all__ = ["TextImageMatching", "true_pairs"]
