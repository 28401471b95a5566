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
aetnet: Alignment-Enriched Tuning (AETNet, Wang et al., AAAI 2023) for LayoutLMv3, native to Hugging Face transformers.

Importing the package registers the config, the models and the processor with the `Auto*` classes, and marks them for
`register_for_auto_class`, so that every `save_pretrained` folder carries the modeling code and an `auto_map` and
loads with `trust_remote_code=True` where aetnet is not installed.
"""

import transformers
from transformers import AutoConfig, AutoModel, AutoProcessor

from . import modeling_aetnet, modeling_aetnet_relation
from .configuration_aetnet import AETNetConfig
from .modeling_aetnet import AETNetForQuestionAnswering, AETNetForSequenceClassification, AETNetForTokenClassification
from .modeling_aetnet_base import AETNetModel, AETNetPreTrainedModel
from .modeling_aetnet_relation import AETNetForRelationExtraction, LayoutLMv3ForRelationExtraction
from .processing_aetnet import AETNetProcessor
from .tasks import TASKS


__version__ = "0.1.0"


def _register_auto_classes() -> None:
    """Register the config, the base model and every head of the task table with their Auto classes; the first Auto
    class of a head goes into its saved `auto_map`. A head without an Auto class (relation extraction) is named under
    `AutoModel` in its `auto_map`, so that `AutoModel.from_pretrained(..., trust_remote_code=True)` builds it where
    aetnet is not installed; with aetnet installed its class is its own loader."""
    AutoConfig.register(AETNetConfig.model_type, AETNetConfig, exist_ok=True)
    AETNetConfig.register_for_auto_class()
    AutoModel.register(AETNetConfig, AETNetModel, exist_ok=True)
    AETNetModel.register_for_auto_class("AutoModel")
    for spec in TASKS.values():
        module = modeling_aetnet if spec.auto_class else modeling_aetnet_relation
        head = getattr(module, spec.head_class_name())
        for auto_class in (spec.auto_class, *spec.extra_auto_classes):
            if auto_class is not None:
                getattr(transformers, auto_class).register(AETNetConfig, head, exist_ok=True)
        head.register_for_auto_class(spec.auto_class or "AutoModel")
    AutoProcessor.register(AETNetConfig, AETNetProcessor, exist_ok=True)
    AETNetProcessor.register_for_auto_class()


_register_auto_classes()


_LAZY = {
    "AETNetTrainer": "training",
    "AETNetTrainingArguments": "training",
    "MomentumUpdateCallback": "training",
    "DocumentPredictor": "inference",
    "predict": "inference",
    "export_onnx": "inference",
}


def __getattr__(name: str):
    # The trainer pulls in the Trainer stack, inference the OCR/PDF helpers and export the ONNX exporter: load them
    # only when asked for.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'aetnet' has no attribute {name!r}")


__all__ = [
    "AETNetConfig",
    "AETNetForQuestionAnswering",
    "AETNetForRelationExtraction",
    "AETNetForSequenceClassification",
    "AETNetForTokenClassification",
    "AETNetModel",
    "AETNetPreTrainedModel",
    "AETNetProcessor",
    "AETNetTrainer",
    "AETNetTrainingArguments",
    "DocumentPredictor",
    "LayoutLMv3ForRelationExtraction",
    "MomentumUpdateCallback",
    "export_onnx",
    "predict",
]
