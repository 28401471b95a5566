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

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForDocumentQuestionAnswering,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoProcessor,
)

from .configuration_aetnet import AETNetConfig
from .modeling_aetnet import (
    AETNetForQuestionAnswering,
    AETNetForSequenceClassification,
    AETNetForTokenClassification,
    AETNetModel,
    AETNetPreTrainedModel,
)
from .modeling_aetnet_relation import AETNetForRelationExtraction, LayoutLMv3ForRelationExtraction
from .processing_aetnet import AETNetProcessor


__version__ = "0.1.0"

_AUTO_MODELS = (
    (AutoModel, AETNetModel),
    (AutoModelForTokenClassification, AETNetForTokenClassification),
    (AutoModelForSequenceClassification, AETNetForSequenceClassification),
    (AutoModelForQuestionAnswering, AETNetForQuestionAnswering),
    (AutoModelForDocumentQuestionAnswering, AETNetForQuestionAnswering),
)

AutoConfig.register(AETNetConfig.model_type, AETNetConfig, exist_ok=True)
AETNetConfig.register_for_auto_class()
for _auto_class, _model_class in _AUTO_MODELS:
    _auto_class.register(AETNetConfig, _model_class, exist_ok=True)
    if _auto_class is not AutoModelForDocumentQuestionAnswering:
        _model_class.register_for_auto_class(_auto_class.__name__)
# No transformers Auto class fits relation extraction: the package loads it with
# `AETNetForRelationExtraction.from_pretrained`; its saved `auto_map` names it under `AutoModel`, so that
# `AutoModel.from_pretrained(..., trust_remote_code=True)` builds it where aetnet is not installed.
AETNetForRelationExtraction.register_for_auto_class("AutoModel")
AutoProcessor.register(AETNetConfig, AETNetProcessor, exist_ok=True)
AETNetProcessor.register_for_auto_class()


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
