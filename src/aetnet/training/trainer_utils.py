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
Helpers of `AETNetTrainer`: the per-term loss log (`loss_task`, `loss_ditc`, ... averaged over the micro-batches
between two logs and over the processes, `skipped_ditc`, ... for terms a batch without a modality could not compute,
and the count of skipped non-finite losses), and the random states that an evaluation must leave as it found them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


class LossTermLog:
    """
    The unweighted terms of the loss (`task` and one per objective) seen since the last flush, for training and
    evaluation apart (`mode`), the micro-batches that skipped an objective for a missing modality, and the number of
    non-finite losses skipped. The sums stay on the device: nothing synchronises with the host until `flush`.
    """

    def __init__(self):
        self._sums: dict[str, dict[str, torch.Tensor]] = {}
        self._counts: dict[str, dict[str, int]] = {}
        self._skips: dict[str, dict[str, int]] = {}
        self._nonfinite: dict[str, int] = {}
        for mode in ("train", "eval"):
            self.reset(mode)

    def reset(self, mode: str) -> None:
        """Forget what `mode` has seen."""
        self._sums[mode], self._counts[mode], self._skips[mode], self._nonfinite[mode] = {}, {}, {}, 0

    def add(self, mode: str, components: dict[str, torch.Tensor], skipped: tuple[str, ...] = ()) -> None:
        """Add one micro-batch's terms, and the objectives it `skipped` (inputs without a modality they read)."""
        sums, counts, skips = self._sums[mode], self._counts[mode], self._skips[mode]
        for name, value in components.items():
            value = value.detach().float()
            sums[name] = sums[name] + value if name in sums else value
            counts[name] = counts.get(name, 0) + 1
        for name in skipped:
            # A zero sum over zero batches: the term's name is known to every process alike (one gather of the same
            # length), and `flush` reports it as skipped rather than as a loss of 0.
            sums.setdefault(name, torch.zeros(()))
            counts.setdefault(name, 0)
            skips[name] = skips.get(name, 0) + 1

    def add_nonfinite(self, mode: str) -> None:
        """Count one micro-batch skipped for a non-finite loss (its terms are not added)."""
        self._nonfinite[mode] += 1

    def flush(
        self, mode: str, accelerator, device: torch.device, prefix: str = "", track_nonfinite: bool = False
    ) -> dict[str, float]:
        """
        `{prefix}loss_<term>`, each term averaged over the micro-batches and processes that computed it (absent when
        none did: never a 0 for a term that was not computed), `{prefix}skipped_<term>`, the micro-batches of all
        processes that skipped it for a missing modality (when any did), and with `track_nonfinite`
        `{prefix}nonfinite_losses`, the micro-batches skipped for a non-finite loss; then reset `mode`. Every process
        must call it (one gather).
        """
        sums, counts, skips, nonfinite = self._sums[mode], self._counts[mode], self._skips[mode], self._nonfinite[mode]
        self.reset(mode)
        names, n = sorted(sums), len(sums)
        if not names and not track_nonfinite:
            return {}
        values = [sums[name].to(device) for name in names]
        values += [
            torch.tensor(float(table.get(name, 0)), device=device) for table in (counts, skips) for name in names
        ]
        values.append(torch.tensor(float(nonfinite), device=device))
        totals = accelerator.gather(torch.stack(values)[None]).sum(dim=0).tolist()
        logs = {f"{prefix}loss_{name}": totals[i] / totals[n + i] for i, name in enumerate(names) if totals[n + i]}
        logs.update(
            {f"{prefix}skipped_{name}": int(totals[2 * n + i]) for i, name in enumerate(names) if totals[2 * n + i]}
        )
        if track_nonfinite:
            logs[f"{prefix}nonfinite_losses"] = int(totals[-1])
        return logs


@contextmanager
def preserved_random_states() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's (CPU and CUDA) random states on leaving the block."""
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


__all__ = ["LossTermLog", "preserved_random_states"]
