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
Relation extraction outside the model: cutting pages into windows that keep each candidate pair together, and decoding
the pair scores of all windows into links. Training, evaluation and the relation predictor share them. The model
(`AETNetForRelationExtraction`) and its pair features ship with checkpoints and live in the package root.
"""

from .decoding import decode_links, links_to_json, merge_page_scores, relation_scores
from .windows import RelationDataCollator, WindowStatistics, relation_windows, score_relation_windows


__all__ = [
    "RelationDataCollator",
    "WindowStatistics",
    "decode_links",
    "links_to_json",
    "merge_page_scores",
    "relation_scores",
    "relation_windows",
    "score_relation_windows",
]
