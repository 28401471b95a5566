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
`DataCollatorForLayoutLMv3PreTraining`: pads a list of processed pages and draws the batch's MLM span masks, MIM
block masks and WPA labels, from seeded generators that resume exactly (`MaskingStepCallback` keeps them in step with
the Trainer). Masks are drawn here, on the CPU, so that with DataLoader workers they overlap the training step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import TrainerCallback

from ..loss_utils import special_token_ids
from ..objective_xmm_text import corrupt_tokens, default_mask_token_id
from .masking import MaskingGenerators, SeededMasksMixin, block_patch_mask, span_mask, word_patch_alignment_labels


# Per-token inputs and their padding values (`pad_token_id` for the ids).
_TOKEN_KEYS = {"input_ids": None, "attention_mask": 0, "bbox": [0, 0, 0, 0], "word_index": -1}


@dataclass
class DataCollatorForLayoutLMv3PreTraining(SeededMasksMixin):
    """
    Collate pages processed for LayoutLMv3 (e.g. rows of `AETNetProcessor` or `LayoutLMv3Processor` output with
    `return_tensors=None`: `input_ids`, `bbox`, optionally `attention_mask`, `pixel_values`, and `word_index`, each
    token's word, -1 outside words) into a pre-training batch for [`LayoutLMv3ForPreTraining`]:

    - `input_ids` with the MLM positions replaced (by `<mask>` by default), `mlm_labels` holding their original ids
      (-100 elsewhere): `span_mask`, `mlm_probability` of each page's real tokens in Poisson(`mean_span_length`)
      spans. Boxes are kept, as in LayoutLMv3.
    - `bool_masked_pos`, `(B, P)`: `block_patch_mask`, `mim_probability` of the patches in blocks. `pixel_values`
      stay unmasked: the model replaces the masked patches' embeddings, and computes the MIM targets from them.
    - `wpa_labels`, `(B, L)`: `word_patch_alignment_labels` of the two masks. Without `word_index` each real token
      counts as one word.

    Sequences are padded on the right to the longest (or to a multiple of `pad_to_multiple_of`); other keys of the
    features are dropped. With `Trainer`, pass `TrainingArguments(remove_unused_columns=False)`: `word_index` is no
    model input, and the Trainer would remove that column before the collator sees it.

    Args:
        mask_token_id (`int`): `<mask>`'s id.
        grid_size (`int`): patches per side of the page (LayoutLMv3's `input_size // patch_size`).
        pad_token_id (`int`, *optional*, defaults to 1): the padding id (RoBERTa's and LayoutLMv3's).
        special_ids (`Sequence[int]`, *optional*, defaults to `(0, 1, 2)`): ids never masked (`<s>`, `<pad>`, `</s>`).
        mlm (`bool`, *optional*, defaults to `True`): mask the text and return `mlm_labels`.
        mlm_probability (`float`, *optional*, defaults to 0.3): share of each page's real tokens masked (LayoutLMv3).
        mean_span_length (`float`, *optional*, defaults to 3.0): the Poisson mean of the span lengths (LayoutLMv3).
        mask_replace_prob, random_replace_prob (`float`, *optional*, defaults to 1.0 and 0.0): of the masked tokens,
            the share replaced by `<mask>` and by a random ordinary token (the rest keep their id). LayoutLMv3
            replaces them all by `<mask>`; BERT's 0.8 / 0.1 is available, and needs `vocab_size`.
        vocab_size (`int`, *optional*): the vocabulary size, for `random_replace_prob > 0`.
        mim (`bool`, *optional*, defaults to `True`): mask patches and return `bool_masked_pos`.
        mim_probability (`float`, *optional*, defaults to 0.4): share of the patches masked (LayoutLMv3).
        min_block (`int`, *optional*): smallest masked block, in patches; BEiT's 16 of 196 scaled to the grid.
        wpa (`bool`, *optional*, defaults to `True`): return `wpa_labels`; needs `mim`.
        seed (`int`, *optional*, defaults to 0): the masks' seed; see [`MaskingGenerators`].
        pad_to_multiple_of (`int`, *optional*): round the padded length up to a multiple of this.
    """

    mask_token_id: int
    grid_size: int
    pad_token_id: int = 1
    special_ids: Sequence[int] = (0, 1, 2)
    mlm: bool = True
    mlm_probability: float = 0.3
    mean_span_length: float = 3.0
    mask_replace_prob: float = 1.0
    random_replace_prob: float = 0.0
    vocab_size: int | None = None
    mim: bool = True
    mim_probability: float = 0.4
    min_block: int | None = None
    wpa: bool = True
    seed: int = 0
    pad_to_multiple_of: int | None = None
    generators: MaskingGenerators = field(init=False, repr=False)

    def __post_init__(self):
        if not (self.mlm or self.mim):
            raise ValueError("Nothing to pre-train: enable `mlm`, `mim` or both")
        if self.wpa and not self.mim:
            raise ValueError("`wpa` labels say which words lie on masked patches: it needs `mim=True`")
        if not (0.0 <= self.mask_replace_prob and 0.0 <= self.random_replace_prob):
            raise ValueError("`mask_replace_prob` and `random_replace_prob` must be >= 0")
        if self.mask_replace_prob + self.random_replace_prob > 1.0:
            raise ValueError("`mask_replace_prob + random_replace_prob` must be at most 1")
        if self.random_replace_prob > 0 and self.vocab_size is None:
            raise ValueError("`random_replace_prob > 0` draws random tokens: give `vocab_size`")
        if self.mask_token_id in self.special_ids:
            raise ValueError(f"`mask_token_id` {self.mask_token_id} is one of the special ids {list(self.special_ids)}")
        self.generators = MaskingGenerators(self.seed)

    @classmethod
    def from_config(cls, config, **kwargs) -> DataCollatorForLayoutLMv3PreTraining:
        """The collator for a LayoutLMv3 config (its grid, `<mask>`, padding and special ids); `kwargs` override."""
        patch_size = config.patch_size if isinstance(config.patch_size, int) else config.patch_size[0]
        defaults = dict(
            mask_token_id=default_mask_token_id(config),
            grid_size=int(config.input_size) // int(patch_size),
            pad_token_id=config.pad_token_id,
            special_ids=tuple(special_token_ids(config)),
            vocab_size=config.vocab_size,
        )
        return cls(**{**defaults, **kwargs})

    def __call__(self, features: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self._pad(features)
        text_generator, image_generator = self.generators.next_batch()
        input_ids = batch["input_ids"]
        real = batch["attention_mask"].bool() & ~torch.isin(input_ids, torch.tensor(list(self.special_ids)))
        text_mask = torch.zeros_like(real)
        if self.mlm:
            text_mask = span_mask(
                real & (input_ids != self.mask_token_id), self.mlm_probability, text_generator, self.mean_span_length
            )
            batch["mlm_labels"] = input_ids.masked_fill(~text_mask, -100)
            batch["input_ids"] = self._corrupt(input_ids, text_mask, text_generator)
        word_index = batch.pop("word_index", None)
        if self.mim:
            batch["bool_masked_pos"] = block_patch_mask(
                len(input_ids), self.grid_size, self.mim_probability, image_generator, self.min_block
            )
        if self.wpa:
            if word_index is None:  # each real token is a word of its own
                word_index = torch.where(real, torch.arange(input_ids.shape[1]).expand_as(input_ids), -1)
            batch["wpa_labels"] = word_patch_alignment_labels(
                batch["bbox"], text_mask, batch["bool_masked_pos"], self.grid_size, word_index.masked_fill(~real, -1)
            )
        return batch

    def _corrupt(self, input_ids: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.mask_replace_prob == 1.0:
            return input_ids.masked_fill(mask, self.mask_token_id)
        ordinary = torch.ones(self.vocab_size or 0, dtype=torch.bool)
        ordinary[[*self.special_ids, self.mask_token_id]] = False
        return corrupt_tokens(
            input_ids,
            mask,
            self.mask_token_id,
            ordinary.nonzero().squeeze(1),
            generator,
            self.mask_replace_prob,
            self.random_replace_prob,
        )

    def _pad(self, features: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Stack `pixel_values` and right-pad the per-token inputs to the batch's (rounded) longest."""
        if not features:
            raise ValueError("Cannot collate an empty list of features")
        for key in ("input_ids", "bbox", "pixel_values"):
            if any(key not in feature for feature in features):
                raise ValueError(f"Every feature needs `{key}` (keys of the first: {sorted(features[0])})")
        rows = {key: [] for key in _TOKEN_KEYS if key in features[0] or key == "attention_mask"}
        for feature in features:
            ids = torch.as_tensor(feature["input_ids"], dtype=torch.long)
            rows["input_ids"].append(ids)
            rows["attention_mask"].append(
                torch.as_tensor(feature.get("attention_mask", [1] * len(ids)), dtype=torch.long)
            )
            rows["bbox"].append(torch.as_tensor(feature["bbox"], dtype=torch.long).view(-1, 4))
            if "word_index" in rows:
                rows["word_index"].append(torch.as_tensor(feature["word_index"], dtype=torch.long))
        length = max(len(ids) for ids in rows["input_ids"])
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = {}
        for key, values in rows.items():
            pad = self.pad_token_id if key == "input_ids" else _TOKEN_KEYS[key]
            padded = torch.tensor(pad, dtype=torch.long).expand(len(values), length, *values[0].shape[1:]).clone()
            for row, value in enumerate(values):
                padded[row, : len(value)] = value
            batch[key] = padded
        batch["pixel_values"] = torch.stack([torch.as_tensor(f["pixel_values"], dtype=torch.float32) for f in features])
        return batch


class MaskingStepCallback(TrainerCallback):
    """
    Keep a [`DataCollatorForLayoutLMv3PreTraining`]'s (or any collator's with `set_batch_index` and `generators`)
    batch numbering in step with the Trainer, so that a run resumed with `resume_from_checkpoint` draws exactly the
    masks of an uninterrupted run (the Trainer restores its own RNG states, not the collator's). At the start of every
    epoch, resumed ones included, the next batch is numbered `global_step * gradient_accumulation_steps`, the number
    of training batches drawn so far; batches that `Trainer.evaluate` collates with the same collator do not count.

    Example: `trainer.add_callback(MaskingStepCallback(trainer.data_collator))`.
    """

    def __init__(self, collator: DataCollatorForLayoutLMv3PreTraining):
        self.collator = collator
        self._state_before_evaluation: dict[str, int] | None = None

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.collator.set_batch_index(state.global_step * args.gradient_accumulation_steps)

    def on_step_end(self, args, state, control, **kwargs):
        self._state_before_evaluation = self.collator.state_dict()

    def on_evaluate(self, args, state, control, **kwargs):
        if self._state_before_evaluation is not None:
            self.collator.load_state_dict(self._state_before_evaluation)


__all__ = ["DataCollatorForLayoutLMv3PreTraining", "MaskingStepCallback"]
