"""Helpers shared by the AETNetProcessor tests: a tiny vocabulary and corpus, fake documents, one-hot logits."""

from __future__ import annotations

import random

import torch


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
