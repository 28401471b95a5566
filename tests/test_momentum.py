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
"""The momentum machinery as units of its own: `MomentumEncodersMixin` on a toy module, `FeatureQueues` alone."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from aetnet.momentum import FeatureQueues, MomentumEncodersMixin


class Toy(MomentumEncodersMixin, nn.Module):
    momentum_module_names = ("encoder", "proj")

    def __init__(self, with_momentum: bool = True):
        super().__init__()
        self.config = SimpleNamespace(momentum=0.9)
        self.encoder, self.proj = nn.Linear(3, 4), nn.Linear(4, 2)
        self.has_momentum = with_momentum
        if with_momentum:
            self.encoder_m, self.proj_m = nn.Linear(3, 4), nn.Linear(4, 2)


def test_pairs_copy_freeze_and_ema():
    toy = Toy()
    assert [(a, b) for a, b in toy.momentum_pairs()] == [(toy.encoder, toy.encoder_m), (toy.proj, toy.proj_m)]
    toy.copy_params(only={"proj_m"})
    torch.testing.assert_close(toy.proj_m.weight, toy.proj.weight)
    assert not torch.equal(toy.encoder_m.weight, toy.encoder.weight)
    toy.copy_params()
    torch.testing.assert_close(toy.encoder_m.weight, toy.encoder.weight)
    toy.freeze_momentum()
    assert not any(p.requires_grad for p in [*toy.encoder_m.parameters(), *toy.proj_m.parameters()])
    assert all(p.requires_grad for p in [*toy.encoder.parameters(), *toy.proj.parameters()])

    before = toy.encoder_m.weight.clone()
    with torch.no_grad():
        toy.encoder.weight.add_(1.0)
    toy.momentum_update()
    torch.testing.assert_close(toy.encoder_m.weight, 0.9 * before + 0.1 * toy.encoder.weight)


def test_without_momentum_copies_everything_is_a_no_op():
    toy = Toy(with_momentum=False)
    assert toy.momentum_pairs() == []
    toy.copy_params()
    toy.freeze_momentum()
    toy.momentum_update()


@pytest.mark.parametrize("batch", [1, 3, 7])
def test_queue_ring_buffer_counts_only_real_writes(batch):
    queues = FeatureQueues(embed_dim=2, queue_size=5)
    image, text = torch.randn(batch, 2), torch.randn(batch, 2)
    image[0] = float("nan")  # refused: the slot keeps its old entry and stays invalid
    queues.enqueue(image, text)
    kept = image[max(0, batch - 5) :]
    expected_valid = torch.zeros(5, dtype=torch.bool)
    for offset, row in enumerate(kept):
        slot = (max(0, batch - 5) + offset) % 5
        expected_valid[slot] = bool(torch.isfinite(row).all())
        if expected_valid[slot]:
            torch.testing.assert_close(queues.image_queue[:, slot], row)
    assert torch.equal(queues.valid(), expected_valid)
    assert int(queues.queue_ptr) == batch % 5 and int(queues.queue_filled) == min(batch, 5)
