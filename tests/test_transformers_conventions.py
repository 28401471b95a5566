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
What a transformers user does with any model, done with AETNet: a plain PyTorch loop on `outputs.loss` trains every
objective; `return_dict=False`; `resize_token_embeddings`; `device_map="auto"` with `max_memory` (offload);
`get_image_features` / `get_text_features` in the transformers 5 form.
"""

import copy

import pytest
import torch
from conftest import tiny_config
from transformers import AutoModelForTokenClassification
from transformers.modeling_outputs import BaseModelOutputWithPooling

from aetnet import (
    AETNetForQuestionAnswering,
    AETNetForSequenceClassification,
    AETNetForTokenClassification,
    AETNetModel,
)


VOCAB, SEQ_LEN, IMAGE = 99, 10, 16
HEADS = (AETNetForTokenClassification, AETNetForSequenceClassification, AETNetForQuestionAnswering)


def make_config(**kwargs):
    return tiny_config(**{"num_labels": 2, **kwargs})


def make_batch(model_class=AETNetForTokenClassification, batch_size=3, seed=0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, VOCAB, (batch_size, SEQ_LEN), generator=generator)
    input_ids[:, 0], input_ids[:, -1] = 0, 2
    corner = torch.randint(0, 900, (batch_size, SEQ_LEN, 2), generator=generator)
    bbox = torch.cat([corner, corner + 60], dim=-1)
    bbox[:, 0] = bbox[:, -1] = 0
    batch = dict(
        input_ids=input_ids,
        bbox=bbox,
        attention_mask=torch.ones_like(input_ids),
        pixel_values=torch.randn(batch_size, 3, IMAGE, IMAGE, generator=generator),
    )
    if model_class is AETNetForTokenClassification:
        batch["labels"] = torch.randint(0, 2, (batch_size, SEQ_LEN), generator=generator)
    elif model_class is AETNetForSequenceClassification:
        batch["labels"] = torch.randint(0, 2, (batch_size,), generator=generator)
    elif model_class is AETNetForQuestionAnswering:
        batch["start_positions"] = torch.tensor([1] * batch_size)
        batch["end_positions"] = torch.tensor([3] * batch_size)
    return batch


@pytest.mark.parametrize("model_class", HEADS)
def test_a_plain_pytorch_loop_changes_every_trainable_parameter(model_class):
    torch.manual_seed(0)
    model = model_class(make_config()).train()
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    trainable = [name for name, param in model.named_parameters() if param.requires_grad]
    # Plain SGD without weight decay: a parameter moves only if the loss gives it a gradient.
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for step in range(3):
        model(**make_batch(model_class, seed=step)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    unchanged = [name for name in trainable if torch.equal(dict(model.named_parameters())[name], before[name])]
    assert not unchanged
    assert {"aetnet.temp", "aetnet.vision_proj.weight", "aetnet.text_proj.weight"} <= set(trainable)
    # The model's own EMA step in each training forward moved the (frozen) momentum encoders as well.
    momentum = [n for n in before if "_m." in n]
    assert momentum and all(not dict(model.named_parameters())[n].requires_grad for n in momentum)
    assert any(not torch.equal(dict(model.named_parameters())[n], before[n]) for n in momentum)


@pytest.mark.parametrize("model_class", HEADS)
def test_loss_is_the_task_loss_plus_the_weighted_alignment_terms(model_class):
    weights = {"ditc": 0.5, "imc": 0.0, "glitc": 2.0, "pita": 1.0}
    torch.manual_seed(0)
    model = model_class(make_config(alignment_loss_weights=weights)).train()
    outputs = model(**make_batch(model_class))
    assert outputs.alignment_losses.keys() == weights.keys()
    expected = outputs.task_loss + sum(w * outputs.alignment_losses[k] for k, w in weights.items())
    torch.testing.assert_close(outputs.loss, expected)
    model.eval()
    with torch.no_grad():
        evaluated = model(**make_batch(model_class))
    assert evaluated.alignment_losses is None
    torch.testing.assert_close(evaluated.loss, evaluated.task_loss)  # nothing else is computed in eval mode


def test_the_base_model_loss_is_the_weighted_alignment_objective():
    torch.manual_seed(0)
    model = AETNetModel(make_config(alignment_loss_weights={"pita": 3.0})).train()
    outputs = model(**make_batch(None))
    expected = sum(outputs.alignment_losses.values()) + 2.0 * outputs.alignment_losses["pita"]
    torch.testing.assert_close(outputs.loss, expected)
    assert model.eval()(**make_batch(None)).loss is None


@pytest.mark.parametrize("model_class", (AETNetModel, *HEADS))
def test_return_dict_false_gives_the_tuple_of_the_output(model_class):
    torch.manual_seed(0)
    model = model_class(make_config()).eval()
    batch = make_batch(model_class)
    with torch.no_grad():
        expected = model(**batch).to_tuple()
        as_argument = model(**batch, return_dict=False)
        model.config.return_dict = False
        from_config = model(**batch)
    for result in (as_argument, from_config):
        assert isinstance(result, tuple) and len(result) == len(expected)
        for mine, theirs in zip(result, expected):
            torch.testing.assert_close(mine, theirs)


def test_resize_token_embeddings_resizes_both_text_readers_and_saves(tmp_path):
    torch.manual_seed(0)
    model = AETNetForTokenClassification(make_config())
    model.resize_token_embeddings(VOCAB + 5)
    base = model.aetnet
    for module in (base.layoutlmv3, base.text_model, base.text_model_m):
        assert module.get_input_embeddings().num_embeddings == VOCAB + 5
    assert model.config.layout_config.vocab_size == model.config.text_config.vocab_size == VOCAB + 5
    torch.testing.assert_close(
        base.text_model_m.get_input_embeddings().weight, base.text_model.get_input_embeddings().weight
    )
    assert not base.text_model_m.get_input_embeddings().weight.requires_grad
    batch = make_batch()
    batch["input_ids"][:, 1] = VOCAB + 4  # an id that only exists after resizing
    model.train()(**batch).loss.backward()
    model.save_pretrained(tmp_path)
    loaded = AETNetForTokenClassification.from_pretrained(tmp_path).eval()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits)


def test_device_map_auto_with_max_memory_offloads_and_gives_the_same_logits(tmp_path):
    torch.manual_seed(0)
    model = AETNetForTokenClassification(make_config()).eval()
    model.save_pretrained(tmp_path / "model")
    # Room for LayoutLMv3 (and a little more): the aligners, their momentum copies and the queues go to disk.
    # (Offloading LayoutLMv3 itself fails in transformers 5.24 for stock LayoutLMv3 too: its `visual_bbox` buffer is
    # not persistent, so an offloaded copy has no data.)
    layout_bytes = sum(t.numel() * t.element_size() for t in model.aetnet.layoutlmv3.state_dict().values())
    offloaded = AutoModelForTokenClassification.from_pretrained(
        tmp_path / "model",
        device_map="auto",
        max_memory={"cpu": int(layout_bytes * 1.2)},
        offload_folder=tmp_path / "offload",
    )
    device_map = offloaded.hf_device_map
    assert device_map["aetnet.vision_model"] == device_map["aetnet.queues"] == "disk"
    assert device_map["aetnet.layoutlmv3"] == "cpu"
    batch = make_batch()
    batch.pop("labels")
    with torch.no_grad():
        torch.testing.assert_close(offloaded(**batch).logits, model(**batch).logits)


@pytest.mark.parametrize("return_dict", [True, False])
def test_image_and_text_features_in_the_transformers_5_form(return_dict):
    torch.manual_seed(0)
    model = AETNetModel(make_config()).eval()
    batch = make_batch(None)
    with torch.no_grad():
        image = model.get_image_features(batch["pixel_values"], output_hidden_states=True, return_dict=return_dict)
        text = model.get_text_features(
            batch["input_ids"], batch["attention_mask"], output_hidden_states=True, return_dict=return_dict
        )
        full = model(**batch, return_alignment_losses=False)
    if not return_dict:
        assert isinstance(image, tuple) and isinstance(text, tuple)
        return
    assert isinstance(image, BaseModelOutputWithPooling) and isinstance(text, BaseModelOutputWithPooling)
    for features, embeds, layers in (
        (image, full.image_embeds, model.config.vision_config.num_hidden_layers),
        (text, full.text_embeds, model.config.text_config.num_hidden_layers),
    ):
        torch.testing.assert_close(features.last_hidden_state, embeds)
        assert features.pooler_output.shape == (3, model.config.embed_dim)
        torch.testing.assert_close(features.pooler_output.norm(dim=-1), torch.ones(3))
        assert len(features.hidden_states) == layers + 1
    # The features DITC compares: the normalised projections of the aligners' [CLS].
    torch.testing.assert_close(
        image.pooler_output, torch.nn.functional.normalize(model.vision_proj(full.image_embeds[:, 0]), dim=-1)
    )


def test_a_checkpoint_with_the_former_queue_layout_loads_with_empty_queues(tmp_path):
    torch.manual_seed(0)
    model = AETNetForTokenClassification(make_config()).train()
    model(**make_batch())
    model.save_pretrained(tmp_path)
    from safetensors.torch import load_file, save_file

    state = load_file(tmp_path / "model.safetensors")
    for name in ("image_queue", "text_queue", "queue_ptr", "queue_filled"):
        state[f"aetnet.{name}"] = state.pop(f"aetnet.queues.{name}")
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded = AETNetForTokenClassification.from_pretrained(tmp_path)
    assert loaded.aetnet.queue_filled.item() == 0
    reference = copy.deepcopy(model).eval()
    batch = make_batch()
    batch.pop("labels")
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**batch).logits, reference(**batch).logits)
