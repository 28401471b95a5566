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
"""Form-understanding data: the FUNSD reader and the embedded synthetic forms, both in one FUNSD-shaped schema."""

from .funsd import FUNSD_LABELS, funsd_features, load_funsd, load_funsd_like
from .funsd_relations import ENTITY_LABELS, LinkStatistics, add_bio_relations, load_funsd_relations
from .reader_utils import bio_tags, normalize_bbox, union_bbox
from .synthetic import generate_synthetic_forms, load_synthetic_funsd


__all__ = [
    "ENTITY_LABELS",
    "FUNSD_LABELS",
    "LinkStatistics",
    "add_bio_relations",
    "bio_tags",
    "funsd_features",
    "generate_synthetic_forms",
    "load_funsd",
    "load_funsd_like",
    "load_funsd_relations",
    "load_synthetic_funsd",
    "normalize_bbox",
    "union_bbox",
]

# Document classification, DocVQA, CORD and SROIE readers, the cached OCR of their pages and the tokenizer trained on words.
from .cord import CORD_LABELS, load_cord  # noqa: E402
from .docvqa import (  # noqa: E402
    add_answer_spans,
    answer_token_positions,
    find_answer_span,
    load_docvqa,
    postprocess_qa_predictions,
)
from .ocr_cache import OCRCache, load_page_image, ocr_dataset, with_page_pixels  # noqa: E402
from .rvlcdip import RVLCDIP_LABELS, load_rvlcdip  # noqa: E402
from .sroie import SROIE_FIELDS, SROIE_LABELS, SroieMatchStatistics, load_sroie, read_sroie_fields  # noqa: E402
from .tokenizer_training import train_layoutlmv3_tokenizer  # noqa: E402
from .unlabeled_pages import (  # noqa: E402
    PageCollection,
    UnlabeledPage,
    UnlabeledPagesError,
    find_unlabeled_pages,
    iter_unlabeled_pages,
    load_text_corpus,
    pdf_text_layer,
    read_unlabeled_page,
)


__all__ += [
    "CORD_LABELS",
    "OCRCache",
    "PageCollection",
    "RVLCDIP_LABELS",
    "UnlabeledPage",
    "UnlabeledPagesError",
    "SROIE_FIELDS",
    "SROIE_LABELS",
    "SroieMatchStatistics",
    "add_answer_spans",
    "answer_token_positions",
    "find_answer_span",
    "find_unlabeled_pages",
    "iter_unlabeled_pages",
    "load_cord",
    "load_docvqa",
    "load_page_image",
    "load_rvlcdip",
    "load_text_corpus",
    "load_sroie",
    "read_sroie_fields",
    "ocr_dataset",
    "pdf_text_layer",
    "postprocess_qa_predictions",
    "read_unlabeled_page",
    "train_layoutlmv3_tokenizer",
    "with_page_pixels",
]
