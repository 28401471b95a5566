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
Alignment objectives as plug-ins: a registry, the `AlignmentObjective` base class and the `AlignmentFeatures` bundle
that `AETNetModel` builds once per training step and hands to every enabled objective.

An objective is one file (`objective_<name>.py` for the built-in ones) with a class registered under its name:

```python
@register_objective("my_term")
class MyTerm(AlignmentObjective):
    needs_momentum = False  # True: the model builds momentum encoders and feature queues for it
    modalities = ("image", "text")  # what it reads: skipped (and reported) on a batch without one of them
    trains = ("vision_model", "vision_proj", "text_model", "text_proj")  # what its loss reaches (no `temp`)

    def __init__(self, config, scale: float = 1.0):  # keyword settings: `alignment_objectives={"my_term": {...}}`
        super().__init__(config)
        self.scale = scale

    def forward(self, features: AlignmentFeatures) -> torch.Tensor:
        return self.scale * (features.image_feat - features.text_feat).pow(2).sum(-1).mean()
```

`AETNetConfig(alignment_objectives=["ditc", "my_term"])` (or a dict of settings per name) then computes it, the
models add it to `loss` with its weight (`alignment_loss_weights`), and `AETNetTrainer` logs it as `loss_my_term`.
On a batch that lacks a modality the objective reads (a page without its image, an image without text) the model
does not compute it: the term is absent from `alignment_losses`, named in `skipped_objectives`, and the trainer logs
`skipped_my_term`, the number of micro-batches that skipped it, instead of a loss.
Registering also declares the name and its settings to the configuration (`alignment_schema.py`), which validates
them without importing any objective. The built-in objectives register when `objectives.py`, their index, is imported
(the model imports it).

These are flat modules of the package (not a sub-package) because transformers copies a model's relative imports
as files of one folder when it saves remote code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from .alignment_schema import ObjectiveSchema, declare_objective


_OBJECTIVES: dict[str, type[AlignmentObjective]] = {}
# What a page can hold, by the inputs that carry it: "image" (`pixel_values`) and "text" (`input_ids`).
MODALITIES = ("image", "text")
# What of `AETNetModel` besides LayoutLMv3 an objective's loss can train (see `AlignmentObjective.trains`).
SHARED_PARTS = ("temp", "vision_model", "vision_proj", "text_model", "text_proj")


def register_objective(name: str):
    """Class decorator: make an `AlignmentObjective` subclass selectable as `name` in `alignment_objectives`."""
    if not name.isidentifier() or name != name.lower():
        raise ValueError(f"An objective name must be a lower-case identifier, got {name!r}")

    def decorate(cls: type[AlignmentObjective]) -> type[AlignmentObjective]:
        if not (isinstance(cls, type) and issubclass(cls, AlignmentObjective)):
            raise TypeError(f"`register_objective({name!r})` decorates AlignmentObjective subclasses, got {cls!r}")
        if not cls.modalities or not set(cls.modalities) <= set(MODALITIES):
            raise ValueError(
                f"`{cls.__name__}.modalities` must name one or more of {MODALITIES}, got {cls.modalities!r}"
            )
        cls.name = name
        _OBJECTIVES[name] = cls
        declare_objective(name, ObjectiveSchema.of(cls))
        return cls

    return decorate


def registered_objectives() -> tuple[str, ...]:
    """The names of every registered objective, in registration order (the built-in four first)."""
    return tuple(_OBJECTIVES)


def page_modalities(input_ids: torch.Tensor | None, pixel_values: torch.Tensor | None) -> frozenset[str]:
    """The modalities a batch holds: "text" with `input_ids`, "image" with `pixel_values`."""
    return frozenset(name for name, value in zip(MODALITIES, (pixel_values, input_ids)) if value is not None)


def split_by_modalities(
    objectives: Mapping[str, AlignmentObjective], modalities: frozenset[str]
) -> tuple[dict[str, AlignmentObjective], tuple[str, ...]]:
    """The objectives whose `modalities` the batch holds, and the names of the others (in the given order): the one
    rule that decides which terms a forward computes and which it reports as skipped."""
    runs = {name: objective for name, objective in objectives.items() if set(objective.modalities) <= modalities}
    return runs, tuple(name for name in objectives if name not in runs)


def get_objective(name: str) -> type[AlignmentObjective]:
    """The class registered as `name`; a `ValueError` naming the registered ones otherwise."""
    if name not in _OBJECTIVES:
        raise ValueError(f"`alignment_objectives` names an unknown objective {name!r}; registered: {list(_OBJECTIVES)}")
    return _OBJECTIVES[name]


class AlignmentObjective(nn.Module):
    """
    One alignment objective: `forward(features) -> scalar tensor`, unweighted (the weight is the config's).

    Class attributes say what the model must provide: `needs_momentum` (momentum encoders, their features and the
    queues in `features`), `needs_generator` (a `draws` counter for `generator()`, the objective's own seeded
    random masks) and `modalities` (the inputs its loss reads; a batch without one of them skips the objective).
    Keyword arguments of `__init__` after `config` are the objective's settings, given as
    `AETNetConfig(alignment_objectives={"name": {...}})`; their defaults are the objective's defaults.
    """

    name: ClassVar[str] = ""
    needs_momentum: ClassVar[bool] = False
    # True: the objective draws random masks / covers with `generator()`, and keeps a `draws` counter buffer for it.
    needs_generator: ClassVar[bool] = False
    # The modalities (of `MODALITIES`) its loss reads. On a batch without one of them the model does not call the
    # objective and reports it in `skipped_objectives`: a term computed on half of its inputs, or a zero standing in
    # for it, would read as a measurement in the training log. Every built-in objective declares its own.
    modalities: ClassVar[tuple[str, ...]] = MODALITIES
    # The model's shared parts its loss reaches; parts no enabled objective (nor the feature injection) reaches are
    # frozen, so that DDP without `find_unused_parameters` never meets a parameter without a gradient. The default,
    # all of them, is the safe one: an objective that reaches fewer says so (an instance may narrow it in `__init__`).
    trains: ClassVar[tuple[str, ...]] = SHARED_PARTS

    def __init__(self, config: Any, **settings: Any):
        super().__init__()
        if settings:
            raise TypeError(f"Objective {self.name!r} takes no setting {sorted(settings)}")
        if self.needs_generator:
            # Saved with the model, so that a resumed run draws what the uninterrupted run would have drawn.
            self.register_buffer("draws", torch.zeros((), dtype=torch.long))

    def generator(self, device: torch.device, seed: int = 0) -> torch.Generator:
        """
        The random generator of this call: seeded by `seed` and the number of earlier training calls, so that masks
        are reproducible, differ from step to step, and resume exactly; not the global RNG, so that switching an
        objective on does not change the dropout masks of the rest of the model.
        """
        generator = torch.Generator(device=device)
        generator.manual_seed(seed * 1_000_003 + int(self.draws))
        if self.training:
            self.draws += 1
        return generator

    def own_momentum_pairs(self, model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
        """
        `(online, momentum)` module pairs whose momentum copy this objective holds (named with ALBEF's `_m` suffix),
        the online side one of its own modules or a part of `model` (e.g. its LayoutLMv3): the model initialises,
        freezes, EMA-updates and re-syncs them together with its momentum encoders. None by default.
        """
        return []

    def prepare_fusion_inputs(self, inputs: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Any]:
        """
        Called before this step's LayoutLMv3 forward, when the losses are computed: return the fusion model's inputs
        (`input_ids`, `bbox`, `attention_mask`, `pixel_values`), changed if the objective needs that (a new dict;
        never modify the given tensors in place), and what `forward` will need to know about the change, which it
        finds in `features.prepared[self.name]`. The aligners, the momentum view and the task labels are unaffected.
        By default nothing changes.
        """
        return inputs, None

    def forward(self, features: AlignmentFeatures) -> torch.Tensor:
        """The unweighted term, a scalar; every objective implements it (this base class is abstract)."""
        raise NotImplementedError(f"{type(self).__name__} must implement `forward(features)`")

    def chance_level(self, features: AlignmentFeatures) -> float:
        """
        The loss on this bundle of the best prediction that ignores the document: uniform scores for a contrastive
        term (log N over exactly the candidates it scores), the label or token prior for a classification or masked
        term (its entropy), the mean target for a regression. An objective whose loss falls clearly below it has
        learnt something about the page, not only the statistics of its targets. Learnability checks
        (`tests/test_learnability.py`, `benchmarks/bench_learnability.py`) compare the trained loss with it, so that
        an objective that silently stops learning is caught without naming any objective outside its own file.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not define `chance_level(features)`, the loss of an untrained model on this "
            "bundle; implement it so that the learnability checks cover this objective"
        )


def prior_entropy(counts: torch.Tensor) -> float:
    """
    The entropy (nats) of the empirical distribution with these `counts`: the cross-entropy of the best constant
    prediction of labels drawn from it, the chance level of a classification or masked-prediction term.
    """
    counts = counts.double().flatten()
    probabilities = counts[counts > 0] / counts.sum()
    return float(-(probabilities * probabilities.log()).sum()) if counts.sum() > 0 else 0.0


@dataclass(frozen=True)
class AlignmentFeatures:
    """
    What the model computed once for this step, for the objectives to share. Shapes: B documents, L tokens, P patches
    (without prefix tokens), E the contrastive `embed_dim`, H the aligners' hidden size, Q the queue size. Frozen:
    every objective reads the same bundle, so none may change it for the ones after it. On a batch without the page
    image (text) the fields computed from it are None; only objectives whose `modalities` allow that ever see them.

    Args:
        input_ids, bbox, attention_mask: the text inputs, `(B, L)`, `(B, L, 4)` in 0-1000 units, `(B, L)`.
        pixel_values: the page as LayoutLMv3 and the online ViT saw it, `(B, 3, height, width)`.
        real_tokens: `(B, L)` bool, attended tokens that are not `<s>`, `</s>` or padding.
        boxed_tokens: `(B, L)` bool, real tokens that also have a box (question tokens have none).
        image_embeds, text_embeds: the online aligners' outputs, `(B, prefix + P, H)` ([CLS] first; DeiT adds a
            distillation token) and `(B, L, H)`.
        patch_embeds: the patch part of `image_embeds`, `(B, P, H)`, in row-major grid order.
        image_feat, text_feat: their normalised projected [CLS] features, `(B, E)`.
        vision_proj, text_proj: the online projections into the contrastive space.
        temp: the learnable temperature, clamped to its range.
        grid_size: patch cells per side of the page.
        fusion_hidden_states: LayoutLMv3's output of this step, `(B, L + 1 + P', H')` (text tokens, then the visual
            [CLS] and LayoutLMv3's own patches), with the aligned features injected.
        fusion: `fusion(**overrides)` runs LayoutLMv3 once more on this step's inputs with some of them replaced
            (e.g. `input_ids=masked`, `pixel_values=covered`), without injected aligned features, and returns its
            output: the extra forward of objectives that change what the fusion model sees.
        word_embeddings: LayoutLMv3's word embeddings (for heads tied to them, e.g. a masked-LM head).
        prepared: per objective name, what its `prepare_fusion_inputs` returned beside the inputs (e.g. which
            tokens' regions it covered), None for objectives that changed nothing. `fusion_hidden_states` come from
            the changed inputs; `input_ids` ... `pixel_values` above and `fusion()` use the unchanged ones.
        patch_embeds_m, text_embeds_m, image_feat_m, text_feat_m, vision_proj_m, text_proj_m: the momentum
            counterparts (the momentum ViT sees `pixel_values_aug`); None unless an objective `needs_momentum`.
        image_queue, text_queue, queue_valid: `(E, Q)` copies of the queues before this step's write, and which
            entries hold features, `(Q,)`; None unless an objective `needs_momentum`.
        distill_ramp: the factor of every momentum-distillation weight at this step, in [0, 1]
            (`AETNetModel.distill_ramp`, which `AETNetTrainer` ramps from 0 over the first epoch as ALBEF does).
    """

    input_ids: torch.Tensor | None
    bbox: torch.Tensor | None
    attention_mask: torch.Tensor | None
    pixel_values: torch.Tensor | None
    real_tokens: torch.Tensor | None
    boxed_tokens: torch.Tensor | None
    image_embeds: torch.Tensor | None
    patch_embeds: torch.Tensor | None
    text_embeds: torch.Tensor | None
    image_feat: torch.Tensor | None
    text_feat: torch.Tensor | None
    vision_proj: nn.Module
    text_proj: nn.Module
    temp: torch.Tensor
    grid_size: int
    fusion_hidden_states: torch.Tensor
    fusion: Callable[..., Any]
    word_embeddings: nn.Module
    prepared: dict[str, Any]
    patch_embeds_m: torch.Tensor | None = None
    text_embeds_m: torch.Tensor | None = None
    image_feat_m: torch.Tensor | None = None
    text_feat_m: torch.Tensor | None = None
    vision_proj_m: nn.Module | None = None
    text_proj_m: nn.Module | None = None
    image_queue: torch.Tensor | None = None
    text_queue: torch.Tensor | None = None
    queue_valid: torch.Tensor | None = None
    distill_ramp: float = 1.0


__all__ = [
    "MODALITIES",
    "SHARED_PARTS",
    "AlignmentFeatures",
    "AlignmentObjective",
    "get_objective",
    "page_modalities",
    "prior_entropy",
    "register_objective",
    "registered_objectives",
    "split_by_modalities",
]
