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
"""Helpers shared by the AETNetProcessor tests: a tiny vocabulary and corpus, fake documents, one-hot logits, and the
`tokenizer` / `processor` / `process` fixtures (imported by each test file)."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import LayoutLMv3ImageProcessorPil

from aetnet import AETNetProcessor
from aetnet.data.tokenizer_training import train_layoutlmv3_tokenizer


VOCAB = ["invoice", "total", "amount", "due", "date", "name", "address", "phone", "number", "company", "the", "of"]
LOGGER = "aetnet.processing_aetnet"


def corpus(seed: int = 0, num_docs: int = 40) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(VOCAB) for _ in range(25)) for _ in range(num_docs)]


def make_document(num_words: int, seed: int = 0, width: int = 200, height: int = 100):
    """Words mixing known words (one token) and unknown strings (several tokens), with in-page pixel boxes."""
    rng = random.Random(seed)
    words = [
        rng.choice(VOCAB) if rng.random() < 0.5 else rng.choice(VOCAB) + "zq" * rng.randint(1, 4)
        for _ in range(num_words)
    ]
    boxes = []
    for _ in range(num_words):
        x0, y0 = rng.randint(0, width - 20), rng.randint(0, height - 10)
        boxes.append([x0, y0, x0 + rng.randint(1, 20), y0 + rng.randint(1, 10)])
    labels = [rng.randint(0, 6) for _ in range(num_words)]
    return words, boxes, labels


def one_hot_logits(ids: torch.Tensor, num_classes: int, scale: float = 20.0) -> torch.Tensor:
    """Logits that name `ids` (a class per token; -1 tokens get class 0): the merged probabilities' argmax."""
    return torch.nn.functional.one_hot(ids.long().clamp(min=0), num_classes).float() * scale


@pytest.fixture(scope="module")
def tokenizer():
    return train_layoutlmv3_tokenizer(corpus(), vocab_size=320)


@pytest.fixture
def processor(tokenizer):
    image_processor = LayoutLMv3ImageProcessorPil(apply_ocr=False, size={"height": 16, "width": 16})
    return AETNetProcessor(image_processor=image_processor, tokenizer=tokenizer)


@pytest.fixture
def process(processor):
    """The processor with short windows (the default stride of 128 needs max_length > 130)."""

    def call(*args, **kwargs):
        kwargs.setdefault("max_length", 64)
        kwargs.setdefault("stride", 16)
        return processor(*args, **kwargs)

    return call
