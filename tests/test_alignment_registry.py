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
The objective registry: a new objective is one class plus its registration; the built-in four give the values they
gave before they moved into their own files; settings per objective; clear errors for unknown names and settings.
"""

import inspect

import pytest
import torch
from conftest import tiny_config, tiny_documents

from aetnet import AETNetForTokenClassification, AETNetModel, AETNetTrainer, AETNetTrainingArguments
from aetnet.alignment import (
    AlignmentFeatures,
    AlignmentObjective,
    get_objective,
    register_objective,
    registered_objectives,
)
from aetnet.alignment_schema import BUILT_IN_OBJECTIVES, ObjectiveSchema, objective_schema
from aetnet.data_collator import AETNetDataCollator
from aetnet.objectives import BUILT_IN_OBJECTIVE_CLASSES


VOCAB, IMAGE = 99, 16


@register_objective("toy_alignment")
class ToyAlignment(AlignmentObjective):
    """Squared distance of the online image and text [CLS] features, scaled: needs no momentum, no temperature."""

    trains = ("vision_model", "vision_proj", "text_model", "text_proj")

    def __init__(self, config, scale: float = 1.0):
        super().__init__(config)
        self.scale = scale

    def forward(self, features: AlignmentFeatures) -> torch.Tensor:
        return self.scale * (features.image_feat - features.text_feat).pow(2).sum(dim=-1).mean()


make_config = tiny_config
make_documents = tiny_documents


def test_a_new_objective_is_one_class_and_its_registration(tmp_path):
    assert registered_objectives()[:4] == ("ditc", "imc", "glitc", "pita")
    assert get_objective("toy_alignment") is ToyAlignment
    assert objective_schema("toy_alignment") == ObjectiveSchema(("scale",))  # what the config validates against
    config = make_config(alignment_objectives={"pita": {}, "toy_alignment": {"scale": 2.0}})
    assert not config.uses_momentum  # neither objective needs the momentum encoders
    torch.manual_seed(0)
    model = AETNetForTokenClassification(config)
    assert not hasattr(model.aetnet, "vision_model_m")
    args = AETNetTrainingArguments(
        output_dir=str(tmp_path / "run"),
        report_to="none",
        use_cpu=True,
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        loss_weights="toy_alignment=0.5",
    )
    trainer = AETNetTrainer(model=model, args=args, train_dataset=make_documents(), data_collator=AETNetDataCollator())
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2 and all("loss_toy_alignment" in entry and "loss_pita" in entry for entry in logs)
    trainer.save_model(str(tmp_path / "model"))
    reloaded = AETNetForTokenClassification.from_pretrained(tmp_path / "model")
    assert reloaded.config.alignment_objectives == ["pita", "toy_alignment"]
    assert reloaded.config.objective_settings == {"toy_alignment": {"scale": 2.0}}
    assert reloaded.config.alignment_loss_weights["toy_alignment"] == 0.5
    assert reloaded.aetnet.objectives["toy_alignment"].scale == 2.0
    batch = AETNetDataCollator()(make_documents(2))
    outputs = reloaded.train()(**batch)
    expected = outputs.task_loss + outputs.alignment_losses["pita"] + 0.5 * outputs.alignment_losses["toy_alignment"]
    torch.testing.assert_close(outputs.loss, expected)


def test_the_builtin_objectives_give_the_values_recorded_before_they_moved():
    # Recorded on the code before the objectives moved out of losses.py and the model (same seed and inputs).
    config = make_config(distill_alpha=0.4)
    torch.manual_seed(0)
    model = AETNetModel(config).train()
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, VOCAB, (3, 12), generator=generator)
    input_ids[:, 0], input_ids[:, -1] = 0, 2
    corner = torch.randint(0, 900, (3, 12, 2), generator=generator)
    bbox = torch.cat([corner, corner + 80], -1)
    bbox[:, 0] = bbox[:, -1] = 0
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, -3:], input_ids[2, -3:] = 0, 1
    pixels = torch.randn(3, 3, IMAGE, IMAGE, generator=generator)
    augmented = torch.randn(3, 3, IMAGE, IMAGE, generator=generator)
    recorded = [
        {"ditc": 1.118929, "imc": 1.12085, "glitc": 6.304018, "pita": 4.721691},
        {"ditc": 1.812076, "imc": 1.813997, "glitc": 6.304018, "pita": 4.721691},  # with the queue filled
    ]
    for expected in recorded:
        outputs = model(
            input_ids=input_ids,
            bbox=bbox,
            attention_mask=attention_mask,
            pixel_values=pixels,
            pixel_values_aug=augmented,
        )
        assert {k: round(v.item(), 6) for k, v in outputs.alignment_losses.items()} == pytest.approx(expected, abs=2e-6)


def test_settings_live_with_their_objective():
    config = make_config(alignment_objectives={"ditc": {"distill_alpha": 0.1}, "pita": {"loss": "cosine"}})
    assert config.alignment_objectives == ["ditc", "pita"]
    model = AETNetModel(config)
    assert model.objectives["ditc"].distill_alpha == 0.1
    assert model.objectives["pita"].loss.loss == "cosine"
    # The objective's own default (PITA's settings have no top-level config field any more).
    default_loss = inspect.signature(get_objective("pita")).parameters["loss"].default
    assert AETNetModel(make_config()).objectives["pita"].loss.loss == default_loss == "infonce"


@pytest.mark.parametrize(
    "objectives, message",
    [
        (["ditc", "nope"], "unknown objective 'nope'; registered: \\['ditc', 'imc', 'glitc', 'pita'"),
        ({"pita": {"loss_fn": "cosine"}}, "Objective 'pita' has no setting \\['loss_fn'\\]"),
        ({"pita": {"loss": "mse"}}, "PITA's `loss` must be one of"),
        ({"pita": {"span_policy": "first"}}, "PITA's `span_policy` must be one of"),
    ],
)
def test_unknown_objectives_and_settings_name_the_offender(objectives, message):
    with pytest.raises(ValueError, match=message):
        AETNetModel(make_config(alignment_objectives=objectives))


def test_the_configs_schema_of_the_built_in_objectives_is_their_classes():
    """The config validates names and settings against a torch-free table; the classes are the truth."""
    assert tuple(BUILT_IN_OBJECTIVE_CLASSES) == tuple(BUILT_IN_OBJECTIVES) == registered_objectives()[:9]
    for name, objective in BUILT_IN_OBJECTIVE_CLASSES.items():
        assert ObjectiveSchema.of(objective) == BUILT_IN_OBJECTIVES[name], name
        assert get_objective(name) is objective


def test_objective_generator_is_seeded_by_its_saved_draw_counter():
    """Objectives that draw masks get a generator seeded by a counter buffer: reproducible, new each training
    call, the same again after the counter is restored (exact resume), and not advanced in eval mode."""

    class Drawing(AlignmentObjective):
        needs_generator = True

    objective = Drawing(None).train()
    first = torch.rand(4, generator=objective.generator("cpu", seed=3))
    second = torch.rand(4, generator=objective.generator("cpu", seed=3))
    assert not torch.equal(first, second) and int(objective.draws) == 2
    restored = Drawing(None).train()
    restored.load_state_dict({"draws": torch.tensor(1)})
    torch.testing.assert_close(torch.rand(4, generator=restored.generator("cpu", seed=3)), second)
    restored.eval()
    restored.generator("cpu", seed=3)
    assert int(restored.draws) == 2


@pytest.mark.parametrize(
    "objectives, injection",
    [(["tia"], "add"), (["tim"], "none"), (["xmm_text"], "none"), (["pita"], "none"), (["toy_alignment"], "add")],
)
def test_every_trainable_parameter_gets_a_gradient(objectives, injection):
    """Shared parts no enabled objective (nor the injection) reaches are frozen, and every parameter left trainable
    gets a gradient: the condition for DDP without `find_unused_parameters` (the training arguments' default)."""
    torch.manual_seed(0)
    model = AETNetForTokenClassification(make_config(alignment_objectives=objectives, fusion_injection=injection))
    model.train()(**AETNetDataCollator()(make_documents(4))).loss.backward()
    missing = [name for name, param in model.named_parameters() if param.requires_grad and param.grad is None]
    assert missing == []
    if injection == "none" and objectives != ["pita"]:
        assert not any(p.requires_grad for p in model.aetnet.vision_model.parameters())


@pytest.mark.parametrize("extra", ["tia", "xmm_text", "psl"])
def test_switching_an_objective_on_leaves_every_other_initial_weight_as_it_was(extra):
    # Objectives draw their weights apart from the global random stream: an added objective (or one alone, with the
    # four at weight 0) starts from exactly the weights of the run it is compared with, task head included.
    def weights(objectives, seed=1):
        torch.manual_seed(seed)
        return AETNetForTokenClassification(make_config(alignment_objectives=objectives)).state_dict()

    four = ["ditc", "imc", "glitc", "pita"]
    reference, with_extra = weights(four), weights([*four, extra])
    assert set(with_extra) > set(reference)
    for key, value in reference.items():
        assert torch.equal(with_extra[key], value), key
    again, other_seed = weights([*four, extra]), weights([*four, extra], seed=2)
    head = next(key for key in with_extra if key.startswith(f"aetnet.objectives.{extra}.") and key.endswith("weight"))
    assert torch.equal(again[head], with_extra[head]) and not torch.equal(other_seed[head], with_extra[head])
    assert 0.0 < with_extra[head].float().std() < 0.1  # initialised as the model's other layers are
