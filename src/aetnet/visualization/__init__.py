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
"""Drawings of predictions: labelled word boxes and entities ([`draw_prediction`]), relation arrows
([`draw_relations`]) and where the tags go ([`layout_tags`]). matplotlib is not needed; PIL draws."""

from .drawing import draw_prediction, label_colors, redact_page
from .relations import draw_relations
from .tag_layout import layout_tags


__all__ = ["draw_prediction", "draw_relations", "label_colors", "layout_tags", "redact_page"]
