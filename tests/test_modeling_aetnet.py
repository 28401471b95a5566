"""AETNet models on tiny configs: outputs, parity with LayoutLMv3, momentum and queue rules, save/load, remote code."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    LayoutLMv3Config,
    LayoutLMv3ForQuestionAnswering,
    LayoutLMv3ForSequenceClassification,
    LayoutLMv3ForTokenClassification,
    RobertaConfig,
    RobertaModel,
    ViTConfig,
    ViTModel,
)

from aetnet import (
    AETNetConfig,
    AETNetForQuestionAnswering,
    AETNetForSequenceClassification,
    AETNetForTokenClassification,
    AETNetModel,
)


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
            return dict(labels=torch.randint(0, self.num_labels, (batch_size, self.text_seq_length), generator=generator))
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
AUTO_HEADS = {
    AETNetForTokenClassification: AutoModelForTokenClassification,
    AETNetForSequenceClassification: AutoModelForSequenceClassification,
    AETNetForQuestionAnswering: AutoModelForQuestionAnswering,
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
    [(AETNetForTokenClassification, 3), (AETNetForTokenClassification, 12), (AETNetForSequenceClassification, 3),
     (AETNetForQuestionAnswering, 2)],
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


@pytest.mark.parametrize("head", HEADS)
def test_save_and_auto_load_give_identical_outputs(tester, head, tmp_path):
    model = head(_head_config(tester, head)).eval()
    model.save_pretrained(tmp_path)
    loaded = AUTO_HEADS[head].from_pretrained(tmp_path).eval()
    assert type(loaded) is head
    inputs = tester.prepare_inputs()
    with torch.no_grad():
        torch.testing.assert_close(_logits(loaded(**inputs)), _logits(model(**inputs)), rtol=0, atol=0)
    for _, momentum in loaded.aetnet.momentum_pairs():
        assert all(not p.requires_grad for p in momentum.parameters())
    assert (tmp_path / "model.safetensors").exists()


def test_checkpoint_without_momentum_weights_gets_momentum_equal_online(tester, tmp_path):
    model = AETNetForTokenClassification(tester.get_config())
    with torch.no_grad():
        for param in model.aetnet.vision_model.parameters():
            param.add_(0.5)  # online != momentum before saving
    state_dict = {k: v for k, v in model.state_dict().items() if "_m." not in k}
    model.save_pretrained(tmp_path, state_dict=state_dict)
    loaded = AETNetForTokenClassification.from_pretrained(tmp_path)
    for online, momentum in loaded.aetnet.momentum_pairs():
        for param, param_m in zip(online.parameters(), momentum.parameters()):
            torch.testing.assert_close(param_m, param, rtol=0, atol=0)
            assert not param_m.requires_grad
    torch.testing.assert_close(
        loaded.aetnet.vision_model.embeddings.cls_token, model.aetnet.vision_model.embeddings.cls_token
    )


def test_auto_classes_resolve_after_import(tester):
    config = tester.get_config()
    assert isinstance(AutoConfig.for_model("aetnet"), AETNetConfig)
    assert type(AutoModel.from_config(config)) is AETNetModel
    assert type(AutoModelForTokenClassification.from_config(config)) is AETNetForTokenClassification


def test_remote_code_loads_without_the_package(tester, tmp_path):
    model = AETNetForTokenClassification(tester.get_config()).eval()
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    for name in ("modeling_aetnet.py", "configuration_aetnet.py", "losses.py"):
        assert (checkpoint / name).exists(), name
    auto_map = json.loads((checkpoint / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForTokenClassification"] == "modeling_aetnet.AETNetForTokenClassification"
    inputs = tester.prepare_inputs()
    with torch.no_grad():
        expected = model(**inputs).logits
    torch.save({"inputs": inputs, "expected": expected}, tmp_path / "io.pt")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["aetnet"] = None  # make `import aetnet` fail, as on a machine without the package
        try:
            import aetnet
            raise SystemExit("aetnet was importable")
        except ImportError:
            pass
        import torch
        from transformers import AutoModelForTokenClassification
        model = AutoModelForTokenClassification.from_pretrained({str(checkpoint)!r}, trust_remote_code=True).eval()
        io = torch.load({str(tmp_path / "io.pt")!r})
        with torch.no_grad():
            logits = model(**io["inputs"]).logits
        assert type(model).__name__ == "AETNetForTokenClassification", type(model)
        assert (logits - io["expected"]).abs().max().item() == 0.0
        assert not any(p.requires_grad for p in model.aetnet.vision_model_m.parameters())
        print("REMOTE-OK")
        """
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert "REMOTE-OK" in result.stdout, result.stderr[-3000:]


def test_training_step_losses_and_gradients(tester):
    model = AETNetForTokenClassification(tester.get_config()).train()
    inputs = tester.prepare_inputs()
    outputs = model(**inputs, **tester.labels_for(AETNetForTokenClassification, tester.batch_size))
    assert set(outputs.alignment_losses) == {"ditc", "imc", "glitc", "pita"}
    for name, value in outputs.alignment_losses.items():
        assert torch.isfinite(value) and value.item() > 0, name
    torch.testing.assert_close(outputs.loss, outputs.task_loss + sum(outputs.alignment_losses.values()))
    outputs.loss.backward()
    base = model.aetnet

    def has_grad(module):
        return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

    for module in (base.vision_model, base.text_model, base.vision_proj, base.text_proj, base.layoutlmv3):
        assert has_grad(module), type(module).__name__
    assert base.temp.grad is not None and base.temp.grad.abs().item() > 0
    for _, momentum in base.momentum_pairs():
        assert all(p.grad is None for p in momentum.parameters())


def test_momentum_update_is_an_exact_ema(tester):
    model = AETNetModel(tester.get_config(momentum=0.9))
    with torch.no_grad():
        for param in model.vision_model.parameters():
            param.add_(torch.randn_like(param))
    before = [(p.clone(), p_m.clone()) for o, m in model.momentum_pairs() for p, p_m in zip(o.parameters(), m.parameters())]
    model.momentum_update()
    after = [p_m for _, m in model.momentum_pairs() for p_m in m.parameters()]
    for (online, old), new in zip(before, after):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * online, rtol=0, atol=1e-6)


def _momentum_image_features(model, pixel_values):
    with torch.no_grad():
        hidden = model.vision_model_m(pixel_values).last_hidden_state[:, 0]
        return torch.nn.functional.normalize(model.vision_proj_m(hidden), dim=-1)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_queue_accepts_any_batch_size_and_wraps(tester, batch_size):
    model = AETNetModel(tester.get_config()).train()
    for step in range(4):
        inputs = tester.prepare_inputs(batch_size=batch_size, seed=step)
        ptr = model.queue_ptr.item()
        outputs = model(**inputs)
        assert all(torch.isfinite(v) for v in outputs.alignment_losses.values())
        written = [(ptr + i) % tester.queue_size for i in range(batch_size)]
        torch.testing.assert_close(model.image_queue[:, written].t(), _momentum_image_features(model, inputs["pixel_values"]))
        assert model.queue_ptr.item() == (ptr + batch_size) % tester.queue_size
        assert model.queue_filled.item() == min((step + 1) * batch_size, tester.queue_size)


def test_batch_larger_than_queue_keeps_its_last_features(tester):
    model = AETNetModel(tester.get_config()).train()
    inputs = tester.prepare_inputs(batch_size=tester.queue_size + 2)
    model(**inputs)
    features = _momentum_image_features(model, inputs["pixel_values"])
    for i in range(2, tester.queue_size + 2):
        torch.testing.assert_close(model.image_queue[:, i % tester.queue_size], features[i])
    assert model.queue_ptr.item() == 2 and model.queue_filled.item() == tester.queue_size


def test_eval_never_changes_training_state(tester):
    model = AETNetForTokenClassification(tester.get_config()).train()
    model(**tester.prepare_inputs())
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        outputs = model(**tester.prepare_inputs(seed=3), return_alignment_losses=True)
    assert set(outputs.alignment_losses) == {"ditc", "imc", "glitc", "pita"}
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)


def test_objectives_can_be_switched_off(tester):
    model = AETNetForTokenClassification(tester.get_config(alignment_objectives=["pita"])).train()
    outputs = model(**tester.prepare_inputs())
    assert set(outputs.alignment_losses) == {"pita"}
    assert not hasattr(model.aetnet, "vision_model_m") and model.aetnet.momentum_pairs() == []


def test_aligners_need_pixels_and_ids(tester):
    model = AETNetModel(tester.get_config()).eval()
    inputs = tester.prepare_inputs()
    with pytest.raises(ValueError, match="pixel_values"):
        model(input_ids=inputs["input_ids"], bbox=inputs["bbox"])


def test_special_and_boxless_tokens_are_not_aligned(tester):
    model = AETNetModel(tester.get_config()).train()
    masks = []
    model.objectives["pita"].loss.register_forward_pre_hook(lambda module, args: masks.append(args[3]))
    input_ids = torch.tensor([[0, 5, 6, 7, 2, 1]])
    bbox = torch.tensor([[[0] * 4, [10, 10, 20, 20], [0] * 4, [30, 30, 40, 40], [0] * 4, [0] * 4]])
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    pixel_values = torch.randn(1, 3, tester.image_size, tester.image_size)
    model(input_ids=input_ids, bbox=bbox, attention_mask=attention_mask, pixel_values=pixel_values)
    assert masks[0].tolist() == [[False, True, False, True, False, False]]


def _save_components(tester, root):
    config = tester.get_config()
    layout_config = LayoutLMv3Config(**config.layout_config.to_dict())
    layout_config.num_labels = tester.num_labels
    paths = {}
    for name, component in (
        ("layout", LayoutLMv3ForTokenClassification(layout_config)),
        ("vision", ViTModel(config.vision_config, add_pooling_layer=False)),
        ("text", RobertaModel(config.text_config, add_pooling_layer=False)),
    ):
        paths[name] = root / name
        component.save_pretrained(paths[name])
    return paths


def test_from_encoders_pretrained(tester, tmp_path):
    paths = _save_components(tester, tmp_path)
    model = AETNetForTokenClassification.from_encoders_pretrained(
        str(paths["layout"]), str(paths["vision"]), str(paths["text"]),
        num_labels=tester.num_labels, fusion_injection="none", queue_size=tester.queue_size, embed_dim=16,
    ).eval()
    layout = LayoutLMv3ForTokenClassification.from_pretrained(paths["layout"]).eval()
    vision = ViTModel.from_pretrained(paths["vision"], add_pooling_layer=False)
    for param, source in zip(model.aetnet.vision_model.parameters(), vision.parameters()):
        torch.testing.assert_close(param, source)
    for param, param_m in zip(model.aetnet.text_model.parameters(), model.aetnet.text_model_m.parameters()):
        torch.testing.assert_close(param_m, param)
    inputs = tester.prepare_inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, layout(**inputs).logits, rtol=0, atol=1e-5)


def test_non_finite_features_never_enter_the_queue(tester):
    model = AETNetModel(tester.get_config()).train()
    before = model.image_queue.clone()
    features = torch.nn.functional.normalize(torch.randn(3, tester.embed_dim), dim=-1)
    features[1, 0] = float("nan")
    model.queues.enqueue(features, features.clone())
    assert torch.isfinite(model.image_queue).all() and torch.isfinite(model.text_queue).all()
    torch.testing.assert_close(model.image_queue[:, 1], before[:, 1])
    torch.testing.assert_close(model.image_queue[:, [0, 2]].t(), features[[0, 2]])
    assert model.queue_ptr.item() == 3


def test_layoutlmv3_no_grad_bias_tables_are_frozen_after_loading(tester, tmp_path):
    AETNetForTokenClassification(tester.get_config()).save_pretrained(tmp_path)
    loaded = AETNetForTokenClassification.from_pretrained(tmp_path)
    encoder = loaded.aetnet.layoutlmv3.encoder
    assert not any(t.weight.requires_grad for t in (encoder.rel_pos_bias, encoder.rel_pos_x_bias, encoder.rel_pos_y_bias))
