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
"""Data collator for AETNet: pads and stacks processor features and draws a fresh momentum view every batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .augmentation import AugmentationConfig, augment_pixel_values
from .tasks import TRAINING_INPUT_NAMES


@dataclass
class AETNetDataCollator:
    """
    Collate a list of features (rows of a dataset mapped with [`AETNetProcessor`] and `return_tensors=None`, or
    rows that are already tensors) into a batch of tensors for an AETNet model.

    Only the inputs the AETNet models train on (`tasks.TRAINING_INPUT_NAMES`) are kept, and the keys listed in
    `keep_keys`: word_index, overflow_to_sample_mapping, OCR words, raw dataset columns and token_type_ids (which
    LayoutLMv3 does not use) are dropped otherwise.

    Per-token sequences of different lengths are padded on the right (or the tokenizer's `padding_side`):
    `input_ids` with the pad token id, `attention_mask` / `token_type_ids` with 0, `bbox` with `[0, 0, 0, 0]`,
    token `labels` with -100 and `word_index` with -1. Images and scalar targets are stacked.

    With `augment=True` (training) a new `pixel_values_aug` is drawn from `pixel_values` at every call, so each
    epoch sees a different momentum view; an existing `pixel_values_aug` column is then replaced. With
    `augment=False` a `pixel_values_aug` present in the features is kept, and none is created.

    Args:
        tokenizer (`PreTrainedTokenizerBase`, *optional*): gives the pad token id and the padding side.
        pad_token_id (`int`, *optional*): pad id without a tokenizer; defaults to 1 (RoBERTa / LayoutLMv3).
        augment (`bool`, *optional*, defaults to `False`): add a fresh `pixel_values_aug`.
        augmentation_config (`AugmentationConfig`, *optional*): augmentation strengths; its `image_mean` /
            `image_std` must match the image processor (LayoutLMv3: 0.5 / 0.5, the default).
        keep_keys (`Sequence[str]`, *optional*): extra keys to keep, e.g. `("word_index",
            "overflow_to_sample_mapping")` for evaluation-time merging of window predictions.
        pad_to_multiple_of (`int`, *optional*): round the padded length up to a multiple of this.
        label_pad_token_id (`int`, *optional*, defaults to -100): pad value of token labels.
        seed (`int`, *optional*): seed of the augmentations, for reproducible runs. Batch number `i` (counted from
            `batch_index`, see [`~AETNetDataCollator.set_batch_index`]) is augmented with a generator seeded from
            `(seed, i)`, so a batch's view depends on its position in training only: DataLoader workers (which
            collate batches `i = worker_id, worker_id + num_workers, ...`) do not repeat each other, and a run resumed
            from a checkpoint draws the same views as an uninterrupted one when [`AugmentationStepCallback`] keeps
            `batch_index` in step with the Trainer.
        generator (`torch.Generator`, *optional*): explicit CPU generator, used as is (takes precedence over
            `seed`). Without both, the global torch RNG is used (seeded per worker by the DataLoader).
    """

    tokenizer: Any = None
    pad_token_id: int | None = None
    augment: bool = False
    augmentation_config: AugmentationConfig | None = None
    keep_keys: Sequence[str] = ()
    pad_to_multiple_of: int | None = None
    label_pad_token_id: int = -100
    seed: int | None = None
    generator: torch.Generator | None = None
    batch_index: int = field(default=0, init=False)
    _calls: int = field(default=0, init=False, repr=False)

    def __post_init__(self):
        if isinstance(self.keep_keys, str):
            raise ValueError(f"`keep_keys` must be a sequence of key names, got the string {self.keep_keys!r}")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ValueError(f"`pad_to_multiple_of` must be a positive int, got {self.pad_to_multiple_of}")

    def _pad_values(self) -> dict[str, Any]:
        pad_id = self.pad_token_id
        if pad_id is None:
            pad_id = getattr(self.tokenizer, "pad_token_id", None)
        return {
            "input_ids": 1 if pad_id is None else pad_id,
            "attention_mask": 0,
            "token_type_ids": 0,
            "bbox": [0, 0, 0, 0],
            "labels": self.label_pad_token_id,
            "word_index": -1,
            "special_tokens_mask": 1,
        }

    def set_batch_index(self, batch_index: int) -> None:
        """Number the next collated batch `batch_index` (the number of training batches already drawn); set before a
        DataLoader iterator is created, so that worker copies start from it too."""
        if batch_index < 0:
            raise ValueError(f"`batch_index` must be >= 0, got {batch_index}")
        self.batch_index, self._calls = batch_index, 0

    @property
    def next_batch_index(self) -> int:
        """The number the next batch collated in this process gets: `batch_index` plus the batches collated here since
        it was set. `set_batch_index(next_batch_index)` changes nothing, so that reading it before batches that must
        not count (`Trainer.evaluate` with the training collator) and setting it back after leaves them uncounted."""
        return self.batch_index + self._calls

    def _generator(self) -> torch.Generator | None:
        if self.generator is not None or self.seed is None:
            return self.generator
        worker = torch.utils.data.get_worker_info()
        worker_id, num_workers = (0, 1) if worker is None else (worker.id, getattr(worker, "num_workers", 1))
        index = self.batch_index + worker_id + self._calls * num_workers
        self._calls += 1
        seed = int(np.random.SeedSequence([self.seed, index]).generate_state(1, dtype=np.uint64)[0] >> 1)
        return torch.Generator().manual_seed(seed)

    def __call__(self, features: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("Cannot collate an empty list of features.")
        keys = [key for key in features[0] if key in TRAINING_INPUT_NAMES or key in self.keep_keys]
        for index, feature in enumerate(features):
            missing = [key for key in keys if key not in feature]
            if missing:
                raise ValueError(f"`features[{index}]` lacks the key(s) {missing} present in `features[0]`.")
        pad_values = self._pad_values()
        padding_side = getattr(self.tokenizer, "padding_side", "right")
        token_keys = [key for key in keys if key in pad_values and _is_sequence(features[0][key])]
        lengths = [len(feature[key]) for feature in features for key in token_keys]
        target_length = max(lengths, default=0)
        if self.pad_to_multiple_of and target_length % self.pad_to_multiple_of:
            target_length += self.pad_to_multiple_of - target_length % self.pad_to_multiple_of

        batch = {}
        for key in keys:
            values = [_to_tensor(feature[key], key, index) for index, feature in enumerate(features)]
            if key in token_keys:
                values = [_pad(value, target_length, pad_values[key], padding_side) for value in values]
            shapes = {tuple(value.shape) for value in values}
            if len(shapes) > 1:
                raise ValueError(f"Cannot stack `{key}`: features have different shapes {sorted(shapes)}.")
            batch[key] = torch.stack(values)

        if self.augment:
            if "pixel_values" not in batch:
                raise ValueError("`augment=True` needs `pixel_values` in the features.")
            batch["pixel_values_aug"] = augment_pixel_values(
                batch["pixel_values"], self._generator(), config=self.augmentation_config
            )
        return batch


def _is_sequence(value) -> bool:
    return isinstance(value, (list, tuple)) or (isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim >= 1)


def _to_tensor(value, key: str, index: int) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    try:
        array = np.asarray(value)
    except ValueError as error:
        raise ValueError(
            f"`features[{index}]['{key}']` is ragged and cannot be turned into a tensor: {error}"
        ) from None
    if array.dtype == object:
        raise ValueError(f"`features[{index}]['{key}']` is ragged or not numeric and cannot be turned into a tensor.")
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    return torch.from_numpy(array)


def _pad(value: torch.Tensor, length: int, pad_value, side: str) -> torch.Tensor:
    missing = length - value.shape[0]
    if missing == 0:
        return value
    filler = torch.tensor(pad_value, dtype=value.dtype).expand(missing, *value.shape[1:])
    return torch.cat([value, filler] if side == "right" else [filler, value])


__all__ = ["AETNetDataCollator"]
