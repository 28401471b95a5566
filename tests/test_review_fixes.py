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
The defects found in a review of the objectives, each with the test that failed before its fix: GLITC's text locals
exclude `</s>`; a refused (non-finite) queue write leaves its slot invalid; cosine PITA on a page without boxed text
contributes 0; the distillation weight ramps from 0 over the first epoch by default; the temperature is back in range
after every optimizer step (and can have its own learning rate); the label set of a fine-tuned LayoutLMv3 is kept.
"""

import pytest
import torch
from conftest import tiny_config
from transformers import LayoutLMv3Config, LayoutLMv3ForTokenClassification, RobertaModel, TrainerCallback, ViTModel

from aetnet import AETNetConfig, AETNetForTokenClassification, AETNetModel, AETNetTrainer, AETNetTrainingArguments
from aetnet.data_collator import AETNetDataCollator
from aetnet.momentum import FeatureQueues
from aetnet.objective_pita import PatchTokenAlignmentLoss


VOCAB, SEQ_LEN, IMAGE = 99, 10, 16


make_config = tiny_config


def make_documents(count=8, seed=0) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    documents = []
    for _ in range(count):
        input_ids = torch.randint(5, VOCAB, (SEQ_LEN,), generator=generator)
        input_ids[0], input_ids[-3], input_ids[-2:] = 0, 2, 1  # <s> ... </s> <pad> <pad>
        attention_mask = torch.ones(SEQ_LEN, dtype=torch.long)
        attention_mask[-2:] = 0
        corner = torch.randint(0, 900, (SEQ_LEN, 2), generator=generator)
        bbox = torch.cat([corner, corner + 60], dim=-1)
        bbox[0] = bbox[-3:] = 0
        labels = torch.randint(0, 3, (SEQ_LEN,), generator=generator)
        labels[0] = labels[-3:] = -100
        documents.append(
            dict(
                input_ids=input_ids,
                bbox=bbox,
                attention_mask=attention_mask,
                labels=labels,
                pixel_values=torch.randn(3, IMAGE, IMAGE, generator=generator),
            )
        )
    return documents


def test_glitc_text_locals_exclude_every_special_and_padding_token():
    torch.manual_seed(0)
    model = AETNetModel(make_config()).train()
    masks = []
    model.objectives["glitc"].loss.register_forward_pre_hook(lambda module, args: masks.append(args[2].clone()))
    batch = AETNetDataCollator()(make_documents(2))
    batch.pop("labels")
    model(**batch)
    text_mask = masks[1]  # image locals first, then text locals
    real = batch["attention_mask"].bool() & ~torch.isin(batch["input_ids"], torch.tensor([0, 1, 2]))
    assert torch.equal(text_mask, real)
    assert not text_mask[:, SEQ_LEN - 3].any()  # </s>


def test_a_refused_queue_write_leaves_its_slot_invalid():
    queues = FeatureQueues(embed_dim=4, queue_size=6)
    features = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    features[1, 0] = float("nan")
    queues.enqueue(features, features.clone())
    assert queues.valid().tolist() == [True, False, True, False, False, False]
    assert queues.queue_ptr.item() == 3
    # A later finite write into that slot makes it valid; a refused write never invalidates an earlier good one.
    queues.enqueue(features, features.clone())  # slots 3, 4 (refused), 5
    queues.enqueue(features[:2].flip(0), features[:2].flip(0))  # slot 0 refused (keeps its entry), slot 1 written
    assert queues.valid().tolist() == [True, True, True, True, False, True]


def test_cosine_pita_without_boxed_text_contributes_zero():
    loss = PatchTokenAlignmentLoss(grid_size=2, loss="cosine")
    patches, tokens = torch.randn(2, 4, 8), torch.randn(2, 5, 8)
    bbox = torch.randint(0, 1000, (2, 5, 4)).sort(dim=-1).values
    value = loss(patches, tokens, bbox, torch.zeros(2, 5, dtype=torch.bool))
    assert value.item() == 0.0
    assert loss(patches, tokens, bbox, torch.ones(2, 5, dtype=torch.bool)).item() > 0.0


def make_trainer(tmp_path, **kwargs) -> AETNetTrainer:
    torch.manual_seed(0)
    args = AETNetTrainingArguments(
        output_dir=str(tmp_path),
        report_to="none",
        use_cpu=True,
        per_device_train_batch_size=2,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        **kwargs,
    )
    return AETNetTrainer(
        model=AETNetForTokenClassification(make_config()),
        args=args,
        train_dataset=make_documents(8),
        data_collator=AETNetDataCollator(),
    )


def test_distill_alpha_ramps_over_the_first_epoch_by_default(tmp_path):
    trainer = make_trainer(tmp_path, num_train_epochs=2, learning_rate=1e-4)
    alphas = []
    original = trainer.compute_loss

    def recording(model, inputs, **kwargs):
        # What DITC uses in this forward: its weight times the model's ramp, which the trainer's callback sets.
        alphas.append(model.aetnet.objectives["ditc"].distill_alpha * model.aetnet.distill_ramp)
        return original(model, inputs, **kwargs)

    trainer.compute_loss = recording
    trainer.train()
    # 8 documents in batches of 2: 4 steps an epoch; alpha = 0.4 * step / 4, then 0.4.
    assert alphas == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.4, 0.4, 0.4])
    assert trainer.model.aetnet.distill_ramp == 1.0  # after training: the full weight


class _TemperatureSpy(TrainerCallback):
    """Records the raw temperature parameter at the end of each step, after the optimizer step's callbacks."""

    def __init__(self, temp, seen):
        self.temp, self.seen = temp, seen

    def on_step_end(self, args, state, control, **kwargs):
        self.seen.append(self.temp.item())


def test_temperature_is_in_range_after_every_optimizer_step(tmp_path):
    # A learning rate that throws the temperature far out of its range at every step.
    trainer = make_trainer(tmp_path, max_steps=3, learning_rate=50.0, optim="sgd", max_grad_norm=0.0)
    seen = []
    trainer.add_callback(_TemperatureSpy(trainer.model.aetnet.temp, seen))
    trainer.train()
    assert len(seen) == 3
    assert all(0.001 <= value <= 0.5 for value in seen), seen


def test_temperature_learning_rate_puts_temp_in_its_own_group(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=1, learning_rate=1e-3, temperature_learning_rate=1e-5)
    optimizer = trainer.create_optimizer()
    temp = trainer.model.aetnet.temp
    groups = [group for group in optimizer.param_groups if any(p is temp for p in group["params"])]
    assert len(groups) == 1 and groups[0]["lr"] == 1e-5 and groups[0]["params"] == [temp]
    assert sum(len(group["params"]) for group in optimizer.param_groups) == len(
        [p for p in trainer.model.parameters() if p.requires_grad]
    )


def tiny_layoutlmv3_config(**kwargs) -> LayoutLMv3Config:
    reference = make_config().layout_config.to_dict()
    for key in ("id2label", "label2id"):
        reference.pop(key, None)
    return LayoutLMv3Config(**{**reference, **kwargs})


def test_a_layout_config_brings_its_label_set():
    labels = ["O", "B-HEADER", "I-HEADER", "B-QUESTION", "I-QUESTION", "B-ANSWER", "I-ANSWER"]
    id2label = dict(enumerate(labels))
    reference = make_config()
    config = AETNetConfig(
        layout_config=tiny_layoutlmv3_config(id2label=id2label),
        vision_config=reference.vision_config,
        text_config=reference.text_config,
    )
    assert config.num_labels == 7 and config.id2label == id2label
    assert (
        AETNetConfig(
            layout_config=tiny_layoutlmv3_config(id2label=id2label),
            vision_config=reference.vision_config,
            text_config=reference.text_config,
            num_labels=3,
        ).num_labels
        == 3
    )  # the caller's label set wins


def test_from_encoders_pretrained_takes_the_label_set_of_a_fine_tuned_layoutlmv3(tmp_path):
    labels = {i: f"TAG_{i}" for i in range(7)}
    torch.manual_seed(0)
    tagger = LayoutLMv3ForTokenClassification(tiny_layoutlmv3_config(id2label=labels))
    tagger.save_pretrained(tmp_path / "layout")
    reference = make_config()
    ViTModel(reference.vision_config, add_pooling_layer=False).save_pretrained(tmp_path / "vit")
    RobertaModel(reference.text_config, add_pooling_layer=False).save_pretrained(tmp_path / "roberta")
    model = AETNetForTokenClassification.from_encoders_pretrained(
        str(tmp_path / "layout"), str(tmp_path / "vit"), str(tmp_path / "roberta"), queue_size=8
    )
    assert model.config.id2label == labels
    torch.testing.assert_close(model.classifier.weight, tagger.classifier.weight)


def test_from_encoders_pretrained_reports_in_one_line(tmp_path, caplog):
    import transformers

    reference = make_config()
    LayoutLMv3ForTokenClassification(tiny_layoutlmv3_config()).layoutlmv3.save_pretrained(tmp_path / "layout")
    ViTModel(reference.vision_config, add_pooling_layer=False).save_pretrained(tmp_path / "vit")
    RobertaModel(reference.text_config, add_pooling_layer=False).save_pretrained(tmp_path / "roberta")
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_warning()
    transformers.logging.enable_propagation()  # so that caplog sees transformers' own load reports
    try:
        with caplog.at_level("WARNING"):
            AETNetForTokenClassification.from_encoders_pretrained(
                str(tmp_path / "layout"),
                str(tmp_path / "vit"),
                str(tmp_path / "roberta"),
                num_labels=3,
                queue_size=8,
            )
    finally:
        transformers.logging.disable_propagation()
        transformers.logging.set_verbosity(verbosity)
    # transformers' load reports (the head is missing from a bare LayoutLMv3) are gone; aetnet says it, once.
    messages = [(record.name, record.getMessage()) for record in caplog.records if record.levelname == "WARNING"]
    assert len(messages) == 1, messages
    name, message = messages[0]
    assert name.startswith("aetnet") and "Newly initialised" in message and "classifier.weight" in message
