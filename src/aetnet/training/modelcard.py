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
versions and the AETNet citation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from transformers.modelcard import extract_hyperparameters_from_trainer, make_markdown_table, parse_log_history

from .callbacks import unwrap_model


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
_TASKS = {
    "AETNetForTokenClassification": "token-classification",
    "AETNetForSequenceClassification": "text-classification",
    "AETNetForQuestionAnswering": "document-question-answering",
    "LayoutLMv3ForTokenClassification": "token-classification",
    "LayoutLMv3ForSequenceClassification": "text-classification",
    "LayoutLMv3ForQuestionAnswering": "document-question-answering",
}
# The pipeline an AETNet checkpoint answers (`pipeline_aetnet.save_custom_pipelines`). The Hub's `pipeline_tag` is
# set only where the stock pipeline of that name runs the model; stock LayoutLMv3 runs stock pipelines.
_PIPELINE_TASKS = {
    "AETNetForTokenClassification": "document-token-classification",
    "AETNetForQuestionAnswering": "document-question-answering",
}
_HUB_PIPELINE_TAGS = {
    "AETNetForQuestionAnswering": "document-question-answering",
    "LayoutLMv3ForTokenClassification": "token-classification",
    "LayoutLMv3ForQuestionAnswering": "document-question-answering",
}
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
_AUTO_CLASSES = {
    f"{model}For{head}": f"AutoModelFor{head}"
    for model in ("AETNet", "LayoutLMv3")  # LayoutLMv3: the baselines of the examples
    for head in ("TokenClassification", "SequenceClassification", "QuestionAnswering")
}
_NON_METRIC_KEYS = (
    "runtime",
    "samples_per_second",
    "steps_per_second",
    "epoch",
    "step",
    "model_preparation_time",
    "samples",
)


def write_model_card(trainer, output_dir: str, card_kwargs: dict | None = None) -> None:
    """Render the card of `trainer`'s model into `output_dir/README.md`; `card_kwargs` are those of
    [`Trainer.create_model_card`]."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    kwargs = card_kwargs or {}
    model = unwrap_model(trainer.model, trainer.accelerator)
    config = model.config
    class_name = model.__class__.__name__
    model_name = kwargs.get("model_name") or Path(trainer.args.output_dir).resolve().name
    repo_id = trainer.hub_model_id or trainer.args.hub_model_id or model_name
    task = _first(kwargs.get("tasks")) or _TASKS.get(class_name, "token-classification")
    datasets = _as_list(kwargs.get("dataset"))
    dataset_tags = _as_list(kwargs.get("dataset_tags")) or datasets
    base_models = [name for name in _as_list(kwargs.get("finetuned_from")) if _is_hub_id(name)]
    base_models = base_models or _hub_base_models(config)

    derived = any(name.startswith("microsoft/layoutlmv3") for name in base_models)
    license = kwargs.get("license") or (LAYOUTLMV3_WEIGHTS_LICENSE if derived else "other")
    base = f" ({', '.join(base_models)})" if base_models else ""
    licence_note = _LICENCE_DERIVED if derived else _LICENCE_OTHER.format(base=base)

    _, log_lines, _ = parse_log_history(trainer.state.log_history)
    eval_metrics = _last_eval_metrics(trainer.state.log_history)
    eval_results = [
        EvalResult(
            task_type=task,
            dataset_type=dataset_tags[0] if dataset_tags else "custom",
            dataset_name=datasets[0] if datasets else "evaluation set",
            dataset_args=_first(kwargs.get("dataset_args")),
            metric_type=name,
            metric_name=name.replace("_", " ").title(),
            metric_value=value,
        )
        for name, value in eval_metrics.items()
        if not name.startswith(("loss", "nonfinite"))
    ]
    default_tags = trainer._tag_names if trainer._is_aetnet else trainer._baseline_tag_names
    tags = _as_list(kwargs.get("tags")) + list(getattr(model, "model_tags", None) or default_tags) + [task]
    card_data = ModelCardData(
        language=kwargs.get("language"),
        license=license,
        library_name="transformers",
        tags=list(dict.fromkeys(tags)),
        datasets=[name for name in dataset_tags if "/" in name and _is_hub_id(name)] or None,  # Hub ids only
        base_model=(base_models[0] if len(base_models) == 1 else base_models) or None,
        model_name=model_name,
        pipeline_tag=_HUB_PIPELINE_TAGS.get(class_name),
        eval_results=eval_results or None,
    )
    hyperparameters = extract_hyperparameters_from_trainer(trainer)
    for name in ("distill_alpha", "alpha_warmup_steps", "weight_decay", "max_grad_norm", "grad_clipping"):
        if trainer._argument(name) is not None:
            hyperparameters[name] = trainer._argument(name)
    card = ModelCard.from_template(
        card_data,
        template_path=str(MODEL_CARD_TEMPLATE),
        model_name=model_name,
        repo_id=repo_id,
        task=task,
        pipeline_task=_PIPELINE_TASKS.get(class_name) if trainer._is_aetnet else None,
        licence_note=licence_note,
        auto_class=_AUTO_CLASSES.get(class_name, "AutoModel"),
        base_models=base_models,
        datasets_text=", ".join(datasets) if datasets else "an unspecified dataset",
        eval_metrics=eval_metrics,
        hyperparameters=hyperparameters,
        is_aetnet=trainer._is_aetnet,
        loss_weights=dict(getattr(model.config, "alignment_loss_weights", None) or {}),
        aetnet_config=_config_summary(config) if trainer._is_aetnet else {},
        training_log=make_markdown_table(log_lines),
        framework_versions=_framework_versions(),
        citation=AETNET_CITATION,
    )
    os.makedirs(output_dir, exist_ok=True)
    card.save(os.path.join(output_dir, "README.md"))


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
            "pita_loss",
            "pita_span_policy",
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


__all__ = ["AETNET_CITATION", "MODEL_CARD_TEMPLATE", "write_model_card"]
