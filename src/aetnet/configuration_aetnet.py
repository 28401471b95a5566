"""AETNet configuration: a LayoutLMv3 fusion model plus a ViT and a RoBERTa alignment encoder."""

from __future__ import annotations

from typing import ClassVar

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, LayoutLMv3Config, RobertaConfig
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec


ALIGNMENT_OBJECTIVES = ("ditc", "imc", "glitc", "pita")
FUSION_INJECTIONS = ("add", "gated", "none")
FUSION_ATTENTIONS = ("eager", "sdpa")
PITA_LOSSES = ("infonce", "cosine")
PITA_SPAN_POLICIES = ("center", "drop", "all")

# Named sizes for `AETNetConfig.from_preset`. `hidden` must equal 4 * coordinate + 2 * shape (LayoutLMv3 concatenates
# four coordinate and two shape embeddings). Positions are `max_length + 2` because RoBERTa-style position ids start
# after the padding index.
_PRESETS = {
    "tiny": dict(hidden=36, layers=2, heads=4, intermediate=37, coordinate=6, shape=6, image=16, patch=4, embed=16),
    "small": dict(hidden=192, layers=4, heads=4, intermediate=768, coordinate=32, shape=32, image=224, patch=16, embed=128),
    "base": dict(hidden=768, layers=12, heads=12, intermediate=3072, coordinate=128, shape=128, image=224, patch=16, embed=256),
}


@strict
class AETNetConfig(PreTrainedConfig):
    r"""
    Configuration of an AETNet model (Wang et al., "Alignment-Enriched Tuning for Patch-Level Pre-trained Document
    Image Models", AAAI 2023). AETNet fine-tunes a LayoutLMv3 *fusion* model together with two *alignment* encoders,
    a ViT on the page image and a RoBERTa on the OCR tokens, whose outputs are added to LayoutLMv3's embeddings and
    trained with four contrastive objectives. Momentum copies of the alignment encoders and two feature queues
    provide the contrastive targets.

    Args:
        layout_config (`dict` or `LayoutLMv3Config`, *optional*):
            The LayoutLMv3 fusion model (and the task heads' dropout). Not called `fusion_config`: transformers
            reserves that name.
        vision_config (`dict` or `PreTrainedConfig`, *optional*):
            The image alignment encoder: any ViT-compatible config (`vit`, `deit`). Its image and patch sizes must
            equal LayoutLMv3's `input_size` and `patch_size`, since both read the same `pixel_values`.
        text_config (`dict` or `RobertaConfig`, *optional*):
            The text alignment encoder. It reads LayoutLMv3's `input_ids`, so the vocabularies must match.
        embed_dim (`int`, *optional*, defaults to 256):
            Size of the shared contrastive space the two projections map into (ALBEF's value).
        queue_size (`int`, *optional*, defaults to 4096):
            Number of momentum features kept per modality as extra negatives. ALBEF's 65536 is larger than most
            document datasets: keep it below the number of training documents, or the queue fills with stale copies
            of the positive document (false negatives).
        momentum (`float`, *optional*, defaults to 0.995):
            EMA coefficient of the momentum encoders, in [0, 1). Applied once per optimizer step.
        temperature (`float`, *optional*, defaults to 0.07):
            Initial value of the learnable contrastive temperature, kept in [0.001, 0.5].
        distill_alpha (`float`, *optional*, defaults to 0.4):
            Weight of the momentum-distillation soft targets in DITC (0 gives plain one-hot InfoNCE). The trainer can
            ramp it up from 0.
        alignment_objectives (`list[str]`, *optional*, defaults to `["ditc", "imc", "glitc", "pita"]`):
            Which alignment objectives are computed.
        fusion_injection (`str`, *optional*, defaults to `"add"`):
            How the aligned features enter LayoutLMv3. `"add"` (the paper): the RoBERTa output is added to the text
            embeddings after their LayerNorm and the ViT output to the visual embeddings before concatenation.
            `"gated"`: the same through learnable per-channel gates initialised at zero, so that the model starts as
            exactly the pretrained LayoutLMv3. `"none"`: LayoutLMv3 sees no aligned features (the aligners are then
            trained only by the alignment objectives and are not needed at inference).
        fusion_attention (`str`, *optional*, defaults to `"eager"`):
            LayoutLMv3's self-attention. `"eager"`: the stock implementation. `"sdpa"`: the same function through
            `torch.nn.functional.scaled_dot_product_attention`, with the relative-position and spatial biases and the
            padding mask passed as one additive mask (see `aetnet.fast_attention`); faster and lighter in training,
            no attention probabilities kept. Weights are identical, so the choice can differ between save and load.
        pita_loss (`str`, *optional*, defaults to `"infonce"`):
            Form of the patch-level objective. `"infonce"`: bidirectional InfoNCE between each occupied cell's image
            patch and its mean token feature, the other occupied cells of the page as negatives (the official code's
            form, on normalised features with the learnable temperature, empty cells masked). `"cosine"`: the paper's
            form, 1 - mean cosine similarity over occupied cells; it has no negatives and so can collapse.
        pita_span_policy (`str`, *optional*, defaults to `"center"`):
            Cell of a token whose box spans several cells: `"center"` the cell holding the box centre, `"drop"` the
            token is ignored (the official code; drops most segment-level boxes), `"all"` the token counts in every
            cell it overlaps.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the initialisation of the projections.

    The PITA grid is LayoutLMv3's patch grid (`input_size // patch_size` cells a side); a cell spans `1000 / grid`
    box units.

    Example:

    ```python
    >>> from aetnet import AETNetConfig, AETNetForTokenClassification

    >>> config = AETNetConfig.from_preset("tiny", num_labels=7)
    >>> model = AETNetForTokenClassification(config)
    ```"""

    model_type = "aetnet"
    sub_configs_defaults = {
        "layout_config": LayoutLMv3Config,
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="vit"),
        "text_config": RobertaConfig,
    }
    # The Trainer's prediction loop collects every output field except these as "logits".
    keys_to_ignore_at_inference: ClassVar[list[str]] = ["alignment_losses"]

    layout_config: dict | PreTrainedConfig | None = None
    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    embed_dim: int = 256
    queue_size: int = 4096
    momentum: float = 0.995
    temperature: float = 0.07
    distill_alpha: float = 0.4
    alignment_objectives: list[str] | None = None
    fusion_injection: str = "add"
    fusion_attention: str = "eager"
    pita_loss: str = "infonce"
    pita_span_policy: str = "center"
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if self.alignment_objectives is None:
            self.alignment_objectives = list(ALIGNMENT_OBJECTIVES)
        super().__post_init__(**kwargs)
        self._check_consistency()

    def _check_consistency(self) -> None:
        layout, vision, text = self.layout_config, self.vision_config, self.text_config
        _check_choice("fusion_injection", self.fusion_injection, FUSION_INJECTIONS)
        _check_choice("fusion_attention", self.fusion_attention, FUSION_ATTENTIONS)
        _check_choice("pita_loss", self.pita_loss, PITA_LOSSES)
        _check_choice("pita_span_policy", self.pita_span_policy, PITA_SPAN_POLICIES)
        for objective in self.alignment_objectives:
            _check_choice("alignment_objectives", objective, ALIGNMENT_OBJECTIVES)
        if len(set(self.alignment_objectives)) != len(self.alignment_objectives):
            raise ValueError(f"`alignment_objectives` has duplicates: {self.alignment_objectives}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"`momentum` must be in [0, 1), got {self.momentum}")
        if self.queue_size <= 0:
            raise ValueError(f"`queue_size` must be positive, got {self.queue_size}")
        if self.embed_dim <= 0:
            raise ValueError(f"`embed_dim` must be positive, got {self.embed_dim}")
        if not 0.001 <= self.temperature <= 0.5:
            raise ValueError(f"`temperature` must be in [0.001, 0.5], got {self.temperature}")
        if not 0.0 <= self.distill_alpha <= 1.0:
            raise ValueError(f"`distill_alpha` must be in [0, 1], got {self.distill_alpha}")
        if layout.hidden_size != 4 * layout.coordinate_size + 2 * layout.shape_size:
            raise ValueError(
                f"`layout_config.hidden_size` ({layout.hidden_size}) must equal 4 * `layout_config.coordinate_size` "
                f"+ 2 * `layout_config.shape_size` ({layout.coordinate_size}, {layout.shape_size})"
            )
        if text.vocab_size != layout.vocab_size:
            raise ValueError(
                f"`text_config.vocab_size` ({text.vocab_size}) must equal `layout_config.vocab_size` "
                f"({layout.vocab_size}): the text aligner reads LayoutLMv3's input_ids"
            )
        if self.fusion_injection != "none":
            for name, sub in (("vision_config", vision), ("text_config", text)):
                if sub.hidden_size != layout.hidden_size:
                    raise ValueError(
                        f"`{name}.hidden_size` ({sub.hidden_size}) must equal `layout_config.hidden_size` "
                        f"({layout.hidden_size}) to add aligned features with fusion_injection="
                        f"'{self.fusion_injection}'; use fusion_injection='none' or matching sizes"
                    )
        if _as_int(vision.image_size) != _as_int(layout.input_size) or _as_int(vision.patch_size) != _as_int(
            layout.patch_size
        ):
            raise ValueError(
                f"`vision_config.image_size`/`patch_size` ({vision.image_size}/{vision.patch_size}) must equal "
                f"`layout_config.input_size`/`patch_size` ({layout.input_size}/{layout.patch_size}): both encoders "
                "read the same pixel_values and PITA pairs their patch grids"
            )

    @property
    def grid_size(self) -> int:
        """Number of patch cells per side of the page (LayoutLMv3's visual token grid)."""
        return _as_int(self.layout_config.input_size) // _as_int(self.layout_config.patch_size)

    @property
    def uses_momentum(self) -> bool:
        """Whether any enabled objective needs the momentum encoders and queues."""
        return any(o in self.alignment_objectives for o in ("ditc", "imc", "glitc"))

    @classmethod
    def from_preset(
        cls, name: str, *, vocab_size: int = 50265, max_length: int = 512, **kwargs
    ) -> AETNetConfig:
        """
        Build a randomly initialisable config of a named size: `"tiny"` (tests, seconds on CPU), `"small"` (a
        from-scratch CPU run on FUNSD) or `"base"` (the sizes of LayoutLMv3-base, ViT-B/16 and RoBERTa-base).
        Extra keyword arguments are AETNetConfig fields (`num_labels`, `queue_size`, ...).
        """
        if name not in _PRESETS:
            raise ValueError(f"`name` must be one of {sorted(_PRESETS)}, got {name!r}")
        p = _PRESETS[name]
        shared = dict(
            hidden_size=p["hidden"],
            num_hidden_layers=p["layers"],
            num_attention_heads=p["heads"],
            intermediate_size=p["intermediate"],
        )
        layout = LayoutLMv3Config(
            **shared,
            vocab_size=vocab_size,
            max_position_embeddings=max_length + 2,
            coordinate_size=p["coordinate"],
            shape_size=p["shape"],
            input_size=p["image"],
            patch_size=p["patch"],
        )
        vision = AutoConfig.for_model(
            "vit", **shared, image_size=p["image"], patch_size=p["patch"], layer_norm_eps=1e-6
        )
        text = RobertaConfig(**shared, vocab_size=vocab_size, max_position_embeddings=max_length + 2)
        kwargs.setdefault("embed_dim", p["embed"])
        return cls(layout_config=layout, vision_config=vision, text_config=text, **kwargs)


def _as_int(size: int | list[int] | tuple[int, ...]) -> int:
    """Square image and patch sizes may be given as an int or a pair; AETNet needs square grids."""
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ValueError(f"AETNet needs square images and patches, got size {size}")
        return int(size[0])
    return int(size)


def _check_choice(field: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"`{field}` must be one of {list(choices)}, got {value!r}")


__all__ = ["AETNetConfig", "ALIGNMENT_OBJECTIVES", "FUSION_ATTENTIONS", "FUSION_INJECTIONS", "PITA_LOSSES", "PITA_SPAN_POLICIES"]
