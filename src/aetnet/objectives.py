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
The index of the built-in alignment objectives: the one module that imports them, and so registers them (each
class's `register_objective` runs when its file is imported), in the paper's order, which is the order of
`registered_objectives()`. `AETNetModel` imports it; the configuration does not, since a configuration imports no
modeling code: it validates names and settings against `alignment_schema.py`.

`from .module import name`, not `from . import module`: transformers finds the files that remote code needs only in
that form.
"""

# isort: off
# AETNet's four objectives (the default of `alignment_objectives`).
from .objective_ditc import DocumentImageTextContrast
from .objective_imc import IntraModalContrast
from .objective_glitc import GlobalLocalContrast
from .objective_pita import PatchTokenAlignment

# The seeds' others, off by default: LayoutLMv2's text-image alignment and matching, SIMLA's cross-modal masked
# modelling and keyword prediction.
from .objective_tia import TextImageAlignment
from .objective_tim import TextImageMatching
from .objective_xmm_text import CrossModalMaskedText
from .objective_xmm_image import CrossModalMaskedImage
from .objective_psl import PseudoKeywordPrediction

# isort: on


# Name -> class of every built-in objective, in registration order.
BUILT_IN_OBJECTIVE_CLASSES = {
    objective.name: objective
    for objective in (
        DocumentImageTextContrast,
        IntraModalContrast,
        GlobalLocalContrast,
        PatchTokenAlignment,
        TextImageAlignment,
        TextImageMatching,
        CrossModalMaskedText,
        CrossModalMaskedImage,
        PseudoKeywordPrediction,
    )
}


__all__ = ["BUILT_IN_OBJECTIVE_CLASSES"]
