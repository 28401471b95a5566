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
"""Tests of AETNetDataCollator: stacking, padding, dropped keys and a fresh momentum view at every call."""

import random

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import LayoutLMv3ImageProcessorPil

from aetnet import AETNetProcessor
from aetnet.data.tokenizer_training import train_layoutlmv3_tokenizer
from aetnet.data_collator import AETNetDataCollator


VOCAB = ["invoice", "total", "amount", "due", "date", "name", "company"]


@pytest.fixture(scope="module")
def processor():
    rng = random.Random(0)
    tokenizer = train_layoutlmv3_tokenizer(
        [" ".join(rng.choice(VOCAB) for _ in range(20)) for _ in range(20)], vocab_size=280
    )
    image_processor = LayoutLMv3ImageProcessorPil(apply_ocr=False, size={"height": 16, "width": 16})
    return AETNetProcessor(image_processor=image_processor, tokenizer=tokenizer)


def rows(processor, num_words=(5, 9, 3), padding="max_length"):
    """Dataset-style rows (lists, no tensors): what `dataset.map(processor, return_tensors=None)` stores."""
    rng = random.Random(1)
    words = [[rng.choice(VOCAB) + "x" * rng.randint(0, 3) for _ in range(n)] for n in num_words]
    boxes = [[[0, 0, 10, 10]] * n for n in num_words]
    labels = [[rng.randint(0, 4) for _ in range(n)] for n in num_words]
    images = [Image.fromarray(np.full((20, 20), 40 * i, dtype=np.uint8)) for i in range(len(num_words))]
    encoded = processor(images, words, boxes=boxes, word_labels=labels, max_length=64, stride=4, padding=padding)
    return [{key: encoded[key][i] for key in encoded} for i in range(len(encoded["input_ids"]))]


def test_stacks_processor_rows_and_drops_bookkeeping_keys(processor):
    features = rows(processor)
    batch = AETNetDataCollator(tokenizer=processor.tokenizer)(features)
    assert set(batch) == {"input_ids", "attention_mask", "bbox", "labels", "pixel_values"}
    assert batch["input_ids"].shape == (3, 64) and batch["input_ids"].dtype == torch.long
    assert batch["bbox"].shape == (3, 64, 4) and batch["labels"].shape == (3, 64)
    assert batch["pixel_values"].shape == (3, 3, 16, 16) and batch["pixel_values"].dtype == torch.float32
    assert batch["input_ids"][1].tolist() == features[1]["input_ids"]
    kept = AETNetDataCollator(keep_keys=("word_index", "overflow_to_sample_mapping"))(features)
    assert kept["word_index"].tolist() == [f["word_index"] for f in features]
    assert kept["overflow_to_sample_mapping"].tolist() == [0, 1, 2]


def test_pads_ragged_rows_with_the_right_values(processor):
    features = rows(processor, padding=False)
    lengths = [len(f["input_ids"]) for f in features]
    assert len(set(lengths)) > 1
    collator = AETNetDataCollator(tokenizer=processor.tokenizer, keep_keys=("word_index",), pad_to_multiple_of=8)
    batch = collator(features)
    target = -(-max(lengths) // 8) * 8
    assert batch["input_ids"].shape == (3, target)
    for i, feature in enumerate(features):
        n = lengths[i]
        assert batch["input_ids"][i, :n].tolist() == feature["input_ids"]
        assert torch.all(batch["input_ids"][i, n:] == processor.tokenizer.pad_token_id)
        assert torch.all(batch["attention_mask"][i, n:] == 0) and torch.all(batch["attention_mask"][i, :n] == 1)
        assert torch.all(batch["bbox"][i, n:] == 0) and batch["bbox"][i, :n].tolist() == feature["bbox"]
        assert torch.all(batch["labels"][i, n:] == -100) and batch["labels"][i, :n].tolist() == feature["labels"]
        assert torch.all(batch["word_index"][i, n:] == -1)


def test_fresh_augmented_view_every_call_and_reproducible_with_seed(processor):
    features = rows(processor)
    collator = AETNetDataCollator(augment=True, seed=0)
    first, second = collator(features), collator(features)
    assert first["pixel_values_aug"].shape == first["pixel_values"].shape
    assert not torch.allclose(first["pixel_values_aug"], second["pixel_values_aug"])  # new view each epoch
    torch.testing.assert_close(first["pixel_values"], second["pixel_values"])  # online view is deterministic
    replay = AETNetDataCollator(augment=True, seed=0)
    torch.testing.assert_close(replay(features)["pixel_values_aug"], first["pixel_values_aug"])
    assert "pixel_values_aug" not in AETNetDataCollator(augment=False)(features)


def test_augmentation_replaces_a_stale_view_and_keeps_it_without_augment(processor):
    features = [dict(f, pixel_values_aug=np.zeros((3, 16, 16), dtype=np.float32)) for f in rows(processor)]
    assert torch.all(AETNetDataCollator()(features)["pixel_values_aug"] == 0)
    assert not torch.all(AETNetDataCollator(augment=True, seed=0)(features)["pixel_values_aug"] == 0)


def test_batch_numbering_can_be_read_and_set_back(processor):
    # What AugmentationStepCallback does around an evaluation: batches collated in between do not count.
    features = rows(processor)
    collator = AETNetDataCollator(augment=True, seed=0)
    collator.set_batch_index(5)
    collator(features)
    assert collator.next_batch_index == 6
    uninterrupted = AETNetDataCollator(augment=True, seed=0)
    uninterrupted.set_batch_index(6)
    expected = uninterrupted(features)["pixel_values_aug"]
    position = collator.next_batch_index
    collator(features)  # an evaluation batch
    collator.set_batch_index(position)
    torch.testing.assert_close(collator(features)["pixel_values_aug"], expected)
    assert collator.next_batch_index == 7


def test_dataloader_workers_get_different_streams(monkeypatch):
    class Worker:
        def __init__(self, worker_id):
            self.id = worker_id

    features = [{"pixel_values": torch.zeros(3, 8, 8), "input_ids": [0, 5, 2]} for _ in range(2)]
    views = []
    for worker_id in (0, 1):
        monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda worker_id=worker_id: Worker(worker_id))
        views.append(AETNetDataCollator(augment=True, seed=0)(features)["pixel_values_aug"])
    assert not torch.allclose(views[0], views[1])


def test_tensor_rows_scalar_targets_and_explicit_generator():
    features = [
        {
            "input_ids": torch.tensor([0, 7, 2]),
            "attention_mask": torch.tensor([1, 1, 1]),
            "bbox": torch.zeros(3, 4, dtype=torch.long),
            "pixel_values": torch.rand(3, 8, 8),
            "labels": 2,
            "start_positions": 1,
            "end_positions": 1,
            "image_id": "doc-1",
        }
        for _ in range(2)
    ]
    batch = AETNetDataCollator(augment=True, generator=torch.Generator().manual_seed(3))(features)
    assert batch["labels"].tolist() == [2, 2] and batch["start_positions"].shape == (2,)
    assert "image_id" not in batch and batch["pixel_values_aug"].shape == (2, 3, 8, 8)
    again = AETNetDataCollator(augment=True, generator=torch.Generator().manual_seed(3))(features)
    torch.testing.assert_close(batch["pixel_values_aug"], again["pixel_values_aug"])


def test_invalid_features_raise():
    with pytest.raises(ValueError, match="empty list"):
        AETNetDataCollator()([])
    with pytest.raises(ValueError, match=r"features\[1\]` lacks the key\(s\) \['bbox'\]"):
        AETNetDataCollator()([{"input_ids": [0, 2], "bbox": [[0, 0, 0, 0]] * 2}, {"input_ids": [0, 2]}])
    with pytest.raises(ValueError, match="`augment=True` needs `pixel_values`"):
        AETNetDataCollator(augment=True)([{"input_ids": [0, 2]}])
    with pytest.raises(ValueError, match="Cannot stack `pixel_values`"):
        AETNetDataCollator()([{"pixel_values": np.zeros((3, 8, 8))}, {"pixel_values": np.zeros((3, 4, 4))}])
    with pytest.raises(ValueError, match="`keep_keys` must be a sequence"):
        AETNetDataCollator(keep_keys="word_index")
