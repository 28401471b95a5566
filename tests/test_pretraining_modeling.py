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
`LayoutLMv3ForPreTraining` and the preset builders: the three objectives' losses, the mask embedding, chance levels,
and what the three pre-training models save: stock checkpoints that `LayoutLMv3Model`,
`LayoutLMv3ForTokenClassification`, `ViTModel` and `RobertaModel` load with no missing encoder weight, and that
`AETNetForTokenClassification.from_encoders_pretrained` takes.
"""

import math

import pytest
import torch
from transformers import (
    LayoutLMv3Config,
    LayoutLMv3ForTokenClassification,
    LayoutLMv3Model,
    RobertaModel,
    TrainerControl,
    TrainerState,
    TrainingArguments,
    ViTModel,
)

from aetnet import AETNetForTokenClassification
from aetnet.pretraining import (
    DataCollatorForLayoutLMv3PreTraining,
    DataCollatorForSimMIM,
    LayoutLMv3ForPreTraining,
    LayoutLMv3PreTrainingConfig,
    MaskingStepCallback,
    PreTrainingTrainer,
    build_pretraining_models,
    chance_levels,
    mlm_chance_level,
    pretraining_configs,
    token_log_frequencies,
)


VOCAB_SIZE = 99


def _models(**layout_kwargs):
    torch.manual_seed(0)
    return build_pretraining_models(
        "tiny",
        vocab_size=VOCAB_SIZE,
        max_length=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **layout_kwargs,
    )


def _features(count: int = 3, length: int = 20, image: int = 16) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    features = []
    for _ in range(count):
        ids = [0, *torch.randint(5, VOCAB_SIZE, (length - 2,), generator=generator).tolist(), 2]
        corners = torch.randint(0, 800, (length, 2), generator=generator)
        bbox = torch.cat([corners, corners + 200], dim=-1)
        bbox[0] = bbox[-1] = 0
        pixel_values = torch.randn(3, image, image, generator=generator)
        features.append(dict(input_ids=ids, bbox=bbox.tolist(), pixel_values=pixel_values))
    return features


@pytest.fixture(scope="module")
def models():
    return _models()


@pytest.fixture(scope="module")
def batch(models):
    return DataCollatorForLayoutLMv3PreTraining.from_config(models.layout.config)(_features())


def test_presets_match_the_fine_tuning_presets():
    for preset in ("tiny", "small"):
        configs = pretraining_configs(preset, vocab_size=500, max_length=64)
        assert configs.layout.model_type == "layoutlmv3" and configs.layout.max_position_embeddings == 66
        assert configs.vision.image_size == configs.layout.input_size
        assert configs.vision.patch_size == configs.vision.encoder_stride == configs.layout.patch_size
        assert configs.text.vocab_size == configs.layout.vocab_size == 500
        assert configs.text.hidden_size == configs.vision.hidden_size == configs.layout.hidden_size


def test_config_validates_and_round_trips_through_stock_layoutlmv3_config(tmp_path):
    config = pretraining_configs("tiny", vocab_size=VOCAB_SIZE, mim_target="pixels", mlm_weight=0.5).layout
    config.save_pretrained(tmp_path)
    assert LayoutLMv3PreTrainingConfig.from_pretrained(tmp_path).mlm_weight == 0.5
    stock = LayoutLMv3Config.from_pretrained(tmp_path)
    assert type(stock) is LayoutLMv3Config and stock.hidden_size == config.hidden_size
    with pytest.raises(ValueError, match="mim_target"):
        LayoutLMv3PreTrainingConfig(mim_target="dvae")
    with pytest.raises(ValueError, match="wpa_weight"):
        LayoutLMv3PreTrainingConfig(wpa_weight=-1.0)


def test_forward_computes_each_given_objective_and_their_weighted_sum(models, batch):
    model = models.layout.train()
    output = model(**batch)
    num_masked = int((batch["mlm_labels"] != -100).sum())
    assert output.mlm_logits.shape == (num_masked, VOCAB_SIZE)
    assert output.mim_logits.shape == (3, 16, 4 * 4 * 3) and output.wpa_logits.shape == batch["input_ids"].shape
    assert torch.allclose(output.loss, output.mlm_loss + output.mim_loss + output.wpa_loss)
    # Fresh heads: MLM near log(vocab), WPA near log 2.
    assert output.mlm_loss.item() == pytest.approx(math.log(VOCAB_SIZE), rel=0.25)
    assert output.wpa_loss.item() == pytest.approx(math.log(2), rel=0.25)
    output.loss.backward()
    # Every parameter but the relative-position tables, which transformers looks up under `no_grad`.
    no_grad = {name for name, p in model.named_parameters() if p.grad is None}
    assert no_grad == {
        f"layoutlmv3.encoder.{table}.weight" for table in ("rel_pos_bias", "rel_pos_x_bias", "rel_pos_y_bias")
    }
    model.zero_grad()
    text_only = {k: v for k, v in batch.items() if k not in ("bool_masked_pos", "wpa_labels")}
    output = model(**text_only)
    assert output.mim_loss is None and output.wpa_loss is None and torch.equal(output.loss, output.mlm_loss)


def test_weights_scale_the_terms(batch):
    model = _models(mlm_weight=0.0, mim_weight=2.0, wpa_weight=0.5).layout.train()
    output = model(**batch)
    assert torch.allclose(output.loss, 2.0 * output.mim_loss + 0.5 * output.wpa_loss)


def test_mask_embedding_replaces_the_masked_patches_only(models, batch):
    model = models.layout.eval()
    inputs = {key: batch[key] for key in ("input_ids", "bbox", "attention_mask", "pixel_values")}
    stock = model.layoutlmv3(**inputs).last_hidden_state
    unmasked = model(**inputs, bool_masked_pos=torch.zeros_like(batch["bool_masked_pos"])).last_hidden_state
    assert torch.allclose(stock, unmasked, atol=1e-6)
    # With every patch masked, the page's content no longer matters.
    everything = torch.ones_like(batch["bool_masked_pos"])
    first = model(**inputs, bool_masked_pos=everything).last_hidden_state
    other_page = torch.randn(inputs["pixel_values"].shape, generator=torch.Generator().manual_seed(1))
    noise = {**inputs, "pixel_values": other_page}
    assert torch.allclose(first, model(**noise, bool_masked_pos=everything).last_hidden_state, atol=1e-5)
    assert not torch.allclose(stock, model(**noise).last_hidden_state, atol=1e-3)
    with pytest.raises(ValueError, match="patches"):
        model(**inputs, bool_masked_pos=torch.zeros(3, 5, dtype=torch.bool))
    # The hook holds no mask after a call.
    assert torch.allclose(model.layoutlmv3(**inputs).last_hidden_state, stock)


def test_pixel_target_uses_l1(batch):
    model = _models(mim_target="pixels").layout.eval()
    output = model(**batch)
    masked = batch["bool_masked_pos"]
    pixels = batch["pixel_values"].unfold(2, 4, 4).unfold(3, 4, 4)  # (B, C, 4, 4, 4, 4)
    targets = pixels.permute(0, 2, 3, 4, 5, 1).flatten(3).flatten(1, 2)
    expected = (output.mim_logits[masked] - targets[masked]).abs().mean()
    assert output.mim_loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_chance_levels(models, batch):
    levels = models.layout.chance_levels(batch)
    assert set(levels) == {"mlm", "mlm_uniform", "mim", "wpa"}
    assert 0 < levels["mlm"] < levels["mlm_uniform"] == pytest.approx(math.log(VOCAB_SIZE))
    assert 0 < levels["wpa"] <= math.log(2) + 1e-9
    assert 0.9 < levels["mim"] <= 1.0  # standardised noise patches: about 1 per value around the mean patch
    assert "mlm" not in models.layout.chance_levels({k: v for k, v in batch.items() if k != "mlm_labels"})


def _entropy(*counts: int) -> float:
    total = sum(counts)
    return -sum(c / total * math.log(c / total) for c in counts)


def test_chance_levels_of_a_hand_built_batch(models):
    # Masked tokens 5, 5, 7, 9, 9; WPA labels three 1 and one 0; pages of 0s and of 1s, 16 patches each.
    batch = {
        "input_ids": torch.tensor([[0, 4, 4, 6], [4, 8, 4, 4]]),
        "mlm_labels": torch.tensor([[-100, 5, 5, -100], [7, -100, 9, 9]]),
        "wpa_labels": torch.tensor([[1, 1, 0, -100], [1, -100, -100, -100]]),
        "pixel_values": torch.stack([torch.zeros(3, 16, 16), torch.ones(3, 16, 16)]),
        "bool_masked_pos": torch.zeros(2, 16, dtype=torch.bool),
    }
    levels = models.layout.chance_levels(batch)
    assert levels["mlm"] == pytest.approx(_entropy(2, 1, 2))
    assert levels["mlm_uniform"] == pytest.approx(math.log(VOCAB_SIZE))
    assert levels["wpa"] == pytest.approx(_entropy(3, 1))  # not log 2
    assert levels["mim"] == pytest.approx(0.0)  # a uniform patch normalises to zeros: the mean patch is exact
    pixels = _models(mim_target="pixels").layout.chance_levels(batch)
    assert pixels["mim"] == pytest.approx(0.5)  # half the patches 0, half 1: the median (0) is off by 0.5
    # The aligners' stock models: RoBERTa's masked tokens; the ViT's masked pixels, all of the page of 0s and a
    # quarter of the page of 1s (64 of 320 pixels per channel are 1s: median 0, mean error 0.2).
    assert chance_levels(models.text, {"labels": batch["mlm_labels"]}) == pytest.approx(
        {"mlm": _entropy(2, 1, 2), "mlm_uniform": math.log(VOCAB_SIZE)}
    )
    masked = torch.tensor([[True] * 16, [True] * 4 + [False] * 12])
    level = chance_levels(models.vision, {"pixel_values": batch["pixel_values"], "bool_masked_pos": masked})
    assert level == pytest.approx({"mim": 4 / 20})


def test_mlm_chance_level_from_the_corpus_frequencies(models):
    # A corpus of tokens 5 (x6), 7 (x2), 9 (x1) and the special tokens 0 and 2, which are never masked and so not
    # counted; add-one smoothing over the rest of the vocabulary.
    corpus = [[0, 5, 5, 5, 7, 2], [0, 5, 5, 5, 7, 9, 2, 1, 1]]
    log_frequencies = token_log_frequencies(corpus, VOCAB_SIZE, special_ids=[0, 1, 2])
    total = 6 + 2 + 1 + (VOCAB_SIZE - 3)
    assert log_frequencies.exp()[[0, 1, 2]].tolist() == [0.0, 0.0, 0.0]
    assert log_frequencies.exp().sum().item() == pytest.approx(1.0)
    assert log_frequencies[5].item() == pytest.approx(math.log(7 / total))
    labels = torch.tensor([[-100, 5, 5, -100], [7, -100, 9, 9]])
    expected = -(2 * math.log(7 / total) + math.log(3 / total) + 2 * math.log(2 / total)) / 5
    assert mlm_chance_level(labels, log_frequencies) == pytest.approx(expected)
    # The corpus' frequencies fit the batch worse than its own: the corpus level is the higher, the honest one.
    assert mlm_chance_level(labels, log_frequencies) > mlm_chance_level(labels) == pytest.approx(_entropy(2, 1, 2))
    batch = {"mlm_labels": labels, "input_ids": torch.zeros_like(labels)}
    assert models.layout.chance_levels(batch, log_frequencies)["mlm"] == pytest.approx(expected)
    assert chance_levels(models.text, {"labels": labels}, log_frequencies)["mlm"] == pytest.approx(expected)


def test_losses_over_the_items_of_the_whole_step(models, batch):
    """Split in two, with each objective's count over both halves, the halves' losses add up to the whole's."""
    model = models.layout.train()
    whole = model(**batch)
    halves = [{key: value[rows] for key, value in batch.items()} for rows in (slice(0, 1), slice(1, 3))]
    counts = [LayoutLMv3ForPreTraining.count_objective_items(half) for half in halves]
    items = {name: counts[0][name] + counts[1][name] for name in counts[0]}
    assert items == LayoutLMv3ForPreTraining.count_objective_items(batch)
    outputs = [model(**half, num_items_per_objective=items) for half in halves]
    for name in ("loss", "mlm_loss", "mim_loss", "wpa_loss"):
        total = sum(getattr(output, name) for output in outputs)
        assert total.item() == pytest.approx(getattr(whole, name).item(), rel=1e-5), name


def test_locality_prior_of_the_spatial_tables(models):
    table = models.layout.layoutlmv3.encoder.rel_pos_x_bias.weight
    assert torch.equal(table[0], table[-1]) and table[0].max() > 1.0  # every head alike, not N(0, 0.02) noise
    model = LayoutLMv3ForPreTraining(
        pretraining_configs("tiny", vocab_size=VOCAB_SIZE, spatial_bias_init="random").layout
    )
    assert model.layoutlmv3.encoder.rel_pos_x_bias.weight.abs().max() < 0.2


def test_saved_layoutlmv3_loads_into_stock_classes_with_no_missing_encoder_weight(models, batch, tmp_path):
    models.layout.save_pretrained(tmp_path)
    inputs = {key: batch[key] for key in ("input_ids", "bbox", "attention_mask", "pixel_values")}
    expected = models.layout.eval().layoutlmv3(**inputs).last_hidden_state
    encoder, info = LayoutLMv3Model.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    assert info["unexpected_keys"] == {key for key in models.layout.state_dict() if not key.startswith("layoutlmv3.")}
    assert torch.allclose(encoder.eval()(**inputs).last_hidden_state, expected, atol=1e-6)
    tagger, info = LayoutLMv3ForTokenClassification.from_pretrained(tmp_path, num_labels=5, output_loading_info=True)
    assert info["missing_keys"] == {"classifier.weight", "classifier.bias"}
    reloaded, info = LayoutLMv3ForPreTraining.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert torch.equal(reloaded.mim_mask_token, models.layout.mim_mask_token)
    assert torch.equal(
        reloaded.layoutlmv3.encoder.rel_pos_x_bias.weight, models.layout.layoutlmv3.encoder.rel_pos_x_bias.weight
    )


def test_saved_aligners_load_into_vit_and_roberta_and_all_three_into_aetnet(models, tmp_path):
    folders = {name: tmp_path / name for name in ("layout", "vision", "text")}
    for name, folder in folders.items():
        getattr(models, name).save_pretrained(folder)
    vit, info = ViTModel.from_pretrained(folders["vision"], add_pooling_layer=False, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    assert torch.equal(
        vit.embeddings.patch_embeddings.projection.weight,
        models.vision.vit.embeddings.patch_embeddings.projection.weight,
    )
    roberta, info = RobertaModel.from_pretrained(folders["text"], add_pooling_layer=False, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    assert torch.equal(roberta.embeddings.word_embeddings.weight, models.text.roberta.embeddings.word_embeddings.weight)
    aetnet = AETNetForTokenClassification.from_encoders_pretrained(
        str(folders["layout"]), str(folders["vision"]), str(folders["text"]), num_labels=3, queue_size=8
    )
    assert torch.equal(
        aetnet.aetnet.layoutlmv3.embeddings.word_embeddings.weight,
        models.layout.layoutlmv3.embeddings.word_embeddings.weight,
    )


def test_vit_pretrains_with_the_simmim_collator(models):
    collator = DataCollatorForSimMIM.from_config(models.vision.config)
    batch = collator([{"pixel_values": torch.randn(3, 16, 16)} for _ in range(2)])
    output = models.vision(**batch)
    assert output.loss.item() > 0 and output.reconstruction.shape == (2, 3, 16, 16)


def test_masking_step_callback_numbers_batches_like_the_trainer(tmp_path):
    collator = DataCollatorForLayoutLMv3PreTraining(mask_token_id=4, grid_size=4)
    callback = MaskingStepCallback(collator)
    args = TrainingArguments(output_dir=str(tmp_path), gradient_accumulation_steps=3, report_to=[])
    state, control = TrainerState(), TrainerControl()
    state.global_step = 5
    callback.on_epoch_begin(args, state, control)
    assert collator.state_dict()["batch_index"] == 15
    collator(_features())
    callback.on_step_end(args, state, control)
    collator(_features())  # an evaluation batch
    callback.on_evaluate(args, state, control)
    assert collator.state_dict()["batch_index"] == 16


def test_trainer_logs_each_objective_and_evaluates(tmp_path):
    model = _models().layout
    collator = DataCollatorForLayoutLMv3PreTraining.from_config(model.config)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        max_steps=2,
        logging_steps=1,
        learning_rate=1e-3,
        remove_unused_columns=False,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
    )
    features = _features(count=4)
    trainer = PreTrainingTrainer(
        model=model, args=args, data_collator=collator, train_dataset=features, eval_dataset=features
    )
    assert any(isinstance(callback, MaskingStepCallback) for callback in trainer.callback_handler.callbacks)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged and all({"loss_mlm", "loss_mim", "loss_wpa"} <= set(entry) for entry in logged)
    metrics = trainer.evaluate()
    assert {"eval_loss", "eval_loss_mlm", "eval_loss_mim", "eval_loss_wpa"} <= set(metrics)
    assert metrics["eval_loss"] == pytest.approx(
        metrics["eval_loss_mlm"] + metrics["eval_loss_mim"] + metrics["eval_loss_wpa"], rel=1e-4
    )
