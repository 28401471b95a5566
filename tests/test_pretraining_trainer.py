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
`PreTrainingTrainer`'s normalisation of each objective over the whole optimizer step: two accumulated half batches
make the update and the logged losses of one whole batch, for the three pre-training models, although the halves
hold different numbers of masked tokens, masked patches and labelled words (a mean of per-batch means would differ).
The micro-batches stand in for the processes of a distributed run, which `test_run_pretraining.py` runs.
"""

import copy

import pytest
import torch
from transformers import RobertaForMaskedLM, TrainingArguments, ViTForMaskedImageModeling

from aetnet.pretraining import LayoutLMv3ForPreTraining, PreTrainingTrainer, pretraining_configs


VOCAB_SIZE = 99
LENGTH = 12
BATCH = 4
STEPS = 2


def _configs():
    configs = pretraining_configs("tiny", vocab_size=VOCAB_SIZE, max_length=32)
    for config in configs:
        config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    return configs


def _features(count: int) -> list[dict]:
    """Examples whose masks and labels are drawn once, here, with a number of masked items that varies a lot from one
    example to the next (from 1 to 9 tokens, 1 to 12 patches), so that each half batch has its own counts."""
    generator = torch.Generator().manual_seed(0)
    features = []
    for i in range(count):
        ids = torch.randint(5, VOCAB_SIZE, (LENGTH,), generator=generator)
        masked_tokens = torch.zeros(LENGTH, dtype=torch.bool)
        masked_tokens[1 : 2 + (7 * i) % 9] = True
        masked_patches = torch.zeros(16, dtype=torch.bool)
        masked_patches[: 1 + (5 * i) % 12] = True
        corners = torch.randint(0, 800, (LENGTH, 2), generator=generator)
        wpa_labels = torch.randint(0, 2, (LENGTH,), generator=generator).masked_fill(masked_tokens, -100)
        features.append(
            {
                "input_ids": ids.masked_fill(masked_tokens, 4),
                "bbox": torch.cat([corners, corners + 150], dim=-1),
                "attention_mask": torch.ones(LENGTH, dtype=torch.long),
                "pixel_values": torch.randn(3, 16, 16, generator=generator),
                "bool_masked_pos": masked_patches,
                "mlm_labels": ids.masked_fill(~masked_tokens, -100),
                "wpa_labels": wpa_labels,
                "labels": ids.masked_fill(~masked_tokens, -100),
            }
        )
    return features


def _model(component: str):
    torch.manual_seed(0)
    configs = _configs()
    if component == "layoutlmv3":
        return LayoutLMv3ForPreTraining(configs.layout)
    if component == "vit":
        return ViTForMaskedImageModeling(configs.vision)
    return RobertaForMaskedLM(configs.text)


INPUTS = {
    "layoutlmv3": (
        "input_ids",
        "bbox",
        "attention_mask",
        "pixel_values",
        "bool_masked_pos",
        "mlm_labels",
        "wpa_labels",
    ),
    "vit": ("pixel_values", "bool_masked_pos"),
    "roberta": ("input_ids", "attention_mask", "labels"),
}


def _train(model, component: str, features: list[dict], batch_size: int, accumulation: int, tmp_path) -> list[dict]:
    keys = INPUTS[component]
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=STEPS,
        logging_steps=1,
        learning_rate=1e-2,
        remove_unused_columns=False,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        dataloader_drop_last=True,
    )
    trainer = PreTrainingTrainer(
        model=model,
        args=args,
        train_dataset=features,
        data_collator=lambda batch: {key: torch.stack([example[key] for example in batch]) for key in keys},
    )
    trainer.train()
    return [entry for entry in trainer.state.log_history if "loss" in entry]


@pytest.mark.parametrize("component", ["layoutlmv3", "vit", "roberta"])
def test_accumulated_half_batches_make_the_update_of_one_batch(component, tmp_path):
    features = _features(BATCH * STEPS)
    whole_model, halves_model = _model(component), _model(component)
    whole = _train(whole_model, component, features, BATCH, 1, tmp_path / "whole")
    halves = _train(halves_model, component, features, BATCH // 2, 2, tmp_path / "halves")
    assert [entry["step"] for entry in halves] == list(range(1, STEPS + 1))
    # The update is compared through what it does, the losses and gradient norms of the next step: parameters whose
    # gradient is zero in exact arithmetic (a key bias under the softmax) get float noise that AdamW scales up.
    terms = ["grad_norm", *(key for key in whole[0] if key == "loss" or key.startswith("loss_"))]
    assert component != "layoutlmv3" or set(terms) == {"grad_norm", "loss", "loss_mlm", "loss_mim", "loss_wpa"}
    for a, b in zip(whole, halves):
        for key in terms:
            assert b[key] == pytest.approx(a[key], rel=1e-4), (a["step"], key)


def test_logged_terms_of_one_batch_are_the_model_means(tmp_path):
    """Without accumulation nor processes, each logged term is the objective's mean over the batch's items."""
    features = _features(BATCH)
    model = _model("layoutlmv3")
    expected = copy.deepcopy(model).train()
    batch = {key: torch.stack([example[key] for example in features]) for key in INPUTS["layoutlmv3"]}
    output = expected(**batch)
    (logged,) = _train(model, "layoutlmv3", features, BATCH, 1, tmp_path)[:1]
    for name in ("mlm", "mim", "wpa"):
        assert logged[f"loss_{name}"] == pytest.approx(getattr(output, f"{name}_loss").item(), rel=1e-5)
    assert logged["loss"] == pytest.approx(output.loss.item(), rel=1e-5)
