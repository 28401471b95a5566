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
AETNet runs on the modalities it is given, as LayoutLMv3 does: text and layout without the page image, or the image
alone. The aligner of a missing modality does not run, the objectives that read it are reported in
`skipped_objectives` (never a zero term), the queues are not advanced, and the trainer logs the skips.
"""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config
from torch import nn

from aetnet import (
    AETNetForQuestionAnswering,
    AETNetForSequenceClassification,
    AETNetForTokenClassification,
    AETNetModel,
    AETNetTrainer,
    AETNetTrainingArguments,
)
from aetnet.alignment import MODALITIES, AlignmentFeatures, AlignmentObjective, register_objective
from aetnet.data_collator import AETNetDataCollator
from aetnet.objectives import BUILT_IN_OBJECTIVE_CLASSES
from aetnet.training.trainer_utils import LossTermLog


BATCH, LENGTH, IMAGE, VOCAB = 2, 8, 16, 99
DEFAULT_OBJECTIVES = ("ditc", "imc", "glitc", "pita")
SEEN: dict[str, AlignmentFeatures] = {}


@register_objective("text_only_probe")
class TextOnlyProbe(AlignmentObjective):
    """A plug-in that reads the text aligners alone (online and momentum), so that it runs on pages without an
    image."""

    modalities = ("text",)
    needs_momentum = True
    trains = ("text_model",)

    def forward(self, features: AlignmentFeatures) -> torch.Tensor:
        SEEN["text_only_probe"] = features
        return features.text_embeds.pow(2).mean() + features.text_feat_m.sum() * 0.0


@register_objective("image_only_probe")
class ImageOnlyProbe(AlignmentObjective):
    """A plug-in that reads the image aligners alone (online and momentum), so that it runs on an image without
    text."""

    modalities = ("image",)
    needs_momentum = True
    trains = ("vision_model",)

    def forward(self, features: AlignmentFeatures) -> torch.Tensor:
        SEEN["image_only_probe"] = features
        return features.patch_embeds.pow(2).mean() + features.image_feat_m.sum() * 0.0


def make_batch(text: bool = True, image: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    batch = {}
    if text:
        input_ids = torch.randint(5, VOCAB, (BATCH, LENGTH), generator=generator)
        input_ids[:, 0], input_ids[:, -1] = 0, 2
        corner = torch.randint(0, 900, (BATCH, LENGTH, 2), generator=generator)
        bbox = torch.cat([corner, corner + 80], dim=-1)
        bbox[:, 0] = bbox[:, -1] = 0
        batch.update(input_ids=input_ids, bbox=bbox, attention_mask=torch.ones(BATCH, LENGTH, dtype=torch.long))
    if image:
        batch["pixel_values"] = torch.randn(BATCH, 3, IMAGE, IMAGE, generator=generator)
    return batch


def calls(module: nn.Module) -> list[int]:
    """A list that grows by one at every forward of `module`."""
    seen = []
    module.register_forward_hook(lambda *args: seen.append(1))
    return seen


# ------------------------------------------------------------------------------------------------------- forward


@pytest.mark.parametrize("injection", ["none", "gated", "add"])
def test_text_only_eval_is_layoutlmv3_on_text_plus_the_text_aligner(injection):
    torch.manual_seed(0)
    model = AETNetForTokenClassification(tiny_config(fusion_injection=injection)).eval()
    if model.aetnet.text_gate is not None:
        with torch.no_grad():
            model.aetnet.text_gate.fill_(0.5)  # a gate that lets the text through, so that the injection shows
    vision_calls, text_calls = calls(model.aetnet.vision_model), calls(model.aetnet.text_model)
    batch = make_batch(image=False)
    with torch.no_grad():
        outputs = model(**batch, output_hidden_states=True)
        baseline = model.to_layoutlmv3().eval()
        aligned = None
        if injection != "none":
            aligned = model.aetnet.text_model(batch["input_ids"], attention_mask=batch["attention_mask"])[0]
            aligned = aligned * (0.5 if injection == "gated" else 1.0)
        fused = model.aetnet.layoutlmv3(**batch, aligned_text_embeds=aligned).last_hidden_state
    assert vision_calls == []  # no page: the ViT aligner neither runs nor injects
    assert len(text_calls) == (0 if injection == "none" else 2)
    assert outputs.logits.shape == (BATCH, LENGTH, 3) and outputs.alignment_losses is None
    assert outputs.skipped_objectives is None  # nothing was asked for in eval mode
    assert outputs.hidden_states[-1].shape == (BATCH, LENGTH, 36)  # text tokens only, no visual tokens
    torch.testing.assert_close(outputs.logits, model.classifier(fused))
    if injection == "none":
        torch.testing.assert_close(outputs.logits, baseline(**batch).logits)


def test_image_only_eval_classifies_the_page_as_layoutlmv3_does():
    torch.manual_seed(0)
    model = AETNetForSequenceClassification(tiny_config(fusion_injection="none")).eval()
    text_calls = calls(model.aetnet.text_model)
    batch = make_batch(text=False)
    with torch.no_grad():
        logits = model(**batch).logits
        expected = model.to_layoutlmv3().eval()(**batch).logits
    assert text_calls == [] and logits.shape == (BATCH, 3)
    torch.testing.assert_close(logits, expected)
    qa = AETNetForQuestionAnswering(tiny_config(num_labels=2)).eval()
    with torch.no_grad():
        assert qa(**batch).start_logits.shape == (BATCH, 1 + (IMAGE // 4) ** 2)


def test_the_errors_name_what_is_missing():
    model = AETNetModel(tiny_config()).train()
    with pytest.raises(ValueError, match=r"`input_ids` \(text\), `pixel_values` \(the page image\) or both"):
        model(bbox=make_batch()["bbox"])
    with pytest.raises(ValueError, match="`pixel_values_aug`.*without `pixel_values`"):
        model(**make_batch(image=False), pixel_values_aug=torch.zeros(BATCH, 3, IMAGE, IMAGE))
    with pytest.raises(ValueError, match="AETNetForTokenClassification labels text tokens: `input_ids`"):
        AETNetForTokenClassification(tiny_config())(**make_batch(text=False))


# --------------------------------------------------------------------------------------------- objectives and queues


def test_every_objective_module_declares_its_modalities():
    for name, cls in BUILT_IN_OBJECTIVE_CLASSES.items():
        assert "modalities" in vars(cls), name  # declared in its own module, not inherited
        assert cls.modalities and set(cls.modalities) <= set(MODALITIES), name


def test_an_objective_must_name_known_modalities():
    with pytest.raises(ValueError, match=r"`Audio.modalities` must name one or more of \('image', 'text'\)"):

        @register_objective("audio_probe")
        class Audio(AlignmentObjective):
            modalities = ("audio",)


@pytest.mark.parametrize("missing", ["image", "text"])
def test_training_without_a_modality_runs_what_it_can_and_reports_the_rest(missing):
    torch.manual_seed(0)
    objectives = [*DEFAULT_OBJECTIVES, "text_only_probe", "image_only_probe"]
    model = AETNetModel(tiny_config(alignment_objectives=objectives)).train()
    SEEN.clear()
    outputs = model(**make_batch(text=missing != "text", image=missing != "image"))
    runs = "text_only_probe" if missing == "image" else "image_only_probe"
    skipped = (*DEFAULT_OBJECTIVES, "image_only_probe" if missing == "image" else "text_only_probe")
    assert set(outputs.alignment_losses) == {runs}  # the skipped terms have no key at all, not a zero
    assert outputs.skipped_objectives == skipped
    torch.testing.assert_close(outputs.loss, outputs.alignment_losses[runs])
    assert list(SEEN) == [runs]
    features = SEEN[runs]
    if missing == "image":
        assert features.pixel_values is None and features.image_embeds is None and features.image_feat is None
        assert features.image_feat_m is None and features.patch_embeds_m is None
        assert features.text_embeds is not None and features.real_tokens is not None
    else:
        assert features.input_ids is None and features.text_embeds is None and features.real_tokens is None
        assert features.text_feat_m is None and features.text_embeds_m is None
        assert features.patch_embeds is not None
    outputs.loss.backward()
    assert model.text_model.embeddings.word_embeddings.weight.grad is not None or missing == "text"
    full = model(**make_batch())
    assert set(full.alignment_losses) == set(objectives) and full.skipped_objectives is None


def test_a_text_only_training_step_of_a_head_backpropagates_the_task_loss():
    torch.manual_seed(0)
    model = AETNetForTokenClassification(tiny_config()).train()
    batch = make_batch(image=False)
    labels = torch.randint(0, 3, (BATCH, LENGTH))
    outputs = model(**batch, labels=labels)
    assert outputs.alignment_losses == {} and outputs.skipped_objectives == DEFAULT_OBJECTIVES
    torch.testing.assert_close(outputs.loss, outputs.task_loss)
    outputs.loss.backward()
    assert model.classifier.weight.grad is not None
    assert model.aetnet.layoutlmv3.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.aetnet.vision_model.parameters())  # the ViT never ran
    # In eval mode with the terms asked for, the skip is reported too.
    with torch.no_grad():
        asked = model.eval()(**batch, return_alignment_losses=True)
    assert asked.alignment_losses == {} and asked.skipped_objectives == DEFAULT_OBJECTIVES


@pytest.mark.parametrize("missing", ["image", "text"])
def test_a_step_without_a_modality_leaves_the_queues_as_they_are(missing):
    torch.manual_seed(0)
    probes = ["text_only_probe", "image_only_probe"]  # momentum objectives that still run without one modality
    model = AETNetModel(tiny_config(alignment_objectives=[*DEFAULT_OBJECTIVES, *probes])).train()
    model(**make_batch(seed=1))  # one full step: the queues hold 2 pages
    before = {name: buffer.clone() for name, buffer in model.queues.named_buffers()}
    assert int(model.queue_filled) == BATCH and int(model.queue_ptr) == BATCH
    outputs = model(**make_batch(text=missing != "text", image=missing != "image", seed=2))
    assert len(outputs.alignment_losses) == 1  # a probe ran, with the momentum features of its modality
    for name, buffer in model.queues.named_buffers():
        assert torch.equal(buffer, before[name]), name
    model(**make_batch(seed=3))  # a full step writes again, at the next slots
    assert int(model.queue_filled) == 2 * BATCH and int(model.queue_ptr) == 2 * BATCH


def test_the_base_model_leads_with_the_hidden_state_the_heads_read():
    torch.manual_seed(0)
    model = AETNetModel(tiny_config()).train()
    outputs = model(**make_batch(), output_hidden_states=True)
    assert outputs[0] is outputs.last_hidden_state and outputs.loss is not None
    first = outputs.hidden_states[0]
    first.retain_grad()
    outputs[0].flatten()[0].backward()
    assert first.grad is not None


# -------------------------------------------------------------------------------------------------------- logging


class IdentityAccelerator:
    """`accelerator.gather` of a single process."""

    @staticmethod
    def gather(tensor):
        return tensor


def test_the_term_log_reports_skips_and_never_averages_in_a_zero():
    log = LossTermLog()
    log.add("train", {"task": torch.tensor(1.0), "ditc": torch.tensor(3.0)})
    log.add("train", {"task": torch.tensor(2.0)}, skipped=("ditc", "pita"))
    logs = log.flush("train", IdentityAccelerator(), torch.device("cpu"))
    assert logs == {"loss_task": 1.5, "loss_ditc": 3.0, "skipped_ditc": 1, "skipped_pita": 1}
    log.add("eval", {"task": torch.tensor(2.0)}, skipped=("ditc",))
    assert log.flush("eval", IdentityAccelerator(), torch.device("cpu"), "eval_") == {
        "eval_loss_task": 2.0,
        "eval_skipped_ditc": 1,
    }


def documents(count: int, image: bool, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    batch = make_batch(image=image, seed=seed)
    labels = torch.randint(0, 3, (BATCH, LENGTH), generator=torch.Generator().manual_seed(seed))
    rows = [{key: value[i] for key, value in batch.items()} | {"labels": labels[i]} for i in range(BATCH)]
    return (rows * count)[:count]


def test_the_trainer_logs_skipped_terms_instead_of_zeros(tmp_path):
    torch.manual_seed(0)
    model = AETNetForTokenClassification(tiny_config())
    before = model.classifier.weight.detach().clone()
    args = AETNetTrainingArguments(
        output_dir=str(tmp_path),
        report_to="none",
        use_cpu=True,
        max_steps=2,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        learning_rate=1e-2,
    )
    trainer = AETNetTrainer(
        model=model,
        args=args,
        train_dataset=documents(4, image=False),
        eval_dataset=documents(2, image=False),
        data_collator=AETNetDataCollator(augment=False),
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2 and not torch.equal(model.classifier.weight.detach(), before)
    for entry in logs:
        assert "loss_task" in entry
        assert not any(f"loss_{name}" in entry for name in DEFAULT_OBJECTIVES), entry
        assert all(entry[f"skipped_{name}"] == 1 for name in DEFAULT_OBJECTIVES), entry
    assert int(model.aetnet.queue_filled) == 0
    metrics = trainer.evaluate()
    assert "eval_loss_task" in metrics and metrics["eval_skipped_ditc"] == 1
    assert not any(f"eval_loss_{name}" in metrics for name in DEFAULT_OBJECTIVES)
