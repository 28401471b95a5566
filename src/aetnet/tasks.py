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
The one task table: for each task an AETNet checkpoint can be trained for, the head class, the transformers Auto
class that loads it, the inputs its loss reads, the task a model card files it under and the pipelines that run it.
Loading, the predictors, the ONNX exporter, the pipelines, the model card, the example scripts and the Auto
registration in `aetnet/__init__.py` all read it here, so that adding a head means adding one row.

A checkpoint's task is read from the head class in `config.architectures` ([`task_of`]). Each head exists twice:
`AETNet<head>` and the stock `LayoutLMv3<head>` baseline of the examples (LayoutLMv3's relation head is this
package's, as transformers has none).

This module imports only transformers (its Auto classes, by name) and ships with checkpoints as remote code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import transformers


@dataclass(frozen=True)
class TaskSpec:
    """
    One row of the task table.

    Args:
        name: the task, as `aetnet predict`, [`task_of`] and the predictors name it.
        head: the suffix of its head classes (`AETNet<head>`, `LayoutLMv3<head>`).
        auto_class: the transformers Auto class that loads a checkpoint of this task, by name; `None` where no Auto
            class fits (relation extraction: the head class is its own loader).
        extra_auto_classes: further Auto classes the AETNet head is registered with (not written to `auto_map`).
        label_names: the inputs its task loss reads.
        card_task: the task type of the model card's `model-index`.
        pipeline: the pipeline task an AETNet checkpoint of this task answers, `None` for none; its class in
            `pipeline_aetnet.py` is `pipeline_class`.
        hub_pipeline_tags: the Hub's `pipeline_tag` per model family, set only where the stock pipeline of that name
            runs the model.
    """

    name: str
    head: str
    auto_class: str | None
    label_names: tuple[str, ...]
    card_task: str
    pipeline: str | None = None
    pipeline_class: str | None = None
    extra_auto_classes: tuple[str, ...] = ()
    hub_pipeline_tags: dict[str, str] = field(default_factory=dict)

    def head_class_name(self, family: str = "AETNet") -> str:
        """`AETNet<head>` or `LayoutLMv3<head>`."""
        return f"{family}{self.head}"

    def loader(self):
        """The transformers Auto class of this task, or `None` (relation extraction)."""
        return None if self.auto_class is None else getattr(transformers, self.auto_class)


RELATION_EXTRACTION = "relation-extraction"
TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            "token-classification",
            "ForTokenClassification",
            "AutoModelForTokenClassification",
            ("labels",),
            card_task="token-classification",
            pipeline="document-token-classification",
            pipeline_class="DocumentTokenClassificationPipeline",
            hub_pipeline_tags={"LayoutLMv3": "token-classification"},
        ),
        TaskSpec(
            "sequence-classification",
            "ForSequenceClassification",
            "AutoModelForSequenceClassification",
            ("labels",),
            card_task="text-classification",
        ),
        TaskSpec(
            "question-answering",
            "ForQuestionAnswering",
            "AutoModelForQuestionAnswering",
            ("start_positions", "end_positions"),
            card_task="document-question-answering",
            pipeline="document-question-answering",
            pipeline_class="AETNetDocumentQuestionAnsweringPipeline",
            extra_auto_classes=("AutoModelForDocumentQuestionAnswering",),
            hub_pipeline_tags={"AETNet": "document-question-answering", "LayoutLMv3": "document-question-answering"},
        ),
        TaskSpec(RELATION_EXTRACTION, "ForRelationExtraction", None, ("relations",), card_task="relation-extraction"),
    )
}
FAMILIES = ("AETNet", "LayoutLMv3")
# What the AETNet and LayoutLMv3 models read of a page; the processor returns these, predictors feed them.
MODEL_INPUT_NAMES = ("input_ids", "bbox", "attention_mask", "pixel_values")
# What training adds: the augmented view of the page (IMC) and every task's labels.
TRAINING_INPUT_NAMES = (
    *MODEL_INPUT_NAMES,
    "pixel_values_aug",
    *dict.fromkeys(name for spec in TASKS.values() for name in spec.label_names if name != "relations"),
)


def task_of(config) -> str:
    """The task of a checkpoint, from the head class named in `config.architectures`."""
    for architecture in getattr(config, "architectures", None) or []:
        spec = spec_of_class(architecture)
        if spec is not None:
            return spec.name
    raise ValueError(
        f"Cannot tell the task of this checkpoint from `architectures`={getattr(config, 'architectures', None)}; "
        f"pass `task` (one of {list(TASKS)})."
    )


def spec_of_class(class_name: str) -> TaskSpec | None:
    """The row of a head class name (`AETNetForTokenClassification`, `LayoutLMv3ForQuestionAnswering`, ...); `None`
    for a class that is no head of the table. `...ForDocumentQuestionAnswering` counts as question answering."""
    class_name = class_name.replace("ForDocumentQuestionAnswering", "ForQuestionAnswering")
    for spec in TASKS.values():
        if class_name.endswith(spec.head):
            return spec
    return None


def family_of_class(class_name: str) -> str | None:
    """`"AETNet"` or `"LayoutLMv3"` for a head class of either family, else `None`."""
    return next((family for family in FAMILIES if class_name.startswith(family)), None)


def model_class(task: str, config=None):
    """
    The class that loads a checkpoint of `task`: the transformers Auto class, or for relation extraction the class
    named in `config.architectures` (`AETNetForRelationExtraction` by default, `LayoutLMv3ForRelationExtraction` for
    the stock baseline), which has `from_pretrained` but no `from_config` (build it with `cls(config)`).
    """
    if task not in TASKS:
        raise ValueError(f"`task` must be one of {list(TASKS)}, got {task!r}")
    spec = TASKS[task]
    if spec.auto_class is not None:
        return spec.loader()
    from . import modeling_aetnet_relation

    names = [spec.head_class_name(family) for family in FAMILIES]
    chosen = [name for name in getattr(config, "architectures", None) or [] if name in names]
    return getattr(modeling_aetnet_relation, chosen[0] if chosen else names[0])


__all__ = [
    "FAMILIES",
    "MODEL_INPUT_NAMES",
    "RELATION_EXTRACTION",
    "TASKS",
    "TRAINING_INPUT_NAMES",
    "TaskSpec",
    "family_of_class",
    "model_class",
    "spec_of_class",
    "task_of",
]
