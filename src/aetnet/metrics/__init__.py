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
"""Evaluation metrics that work without the Hugging Face Hub: entity-level seqeval for token classification
(`token_classification`), accuracy / macro F1 / confusion matrix for document classification (`classification`),
ANLS / exact match for DocVQA (`anls`) and the SROIE task-3 exact field match (`sroie`). numpy only on import;
`evaluate`, `seqeval` and matplotlib on use."""

from .anls import anls, compute_docvqa_metrics, exact_match
from .classification import classification_metrics, confusion_matrix, plot_confusion_matrix
from .sroie import fields_from_word_labels, normalize_field, sroie_task3_scores
from .token_classification import (
    SEQEVAL_METRIC_PATH,
    compute_token_classification_metrics,
    load_seqeval,
    seqeval_summary,
)


__all__ = [
    "SEQEVAL_METRIC_PATH",
    "anls",
    "classification_metrics",
    "compute_docvqa_metrics",
    "compute_token_classification_metrics",
    "confusion_matrix",
    "exact_match",
    "fields_from_word_labels",
    "load_seqeval",
    "normalize_field",
    "plot_confusion_matrix",
    "seqeval_summary",
    "sroie_task3_scores",
]
