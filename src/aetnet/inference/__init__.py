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
Running trained checkpoints outside training: [`DocumentPredictor`] and [`predict`] on files, folders and PDFs,
loading a checkpoint folder (PyTorch or ONNX), the ONNX export, and [`RelationPredictor`] for relation extraction
checkpoints. The page-level core they share with the pipelines ships with checkpoints and lives in the package root
(`aetnet.page_predictor`, `aetnet.pages`, `aetnet.page_results`).
"""

from .checkpoints import load_checkpoint
from .onnx_export import ONNXDocumentModel, export_onnx, onnx_metadata
from .predictor import DocumentPredictor, predict
from .relations import RelationPredictor, parse_entities


__all__ = [
    "DocumentPredictor",
    "ONNXDocumentModel",
    "RelationPredictor",
    "export_onnx",
    "load_checkpoint",
    "onnx_metadata",
    "parse_entities",
    "predict",
]
