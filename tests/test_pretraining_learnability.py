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
Learnability of LayoutLMv3's pre-training objectives, with the convention of `test_learnability.py`: each objective,
trained alone on a small fixed corpus, falls clearly below its own chance level
(`LayoutLMv3ForPreTraining.chance_levels`), so that an objective that silently stops learning (a lost gradient, a
mask that never reaches the encoder, a wrong target) fails CI.

The corpus is 8 synthetic forms (`generate_synthetic_forms`) read with a BPE tokenizer trained on their words, the
pages at 32 px in 4 px patches (an 8 x 8 grid) as in `test_learnability.py`. Masks are drawn anew at every step by
the collator, as in pre-training.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from aetnet.data import generate_synthetic_forms
from aetnet.data.tokenizer_training import train_layoutlmv3_tokenizer
from aetnet.pretraining import DataCollatorForLayoutLMv3PreTraining, LayoutLMv3ForPreTraining, pretraining_configs


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_learnability import LAST, ratio_to_chance  # noqa: E402


IMAGE_SIZE = 32
MAX_LENGTH = 64
NUM_DOCUMENTS = 8
STEPS = 300
LEARNING_RATE = 5e-3
# Passing: within STEPS steps, the mean loss of the last LAST steps below this fraction of their mean chance level.
MARGIN = 0.8
OBJECTIVES = ("mlm", "mim", "wpa")


def pretraining_corpus() -> tuple[int, int, list[dict]]:
    """The tokenizer's `<mask>` id, its vocabulary size and the processed forms."""
    forms = generate_synthetic_forms(NUM_DOCUMENTS, seed=0, image_size=(500, 500))
    tokenizer = train_layoutlmv3_tokenizer(forms["words"], vocab_size=400)
    features = []
    for words, boxes, image in zip(forms["words"], forms["bboxes"], forms["image"]):
        encoding = tokenizer(words, boxes=boxes, truncation=True, max_length=MAX_LENGTH)
        page = np.asarray(image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE)), dtype=np.float32)
        features.append(
            dict(
                input_ids=encoding["input_ids"],
                bbox=encoding["bbox"],
                attention_mask=encoding["attention_mask"],
                pixel_values=torch.from_numpy(page).permute(2, 0, 1) / 127.5 - 1.0,  # LayoutLMv3's 0.5 / 0.5
                word_index=[-1 if word is None else word for word in encoding.word_ids()],
            )
        )
    return tokenizer.mask_token_id, len(tokenizer), features


@pytest.fixture(scope="module")
def corpus():
    return pretraining_corpus()


def train_alone(name: str, corpus, seed: int = 0) -> tuple[list[float], list[float]]:
    """Train a tiny `LayoutLMv3ForPreTraining` with only `name` weighted, until clearly below chance or STEPS."""
    mask_token_id, vocab_size, features = corpus
    torch.manual_seed(seed)
    weights = {f"{objective}_weight": float(objective == name) for objective in OBJECTIVES}
    config = pretraining_configs(
        "tiny",
        vocab_size=vocab_size,
        max_length=MAX_LENGTH,
        input_size=IMAGE_SIZE,
        mask_token_id=mask_token_id,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **weights,
    ).layout
    model = LayoutLMv3ForPreTraining(config).train()
    # WPA's labels need the patch masks (its MIM term is computed, with weight 0); MLM alone needs no image mask.
    collator = DataCollatorForLayoutLMv3PreTraining.from_config(
        config, mlm=name == "mlm", mim=name != "mlm", wpa=name == "wpa", seed=seed
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.0)
    losses, chances = [], []
    for _ in range(STEPS):
        batch = collator(features)
        output = model(**batch)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(getattr(output, f"{name}_loss").item())
        chances.append(model.chance_levels(batch)[name])
        if len(losses) >= LAST and ratio_to_chance(losses, chances) < MARGIN:
            break
    return losses, chances


@pytest.mark.parametrize("name", OBJECTIVES)
def test_pretraining_objective_learns_below_chance(name, corpus):
    losses, chances = train_alone(name, corpus)
    assert all(c > 0 for c in chances), f"{name}: chance levels {chances[:3]}... must be positive"
    ratio = ratio_to_chance(losses, chances)
    assert ratio < MARGIN, (
        f"{name} did not learn: last-{LAST} loss {sum(losses[-LAST:]) / LAST:.3f} is {ratio:.2f} x its chance "
        f"level {sum(chances[-LAST:]) / LAST:.3f} (needs < {MARGIN}); first losses {losses[:3]}"
    )
