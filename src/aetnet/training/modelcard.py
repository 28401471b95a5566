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
The model card `AETNetTrainer` writes next to every saved model (`README.md`), rendered from the package's template
`templates/model_card.md`: Hub metadata (tags, datasets, base models, a `model-index` with the last measured
evaluation results), usage with `trust_remote_code=True`, hyper-parameters, loss weights, training log, framework
versions and the AETNet citation. [`generate_model_card`] builds it from plain values (the model's class and config,
tags, hyper-parameters, log history), which the trainer gathers; what a head's card says about its task comes from
the task table (`aetnet.tasks`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers import PreTrainedConfig
from transformers.modelcard import make_markdown_table, parse_log_history

from ..configuration_aetnet import AETNetConfig
from ..tasks import family_of_class, spec_of_class


MODEL_CARD_TEMPLATE = Path(__file__).parent / "templates" / "model_card.md"
AETNET_CITATION = """@inproceedings{wang2023aetnet,
  title     = {Alignment-Enriched Tuning for Patch-Level Pre-trained Document Image Models},
  author    = {Wang, Lei and He, Jiabang and Xu, Xing and Liu, Ning and Liu, Hui},
  booktitle = {Proceedings of the AAAI Conference on Artificial Intelligence},
  volume    = {37},
  number    = {2},
  year      = {2023},
  doi       = {10.1609/aaai.v37i2.25357},
  eprint    = {2211.14777},
  archivePrefix = {arXiv}
}"""
# The LayoutLMv3 weights Microsoft released (microsoft/layoutlmv3-*) are CC BY-NC-SA 4.0; their code is MIT.
LAYOUTLMV3_WEIGHTS_LICENSE = "cc-by-nc-sa-4.0"
_LICENCE_DERIVED = (
    "This model was tuned from LayoutLMv3 weights released by Microsoft under the Creative Commons "
    "Attribution-NonCommercial-ShareAlike 4.0 licence (the LayoutLMv3 code is MIT; the weights are not). A model "
    "fine-tuned from them is an adaptation of those weights: it may be used for non-commercial purposes only, must "
    "credit LayoutLMv3 and must be shared under the same licence. The aetnet code is Apache-2.0; the terms of the "
    "training data apply as well. This is not legal advice."
)
_LICENCE_OTHER = (
    "No LayoutLMv3 weights released by Microsoft were used{base}, so their CC BY-NC-SA 4.0 licence does not apply; "
    "the aetnet code is Apache-2.0. The terms of the training data still apply (FUNSD, RVL-CDIP and DocVQA, for "
    "example, allow research use only), so the licence of this model is left to its author (`license: other` in the "
    "metadata until then)."
)
_NON_METRIC_KEYS = (
    "runtime",
    "samples_per_second",
    "steps_per_second",
    "epoch",
    "step",
    "model_preparation_time",
    "samples",
)


def generate_model_card(
    model_name: str,
    class_name: str,
    config: PreTrainedConfig,
    model_tags: list[str],
    hyperparameters: dict[str, Any],
    log_history: list[dict[str, Any]],
    repo_id: str | None = None,
    language: str | None = None,
    license: str | None = None,
    tags: str | list[str] | None = None,
    finetuned_from: str | list[str] | None = None,
    tasks: str | list[str] | None = None,
    dataset_tags: str | list[str] | None = None,
    dataset: str | list[str] | None = None,
    dataset_args: str | list[str] | None = None,
) -> ModelCard:
    """
    The model card of a trained model, from plain values: `class_name` and `config` of the model (an AETNet model is
    presented as one, a stock LayoutLMv3 baseline as such), `model_tags` (the model's own), the training
    `hyperparameters` and the trainer's `log_history` (the training log and the last evaluation's metrics). The other
    arguments are those of [`Trainer.create_model_card`]; `repo_id` (default `model_name`) is the Hub id the usage
    snippets load. The task, pipeline, Hub `pipeline_tag` and Auto class come from the task table (`aetnet.tasks`).
    """
    is_aetnet = isinstance(config, AETNetConfig)
    # A head of the table's two families (AETNet and its LayoutLMv3 baselines); any other model gets the defaults.
    family = family_of_class(class_name)
    spec = spec_of_class(class_name) if family is not None else None
    task = _first(tasks) or (spec.card_task if spec is not None else "token-classification")
    dataset_names = _as_list(dataset)
    dataset_tags = _as_list(dataset_tags) or dataset_names
    base_models = [name for name in _as_list(finetuned_from) if _is_hub_id(name)] or _hub_base_models(config)
    derived = any(name.startswith("microsoft/layoutlmv3") for name in base_models)
    base = f" ({', '.join(base_models)})" if base_models else ""
    _, log_lines, _ = parse_log_history(log_history)
    eval_metrics = _last_eval_metrics(log_history)
    card_data = ModelCardData(
        language=language,
        license=license or (LAYOUTLMV3_WEIGHTS_LICENSE if derived else "other"),
        library_name="transformers",
        tags=list(dict.fromkeys(_as_list(tags) + list(model_tags) + [task])),
        datasets=[name for name in dataset_tags if "/" in name and _is_hub_id(name)] or None,  # Hub ids only
        base_model=(base_models[0] if len(base_models) == 1 else base_models) or None,
        model_name=model_name,
        pipeline_tag=spec.hub_pipeline_tags.get(family) if spec is not None else None,
        eval_results=_eval_results(eval_metrics, task, dataset_names, dataset_tags, _first(dataset_args)) or None,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(MODEL_CARD_TEMPLATE),
        model_name=model_name,
        repo_id=repo_id or model_name,
        task=task,
        pipeline_task=spec.pipeline if is_aetnet and spec is not None else None,
        licence_note=_LICENCE_DERIVED if derived else _LICENCE_OTHER.format(base=base),
        auto_class=(spec.auto_class if spec is not None else None) or "AutoModel",
        base_models=base_models,
        datasets_text=", ".join(dataset_names) if dataset_names else "an unspecified dataset",
        eval_metrics=eval_metrics,
        hyperparameters=hyperparameters,
        is_aetnet=is_aetnet,
        loss_weights=dict(getattr(config, "alignment_loss_weights", None) or {}),
        aetnet_config=_config_summary(config) if is_aetnet else {},
        training_log=make_markdown_table(log_lines),
        framework_versions=_framework_versions(),
        citation=AETNET_CITATION,
    )


def _eval_results(
    eval_metrics: dict[str, float], task: str, datasets: list[str], dataset_tags: list[str], dataset_args: str | None
) -> list[EvalResult]:
    """The `model-index` entries: one per measured metric (not the loss terms or the non-finite count)."""
    return [
        EvalResult(
            task_type=task,
            dataset_type=dataset_tags[0] if dataset_tags else "custom",
            dataset_name=datasets[0] if datasets else "evaluation set",
            dataset_args=dataset_args,
            metric_type=name,
            metric_name=name.replace("_", " ").title(),
            metric_value=value,
        )
        for name, value in eval_metrics.items()
        if not name.startswith(("loss", "nonfinite"))
    ]


def _as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _first(value: str | list[str] | None) -> str | None:
    values = _as_list(value)
    return values[0] if values else None


def _last_eval_metrics(log_history: list[dict]) -> dict[str, float]:
    """The metrics of the most recent evaluation in the trainer state, without the `eval_` prefix and timings."""
    for entry in reversed(log_history):
        if "eval_loss" in entry or any(key.startswith("eval_") and key.endswith("f1") for key in entry):
            return {
                key.removeprefix("eval_"): value
                for key, value in entry.items()
                if key.startswith("eval_") and key.removeprefix("eval_") not in _NON_METRIC_KEYS
            }
    return {}


def _hub_base_models(config) -> list[str]:
    """Hub ids the encoders were loaded from (local folders and empty names are not Hub ids)."""
    names = [getattr(config, "_name_or_path", "")]
    for sub in ("layout_config", "vision_config", "text_config"):
        names.append(getattr(getattr(config, sub, None), "_name_or_path", ""))
    return [name for name in dict.fromkeys(names) if _is_hub_id(name)]


def _is_hub_id(name: str) -> bool:
    """`owner/name` or `name`, and not a local path."""
    if not name or os.path.isabs(name) or name.startswith(".") or os.path.exists(name):
        return False
    return name.count("/") <= 1


def _config_summary(config) -> dict[str, Any]:
    summary = {
        name: getattr(config, name, None)
        for name in (
            "alignment_objectives",
            "objective_settings",
            "fusion_injection",
            "embed_dim",
            "queue_size",
            "momentum",
            "temperature",
            "distill_alpha",
        )
    }
    for sub in ("layout_config", "vision_config", "text_config"):
        sub_config = getattr(config, sub, None)
        if sub_config is not None:
            summary[sub] = (
                f"{sub_config.model_type}: hidden {sub_config.hidden_size}, {sub_config.num_hidden_layers} layers, "
                f"{sub_config.num_attention_heads} heads"
            )
    num_labels = getattr(config, "num_labels", None)
    if num_labels:
        summary["labels"] = ", ".join(str(label) for label in config.id2label.values())
    return {key: value for key, value in summary.items() if value is not None}


def _framework_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("aetnet", "transformers", "torch", "accelerate", "datasets", "tokenizers"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    return versions


__all__ = ["AETNET_CITATION", "LAYOUTLMV3_WEIGHTS_LICENSE", "MODEL_CARD_TEMPLATE", "generate_model_card"]
