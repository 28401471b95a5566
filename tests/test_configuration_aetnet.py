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
"""AETNetConfig: composition, serialisation and the errors users see for inconsistent settings."""

import ast
import json
from pathlib import Path

import pytest
from transformers import AutoConfig, DeiTConfig, LayoutLMv3Config, RobertaConfig, ViTConfig
from transformers.dynamic_module_utils import get_relative_import_files

import aetnet.configuration_aetnet
from aetnet import AETNetConfig


def test_defaults_are_base_sizes_with_all_objectives():
    config = AETNetConfig()
    assert isinstance(config.layout_config, LayoutLMv3Config)
    assert isinstance(config.vision_config, ViTConfig)
    assert isinstance(config.text_config, RobertaConfig)
    assert config.alignment_objectives == ["ditc", "imc", "glitc", "pita"]
    assert (config.embed_dim, config.momentum, config.temperature, config.grid_size) == (256, 0.995, 0.07, 14)


def test_round_trip_and_sub_config_types(tmp_path):
    objectives = {"ditc": {}, "imc": {}, "glitc": {}, "pita": {"loss": "cosine"}}
    config = AETNetConfig.from_preset("tiny", num_labels=7, fusion_injection="gated", alignment_objectives=objectives)
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert "fusion_config" not in saved and saved["model_type"] == "aetnet"
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, AETNetConfig) and isinstance(loaded.layout_config, LayoutLMv3Config)
    assert loaded.to_diff_dict() | {"_name_or_path": ""} == config.to_diff_dict() | {"_name_or_path": ""}


def test_sub_configs_from_dicts_and_deit_vision():
    tiny = AETNetConfig.from_preset("tiny")
    vision = DeiTConfig(**{k: v for k, v in tiny.vision_config.to_dict().items() if k != "model_type"})
    config = AETNetConfig(
        layout_config=tiny.layout_config.to_dict(), vision_config=vision, text_config=tiny.text_config.to_dict()
    )
    assert isinstance(config.layout_config, LayoutLMv3Config) and isinstance(config.vision_config, DeiTConfig)


@pytest.mark.parametrize(
    "overrides, names",
    [
        ({"momentum": 1.0}, ["momentum"]),
        ({"momentum": -0.1}, ["momentum"]),
        ({"queue_size": 0}, ["queue_size"]),
        ({"temperature": 0.9}, ["temperature"]),
        ({"fusion_injection": "concat"}, ["fusion_injection", "concat"]),
        ({"spatial_bias_init": "uniform"}, ["spatial_bias_init", "uniform"]),
        ({"alignment_objectives": ["ditc", "mlm"]}, ["alignment_objectives", "mlm"]),
        ({"alignment_objectives": {"pita": {"loss_fn": "cosine"}}}, ["pita", "loss_fn"]),
        ({"alignment_loss_weights": {"mlm": 1.0}}, ["alignment_loss_weights", "mlm"]),
    ],
)
def test_invalid_scalar_fields_are_named(overrides, names):
    with pytest.raises(ValueError) as error:
        AETNetConfig.from_preset("tiny", **overrides)
    for name in names:
        assert name in str(error.value)


def _tiny_parts():
    tiny = AETNetConfig.from_preset("tiny")
    return tiny.layout_config.to_dict(), tiny.vision_config.to_dict(), tiny.text_config.to_dict()


def test_hidden_sizes_that_cannot_be_added_are_named():
    layout, vision, text = _tiny_parts()
    vision["hidden_size"], vision["num_attention_heads"] = 48, 4
    with pytest.raises(ValueError, match="vision_config.hidden_size.*layout_config.hidden_size"):
        AETNetConfig(layout_config=layout, vision_config=vision, text_config=text)
    # Without injection the aligners only feed the contrastive space, so the sizes may differ.
    AETNetConfig(layout_config=layout, vision_config=vision, text_config=text, fusion_injection="none")


def test_grids_that_differ_are_named():
    layout, vision, text = _tiny_parts()
    vision["patch_size"] = 8
    with pytest.raises(ValueError, match="vision_config.image_size.*patch_size.*layout_config.input_size"):
        AETNetConfig(layout_config=layout, vision_config=vision, text_config=text)


def test_layoutlmv3_embedding_constraint_and_vocabularies_are_checked():
    layout, vision, text = _tiny_parts()
    with pytest.raises(ValueError, match="coordinate_size"):
        AETNetConfig(layout_config={**layout, "coordinate_size": 7}, vision_config=vision, text_config=text)
    with pytest.raises(ValueError, match="text_config.vocab_size"):
        AETNetConfig(layout_config=layout, vision_config=vision, text_config={**text, "vocab_size": 100})


def test_presets():
    for name in ("tiny", "small", "base"):
        config = AETNetConfig.from_preset(name, vocab_size=1000)
        assert config.layout_config.vocab_size == config.text_config.vocab_size == 1000
    with pytest.raises(ValueError, match="name"):
        AETNetConfig.from_preset("huge")


def test_configs_saved_with_top_level_pita_fields_still_load(tmp_path):
    """PITA's settings live with the objective; the former top-level fields of saved configs are mapped to them."""
    AETNetConfig.from_preset("tiny").save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    saved = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**saved, "pita_loss": "cosine", "pita_span_policy": "center"}))
    loaded = AETNetConfig.from_pretrained(tmp_path)
    # The default span policy is no choice, the non-default loss becomes PITA's setting.
    assert loaded.objective_settings == {"pita": {"loss": "cosine"}}
    assert not hasattr(loaded, "pita_loss") and "pita_loss" not in loaded.to_dict()
    # A setting given with the objective wins, as it did over the top-level field; without PITA the fields are moot.
    both = AETNetConfig.from_preset("tiny", pita_loss="cosine", alignment_objectives={"pita": {"loss": "infonce"}})
    assert both.objective_settings == {"pita": {"loss": "infonce"}}
    assert AETNetConfig.from_preset("tiny", pita_loss="cosine", alignment_objectives=["ditc"]).objective_settings == {}


def test_the_configuration_imports_no_modeling_code():
    """transformers loads a checkpoint's configuration alone: its remote-code closure holds no torch module."""
    source = Path(aetnet.configuration_aetnet.__file__)
    closure = [source, *map(Path, get_relative_import_files(str(source)))]
    assert {path.name for path in closure} == {"configuration_aetnet.py", "alignment_schema.py"}
    for path in closure:
        assert "torch" not in {name.split(".")[0] for name in _imported_modules(path)}, path.name


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return names | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
