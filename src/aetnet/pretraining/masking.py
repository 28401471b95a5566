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
The masks and targets of LayoutLMv3's pre-training objectives (Huang et al., ACM MM 2022, arXiv 2204.08387): span
masking of the text (MLM), blockwise masking of the image patches (MIM) and the word-patch alignment labels (WPA)
that follow from both, plus the per-batch seeded generators that make every mask reproducible and resumable.

Every function takes an explicit `torch.Generator` and draws on the CPU, so that a mask depends on its seed only: not
on the global RNG (switching an objective on does not change dropout elsewhere), not on the device.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..loss_utils import distributed_seed
from ..objective_xmm_image import draw_block_mask


MIM_TARGETS = ("normalized_pixels", "pixels")
# The streams of `MaskingGenerators`: one per objective that draws, so that switching one off leaves the other's
# masks as they were.
TEXT_STREAM, IMAGE_STREAM = 0, 1


def span_lengths(count: int, mean_span_length: float, generator: torch.Generator) -> list[int]:
    """
    `count` span lengths from a Poisson(`mean_span_length`) distribution conditioned on being positive (lengths of 0
    are redrawn, since a span masks at least one token): SpanBERT's and BART's span lengths, as LayoutLMv3 uses them.
    """
    lengths: list[int] = []
    while len(lengths) < count:
        draws = torch.poisson(torch.full((2 * (count - len(lengths)),), float(mean_span_length)), generator=generator)
        lengths.extend(int(length) for length in draws.tolist() if length > 0)
    return lengths[:count]


def _mask_spans(num_tokens: int, budget: int, mean_span_length: float, generator: torch.Generator) -> np.ndarray:
    """`budget` of `num_tokens` positions, in spans; the last span is cut so that the count is exact."""
    mask = np.zeros(num_tokens, dtype=bool)
    remaining = budget
    while remaining > 0:
        # About as many spans as the budget needs; overlapping spans are why another round may be needed.
        count = max(1, round(remaining / mean_span_length))
        lengths = span_lengths(count, mean_span_length, generator)
        starts = torch.randint(num_tokens, (count,), generator=generator).tolist()
        for start, length in zip(starts, lengths):
            span = mask[start : start + length]
            new = len(span) - np.count_nonzero(span)
            if new > remaining:  # the span would overshoot: keep its first `remaining` new positions
                span[: np.flatnonzero(~span)[remaining]] = True
                remaining = 0
                break
            span[:] = True
            remaining -= new
    return mask


def span_mask(
    maskable: torch.Tensor, mask_ratio: float, generator: torch.Generator, mean_span_length: float = 3.0
) -> torch.Tensor:
    """
    LayoutLMv3's text masking: in each row of `maskable` (`(B, L)` bool, the tokens that may be masked), exactly
    `round(mask_ratio * n)` of its `n` maskable tokens (at least one when `n > 0`) are masked, in spans whose lengths
    are drawn by `span_lengths` and whose starts are uniform. Spans run over the maskable tokens in order, skipping
    the others (`<s>`, `</s>`, padding), and may overlap or touch; the span that reaches the budget is cut. An exact
    count rather than independent coin flips, so that a short window always has a target. Returns `(B, L)` bool.
    """
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"`mask_ratio` must be in (0, 1), got {mask_ratio!r}")
    if mean_span_length <= 0:
        raise ValueError(f"`mean_span_length` must be positive, got {mean_span_length!r}")
    maskable = maskable.cpu().bool()
    mask = torch.zeros_like(maskable)
    for row in range(maskable.shape[0]):
        positions = maskable[row].nonzero().squeeze(1)
        if len(positions) == 0:
            continue
        budget = max(1, round(mask_ratio * len(positions)))
        chosen = _mask_spans(len(positions), budget, mean_span_length, generator)
        mask[row, positions[torch.from_numpy(chosen)]] = True
    return mask


def block_patch_mask(
    batch_size: int,
    grid_size: int,
    mask_ratio: float,
    generator: torch.Generator,
    min_block: int | None = None,
) -> torch.Tensor:
    """
    BEiT's blockwise masking, as LayoutLMv3's MIM uses it: for each page, rectangles of at least `min_block` patches
    and a log-uniform aspect ratio in [0.3, 1 / 0.3] are added at random places until `round(mask_ratio * P)` of the
    `P = grid_size ** 2` patches are masked (BEiT's rule; a block that would overshoot is redrawn, so a page may stay
    a few patches short). `min_block` defaults to BEiT's 16 of 196 patches, scaled to the grid. Returns `(B, P)`
    bool, row-major like LayoutLMv3's patch sequence.
    """
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"`mask_ratio` must be in (0, 1), got {mask_ratio!r}")
    num_patches = grid_size**2
    min_block = max(1, round(16 * num_patches / 196)) if min_block is None else min_block
    num_masked = max(1, round(mask_ratio * num_patches))
    return torch.stack([draw_block_mask(grid_size, num_masked, generator, min_block) for _ in range(batch_size)])


def _box_cells(bbox: torch.Tensor, grid_size: int) -> tuple[torch.Tensor, ...]:
    """The first and last patch row and column that each box covers (inclusive), see `box_patch_coverage`."""
    grid = grid_size
    x0, y0, x1, y1 = bbox.long().clamp(0, 1000).unbind(-1)

    def cells(low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = (low * grid // 1000).clamp(max=grid - 1)
        last = torch.maximum(first, (high * grid + 999) // 1000 - 1).clamp(max=grid - 1)  # ceil(high * g / 1000) - 1
        return first, last

    return (*cells(y0, y1), *cells(x0, x1))


def box_patch_coverage(bbox: torch.Tensor, grid_size: int) -> torch.Tensor:
    """
    Which patches each box covers: `(..., P)` bool for `bbox` `(..., 4)` in LayoutLMv3's 0-1000 units. Patch
    `(row, column)` spans `[column * 1000 / g, (column + 1) * 1000 / g)` horizontally (likewise vertically), and a box
    covers the patches it overlaps with a positive area; a box of zero width or height covers the patches its edge
    lies in, so that every box covers at least one patch.
    """
    top, bottom, left, right = _box_cells(bbox, grid_size)
    cells = torch.arange(grid_size, device=bbox.device)
    rows = (cells >= top[..., None]) & (cells <= bottom[..., None])
    columns = (cells >= left[..., None]) & (cells <= right[..., None])
    return (rows[..., :, None] & columns[..., None, :]).flatten(-2)


def masked_patches_under_boxes(bbox: torch.Tensor, patch_mask: torch.Tensor, grid_size: int) -> torch.Tensor:
    """
    `(B, L)`: how many of the patches each box covers (`box_patch_coverage`) are masked, from a summed-area table of
    `patch_mask` `(B, P)`, without building the `(B, L, P)` coverage.
    """
    batch_size, side = patch_mask.shape[0], grid_size + 1
    table = F.pad(patch_mask.view(batch_size, grid_size, grid_size).long().cumsum(1).cumsum(2), (1, 0, 1, 0))
    table = table.flatten(1)  # (B, side * side): one gather per corner
    top, bottom, left, right = _box_cells(bbox, grid_size)

    def corner(row: torch.Tensor, column: torch.Tensor) -> torch.Tensor:
        return table.gather(1, row * side + column)

    return corner(bottom + 1, right + 1) - corner(top, right + 1) - corner(bottom + 1, left) + corner(top, left)


def word_patch_alignment_labels(
    bbox: torch.Tensor,
    text_mask: torch.Tensor,
    patch_mask: torch.Tensor,
    grid_size: int,
    word_ids: torch.Tensor,
    ignore_index: int = -100,
) -> torch.Tensor:
    """
    LayoutLMv3's word-patch alignment labels: for each text word none of whose tokens is masked, 1 ("unaligned") if
    at least one of the patches its box covers (`box_patch_coverage`) is masked, 0 ("aligned") if none is.

    The label sits on the word's first token; its other tokens, the words with a masked token (the text gives no
    alignment to learn there), tokens outside any word and tokens without a box (`[0, 0, 0, 0]`) get `ignore_index`.
    One label per word, so that long words do not weigh more than short ones. The paper states the rule per unmasked
    token ("aligned" when the token's image patches are all unmasked); both agree wherever a word is one token.

    Args:
        bbox (`torch.Tensor` of shape `(B, L, 4)`): the tokens' boxes, 0-1000 (the words' or their segments').
        text_mask (`torch.Tensor` of shape `(B, L)`): the tokens masked for MLM (all False without MLM).
        patch_mask (`torch.Tensor` of shape `(B, P)`): the masked patches, row-major.
        grid_size (`int`): patches per side of the page, `P = grid_size ** 2`.
        word_ids (`torch.Tensor` of shape `(B, L)`): each token's word index, negative for tokens outside any word
            (`<s>`, `</s>`, padding); consecutive tokens of one word share it.
        ignore_index (`int`, *optional*, defaults to -100): the label of tokens that carry none.

    Returns:
        `torch.LongTensor` of shape `(B, L)`.
    """
    if patch_mask.shape[-1] != grid_size**2:
        raise ValueError(f"`patch_mask` has {patch_mask.shape[-1]} patches, a {grid_size}-grid {grid_size**2}")
    word_ids = word_ids.long()
    in_word = word_ids >= 0
    first = in_word.clone()
    first[:, 1:] &= word_ids[:, 1:] != word_ids[:, :-1]
    # Whether any token of the token's word is masked: counted per (row, word), then read back per token.
    word_index = (torch.cumsum(first.long(), dim=1) - 1).clamp(min=0)  # the token's word among the row's words
    masked_words = torch.zeros(word_ids.shape, dtype=torch.long, device=word_ids.device)
    masked_words.scatter_add_(1, word_index, (text_mask.bool() & in_word).long())
    word_masked = masked_words.gather(1, word_index) > 0
    boxed = (bbox != 0).any(dim=-1)
    unaligned = masked_patches_under_boxes(bbox, patch_mask.to(bbox.device), grid_size) > 0
    return unaligned.long().masked_fill(~(first & boxed & ~word_masked), ignore_index)


def mim_targets(pixel_values: torch.Tensor, patch_size: int, target: str = "normalized_pixels") -> torch.Tensor:
    """
    The regression targets of every patch, `(B, P, patch_size ** 2 * C)` (channels last within a patch, patches
    row-major). `"normalized_pixels"`: each patch's pixels minus their mean over their standard deviation (MAE's
    `norm_pix_loss`, computed over all of the patch's values), a target that a page's brightness and contrast do not
    change; a flat patch (blank paper) becomes all zeros. `"pixels"`: the pixels as the model reads them (SimMIM's).
    """
    if target not in MIM_TARGETS:
        raise ValueError(f"`target` must be one of {list(MIM_TARGETS)}, got {target!r}")
    batch_size, channels, height, width = pixel_values.shape
    rows, columns = height // patch_size, width // patch_size
    patches = pixel_values.float().reshape(batch_size, channels, rows, patch_size, columns, patch_size)
    patches = patches.permute(0, 2, 4, 3, 5, 1).reshape(batch_size, rows * columns, patch_size**2 * channels)
    if target == "pixels":
        return patches
    mean = patches.mean(dim=-1, keepdim=True)
    variance = patches.var(dim=-1, keepdim=True, unbiased=False)
    return (patches - mean) / (variance + 1e-6).sqrt()


class MaskingGenerators:
    """
    The seeded CPU generators of each collated batch, one per stream (`TEXT_STREAM`, `IMAGE_STREAM`): batch number
    `i` draws from generators seeded by `(seed, stream, i)` (and the process's rank in a distributed run), so that a
    batch's masks depend only on its position in training. DataLoader workers, which collate batches
    `i = start + worker_id + k * num_workers`, therefore draw what a single process would, and a resumed run draws
    what the uninterrupted run drew once the numbering is restored (`set_batch_index` or `load_state_dict`).

    Args:
        seed (`int`, *optional*, defaults to 0): the run's masking seed.
    """

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self.batch_index = 0
        self._calls = 0  # batches drawn since `batch_index` was set, in this process (or worker)

    def set_batch_index(self, batch_index: int) -> None:
        """Number the next batch `batch_index` (the number of batches drawn before it); set before a DataLoader
        iterator is created, so that its worker copies start from it too."""
        if batch_index < 0:
            raise ValueError(f"`batch_index` must be >= 0, got {batch_index}")
        self.batch_index, self._calls = int(batch_index), 0

    def state_dict(self) -> dict[str, int]:
        """The seed and the number of the next batch this process would draw."""
        return {"seed": self.seed, "batch_index": self.batch_index + self._calls}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from `state_dict()`: the next batch gets the masks it would have had without the interruption."""
        self.seed = int(state["seed"])
        self.set_batch_index(int(state["batch_index"]))

    def next_batch(self, streams: tuple[int, ...] = (TEXT_STREAM, IMAGE_STREAM)) -> tuple[torch.Generator, ...]:
        """One fresh generator per stream for the next batch; advances the numbering."""
        worker = torch.utils.data.get_worker_info()
        worker_id, num_workers = (0, 1) if worker is None else (worker.id, worker.num_workers)
        index = self.batch_index + worker_id + self._calls * num_workers
        self._calls += 1
        seed = distributed_seed(self.seed)
        generators = []
        for stream in streams:
            state = np.random.SeedSequence([seed, stream, index]).generate_state(1, dtype=np.uint64)[0]
            generators.append(torch.Generator().manual_seed(int(state >> 1)))
        return tuple(generators)


class SeededMasksMixin:
    """
    What a collator with seeded per-batch masks (`self.generators`, a [`MaskingGenerators`]) shows
    [`PreTrainingTrainer`], which keeps it in step and saves it with each checkpoint.
    """

    generators: MaskingGenerators

    def set_batch_index(self, batch_index: int) -> None:
        """Number the next batch `batch_index` (see `MaskingGenerators.set_batch_index`)."""
        self.generators.set_batch_index(batch_index)

    def state_dict(self) -> dict[str, int]:
        """The masking state to save with a checkpoint: the seed and the number of the next batch."""
        return self.generators.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume the masks from `state_dict()`."""
        self.generators.load_state_dict(state)


__all__ = [
    "IMAGE_STREAM",
    "MIM_TARGETS",
    "TEXT_STREAM",
    "MaskingGenerators",
    "SeededMasksMixin",
    "block_patch_mask",
    "box_patch_coverage",
    "masked_patches_under_boxes",
    "mim_targets",
    "span_lengths",
    "span_mask",
    "word_patch_alignment_labels",
]
