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
"""AETNet models on tiny configs: the model's and the heads' outputs, parity with LayoutLMv3, conversion to it."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    LayoutLMv3Config,
    LayoutLMv3ForQuestionAnswering,
    LayoutLMv3ForSequenceClassification,
    LayoutLMv3ForTokenClassification,
    RobertaConfig,
    ViTConfig,
)

from aetnet import (
    AETNetConfig,
    AETNetForQuestionAnswering,
    AETNetForSequenceClassification,
    AETNetForTokenClassification,
    AETNetModel,
)
from aetnet.modeling_aetnet_layoutlmv3 import AETNetLayoutLMv3Model


class AETNetModelTester:
    """Tiny dimensions in the style of transformers' LayoutLMv3ModelTester (hidden 36 = 4 * 6 + 2 * 6)."""

    def __init__(
        self,
        batch_size=2,
        text_seq_length=7,
        vocab_size=99,
        hidden_size=36,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        coordinate_size=6,
        shape_size=6,
        image_size=8,
        patch_size=2,
        embed_dim=16,
        queue_size=8,
        num_labels=3,
    ):
        self.__dict__.update({k: v for k, v in locals().items() if k != "self"})
        self.grid = image_size // patch_size
        self.visual_length = self.grid**2 + 1

    def get_config(self, **kwargs) -> AETNetConfig:
        shared = dict(
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        layout = LayoutLMv3Config(
            **shared,
            vocab_size=self.vocab_size,
            coordinate_size=self.coordinate_size,
            shape_size=self.shape_size,
            input_size=self.image_size,
            patch_size=self.patch_size,
            max_position_embeddings=64,
        )
        vision = ViTConfig(**shared, image_size=self.image_size, patch_size=self.patch_size)
        text = RobertaConfig(**shared, vocab_size=self.vocab_size, max_position_embeddings=64)
        kwargs.setdefault("num_labels", self.num_labels)
        return AETNetConfig(
            layout_config=layout,
            vision_config=vision,
            text_config=text,
            embed_dim=self.embed_dim,
            queue_size=self.queue_size,
            **kwargs,
        )

    def prepare_inputs(self, batch_size=None, seed=0) -> dict[str, torch.Tensor]:
        batch_size = batch_size or self.batch_size
        generator = torch.Generator().manual_seed(seed)
        input_ids = torch.randint(3, self.vocab_size, (batch_size, self.text_seq_length), generator=generator)
        input_ids[:, 0], input_ids[:, -1] = 0, 2  # <s> ... </s>
        corners = torch.randint(0, 1000, (batch_size, self.text_seq_length, 2, 2), generator=generator)
        bbox = torch.cat([corners.min(dim=2).values, corners.max(dim=2).values], dim=-1)
        bbox[:, 0], bbox[:, -1] = 0, 0
        attention_mask = torch.ones_like(input_ids)
        if batch_size > 1:  # pad the end of the second document
            input_ids[1, -2:], attention_mask[1, -2:], bbox[1, -2:] = 1, 0, 0
        pixel_values = torch.randn(batch_size, 3, self.image_size, self.image_size, generator=generator)
        return dict(input_ids=input_ids, bbox=bbox, attention_mask=attention_mask, pixel_values=pixel_values)

    def labels_for(self, head, batch_size):
        generator = torch.Generator().manual_seed(1)
        if head is AETNetForTokenClassification:
            return dict(
                labels=torch.randint(0, self.num_labels, (batch_size, self.text_seq_length), generator=generator)
            )
        if head is AETNetForSequenceClassification:
            return dict(labels=torch.randint(0, self.num_labels, (batch_size,), generator=generator))
        return dict(start_positions=torch.tensor([1] * batch_size), end_positions=torch.tensor([3] * batch_size))

    def create_and_check_model(self, config):
        model = AETNetModel(config).eval()
        outputs = model(**self.prepare_inputs())
        expected = (self.batch_size, self.text_seq_length + self.visual_length, self.hidden_size)
        assert outputs.last_hidden_state.shape == expected
        assert outputs.image_embeds.shape == (self.batch_size, self.visual_length, self.hidden_size)
        assert outputs.text_embeds.shape == (self.batch_size, self.text_seq_length, self.hidden_size)
        assert outputs.alignment_losses is None

    def create_and_check_head(self, config, head):
        model = head(config).train()
        inputs = self.prepare_inputs()
        outputs = model(**inputs, **self.labels_for(head, self.batch_size))
        if head is AETNetForTokenClassification:
            assert outputs.logits.shape == (self.batch_size, self.text_seq_length, self.num_labels)
        elif head is AETNetForSequenceClassification:
            assert outputs.logits.shape == (self.batch_size, self.num_labels)
        else:
            total = self.text_seq_length + self.visual_length
            assert outputs.start_logits.shape == outputs.end_logits.shape == (self.batch_size, total)
        assert outputs.loss.ndim == 0 and set(outputs.alignment_losses) == {"ditc", "imc", "glitc", "pita"}


HEADS = [AETNetForTokenClassification, AETNetForSequenceClassification, AETNetForQuestionAnswering]
LAYOUTLMV3_HEADS = {
    AETNetForTokenClassification: (LayoutLMv3ForTokenClassification, "classifier"),
    AETNetForSequenceClassification: (LayoutLMv3ForSequenceClassification, "classifier"),
    AETNetForQuestionAnswering: (LayoutLMv3ForQuestionAnswering, "qa_outputs"),
}


@pytest.fixture
def tester():
    torch.manual_seed(0)
    return AETNetModelTester()


def _head_config(tester, head, **kwargs):
    num_labels = 2 if head is AETNetForQuestionAnswering else tester.num_labels
    return tester.get_config(num_labels=num_labels, **kwargs)


def _logits(outputs):
    if hasattr(outputs, "start_logits"):
        return torch.cat([outputs.start_logits, outputs.end_logits], dim=-1)
    return outputs.logits


def test_model_outputs(tester):
    tester.create_and_check_model(tester.get_config())


@pytest.mark.parametrize("head", HEADS)
def test_heads(tester, head):
    tester.create_and_check_head(_head_config(tester, head), head)


@pytest.mark.parametrize("injection", ["none", "gated"])
@pytest.mark.parametrize("head", HEADS)
def test_parity_with_layoutlmv3_at_initialisation(tester, head, injection):
    model = head(_head_config(tester, head, fusion_injection=injection)).eval()
    reference_class, head_name = LAYOUTLMV3_HEADS[head]
    layout_config = LayoutLMv3Config(**model.config.layout_config.to_dict())
    layout_config.num_labels = model.config.num_labels
    reference = reference_class(layout_config).eval()
    reference.layoutlmv3.load_state_dict(model.aetnet.layoutlmv3.state_dict())
    getattr(reference, head_name).load_state_dict(getattr(model, head_name).state_dict())
    inputs = tester.prepare_inputs()
    with torch.no_grad():
        ours, theirs = _logits(model(**inputs)), _logits(reference(**inputs))
    assert (ours - theirs).abs().max().item() < 1e-5


@pytest.mark.parametrize(
    "head, num_labels",
    [
        (AETNetForTokenClassification, 3),
        (AETNetForTokenClassification, 12),
        (AETNetForSequenceClassification, 3),
        (AETNetForQuestionAnswering, 2),
    ],
    ids=["token-linear-head", "token-mlp-head", "sequence", "question-answering"],
)
def test_to_layoutlmv3_is_the_baseline_from_the_same_start(tester, head, num_labels):
    id2label = {i: f"L{i}" for i in range(num_labels)}
    label2id = {label: i for i, label in id2label.items()}
    config = tester.get_config(fusion_injection="none", num_labels=num_labels, id2label=id2label, label2id=label2id)
    model = head(config).eval()
    baseline = model.to_layoutlmv3().eval()
    reference_class, head_name = LAYOUTLMV3_HEADS[head]
    assert type(baseline) is reference_class
    assert baseline.config.id2label == id2label and baseline.config.label2id == label2id
    baseline_weights = baseline.state_dict()
    for name, value in model.aetnet.layoutlmv3.state_dict().items():
        assert torch.equal(baseline_weights[f"layoutlmv3.{name}"], value), name
    for name, value in getattr(model, head_name).state_dict().items():
        assert torch.equal(baseline_weights[f"{head_name}.{name}"], value), name
    # Copies, not shared tensors: training the baseline leaves the AETNet model as it was.
    assert not {p.data_ptr() for p in baseline.parameters()} & {p.data_ptr() for p in model.parameters()}
    inputs = tester.prepare_inputs()
    with torch.no_grad():
        torch.testing.assert_close(_logits(baseline(**inputs)), _logits(model(**inputs)))


def test_add_injection_changes_the_fusion_input(tester):
    model = AETNetForTokenClassification(tester.get_config(fusion_injection="add")).eval()
    inputs = tester.prepare_inputs()
    with torch.no_grad():
        injected = model(**inputs).logits
        model.config.fusion_injection = "none"
        plain = model(**inputs).logits
    assert (injected - plain).abs().max().item() > 1e-3


def test_fusion_gate_openings_say_how_far_the_aligners_enter(tester):
    gated = AETNetForTokenClassification(tester.get_config())
    assert gated.aetnet.fusion_gate_openings() == {"text": 0.0, "image": 0.0}  # the gates start closed
    with torch.no_grad():
        gated.aetnet.text_gate.fill_(-0.25)
        gated.aetnet.image_gate[:2] = 0.5
    openings = gated.aetnet.fusion_gate_openings()
    assert openings["text"] == 0.25
    assert openings["image"] == pytest.approx(1.0 / gated.aetnet.image_gate.numel())
    for injection, opening in (("add", 1.0), ("none", 0.0)):
        model = AETNetForTokenClassification(tester.get_config(fusion_injection=injection))
        assert model.aetnet.fusion_gate_openings() == {"text": opening, "image": opening}


def _fusion_model_and_call(tester):
    """A fusion model, its inputs and a call with aligned features of the right shapes (and a second set)."""
    layout = tester.get_config().layout_config
    model = AETNetLayoutLMv3Model(layout).eval()
    inputs = tester.prepare_inputs()
    generator = torch.Generator().manual_seed(2)
    shapes = [(tester.batch_size, tester.text_seq_length, layout.hidden_size)]
    shapes.append((tester.batch_size, tester.visual_length, layout.hidden_size))
    first = [torch.randn(shape, generator=generator) for shape in shapes]
    second = [torch.randn(shape, generator=generator) for shape in shapes]
    return model, inputs, first, second


def _injected(model, inputs, aligned):
    return model(**inputs, aligned_text_embeds=aligned[0], aligned_image_embeds=aligned[1]).last_hidden_state


def test_fusion_injection_is_per_call_and_reentrant(tester):
    model, inputs, first, second = _fusion_model_and_call(tester)
    with torch.no_grad():
        plain, expected, other = model(**inputs).last_hidden_state, _injected(model, inputs, first), []

        # A call nested in another with other features, here from a hook that runs before the outer call's features
        # are added, leaves the outer call's in place.
        def nested_call(module, args):
            if not other:
                other.append(None)  # before the call: the nested call runs this hook too
                other[0] = _injected(model, inputs, second)

        handle = model.embeddings.register_forward_pre_hook(nested_call)
        nested = _injected(model, inputs, first)
        handle.remove()
        assert torch.equal(nested, expected) and torch.equal(other[0], _injected(model, inputs, second))
        # A call that raises leaves nothing behind: the next plain call is plain LayoutLMv3 again.
        with pytest.raises(RuntimeError):
            _injected(model, inputs, [first[0][:, :-1], first[1]])
        assert torch.equal(model(**inputs).last_hidden_state, plain)
    assert model.embeddings._aetnet_aligned_embeds is None and model._aligned_image_embeds is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch.nn.parallel.replicate needs a GPU")
def test_fusion_injection_reaches_a_data_parallel_replica_on_cuda(tester):
    model, inputs, first, _ = _fusion_model_and_call(tester)
    model, inputs = model.cuda(), {key: value.cuda() for key, value in inputs.items()}
    first = [tensor.cuda() for tensor in first]
    (replica,) = torch.nn.parallel.replicate(model, [0])
    with torch.no_grad():
        torch.testing.assert_close(_injected(replica, inputs, first), _injected(model, inputs, first))
