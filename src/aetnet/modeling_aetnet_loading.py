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
How AETNet weights come and change shape: `AETNetCheckpointMixin` (`from_pretrained` with the strict check of a
checkpoint against its config and the re-sync of momentum copies a checkpoint lacks, `from_encoders_pretrained` from
three separately pretrained encoders, `resize_token_embeddings` of every encoder that reads `input_ids`).

They are kept apart from the model classes because they are about checkpoints, not about the network. This module
imports only torch, transformers and its siblings, so that it ships as Hub remote code with `modeling_aetnet.py`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, LayoutLMv3Model, PreTrainedModel
from transformers.utils import logging

from .configuration_aetnet import AETNetConfig


logger = logging.get_logger(__name__)

MOMENTUM_SUFFIX = "_m"


class CheckpointMismatchError(ValueError):
    """A checkpoint whose encoder weights are missing from, or unexpected by, the config it is loaded with."""


def check_checkpoint(
    model: PreTrainedModel, loading_info: dict[str, list], *, check_missing: bool, check_resized: bool
) -> None:
    """
    Raise when the base model's weights (not the task head's, not the momentum copies or queues, which are re-synced
    or refilled) were missing, unexpected or resized in the checkpoint: a `CheckpointMismatchError` for missing or
    unexpected weights, a `RuntimeError` for resized ones (as transformers raises), listing the keys.
    """
    base = model.base_model
    base_names = {name for name, _ in base.named_children()} | {name for name, _ in base.named_parameters()}
    base_names |= {name for name, _ in base.named_buffers()}
    prefix = "" if model is base else f"{model.base_model_prefix}."

    def in_base(key: str) -> bool:
        key = key[len(prefix) :] if prefix and key.startswith(prefix) else key
        return key.split(".")[0] in base_names or key in base_names

    problems = {}
    if check_missing:
        problems["missing"] = [
            k
            for k in loading_info["missing_keys"]
            if in_base(k) and f"{MOMENTUM_SUFFIX}." not in k and "queues." not in k
        ]
        problems["unexpected"] = [k for k in loading_info["unexpected_keys"] if in_base(k)]
    if check_resized:
        problems["mismatched"] = [
            " ".join(map(str, k)) if isinstance(k, tuple) else str(k) for k in loading_info["mismatched_keys"]
        ]
    problems = {kind: sorted(keys) for kind, keys in problems.items() if keys}
    if not problems:
        return
    listed = "; ".join(f"{kind} ({len(keys)}): {keys[:10]}" for kind, keys in problems.items())
    error = RuntimeError if "mismatched" in problems else CheckpointMismatchError
    raise error(
        f"The checkpoint does not match the config of {type(model).__name__}, whose sub-configs (layout_config, "
        f"vision_config, text_config) must describe the saved encoders: {listed}. Fix the config, or pass "
        "`allow_missing_keys=True` (missing / unexpected) or `ignore_mismatched_sizes=True` (mismatched) to load "
        "anyway with those weights freshly initialised."
    )


def resync_momentum(base: nn.Module, missing_keys: list[str]) -> None:
    """Copy the online weights into momentum modules the checkpoint lacks, then freeze every momentum copy again
    (loading re-creates parameters with `requires_grad=True`)."""
    momentum_names = {f"{name}{MOMENTUM_SUFFIX}" for name in base.momentum_module_names}
    missing = [key.split(".") for key in missing_keys]
    stale = {name for name in momentum_names if any(name in parts for parts in missing)}
    if stale:
        logger.info(f"Copying online weights into momentum modules missing from the checkpoint: {sorted(stale)}")
        base.copy_params(only=stale)
    # Objectives' own momentum copies (PSL's `head_m`), e.g. from a checkpoint saved before they had them.
    for name, objective in getattr(base, "objectives", {}).items():
        if any(f"objectives.{name}." in key and f"{MOMENTUM_SUFFIX}." in key for key in missing_keys):
            logger.info(f"Copying online weights into the momentum copies of {name}, missing from the checkpoint")
            with torch.no_grad():
                for online, momentum in objective.own_momentum_pairs(base):
                    for param, param_m in zip(online.parameters(), momentum.parameters()):
                        param_m.copy_(param)
    base.freeze_momentum()


ENCODERS = ("layout", "vision", "text")


def load_from_encoders(
    cls: type[PreTrainedModel],
    layout_model_name_or_path: str,
    vision_model_name_or_path: str,
    text_model_name_or_path: str,
    random_encoders: Collection[str] = (),
    **kwargs: Any,
) -> PreTrainedModel:
    """The body of `AETNetPreTrainedModel.from_encoders_pretrained` (see there)."""
    unknown = sorted(set(random_encoders) - set(ENCODERS))
    if unknown:
        raise ValueError(f"random_encoders: {unknown} are not encoders; choose among {list(ENCODERS)}")
    prefixed = {"layout_": {}, "vision_": {}, "text_": {}}
    config_kwargs = {}
    for key, value in kwargs.items():
        prefix = next((p for p in prefixed if key.startswith(p)), None)
        if prefix is None:
            config_kwargs[key] = value
        else:
            prefixed[prefix][key[len(prefix) :]] = value
    label_kwargs = {k: config_kwargs[k] for k in ("num_labels", "id2label", "label2id") if k in config_kwargs}
    layout_class = getattr(cls, "_layoutlmv3_class", LayoutLMv3Model)
    if layout_class is not LayoutLMv3Model:
        prefixed["layout_"] = {"ignore_mismatched_sizes": True, **label_kwargs, **prefixed["layout_"]}
    # One line below instead of three load reports (a pretrained LayoutLMv3 without a head reports it missing).
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        loaded = {
            name: _load_encoder(
                layout_class if name == "layout" else AutoModel, path, prefixed[f"{name}_"], name in random_encoders
            )
            for name, path in zip(
                ENCODERS, (layout_model_name_or_path, vision_model_name_or_path, text_model_name_or_path)
            )
        }
    finally:
        logging.set_verbosity(verbosity)
    (layout_config, layout, layout_info), (vision_config, vision, _), (text_config, text, _) = (
        loaded[name] for name in ENCODERS
    )
    resized = [k[0] if isinstance(k, tuple) else str(k) for k in layout_info.get("mismatched_keys", [])]
    new_head = sorted({*layout_info.get("missing_keys", []), *resized})

    config = AETNetConfig(
        layout_config=layout_config.to_dict(),
        vision_config=vision_config.to_dict(),
        text_config=text_config.to_dict(),
        **config_kwargs,
    )
    model = cls(config)
    base = model.base_model
    # A random encoder keeps the weights AETNet's own initialisation just gave it (those of a model built from scratch).
    if layout is not None:
        base.layoutlmv3.load_state_dict((layout if layout_class is LayoutLMv3Model else layout.layoutlmv3).state_dict())
        for name in getattr(model, "task_head_names", ()):
            getattr(model, name).load_state_dict(getattr(layout, name).state_dict())
    if vision is not None:
        base.vision_model.load_state_dict(vision.state_dict())
    if text is not None:
        base.text_model.load_state_dict(text.state_dict())
    base.copy_params()
    head = f" and the task head ({', '.join(new_head)})" if new_head else ""
    randomised = f"; random weights for {', '.join(sorted(random_encoders))}" if random_encoders else ""
    logger.warning(
        f"Newly initialised: the AETNet projections (vision_proj, text_proj){head}{randomised}. "
        "Fine-tune before using the model."
    )
    return model


# `from_pretrained` options that also say where a configuration is (the others concern weights).
_LOCATION_OPTIONS = ("revision", "cache_dir", "token", "local_files_only", "subfolder", "trust_remote_code")


def _load_encoder(
    model_class: type, name_or_path: str, options: dict[str, Any], random: bool
) -> tuple[Any, nn.Module | None, dict]:
    """An encoder's configuration, its loaded model (`None` when `random`: only the configuration is read) and, for
    LayoutLMv3, its loading info (which head weights are new)."""
    if random:
        config_class = AutoConfig if model_class is AutoModel else model_class.config_class
        config = config_class.from_pretrained(
            name_or_path, **{k: v for k, v in options.items() if k in _LOCATION_OPTIONS}
        )
        return config, None, {}
    if model_class is AutoModel:
        model = model_class.from_pretrained(name_or_path, add_pooling_layer=False, **options)
        return model.config, model, {}
    model, info = model_class.from_pretrained(name_or_path, output_loading_info=True, **options)
    return model.config, model, info


class AETNetCheckpointMixin:
    """The checkpoint rules of `AETNetPreTrainedModel` (a `PreTrainedModel` with an AETNet base model)."""

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """
        `PreTrainedModel.from_pretrained`, plus three AETNet rules: momentum encoders missing from the checkpoint are
        copied from the online encoders (a checkpoint saved without them starts with momentum == online), every
        momentum parameter is frozen again (loading re-creates parameters with `requires_grad=True`), and a checkpoint
        whose encoders do not match the config (missing, unexpected or resized weights of the AETNet base model, other
        than momentum ones) raises an error listing the keys instead of silently re-initialising them: a
        `CheckpointMismatchError` (a `ValueError`) for missing or unexpected weights, a `RuntimeError` for resized
        ones, as transformers raises. Task heads (e.g. `classifier`) may be missing or unexpected, as when fine-tuning
        a pretrained base. Pass `allow_missing_keys=True` (or `ignore_mismatched_sizes=True` for resized weights) to
        accept the mismatch; `output_loading_info=True` returns the lists instead of raising for missing or
        unexpected weights, and initialising from a config (`from_pretrained(None, config=..., state_dict=...)`)
        checks nothing.
        """
        output_loading_info = kwargs.pop("output_loading_info", False)
        from_checkpoint = (args[0] if args else kwargs.get("pretrained_model_name_or_path")) is not None
        allow_missing_keys = kwargs.pop("allow_missing_keys", False) or output_loading_info or not from_checkpoint
        ignore_mismatched_sizes = kwargs.pop("ignore_mismatched_sizes", False) or not from_checkpoint
        # Resized weights load as re-initialised so that `check_checkpoint` can list them (transformers' error
        # does not).
        model, loading_info = super().from_pretrained(
            *args, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
        )
        check_checkpoint(
            model, loading_info, check_missing=not allow_missing_keys, check_resized=not ignore_mismatched_sizes
        )
        resync_momentum(model.base_model, loading_info["missing_keys"])
        return (model, loading_info) if output_loading_info else model

    def resize_token_embeddings(
        self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None, mean_resizing: bool = True
    ) -> nn.Embedding:
        """
        `PreTrainedModel.resize_token_embeddings` for the two encoders that read `input_ids`: LayoutLMv3 (the input
        embeddings) and the RoBERTa aligner with its momentum copy, whose new rows start equal to the online ones.
        `layout_config.vocab_size` and `text_config.vocab_size` both follow.
        """
        embeddings = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        if new_num_tokens is None and pad_to_multiple_of is None:
            return embeddings
        base, size = self.base_model, embeddings.num_embeddings
        old_size = base.text_model.get_input_embeddings().num_embeddings
        base.text_model.resize_token_embeddings(size, mean_resizing=mean_resizing)
        if getattr(base, "text_model_m", None) is not None:
            base.text_model_m.resize_token_embeddings(size, mean_resizing=False)
            with torch.no_grad():
                rows = slice(min(old_size, size), size)
                momentum_rows = base.text_model_m.get_input_embeddings().weight[rows]
                momentum_rows.copy_(base.text_model.get_input_embeddings().weight[rows])
        # The aligners share `config.text_config` (and LayoutLMv3 `config.layout_config`): one assignment each.
        self.config.layout_config.vocab_size = self.config.text_config.vocab_size = size
        base.freeze_momentum()
        return embeddings

    @classmethod
    def from_encoders_pretrained(
        cls,
        layout_model_name_or_path: str,
        vision_model_name_or_path: str,
        text_model_name_or_path: str,
        random_encoders: Collection[str] = (),
        **kwargs,
    ):
        """
        Build an AETNet model from three separately pretrained checkpoints (hub ids or local folders): LayoutLMv3
        (its task head too, when the checkpoint has a compatible one), a ViT/DeiT and a RoBERTa. Momentum encoders
        start equal to the online ones; the projections are new and untrained.

        `random_encoders` names encoders among `"layout"`, `"vision"` and `"text"` whose checkpoint gives only its
        configuration: they keep AETNet's random initialisation (LayoutLMv3's task head too), so that a model with and
        one without pre-training have the same sizes and tokenizer, e.g. to measure what pre-training buys.

        Keyword arguments prefixed `layout_`, `vision_` or `text_` go to the matching `from_pretrained` (e.g.
        `vision_revision="main"`); the others are `AETNetConfig` fields (`num_labels`, `id2label`, `queue_size`...).
        """
        return load_from_encoders(
            cls,
            layout_model_name_or_path,
            vision_model_name_or_path,
            text_model_name_or_path,
            random_encoders=random_encoders,
            **kwargs,
        )


__all__ = [
    "ENCODERS",
    "AETNetCheckpointMixin",
    "CheckpointMismatchError",
    "check_checkpoint",
    "load_from_encoders",
    "resync_momentum",
]
