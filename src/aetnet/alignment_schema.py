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
The alignment objectives' names and settings without their code: what `AETNetConfig` validates
`alignment_objectives`, `objective_settings` and `alignment_loss_weights` against.

A configuration imports no modeling code (transformers loads a checkpoint's configuration alone, e.g. for
`AutoConfig`), yet a misspelt objective or setting should fail when the config is built, not later when a model is.
So the config reads this torch-free schema rather than the registry of classes in `alignment.py` (validating names
only when a model is built would let a bad config be saved and shared): the built-in objectives are declared here,
and `alignment.register_objective` declares every class it registers, plug-ins and built-ins alike, with the schema
read off the class (`ObjectiveSchema.of`), so that once the model code is loaded the classes themselves are what the
config checks against; a test keeps the table below equal to the built-in classes. Whether a setting's *value* is
valid is the objective's to check, once, when the model builds it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass


@dataclass(frozen=True)
class ObjectiveSchema:
    """
    What the configuration knows of one alignment objective.

    Args:
        settings: the names of its keyword settings (`alignment_objectives={"name": {...}}`), or None when it takes
            any keyword (its `__init__` has `**settings`; it then rejects unknown ones itself).
        needs_momentum: whether the model must build the momentum encoders and feature queues for it.
    """

    settings: tuple[str, ...] | None = ()
    needs_momentum: bool = False

    @classmethod
    def of(cls, objective: type) -> ObjectiveSchema:
        """The schema an objective class states: its `__init__`'s parameters after `config`, and `needs_momentum`."""
        parameters = list(inspect.signature(objective.__init__).parameters.values())[2:]
        if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
            return cls(None, bool(objective.needs_momentum))
        return cls(tuple(parameter.name for parameter in parameters), bool(objective.needs_momentum))


# The objectives that ship with AETNet, in the paper's order (AETNet's four, then the seeds' others: LayoutLMv2's
# text-image alignment and matching, SIMLA's cross-modal masked modelling and keyword prediction). Their classes, in
# `objective_<name>.py`, are the truth: the tests check this table against them.
BUILT_IN_OBJECTIVES: dict[str, ObjectiveSchema] = {
    "ditc": ObjectiveSchema(("distill_alpha",), needs_momentum=True),
    "imc": ObjectiveSchema(needs_momentum=True),
    "glitc": ObjectiveSchema(needs_momentum=True),
    "pita": ObjectiveSchema(("loss", "span_policy")),
    "tia": ObjectiveSchema(("cover_ratio", "fill_value", "seed")),
    "tim": ObjectiveSchema(("negative_ratio", "seed")),
    "xmm_text": ObjectiveSchema(
        (
            "mask_ratio",
            "mask_token_id",
            "mask_fraction",
            "random_fraction",
            "seed",
            "momentum_distillation",
            "distill_alpha",
        )
    ),
    "xmm_image": ObjectiveSchema(("mask_ratio", "min_block", "loss", "target", "seed")),
    "psl": ObjectiveSchema(("keyword_source", "num_keywords", "votes_per_head", "distill_alpha"), needs_momentum=True),
}

_DECLARED: dict[str, ObjectiveSchema] = dict(BUILT_IN_OBJECTIVES)


def declare_objective(name: str, schema: ObjectiveSchema) -> None:
    """Make `name` a valid objective for the configuration, with `schema` (`register_objective` calls it)."""
    _DECLARED[name] = schema


def declared_objectives() -> tuple[str, ...]:
    """Every objective name a configuration accepts: the built-in ones in the paper's order, then the plug-ins'."""
    return tuple(_DECLARED)


def objective_schema(name: str, option: str = "alignment_objectives") -> ObjectiveSchema:
    """The schema of `name`; a `ValueError` naming `option`, the value and the declared objectives otherwise."""
    if name not in _DECLARED:
        raise ValueError(f"`{option}` names an unknown objective {name!r}; registered: {list(_DECLARED)}")
    return _DECLARED[name]


__all__ = [
    "BUILT_IN_OBJECTIVES",
    "ObjectiveSchema",
    "declare_objective",
    "declared_objectives",
    "objective_schema",
]
