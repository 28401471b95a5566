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
The masks and targets of pre-training: LayoutLMv3's span masking (30%, Poisson(3) spans) and blockwise patch masking
(40%), the word-patch alignment rule on hand-made pages, the MIM targets, SimMIM's masks, and the seeded per-batch
generators (reproducible, distinct per batch and per stream, exactly resumable from their state).
"""

import math
from unittest import mock

import pytest
import torch

from aetnet.pretraining import (
    DataCollatorForLayoutLMv3PreTraining,
    DataCollatorForSimMIM,
    MaskingGenerators,
    block_patch_mask,
    box_patch_coverage,
    mim_targets,
    simmim_mask,
    span_lengths,
    span_mask,
    word_patch_alignment_labels,
)
from aetnet.pretraining.masking import masked_patches_under_boxes


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _runs(row: torch.Tensor) -> list[int]:
    """The lengths of the maximal runs of True in a 1D bool tensor."""
    runs, current = [], 0
    for value in row.tolist() + [False]:
        if value:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    return runs


def test_span_lengths_are_poisson_three_without_zeros():
    lengths = torch.tensor(span_lengths(20_000, 3.0, _generator()), dtype=torch.float)
    assert lengths.min() >= 1
    # Poisson(3) conditioned on > 0: mean 3 / (1 - e^-3).
    assert lengths.mean().item() == pytest.approx(3 / (1 - math.exp(-3)), rel=0.03)
    assert (lengths == 3).float().mean().item() == pytest.approx(math.exp(-3) * 27 / 6 / (1 - math.exp(-3)), abs=0.02)


def test_span_mask_masks_exactly_thirty_percent_of_the_maskable_tokens_in_spans():
    maskable = torch.ones(64, 512, dtype=torch.bool)
    maskable[:, 0] = maskable[:, 400:] = False  # <s>, then </s> and padding
    mask = span_mask(maskable, 0.3, _generator(), mean_span_length=3.0)
    assert not (mask & ~maskable).any()
    assert mask.sum(dim=1).tolist() == [round(0.3 * 399)] * 64
    runs = [run for row in mask for run in _runs(row)]
    # Spans of mean ~3.16 (merged where they touch); independent tokens at 30% would give runs of mean ~1.4.
    assert sum(runs) / len(runs) > 2.8


def test_span_mask_keeps_at_least_one_target_and_skips_empty_rows():
    maskable = torch.zeros(3, 10, dtype=torch.bool)
    maskable[0, 4] = True
    maskable[1, 2:4] = True
    mask = span_mask(maskable, 0.3, _generator())
    assert mask[0].tolist() == maskable[0].tolist()
    assert mask[1].sum() == 1 and not mask[2].any()


def test_span_mask_runs_over_maskable_tokens_only():
    maskable = torch.tensor([[i % 2 == 0 for i in range(40)]])
    mask = span_mask(maskable, 0.5, _generator(3))
    assert mask.sum() == 10 and not (mask & ~maskable).any()


def test_block_patch_mask_masks_forty_percent_in_blocks():
    mask = block_patch_mask(200, 14, 0.4, _generator())
    counts = mask.sum(dim=1).float()
    # BEiT's rule: the target is 78 of 196; a block that would overshoot is redrawn, so a page may stay a few short.
    assert counts.max() <= 78 and counts.mean() >= 76
    grid = mask.view(-1, 14, 14)
    neighbours = torch.zeros_like(grid)
    neighbours[:, 1:] |= grid[:, :-1]
    neighbours[:, :-1] |= grid[:, 1:]
    neighbours[:, :, 1:] |= grid[:, :, :-1]
    neighbours[:, :, :-1] |= grid[:, :, 1:]
    # Blocks: almost every masked patch has a masked neighbour (random patches at 40%: about 87%).
    assert (neighbours & grid).sum() / grid.sum() > 0.97


def test_masks_are_reproducible_from_their_seed():
    maskable = torch.ones(4, 50, dtype=torch.bool)
    assert torch.equal(span_mask(maskable, 0.3, _generator(5)), span_mask(maskable, 0.3, _generator(5)))
    assert not torch.equal(span_mask(maskable, 0.3, _generator(5)), span_mask(maskable, 0.3, _generator(6)))
    assert torch.equal(block_patch_mask(4, 8, 0.4, _generator(5)), block_patch_mask(4, 8, 0.4, _generator(5)))


def test_box_patch_coverage_on_a_four_by_four_grid():
    # Cells are 250 units wide: [0, 250), [250, 500), ...
    boxes = torch.tensor(
        [
            [0, 0, 250, 250],  # exactly the top-left cell
            [100, 300, 600, 400],  # columns 0-2 of row 1
            [999, 999, 1000, 1000],  # the bottom-right corner
            [500, 500, 500, 500],  # a point on a cell corner: the cell it starts in
        ]
    )
    coverage = box_patch_coverage(boxes, 4).view(4, 4, 4)
    assert coverage[0].nonzero().tolist() == [[0, 0]]
    assert coverage[1].nonzero().tolist() == [[1, 0], [1, 1], [1, 2]]
    assert coverage[2].nonzero().tolist() == [[3, 3]]
    assert coverage[3].nonzero().tolist() == [[2, 2]]


def test_masked_patches_under_boxes_counts_the_covered_masked_patches():
    generator = _generator(1)
    corners = torch.randint(0, 1001, (3, 30, 4), generator=generator)
    bbox = torch.cat([corners[..., :2].minimum(corners[..., 2:]), corners[..., :2].maximum(corners[..., 2:])], -1)
    patch_mask = torch.rand(3, 49, generator=generator) < 0.4
    expected = (box_patch_coverage(bbox, 7) & patch_mask[:, None]).sum(-1)
    assert torch.equal(masked_patches_under_boxes(bbox, patch_mask, 7), expected)


def test_word_patch_alignment_labels_on_a_hand_made_page():
    # A 2 x 2 grid; the top-left patch is masked. Tokens: <s>, word 0 (2 tokens, top-left cell), word 1 (right half,
    # not masked), word 2 (covers the top-left and top-right cells: one masked patch makes it unaligned), word 3
    # (masked text: no label), word 4 (no box: no label), </s>, padding.
    bbox = torch.tensor(
        [
            [
                [0, 0, 0, 0],
                [10, 10, 200, 200],
                [10, 10, 200, 200],
                [600, 100, 900, 900],
                [400, 100, 700, 300],
                [10, 600, 300, 900],
                [0, 0, 0, 0],
                [0, 0, 0, 0],
                [0, 0, 0, 0],
            ]
        ]
    )
    word_ids = torch.tensor([[-1, 0, 0, 1, 2, 3, 4, -1, -1]])
    text_mask = torch.tensor([[False, False, False, False, False, True, False, False, False]])
    patch_mask = torch.tensor([[True, False, False, False]])
    labels = word_patch_alignment_labels(bbox, text_mask, patch_mask, 2, word_ids)
    assert labels.tolist() == [[-100, 1, -100, 0, 1, -100, -100, -100, -100]]
    # A word with one masked sub-token carries no label either.
    text_mask = torch.tensor([[False, False, True, False, False, False, False, False, False]])
    labels = word_patch_alignment_labels(bbox, text_mask, patch_mask, 2, word_ids)
    assert labels[0, :3].tolist() == [-100, -100, -100]


def test_mim_targets_are_standardised_patches_or_the_pixels():
    pixel_values = torch.randn(2, 3, 8, 8)
    pixel_values[0, :, :4, :4] = 0.7  # a flat patch: all zeros once standardised
    targets = mim_targets(pixel_values, 4)
    assert targets.shape == (2, 4, 48)
    assert torch.allclose(targets[0, 0], torch.zeros(48), atol=1e-3)
    assert torch.allclose(targets[1].mean(-1), torch.zeros(4), atol=1e-5)
    assert torch.allclose(targets[1].std(-1, unbiased=False), torch.ones(4), atol=1e-3)
    raw = mim_targets(pixel_values, 4, target="pixels")
    # Patch 1 is the top-right one; values are channels last: pixel (0, 4) of every channel first.
    assert torch.equal(raw[1, 1, :3], pixel_values[1, :, 0, 4])
    assert torch.equal(raw[1, 1, 3:6], pixel_values[1, :, 0, 5])
    with pytest.raises(ValueError, match="target"):
        mim_targets(pixel_values, 4, target="dvae")


def test_simmim_mask_masks_whole_cells_at_the_ratio():
    mask = simmim_mask(16, 14, 7, 0.6, _generator()).view(16, 7, 2, 7, 2)
    assert (mask.sum(dim=1).sum(dim=1).sum(dim=(1, 2)) == 4 * round(0.6 * 49)).all()
    cells = mask.permute(0, 1, 3, 2, 4).flatten(3)
    assert (cells.all(-1) | ~cells.any(-1)).all()  # each 2 x 2 cell is masked whole or not at all


def test_generators_differ_per_batch_and_stream_and_resume_exactly():
    generators = MaskingGenerators(seed=3)
    first = [torch.rand(4, generator=g) for g in generators.next_batch()]
    second = [torch.rand(4, generator=g) for g in generators.next_batch()]
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[0], second[0])
    state = generators.state_dict()
    assert state == {"seed": 3, "batch_index": 2}
    expected = [torch.rand(4, generator=g) for g in generators.next_batch()]
    resumed = MaskingGenerators()
    resumed.load_state_dict(state)
    assert all(torch.equal(a, torch.rand(4, generator=g)) for a, g in zip(expected, resumed.next_batch()))


def test_dataloader_workers_draw_what_one_process_draws():
    # Worker w of n collates batches w, w + n, ...: its k-th batch is numbered w + k * n.
    single = MaskingGenerators(seed=1)
    reference = [torch.rand(3, generator=single.next_batch()[0]) for _ in range(4)]
    for worker_id in range(2):
        worker = MaskingGenerators(seed=1)
        info = mock.Mock(id=worker_id, num_workers=2)
        with mock.patch("torch.utils.data.get_worker_info", return_value=info):
            drawn = [torch.rand(3, generator=worker.next_batch()[0]) for _ in range(2)]
        assert torch.equal(drawn[0], reference[worker_id]) and torch.equal(drawn[1], reference[worker_id + 2])


def _features(count: int = 3, length: int = 24, image: int = 32, seed: int = 0) -> list[dict]:
    generator = _generator(seed)
    features = []
    for index in range(count):
        size = length - index  # ragged lengths: the collator pads
        ids = [0, *torch.randint(5, 99, (size - 2,), generator=generator).tolist(), 2]
        corners = torch.randint(0, 900, (size, 2), generator=generator)
        bbox = torch.cat([corners, corners + 80], dim=-1)
        bbox[0] = bbox[-1] = 0
        features.append(
            dict(
                input_ids=ids,
                bbox=bbox.tolist(),
                attention_mask=[1] * size,
                pixel_values=torch.randn(3, image, image, generator=generator),
                word_index=[-1, *[i // 2 for i in range(size - 2)], -1],
            )
        )
    return features


def test_collator_builds_the_batch_of_the_three_objectives():
    collator = DataCollatorForLayoutLMv3PreTraining(mask_token_id=4, grid_size=8, seed=0)
    features = _features()
    batch = collator(features)
    assert set(batch) == {
        "input_ids",
        "bbox",
        "attention_mask",
        "pixel_values",
        "mlm_labels",
        "bool_masked_pos",
        "wpa_labels",
    }
    assert batch["input_ids"].shape == (3, 24) and batch["bool_masked_pos"].shape == (3, 64)
    masked = batch["mlm_labels"] != -100
    original = torch.tensor(features[0]["input_ids"])
    assert torch.equal(batch["mlm_labels"][0][masked[0]], original[masked[0]])
    assert (batch["input_ids"][masked] == 4).all()
    assert masked.sum(dim=1).tolist() == [round(0.3 * n) for n in (22, 21, 20)]
    assert batch["attention_mask"][2, -2:].tolist() == [0, 0] and batch["input_ids"][2, -2:].tolist() == [1, 1]
    assert batch["bool_masked_pos"].sum(dim=1).tolist() == [round(0.4 * 64)] * 3
    # WPA labels only on the first token of words without a masked token.
    labelled = batch["wpa_labels"] != -100
    assert labelled.any() and not (labelled & masked).any()
    assert not labelled[:, 2::2][:, : 22 // 2 - 1].any()  # second tokens of the two-token words


def test_collator_state_round_trip_gives_identical_next_masks():
    features = _features()
    collator = DataCollatorForLayoutLMv3PreTraining(mask_token_id=4, grid_size=8, seed=7)
    collator(features)
    state = collator.state_dict()
    expected = collator(features)
    resumed = DataCollatorForLayoutLMv3PreTraining(mask_token_id=4, grid_size=8, seed=0)
    resumed.load_state_dict(state)
    batch = resumed(features)
    assert all(torch.equal(batch[key], expected[key]) for key in expected)
    assert not torch.equal(batch["bool_masked_pos"], collator(features)["bool_masked_pos"])


def test_collator_streams_are_independent_of_each_other():
    features = _features()
    both = DataCollatorForLayoutLMv3PreTraining(mask_token_id=4, grid_size=8)(features)
    text_only = DataCollatorForLayoutLMv3PreTraining(mask_token_id=4, grid_size=8, mim=False, wpa=False)(features)
    image_only = DataCollatorForLayoutLMv3PreTraining(mask_token_id=4, grid_size=8, mlm=False, wpa=False)(features)
    assert torch.equal(both["mlm_labels"], text_only["mlm_labels"]) and "bool_masked_pos" not in text_only
    assert torch.equal(both["bool_masked_pos"], image_only["bool_masked_pos"]) and "mlm_labels" not in image_only
    assert torch.equal(image_only["input_ids"][0], torch.tensor(features[0]["input_ids"]))


def test_collator_bert_style_corruption_and_validation():
    collator = DataCollatorForLayoutLMv3PreTraining(
        mask_token_id=4,
        grid_size=8,
        mask_replace_prob=0.5,
        random_replace_prob=0.5,
        vocab_size=99,
        mim=False,
        wpa=False,
    )
    batch = collator(_features(count=8, length=60))
    masked = batch["mlm_labels"] != -100
    replaced = batch["input_ids"][masked]
    assert 0.3 < (replaced == 4).float().mean() < 0.7 and not torch.isin(replaced, torch.tensor([0, 1, 2])).any()
    with pytest.raises(ValueError, match="mim"):
        DataCollatorForLayoutLMv3PreTraining(mask_token_id=4, grid_size=8, mim=False)
    with pytest.raises(ValueError, match="vocab_size"):
        DataCollatorForLayoutLMv3PreTraining(
            mask_token_id=4, grid_size=8, mask_replace_prob=0.8, random_replace_prob=0.1
        )
    with pytest.raises(ValueError, match="special"):
        DataCollatorForLayoutLMv3PreTraining(mask_token_id=2, grid_size=8)


def test_simmim_collator_masks_and_resumes():
    features = [{"pixel_values": torch.randn(3, 32, 32)} for _ in range(4)]
    collator = DataCollatorForSimMIM(image_size=32, patch_size=4, seed=2)
    batch = collator(features)
    assert batch["pixel_values"].shape == (4, 3, 32, 32) and batch["bool_masked_pos"].shape == (4, 64)
    assert (batch["bool_masked_pos"].sum(1) == 4 * round(0.6 * 16)).all()  # 8 px cells: 16 of them, 2 x 2 patches
    state = collator.state_dict()
    expected = collator(features)["bool_masked_pos"]
    collator.load_state_dict(state)
    assert torch.equal(collator(features)["bool_masked_pos"], expected)
    with pytest.raises(ValueError, match="mask_patch_size"):
        DataCollatorForSimMIM(image_size=32, patch_size=4, mask_patch_size=6)
