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
"""Alignment objectives on hand-checkable tensors: each against a direct (slow) formulation, plus the masking rules."""

import pytest
import torch
import torch.nn.functional as F

from aetnet.objective_ditc import DocumentContrastiveLoss
from aetnet.objective_glitc import GlobalLocalContrastiveLoss
from aetnet.objective_imc import IntraModalContrastiveLoss
from aetnet.objective_pita import PatchTokenAlignmentLoss, assign_tokens_to_cells, pool_tokens_per_cell


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _contrastive_inputs(batch=4, dim=8, queue=6, seed=0):
    image, text = _unit(batch, dim, seed=seed), _unit(batch, dim, seed=seed + 1)
    image_m, text_m = _unit(batch, dim, seed=seed + 2), _unit(batch, dim, seed=seed + 3)
    image_queue, text_queue = _unit(queue, dim, seed=seed + 4).t(), _unit(queue, dim, seed=seed + 5).t()
    return image, text, image_m, text_m, image_queue, text_queue, torch.tensor(0.1)


def test_ditc_with_alpha_zero_is_one_hot_infonce():
    image, text, image_m, text_m, image_queue, text_queue, temp = _contrastive_inputs()
    loss = DocumentContrastiveLoss()(image, text, image_m, text_m, image_queue, text_queue, temp, alpha=0.0)
    targets = torch.arange(4)
    i2t = F.cross_entropy(torch.cat([image @ text_m.t(), image @ text_queue], 1) / temp, targets)
    t2i = F.cross_entropy(torch.cat([text @ image_m.t(), text @ image_queue], 1) / temp, targets)
    torch.testing.assert_close(loss, (i2t + t2i) / 2)


def test_ditc_distillation_mixes_momentum_similarities():
    image, text, image_m, text_m, image_queue, text_queue, temp = _contrastive_inputs()
    alpha = 0.4
    loss = DocumentContrastiveLoss()(image, text, image_m, text_m, image_queue, text_queue, temp, alpha=alpha)
    one_hot = torch.cat([torch.eye(4), torch.zeros(4, 6)], 1)

    def soft_ce(anchor, anchor_m, batch_m, queue):
        target = alpha * (torch.cat([anchor_m @ batch_m.t(), anchor_m @ queue], 1) / temp).softmax(1)
        target = target + (1 - alpha) * one_hot
        logits = torch.cat([anchor @ batch_m.t(), anchor @ queue], 1) / temp
        return -(target * logits.log_softmax(1)).sum(1).mean()

    expected = (soft_ce(image, image_m, text_m, text_queue) + soft_ce(text, text_m, image_m, image_queue)) / 2
    torch.testing.assert_close(loss, expected)


def test_ditc_prefers_aligned_pairs():
    feats = _unit(4, 8)
    queue = _unit(6, 8, seed=9).t()
    temp = torch.tensor(0.07)
    aligned = DocumentContrastiveLoss()(feats, feats, feats, feats, queue, queue, temp)
    shuffled = DocumentContrastiveLoss()(feats, feats[[1, 2, 3, 0]], feats, feats[[1, 2, 3, 0]], queue, queue, temp)
    assert aligned < shuffled


def test_invalid_queue_entries_are_ignored():
    image, text, image_m, text_m, image_queue, text_queue, temp = _contrastive_inputs()
    empty = torch.zeros(6, dtype=torch.bool)
    for loss_module in (DocumentContrastiveLoss(), IntraModalContrastiveLoss()):
        masked = loss_module(image, text, image_m, text_m, image_queue, text_queue, temp, queue_valid=empty)
        no_queue = loss_module(image, text, image_m, text_m, image_queue[:, :0], text_queue[:, :0], temp)
        torch.testing.assert_close(masked, no_queue)


def test_imc_matches_direct_formula():
    image, text, image_m, text_m, image_queue, text_queue, temp = _contrastive_inputs()
    loss = IntraModalContrastiveLoss()(image, text, image_m, text_m, image_queue, text_queue, temp)
    targets = torch.arange(4)
    i2i = F.cross_entropy(torch.cat([image @ image_m.t(), image @ image_queue], 1) / temp, targets)
    t2t = F.cross_entropy(torch.cat([text @ text_m.t(), text @ text_queue], 1) / temp, targets)
    torch.testing.assert_close(loss, (i2i + t2t) / 2)


def _glitc_direct(global_feat, local_feat, mask, temp):
    """The TCL formulation: one softmax over [positive, every valid local of the other documents] per local."""
    batch = global_feat.shape[0]
    per_doc = []
    for n in range(batch):
        negatives = torch.cat([local_feat[j][mask[j]] for j in range(batch) if j != n] or [local_feat[n][:0]])
        terms = []
        for k in torch.nonzero(mask[n]).flatten():
            logits = torch.cat([(local_feat[n, k] @ global_feat[n])[None], negatives @ global_feat[n]]) / temp
            terms.append(-logits.log_softmax(0)[0])
        if terms:
            per_doc.append(torch.stack(terms).mean())
    return torch.stack(per_doc).mean()


def test_glitc_matches_direct_formulation_with_padding():
    global_feat, local_feat = _unit(3, 8), _unit(3, 5, 8, seed=1)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    temp = torch.tensor(0.2)
    loss = GlobalLocalContrastiveLoss()(global_feat, local_feat, mask, temp)
    torch.testing.assert_close(loss, _glitc_direct(global_feat, local_feat, mask, temp))


def test_glitc_padding_features_do_not_matter_and_single_document_is_finite():
    global_feat, local_feat = _unit(2, 8), _unit(2, 4, 8, seed=1)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    temp = torch.tensor(0.001)  # the temperature floor
    loss = GlobalLocalContrastiveLoss()(global_feat, local_feat, mask, temp)
    changed = local_feat.clone()
    changed[0, 3] = _unit(8, seed=7)
    torch.testing.assert_close(GlobalLocalContrastiveLoss()(global_feat, changed, mask, temp), loss)
    single = GlobalLocalContrastiveLoss()(global_feat[:1], local_feat[:1], mask[:1], temp)
    assert torch.isfinite(loss) and torch.isfinite(single) and single.item() == pytest.approx(0.0, abs=1e-6)


def test_glitc_prefers_own_document_locals():
    global_feat = _unit(4, 8)
    own = global_feat[:, None, :].expand(4, 3, 8) + 0.05 * _unit(4, 3, 8, seed=3)
    mask = torch.ones(4, 3, dtype=torch.bool)
    temp = torch.tensor(0.1)
    aligned = GlobalLocalContrastiveLoss()(global_feat, F.normalize(own, dim=-1), mask, temp)
    shuffled = GlobalLocalContrastiveLoss()(global_feat, F.normalize(own[[1, 2, 3, 0]], dim=-1), mask, temp)
    assert aligned < shuffled


@pytest.mark.parametrize(
    "box, center, drop",
    [
        ([0, 0, 500, 500], 0, 0),  # ends exactly on the border: still the first cell
        ([500, 0, 1000, 500], 1, 1),  # starts on the border: the next cell
        ([0, 500, 499, 1000], 2, 2),
        ([400, 0, 600, 100], 1, -1),  # spans two columns; centre 500 is on the border -> later cell
        ([0, 0, 1000, 1000], 3, -1),
        ([999, 999, 1000, 1000], 3, 3),
    ],
)
def test_token_to_cell_assignment_on_a_2x2_grid(box, center, drop):
    bbox = torch.tensor([[box]])
    assert assign_tokens_to_cells(bbox, 2, "center").item() == center
    assert assign_tokens_to_cells(bbox, 2, "drop").item() == drop


def test_cells_are_1000_over_grid_units_not_72():
    # 1000 / 14 = 71.43: x = 71 is the first cell, x = 72 the second (the official code's // 72 says first).
    bbox = torch.tensor([[[71, 0, 71, 0], [72, 0, 72, 0], [1000, 1000, 1000, 1000]]])
    assert assign_tokens_to_cells(bbox, 14, "drop").tolist() == [[0, 1, 14 * 14 - 1]]


def _pool_direct(token_feat, bbox, mask, grid, policy):
    batch, length, dim = token_feat.shape
    sums, counts = torch.zeros(batch, grid * grid, dim), torch.zeros(batch, grid * grid)
    for b in range(batch):
        for t in range(length):
            if not mask[b, t]:
                continue
            x0, y0, x1, y1 = bbox[b, t].tolist()
            cells = [
                r * grid + c
                for r in range(grid)
                for c in range(grid)
                if x0 < (c + 1) * 1000 / grid
                and x1 > c * 1000 / grid
                and y0 < (r + 1) * 1000 / grid
                and y1 > r * 1000 / grid
            ]
            if policy == "center":
                cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                cells = [min(int(cy * grid // 1000), grid - 1) * grid + min(int(cx * grid // 1000), grid - 1)]
            elif policy == "drop" and len(cells) != 1:
                cells = []
            for cell in cells:
                sums[b, cell] += token_feat[b, t]
                counts[b, cell] += 1
    return sums, counts


@pytest.mark.parametrize("policy", ["center", "drop", "all"])
def test_pooling_per_cell_matches_a_token_loop(policy):
    generator = torch.Generator().manual_seed(0)
    corners = torch.randint(1, 1000, (2, 12, 2, 2), generator=generator)
    bbox = torch.cat([corners.min(dim=2).values, corners.max(dim=2).values + 1], dim=-1).clamp(max=1000)
    token_feat = torch.randn(2, 12, 5, generator=generator)
    mask = torch.rand(2, 12, generator=generator) > 0.2
    sums, counts = pool_tokens_per_cell(token_feat, bbox, mask, 4, policy)
    expected_sums, expected_counts = _pool_direct(token_feat, bbox, mask, 4, policy)
    torch.testing.assert_close(counts, expected_counts)
    torch.testing.assert_close(sums, expected_sums)


def _pita_inputs():
    grid = 2
    patch_feat = _unit(1, 4, 8)
    # Tokens in cells 0 and 3 only (cells 1 and 2 are empty); the last token is masked out (special).
    bbox = torch.tensor([[[10, 10, 20, 20], [30, 30, 40, 40], [900, 900, 950, 950], [10, 10, 20, 20]]])
    token_feat = torch.stack([patch_feat[0, 0], patch_feat[0, 0], patch_feat[0, 3], _unit(8, seed=5)])[None]
    mask = torch.tensor([[True, True, True, False]])
    return grid, patch_feat, token_feat, bbox, mask


@pytest.mark.parametrize("form", ["infonce", "cosine"])
def test_pita_ignores_empty_cells_and_masked_tokens(form):
    grid, patch_feat, token_feat, bbox, mask = _pita_inputs()
    loss_module = PatchTokenAlignmentLoss(grid, loss=form)
    temp = torch.tensor(0.1)
    loss = loss_module(patch_feat, token_feat, bbox, mask, temp)
    masked_token_changed = token_feat.clone()
    masked_token_changed[0, 3] = _unit(8, seed=11)
    torch.testing.assert_close(loss_module(patch_feat, masked_token_changed, bbox, mask, temp), loss)
    if form == "cosine":
        # Perfectly aligned occupied cells: zero loss, whatever the empty cells' patches hold.
        assert loss.item() == pytest.approx(0.0, abs=1e-6)
        empty_changed = patch_feat.clone()
        empty_changed[0, 1] = _unit(8, seed=12)
        torch.testing.assert_close(loss_module(empty_changed, token_feat, bbox, mask, temp), loss)
    else:
        # InfoNCE over the occupied cells: patch->text has 2 candidates, text->patch all 4 patches.
        logits = patch_feat[0] @ patch_feat[0].t() / temp
        i2t = F.cross_entropy(logits[[0, 3]][:, [0, 3]], torch.tensor([0, 1]), reduction="sum")
        t2i = F.cross_entropy(logits[:, [0, 3]].t(), torch.tensor([0, 3]), reduction="sum")
        torch.testing.assert_close(loss, (i2t + t2i) / 4)


def test_pita_prefers_aligned_tokens():
    grid, patch_feat, token_feat, bbox, mask = _pita_inputs()
    loss_module = PatchTokenAlignmentLoss(grid)
    swapped = token_feat[:, [2, 2, 0, 3]]
    temp = torch.tensor(0.1)
    assert loss_module(patch_feat, token_feat, bbox, mask, temp) < loss_module(patch_feat, swapped, bbox, mask, temp)


def test_contrastive_logits_are_float32_under_autocast_at_the_temperature_floor():
    image, text, image_m, text_m, image_queue, text_queue, _ = _contrastive_inputs()
    temp = torch.tensor(0.001)
    inputs = [t.bfloat16() for t in (image, text, image_m, text_m, image_queue, text_queue)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = DocumentContrastiveLoss()(*inputs, temp, alpha=0.4)
        identical = IntraModalContrastiveLoss()(*[torch.ones_like(t) for t in inputs], temp)
        grid, patch_feat, token_feat, bbox, mask = _pita_inputs()
        pita = PatchTokenAlignmentLoss(grid)(patch_feat.bfloat16(), token_feat.bfloat16(), bbox, mask, temp)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert torch.isfinite(identical) and torch.isfinite(pita)
    reference = DocumentContrastiveLoss()(*[t.float() for t in inputs], temp, alpha=0.4)
    torch.testing.assert_close(loss, reference)
