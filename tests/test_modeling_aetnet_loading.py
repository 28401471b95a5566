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
"""AETNet models on tiny configs: save/load, Auto classes, remote code without the package, loading from encoders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from test_modeling_aetnet import HEADS, AETNetModelTester, _head_config, _logits
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    LayoutLMv3Config,
    LayoutLMv3ForTokenClassification,
    RobertaModel,
    ViTModel,
)

from aetnet import (
    AETNetConfig,
    AETNetForQuestionAnswering,
    AETNetForSequenceClassification,
    AETNetForTokenClassification,
    AETNetModel,
)


AUTO_HEADS = {
    AETNetForTokenClassification: AutoModelForTokenClassification,
    AETNetForSequenceClassification: AutoModelForSequenceClassification,
    AETNetForQuestionAnswering: AutoModelForQuestionAnswering,
}


@pytest.fixture
def tester():
    torch.manual_seed(0)
    return AETNetModelTester()


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
    for name in (
        "modeling_aetnet.py",
        "configuration_aetnet.py",
        "loss_utils.py",
        "objectives.py",
        "alignment_schema.py",
    ):
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
        torch.testing.assert_close(logits, io["expected"])  # to float rounding: two processes may schedule a matmul differently
        assert not any(p.requires_grad for p in model.aetnet.vision_model_m.parameters())
        print("REMOTE-OK")
        """
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert "REMOTE-OK" in result.stdout, result.stderr[-3000:]


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
        str(paths["layout"]),
        str(paths["vision"]),
        str(paths["text"]),
        num_labels=tester.num_labels,
        fusion_injection="none",
        queue_size=tester.queue_size,
        embed_dim=16,
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


def test_random_encoders_keep_the_sizes_but_not_the_weights(tester, tmp_path):
    """`random_encoders` reads only the named checkpoints' configurations: those encoders get the random weights of a
    model built from the same config with the same seed, the others their checkpoint's weights."""
    paths = _save_components(tester, tmp_path)
    options = dict(num_labels=tester.num_labels, fusion_injection="none", queue_size=tester.queue_size, embed_dim=16)
    torch.manual_seed(0)
    model = AETNetForTokenClassification.from_encoders_pretrained(
        *(str(paths[name]) for name in ("layout", "vision", "text")), random_encoders=("layout", "text"), **options
    )
    torch.manual_seed(0)
    scratch = AETNetForTokenClassification(model.config)
    vision = ViTModel.from_pretrained(paths["vision"], add_pooling_layer=False)
    layout = LayoutLMv3ForTokenClassification.from_pretrained(paths["layout"])
    for param, source in zip(model.aetnet.vision_model.parameters(), vision.parameters()):
        torch.testing.assert_close(param, source)
    for module, random in (
        (model.aetnet.layoutlmv3, scratch.aetnet.layoutlmv3),
        (model.classifier, scratch.classifier),
    ):
        for param, expected in zip(module.parameters(), random.parameters()):
            torch.testing.assert_close(param, expected)
    assert not torch.equal(model.classifier.weight, layout.classifier.weight)
    for param, param_m in zip(model.aetnet.text_model.parameters(), model.aetnet.text_model_m.parameters()):
        torch.testing.assert_close(param_m, param)
    with pytest.raises(ValueError, match=r"random_encoders: \['image'\] are not encoders"):
        AETNetForTokenClassification.from_encoders_pretrained(
            *(str(paths[name]) for name in ("layout", "vision", "text")), random_encoders=("image",), **options
        )


def test_layoutlmv3_no_grad_bias_tables_are_frozen_after_loading(tester, tmp_path):
    AETNetForTokenClassification(tester.get_config()).save_pretrained(tmp_path)
    loaded = AETNetForTokenClassification.from_pretrained(tmp_path)
    encoder = loaded.aetnet.layoutlmv3.encoder
    assert not any(
        t.weight.requires_grad for t in (encoder.rel_pos_bias, encoder.rel_pos_x_bias, encoder.rel_pos_y_bias)
    )
