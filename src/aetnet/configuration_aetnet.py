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
"""AETNet configuration: a LayoutLMv3 fusion model plus a ViT and a RoBERTa alignment encoder."""

from __future__ import annotations

import math
from typing import ClassVar

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, LayoutLMv3Config, RobertaConfig
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec

from .alignment_schema import objective_schema


# AETNet's four objectives, the default of `alignment_objectives`; others are selected by their registered names.
ALIGNMENT_OBJECTIVES = ("ditc", "imc", "glitc", "pita")
FUSION_INJECTIONS = ("add", "gated", "none")
# `"locality"`: the prior of `spatial_bias.locality_bias_`.
SPATIAL_BIAS_INITS = ("random", "locality")
# How the ViT's states become the image's document feature: its [CLS] state or the mean of its patch states.
IMAGE_FEATURE_POOLINGS = ("cls", "mean")
# The learnable temperature's range (ALBEF's clamp): the model keeps `temp` in it, the config's initial value too.
TEMPERATURE_RANGE = (0.001, 0.5)

# Configs saved before PITA's settings lived only with the objective carry them as top-level fields: field -> (PITA's
# setting, the field's default). Such configs always saved both fields, so a default value is no choice (and equals
# PITA's own default) and is dropped; another value becomes the PITA setting, unless `objective_settings` sets it too,
# which won then as it does now.
_LEGACY_PITA_FIELDS = {"pita_loss": ("loss", "infonce"), "pita_span_policy": ("span_policy", "center")}

# Named sizes for `AETNetConfig.from_preset`. `hidden` must equal 4 * coordinate + 2 * shape (LayoutLMv3 concatenates
# four coordinate and two shape embeddings). Positions are `max_length + 2` because RoBERTa-style position ids start
# after the padding index.
_PRESETS = {
    "tiny": dict(hidden=36, layers=2, heads=4, intermediate=37, coordinate=6, shape=6, image=16, patch=4, embed=16),
    # 64 px pages in 8 px patches (an 8 x 8 grid, 64 cells) so that documents differ at initialisation, with tiny-like
    # widths so that a whole FUNSD run (train + evaluation) fits a CPU study.
    "study": dict(hidden=64, layers=2, heads=4, intermediate=128, coordinate=10, shape=12, image=64, patch=8, embed=32),
    "small": dict(
        hidden=192, layers=4, heads=4, intermediate=768, coordinate=32, shape=32, image=224, patch=16, embed=128
    ),
    "base": dict(
        hidden=768, layers=12, heads=12, intermediate=3072, coordinate=128, shape=128, image=224, patch=16, embed=256
    ),
}


@strict
class AETNetConfig(PreTrainedConfig):
    r"""
    Configuration of an AETNet model (Wang et al., "Alignment-Enriched Tuning for Patch-Level Pre-trained Document
    Image Models", AAAI 2023). AETNet fine-tunes a LayoutLMv3 *fusion* model together with two *alignment* encoders,
    a ViT on the page image and a RoBERTa on the OCR tokens, whose outputs are added to LayoutLMv3's embeddings and
    trained with four contrastive objectives. Momentum copies of the alignment encoders and two feature queues
    provide the contrastive targets.

    Args:
        layout_config (`dict` or `LayoutLMv3Config`, *optional*):
            The LayoutLMv3 fusion model (and the task heads' dropout). Not called `fusion_config`: transformers
            reserves that name.
        vision_config (`dict` or `PreTrainedConfig`, *optional*):
            The image alignment encoder: any ViT-compatible config (`vit`, `deit`). Its image and patch sizes must
            equal LayoutLMv3's `input_size` and `patch_size`, since both read the same `pixel_values`.
        text_config (`dict` or `RobertaConfig`, *optional*):
            The text alignment encoder. It reads LayoutLMv3's `input_ids`, so the vocabularies must match.
        embed_dim (`int`, *optional*, defaults to 256):
            Size of the shared contrastive space the two projections map into (ALBEF's value).
        queue_size (`int`, *optional*, defaults to 4096):
            Number of momentum features kept per modality as extra negatives. ALBEF's 65536 is larger than most
            document datasets: keep it below the number of training documents, or the queue fills with stale copies
            of the positive document (false negatives).
        momentum (`float`, *optional*, defaults to 0.995):
            EMA coefficient of the momentum encoders, in [0, 1). Applied once per optimizer step.
        temperature (`float`, *optional*, defaults to 0.07):
            Initial value of the learnable contrastive temperature, kept within `TEMPERATURE_RANGE`.
        distill_alpha (`float`, *optional*, defaults to 0.4):
            Weight of the momentum-distillation soft targets in DITC (0 gives plain one-hot InfoNCE). The trainer can
            ramp it up from 0.
        alignment_objectives (`list[str]` or `dict[str, dict]`, *optional*, defaults to `["ditc", "imc", "glitc", "pita"]`):
            Which alignment objectives are computed: names registered with `aetnet.alignment.register_objective`,
            or a dict of names to their settings, e.g. `{"ditc": {"distill_alpha": 0.2}, "pita": {"loss":
            "cosine"}}` (stored as the list of names and `objective_settings`).
        objective_settings (`dict[str, dict]`, *optional*):
            Keyword settings of enabled objectives, passed to their constructors, which check their values and
            document them (e.g. PITA's `loss` and `span_policy`); unset ones take the objective's defaults (for the
            distillation weight of DITC, PSL and XMM-text: the config's `distill_alpha`). Configs saved with the
            former top-level `pita_loss` and `pita_span_policy` still load: their values become PITA's settings.
        fusion_injection (`str`, *optional*, defaults to `"gated"`):
            How the aligned features enter LayoutLMv3. `"add"` (the paper): the RoBERTa output is added to the text
            embeddings after their LayerNorm and the ViT output to the visual embeddings before concatenation.
            `"gated"` (the default): the same through learnable per-channel gates initialised at zero, so that the
            model starts as exactly its LayoutLMv3 and lets the aligned features in only as far as the task gains
            from them, since full-scale addition of aligners that have not learnt yet costs the task F1
            (BENCHMARKS.md). `"none"`: LayoutLMv3 sees no aligned features (the aligners are then trained only by
            the alignment objectives and are not needed at inference).
        alignment_loss_weights (`dict[str, float]`, *optional*):
            Weight of each alignment objective in the training loss, `loss = task_loss + sum_k weight_k * loss_k`
            (every model's `loss` in training mode, and `AETNetTrainer`'s). Missing objectives weigh 1.0 (the paper's
            unweighted sum). The official FUNSD code puts the three contrastive objectives at 1/3.
        attn_implementation (`str` or `dict`, *optional*):
            transformers' attention selector, for LayoutLMv3, the ViT, the RoBERTa and the momentum copies alike
            (`"sdpa"`, the default, `"eager"` for attention probabilities, `"flex_attention"`...), or a dict per
            sub-config, e.g. `{"layout_config": "eager", "vision_config": "sdpa", "text_config": "sdpa"}`. Configs
            saved with the former `fusion_attention` field still load; the field is ignored.
        spatial_bias_init (`str`, *optional*, defaults to `"random"`):
            Initial values of LayoutLMv3's 2D relative-position bias tables, which transformers never trains.
            `"random"`: transformers' initialisation (a pretrained checkpoint's tables replace it). `"locality"`: a
            prior to attend to what lies near a token's box (`spatial_bias.py`), for training from random weights:
            without it, objectives that need a token to find its page region (TIA, TIM) do not learn from scratch.
        feature_centering (`float`, *optional*):
            Momentum of a running mean subtracted from the aligners' [CLS] states before the contrastive projections
            (`feature_centering.FeatureCenter`, online and momentum states alike), e.g. 0.9; `None` (the default):
            no centring, as ALBEF and the paper. Meant for encoders pre-trained without a [CLS] objective (SimMIM,
            MLM), which give all pages nearly the same [CLS] state; in this repository's pre-trained study it did not
            make DITC learn (BENCHMARKS.md), so it is off by default.
        image_feature_pooling (`str`, *optional*, defaults to `"cls"`):
            Which ViT states make the image's document feature (DITC, IMC, GLITC): `"cls"`, the [CLS] state, as
            the paper and ALBEF; `"mean"`, the mean of the patch states, for a ViT pre-trained by masked image
            modelling (SimMIM), whose loss never reaches the [CLS] state, so that it barely differs between pages.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the initialisation of the projections.

    The PITA grid is LayoutLMv3's patch grid (`input_size // patch_size` cells a side); a cell spans `1000 / grid`
    box units.

    Example:

    ```python
    >>> from aetnet import AETNetConfig, AETNetForTokenClassification

    >>> config = AETNetConfig.from_preset("tiny", num_labels=7)
    >>> model = AETNetForTokenClassification(config)
    ```"""

    model_type = "aetnet"
    sub_configs_defaults = {
        "layout_config": LayoutLMv3Config,
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="vit"),
        "text_config": RobertaConfig,
    }
    # The Trainer's prediction loop collects every output field except these as "logits".
    keys_to_ignore_at_inference: ClassVar[list[str]] = ["alignment_losses", "skipped_objectives"]

    layout_config: dict | PreTrainedConfig | None = None
    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    embed_dim: int = 256
    queue_size: int = 4096
    momentum: float = 0.995
    temperature: float = 0.07
    distill_alpha: float = 0.4
    alignment_objectives: list[str] | dict[str, dict] | None = None
    objective_settings: dict[str, dict] | None = None
    fusion_injection: str = "gated"
    alignment_loss_weights: dict[str, float] | None = None
    spatial_bias_init: str = "random"
    feature_centering: float | None = None
    image_feature_pooling: str = "cls"
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        # Removed in favour of transformers' `attn_implementation`; configs saved with it still load.
        kwargs.pop("fusion_attention", None)
        self._settle_objectives({field: kwargs.pop(field) for field in _LEGACY_PITA_FIELDS if field in kwargs})
        labels_given = self.id2label is not None or kwargs.get("num_labels") is not None
        super().__post_init__(**kwargs)
        layout_labels = self.layout_config.id2label
        if not labels_given and layout_labels is not None and layout_labels != self.id2label:
            # A fine-tuned LayoutLMv3 (e.g. a 7-label FUNSD tagger) brings its label set, unless the caller gives one.
            self.id2label = dict(layout_labels)
            self.label2id = dict(self.layout_config.label2id or {v: k for k, v in layout_labels.items()})
        self._check_consistency()

    def _settle_objectives(self, legacy_pita: dict[str, str]) -> None:
        """
        Store `alignment_objectives` as a list of names, their settings in `objective_settings` (the legacy top-level
        PITA fields mapped in) and a weight for every enabled objective in `alignment_loss_weights`.
        """
        if self.alignment_objectives is None:
            self.alignment_objectives = list(ALIGNMENT_OBJECTIVES)
        settings = {name: dict(value or {}) for name, value in (self.objective_settings or {}).items()}
        if isinstance(self.alignment_objectives, dict):  # {"name": {settings}}: the names, and their settings
            settings.update({k: dict(v or {}) for k, v in self.alignment_objectives.items()})
        self.alignment_objectives = list(self.alignment_objectives)
        for name in self.alignment_objectives:
            objective_schema(name)  # a ValueError naming the option, the name and the known objectives
        if "pita" in self.alignment_objectives:
            for field, value in legacy_pita.items():
                setting, default = _LEGACY_PITA_FIELDS[field]
                if value != default:
                    settings.setdefault("pita", {}).setdefault(setting, value)
        self.objective_settings = {name: value for name, value in settings.items() if value}
        weights = dict(self.alignment_loss_weights or {})
        for name, weight in weights.items():
            objective_schema(name, option="alignment_loss_weights")
            if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
                raise ValueError(f"`alignment_loss_weights[{name!r}]` must be a finite number >= 0, got {weight!r}")
        enabled = {name: 1.0 for name in self.alignment_objectives}
        self.alignment_loss_weights = {name: float(weight) for name, weight in {**enabled, **weights}.items()}

    def _check_consistency(self) -> None:
        layout, vision, text = self.layout_config, self.vision_config, self.text_config
        _check_choice("fusion_injection", self.fusion_injection, FUSION_INJECTIONS)
        _check_choice("spatial_bias_init", self.spatial_bias_init, SPATIAL_BIAS_INITS)
        if len(set(self.alignment_objectives)) != len(self.alignment_objectives):
            raise ValueError(f"`alignment_objectives` has duplicates: {self.alignment_objectives}")
        for name, settings in self.objective_settings.items():
            if name not in self.alignment_objectives:
                raise ValueError(f"`objective_settings` has settings for {name!r}, which is not enabled")
            known = objective_schema(name).settings  # None: the objective takes any keyword and checks them itself
            unknown = sorted(set(settings) - set(known or ()))
            if known is not None and unknown:
                raise ValueError(f"Objective {name!r} has no setting {unknown}; its settings: {list(known)}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"`momentum` must be in [0, 1), got {self.momentum}")
        if self.feature_centering is not None and not 0.0 <= self.feature_centering < 1.0:
            raise ValueError(f"`feature_centering` must be None or a momentum in [0, 1), got {self.feature_centering}")
        if self.image_feature_pooling not in IMAGE_FEATURE_POOLINGS:
            raise ValueError(
                f"`image_feature_pooling` must be one of {list(IMAGE_FEATURE_POOLINGS)}, "
                f"got {self.image_feature_pooling!r}"
            )
        if self.queue_size <= 0:
            raise ValueError(f"`queue_size` must be positive, got {self.queue_size}")
        if self.embed_dim <= 0:
            raise ValueError(f"`embed_dim` must be positive, got {self.embed_dim}")
        if not TEMPERATURE_RANGE[0] <= self.temperature <= TEMPERATURE_RANGE[1]:
            raise ValueError(f"`temperature` must be in {list(TEMPERATURE_RANGE)}, got {self.temperature}")
        if not 0.0 <= self.distill_alpha <= 1.0:
            raise ValueError(f"`distill_alpha` must be in [0, 1], got {self.distill_alpha}")
        if layout.hidden_size != 4 * layout.coordinate_size + 2 * layout.shape_size:
            raise ValueError(
                f"`layout_config.hidden_size` ({layout.hidden_size}) must equal 4 * `layout_config.coordinate_size` "
                f"+ 2 * `layout_config.shape_size` ({layout.coordinate_size}, {layout.shape_size})"
            )
        if text.vocab_size != layout.vocab_size:
            raise ValueError(
                f"`text_config.vocab_size` ({text.vocab_size}) must equal `layout_config.vocab_size` "
                f"({layout.vocab_size}): the text aligner reads LayoutLMv3's input_ids"
            )
        if self.fusion_injection != "none":
            for name, sub in (("vision_config", vision), ("text_config", text)):
                if sub.hidden_size != layout.hidden_size:
                    raise ValueError(
                        f"`{name}.hidden_size` ({sub.hidden_size}) must equal `layout_config.hidden_size` "
                        f"({layout.hidden_size}) to add aligned features with fusion_injection="
                        f"'{self.fusion_injection}'; use fusion_injection='none' or matching sizes"
                    )
        if _as_int(vision.image_size) != _as_int(layout.input_size) or _as_int(vision.patch_size) != _as_int(
            layout.patch_size
        ):
            raise ValueError(
                f"`vision_config.image_size`/`patch_size` ({vision.image_size}/{vision.patch_size}) must equal "
                f"`layout_config.input_size`/`patch_size` ({layout.input_size}/{layout.patch_size}): both encoders "
                "read the same pixel_values and PITA pairs their patch grids"
            )

    @property
    def grid_size(self) -> int:
        """Number of patch cells per side of the page (LayoutLMv3's visual token grid)."""
        return _as_int(self.layout_config.input_size) // _as_int(self.layout_config.patch_size)

    @property
    def uses_momentum(self) -> bool:
        """Whether any enabled objective needs the momentum encoders and queues."""
        return any(objective_schema(name).needs_momentum for name in self.alignment_objectives)

    @classmethod
    def from_preset(cls, name: str, *, vocab_size: int = 50265, max_length: int = 512, **kwargs) -> AETNetConfig:
        """
        Build a randomly initialisable config of a named size: `"tiny"` (tests), `"study"` (64 px pages, 8 x 8
        patches: every objective can learn, and a FUNSD study runs on a CPU), `"small"` (a from-scratch CPU run on
        FUNSD) or `"base"` (the sizes of LayoutLMv3-base, ViT-B/16 and RoBERTa-base).
        Extra keyword arguments are AETNetConfig fields (`num_labels`, `queue_size`, ...).
        """
        if name not in _PRESETS:
            raise ValueError(f"`name` must be one of {sorted(_PRESETS)}, got {name!r}")
        p = _PRESETS[name]
        shared = dict(
            hidden_size=p["hidden"],
            num_hidden_layers=p["layers"],
            num_attention_heads=p["heads"],
            intermediate_size=p["intermediate"],
        )
        layout = LayoutLMv3Config(
            **shared,
            vocab_size=vocab_size,
            max_position_embeddings=max_length + 2,
            coordinate_size=p["coordinate"],
            shape_size=p["shape"],
            input_size=p["image"],
            patch_size=p["patch"],
        )
        vision = AutoConfig.for_model(
            "vit", **shared, image_size=p["image"], patch_size=p["patch"], layer_norm_eps=1e-6
        )
        text = RobertaConfig(**shared, vocab_size=vocab_size, max_position_embeddings=max_length + 2)
        kwargs.setdefault("embed_dim", p["embed"])
        return cls(layout_config=layout, vision_config=vision, text_config=text, **kwargs)


def _as_int(size: int | list[int] | tuple[int, ...]) -> int:
    """Square image and patch sizes may be given as an int or a pair; AETNet needs square grids."""
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ValueError(f"AETNet needs square images and patches, got size {size}")
        return int(size[0])
    return int(size)


def _check_choice(field: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"`{field}` must be one of {list(choices)}, got {value!r}")


__all__ = [
    "AETNetConfig",
    "ALIGNMENT_OBJECTIVES",
    "FUSION_INJECTIONS",
    "IMAGE_FEATURE_POOLINGS",
    "SPATIAL_BIAS_INITS",
    "TEMPERATURE_RANGE",
]
