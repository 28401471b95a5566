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
What the masking objectives (`xmm_text`, `xmm_image`, `psl`) share: which token ids are never masked nor predicted,
and the per-process seed of their mask generators.
"""

from __future__ import annotations

import torch


def special_token_ids(layout_config) -> list[int]:
    """The ids of `<s>`, `</s>` and `<pad>` in LayoutLMv3's config (the tokens that no objective masks or predicts)."""
    ids = (layout_config.bos_token_id, layout_config.eos_token_id, layout_config.pad_token_id)
    return sorted({i for i in ids if i is not None})


def distributed_seed(seed: int) -> int:
    """`seed` made distinct per process of a distributed run, so that the ranks do not all draw the same masks."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return seed + 100_003 * torch.distributed.get_rank()
    return seed


__all__ = ["distributed_seed", "special_token_ids"]
