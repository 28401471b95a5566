"""
AETNet models: LayoutLMv3 fine-tuned with a ViT and a RoBERTa alignment encoder, their momentum copies, two feature
queues and four alignment objectives (Wang et al., AAAI 2023). Stock transformers classes do all the encoding; this
file only wires them together.

This module imports only torch, transformers and its sibling modules, so that `save_pretrained` can ship it as Hub
remote code (`trust_remote_code=True`).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from transformers import (
    AutoModel,
    LayoutLMv3ForQuestionAnswering,
    LayoutLMv3ForSequenceClassification,
    LayoutLMv3ForTokenClassification,
    LayoutLMv3Model,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    ModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.models.layoutlmv3.modeling_layoutlmv3 import LayoutLMv3ClassificationHead
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple, logging

from .alignment import AlignmentFeatures, get_objective
from .configuration_aetnet import AETNetConfig
from .losses import weighted_objective
from .momentum import FeatureQueues


logger = logging.get_logger(__name__)

TEMPERATURE_RANGE = (0.001, 0.5)
MOMENTUM_MODULES = ("vision_model_m", "vision_proj_m", "text_model_m", "text_proj_m")


@dataclass
class AETNetModelOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            The weighted sum of the alignment objectives (`config.alignment_loss_weights`), when they were computed:
            what training the base model alone minimises.
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, text_length + 1 + num_patches, hidden_size)`):
            LayoutLMv3's output: the text tokens, then the visual [CLS] and patch tokens.
        hidden_states, attentions: LayoutLMv3's, when asked for.
        image_embeds (`torch.FloatTensor` of shape `(batch_size, 1 + num_patches, hidden_size)`, *optional*):
            The online ViT aligner's output ([CLS] then patches), when the aligners ran.
        text_embeds (`torch.FloatTensor` of shape `(batch_size, text_length, hidden_size)`, *optional*):
            The online RoBERTa aligner's output, when the aligners ran.
        alignment_losses (`dict[str, torch.FloatTensor]`, *optional*):
            One unweighted scalar per enabled objective (`config.alignment_objectives`); computed in training mode,
            or in eval mode with `return_alignment_losses=True`.
    """

    loss: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    alignment_losses: dict[str, torch.FloatTensor] | None = None


@dataclass
class AETNetTokenClassifierOutput(TokenClassifierOutput):
    """
    `TokenClassifierOutput` where `loss` is the whole objective: the task loss plus the weighted alignment terms that were
    computed (all of them in training mode), `task_loss` the task loss alone and `alignment_losses` the unweighted
    terms (as `FlavaForPreTraining` exposes `loss_info`).
    """

    task_loss: torch.FloatTensor | None = None
    alignment_losses: dict[str, torch.FloatTensor] | None = None


@dataclass
class AETNetSequenceClassifierOutput(SequenceClassifierOutput):
    """
    `SequenceClassifierOutput` where `loss` is the whole objective: the task loss plus the weighted alignment terms that were
    computed (all of them in training mode), `task_loss` the task loss alone and `alignment_losses` the unweighted
    terms (as `FlavaForPreTraining` exposes `loss_info`).
    """

    task_loss: torch.FloatTensor | None = None
    alignment_losses: dict[str, torch.FloatTensor] | None = None


@dataclass
class AETNetQuestionAnsweringModelOutput(QuestionAnsweringModelOutput):
    """
    `QuestionAnsweringModelOutput` where `loss` is the whole objective: the task loss plus the weighted alignment terms that were
    computed (all of them in training mode), `task_loss` the task loss alone and `alignment_losses` the unweighted
    terms (as `FlavaForPreTraining` exposes `loss_info`).
    """

    task_loss: torch.FloatTensor | None = None
    alignment_losses: dict[str, torch.FloatTensor] | None = None


class AETNetLayoutLMv3Model(LayoutLMv3Model):
    """
    The stock LayoutLMv3Model, plus two optional inputs that are added where the paper injects the aligned features:
    `aligned_text_embeds` to the text embeddings (after their LayerNorm and dropout) and `aligned_image_embeds` to
    the visual embeddings (after the visual LayerNorm, before text and image are concatenated). Without them it is
    exactly LayoutLMv3, weights and outputs.
    """

    def __init__(self, config):
        super().__init__(config)
        self._aligned_text_embeds = None
        self._aligned_image_embeds = None
        if config.text_embed:
            self.embeddings.register_forward_hook(self._add_aligned_text)

    def _add_aligned_text(self, module, args, output):
        return output if self._aligned_text_embeds is None else output + self._aligned_text_embeds

    def forward_image(self, pixel_values):
        embeddings = super().forward_image(pixel_values)
        return embeddings if self._aligned_image_embeds is None else embeddings + self._aligned_image_embeds

    def forward(self, *args, aligned_text_embeds=None, aligned_image_embeds=None, **kwargs):
        self._aligned_text_embeds, self._aligned_image_embeds = aligned_text_embeds, aligned_image_embeds
        try:
            return super().forward(*args, **kwargs)
        finally:
            self._aligned_text_embeds = self._aligned_image_embeds = None


class CheckpointMismatchError(ValueError):
    """A checkpoint whose encoder weights are missing from, or unexpected by, the config it is loaded with."""


class AETNetPreTrainedModel(PreTrainedModel):
    config: AETNetConfig
    base_model_prefix = "aetnet"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    # transformers dispatches `attn_implementation` to every sub-model: LayoutLMv3 takes sdpa and flex attention, the
    # ViT and RoBERTa aligners flash attention too (a per-sub-config dict selects it for them alone).
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_flash_attn = True
    _no_split_modules = ["LayoutLMv3Layer", "ViTLayer", "RobertaLayer"]
    # Checkpoints saved before the queues moved into `queues` carry them at the top level: they load with empty
    # queues (the queues are training state, refilled within `queue_size / batch_size` steps).
    _keys_to_ignore_on_load_unexpected = [r"^(aetnet\.)?(image_queue|text_queue|queue_ptr|queue_filled)$"]
    # The task loss is a plain mean, so the Trainer must divide it by the accumulation steps itself.
    accepts_loss_kwargs = False

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, FeatureQueues):
            # Empty queues: only the first `queue_filled` entries are ever read, so zeros are as good as ALBEF's
            # random vectors, and deterministic (meta-device initialisation gives the same buffers).
            for buffer in module.buffers():
                init.zeros_(buffer)
        if isinstance(module, AETNetModel):
            init.constant_(module.temp, module.config.temperature)
            for gate in (module.text_gate, module.image_gate):
                if gate is not None:
                    init.zeros_(gate)
            if module.config.uses_momentum:
                # Children are initialised before their parent, so the online encoders are final here.
                for online, momentum in module.momentum_pairs():
                    for param, param_m in zip(online.parameters(), momentum.parameters()):
                        init.copy_(param_m, param)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """
        `PreTrainedModel.from_pretrained`, plus three AETNet rules: momentum encoders missing from the checkpoint are
        copied from the online encoders (a checkpoint saved without them starts with momentum == online), every
        momentum parameter is frozen again (loading re-creates parameters with `requires_grad=True`), and a checkpoint
        whose encoders do not match the config (missing, unexpected or resized weights of the AETNet base model, other
        than momentum ones) raises an error listing the keys instead of silently re-initialising them: a
        `CheckpointMismatchError` (a `ValueError`) for missing or unexpected weights, a `RuntimeError` for resized
        ones, as transformers raises. Task heads (e.g. `classifier`) may be missing or unexpected, as when fine-tuning
        a pretrained base. Pass `allow_missing_keys=True` (or `ignore_mismatched_sizes=True` for resized weights) to
        accept the mismatch; `output_loading_info=True` returns the lists instead of raising for missing or
        unexpected weights, and initialising from a config (`from_pretrained(None, config=..., state_dict=...)`)
        checks nothing.
        """
        output_loading_info = kwargs.pop("output_loading_info", False)
        from_checkpoint = (args[0] if args else kwargs.get("pretrained_model_name_or_path")) is not None
        allow_missing_keys = kwargs.pop("allow_missing_keys", False) or output_loading_info or not from_checkpoint
        # Load resized weights as re-initialised so that they can be listed below (transformers' own error does not).
        ignore_mismatched_sizes = kwargs.pop("ignore_mismatched_sizes", False) or not from_checkpoint
        model, loading_info = super().from_pretrained(
            *args, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
        )
        base = model.base_model
        base_children = {name for name, _ in base.named_children()} | {name for name, _ in base.named_parameters()}
        base_children |= {name for name, _ in base.named_buffers()}
        prefix = "" if model is base else f"{cls.base_model_prefix}."

        def in_base(key: str) -> bool:
            key = key[len(prefix) :] if prefix and key.startswith(prefix) else key
            return key.split(".")[0] in base_children or key in base_children

        problems = {}
        if not allow_missing_keys:
            # Momentum copies are re-synced below; the queues are training state that refills within a few steps.
            problems["missing"] = [
                k for k in loading_info["missing_keys"] if in_base(k) and "_m." not in k and "queues." not in k
            ]
            problems["unexpected"] = [k for k in loading_info["unexpected_keys"] if in_base(k)]
        if not ignore_mismatched_sizes:
            problems["mismatched"] = [
                " ".join(map(str, k)) if isinstance(k, tuple) else str(k) for k in loading_info["mismatched_keys"]
            ]
        problems = {kind: sorted(keys) for kind, keys in problems.items() if keys}
        if problems:
            listed = "; ".join(f"{kind} ({len(keys)}): {keys[:10]}" for kind, keys in problems.items())
            # transformers raises RuntimeError for resized weights; missing or unexpected ones are AETNet's own check.
            error = RuntimeError if "mismatched" in problems else CheckpointMismatchError
            raise error(
                f"The checkpoint does not match the config of {cls.__name__}, whose sub-configs (layout_config, "
                f"vision_config, text_config) must describe the saved encoders: {listed}. Fix the config, or pass "
                "`allow_missing_keys=True` (missing / unexpected) or `ignore_mismatched_sizes=True` (mismatched) to "
                "load anyway with those weights freshly initialised."
            )
        missing = [key.split(".") for key in loading_info["missing_keys"]]
        stale = {name for name in MOMENTUM_MODULES if any(name in parts for parts in missing)}
        if stale:
            logger.info(f"Copying online weights into momentum modules missing from the checkpoint: {sorted(stale)}")
            base.copy_params(only=stale)
        base.freeze_momentum()
        return (model, loading_info) if output_loading_info else model

    def resize_token_embeddings(
        self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None, mean_resizing: bool = True
    ) -> nn.Embedding:
        """
        `PreTrainedModel.resize_token_embeddings` for the two encoders that read `input_ids`: LayoutLMv3 (the input
        embeddings) and the RoBERTa aligner with its momentum copy, whose new rows start equal to the online ones.
        `layout_config.vocab_size` and `text_config.vocab_size` both follow.
        """
        embeddings = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        if new_num_tokens is None and pad_to_multiple_of is None:
            return embeddings
        base, size = self.base_model, embeddings.num_embeddings
        old_size = base.text_model.get_input_embeddings().num_embeddings
        base.text_model.resize_token_embeddings(size, mean_resizing=mean_resizing)
        if getattr(base, "text_model_m", None) is not None:
            base.text_model_m.resize_token_embeddings(size, mean_resizing=False)
            with torch.no_grad():
                rows = slice(min(old_size, size), size)
                momentum_rows = base.text_model_m.get_input_embeddings().weight[rows]
                momentum_rows.copy_(base.text_model.get_input_embeddings().weight[rows])
        # The aligners share `config.text_config` (and LayoutLMv3 `config.layout_config`): one assignment each.
        self.config.layout_config.vocab_size = self.config.text_config.vocab_size = size
        base.freeze_momentum()
        return embeddings

    @classmethod
    def from_encoders_pretrained(
        cls,
        layout_model_name_or_path: str,
        vision_model_name_or_path: str,
        text_model_name_or_path: str,
        **kwargs,
    ):
        """
        Build an AETNet model from three separately pretrained checkpoints (hub ids or local folders): LayoutLMv3
        (its task head too, when the checkpoint has a compatible one), a ViT/DeiT and a RoBERTa. Momentum encoders
        start equal to the online ones; the projections are new and untrained.

        Keyword arguments prefixed `layout_`, `vision_` or `text_` go to the matching `from_pretrained` (e.g.
        `vision_revision="main"`); the others are `AETNetConfig` fields (`num_labels`, `id2label`, `queue_size`...).
        """
        prefixed = {"layout_": {}, "vision_": {}, "text_": {}}
        config_kwargs = {}
        for key, value in kwargs.items():
            prefix = next((p for p in prefixed if key.startswith(p)), None)
            if prefix is None:
                config_kwargs[key] = value
            else:
                prefixed[prefix][key[len(prefix) :]] = value
        label_kwargs = {k: config_kwargs[k] for k in ("num_labels", "id2label", "label2id") if k in config_kwargs}
        layout_class = getattr(cls, "_layoutlmv3_class", LayoutLMv3Model)
        if layout_class is not LayoutLMv3Model:
            prefixed["layout_"] = {"ignore_mismatched_sizes": True, **label_kwargs, **prefixed["layout_"]}
        # One line below instead of three load reports (a pretrained LayoutLMv3 without a head reports it missing).
        verbosity = logging.get_verbosity()
        logging.set_verbosity_error()
        try:
            layout, layout_info = layout_class.from_pretrained(
                layout_model_name_or_path, output_loading_info=True, **prefixed["layout_"]
            )
            vision = AutoModel.from_pretrained(
                vision_model_name_or_path, add_pooling_layer=False, **prefixed["vision_"]
            )
            text = AutoModel.from_pretrained(text_model_name_or_path, add_pooling_layer=False, **prefixed["text_"])
        finally:
            logging.set_verbosity(verbosity)
        resized = [k[0] if isinstance(k, tuple) else str(k) for k in layout_info.get("mismatched_keys", [])]
        new_head = sorted({*layout_info.get("missing_keys", []), *resized})

        config = AETNetConfig(
            layout_config=layout.config.to_dict(),
            vision_config=vision.config.to_dict(),
            text_config=text.config.to_dict(),
            **config_kwargs,
        )
        model = cls(config)
        base = model.base_model
        layout_base = layout if layout_class is LayoutLMv3Model else layout.layoutlmv3
        base.layoutlmv3.load_state_dict(layout_base.state_dict())
        base.vision_model.load_state_dict(vision.state_dict())
        base.text_model.load_state_dict(text.state_dict())
        for name in getattr(cls, "_layoutlmv3_head_names", ()):
            getattr(model, name).load_state_dict(getattr(layout, name).state_dict())
        base.copy_params()
        head = f" and the task head ({', '.join(new_head)})" if new_head else ""
        logger.warning(
            f"Newly initialised: the AETNet projections (vision_proj, text_proj){head}. Fine-tune before using the "
            "model."
        )
        return model


class AETNetModel(AETNetPreTrainedModel):
    """
    The AETNet encoder: LayoutLMv3 (`layoutlmv3`), the ViT and RoBERTa aligners (`vision_model`, `text_model`) with
    their projections into the contrastive space (`vision_proj`, `text_proj`), the frozen momentum copies (`_m`
    suffix), the learnable temperature `temp` and the feature queues `queues` (`image_queue` / `text_queue` in ALBEF's
    layout `(embed_dim, queue_size)`, `queue_ptr` and `queue_filled`, the number of real entries so far; also readable
    as `model.image_queue` etc.).

    In training mode `forward` first takes the momentum EMA step (ALBEF's rule) and then enqueues the batch's
    momentum features; set `momentum_update_in_forward = False` to call `momentum_update()` once per optimizer step
    instead, which keeps the EMA horizon independent of gradient accumulation (`AETNetTrainer` does that).
    """

    def __init__(self, config: AETNetConfig):
        super().__init__(config)
        self.layoutlmv3 = AETNetLayoutLMv3Model(config.layout_config)
        self.vision_model = AutoModel.from_config(config.vision_config, add_pooling_layer=False)
        self.text_model = AutoModel.from_config(config.text_config, add_pooling_layer=False)
        self.vision_proj = nn.Linear(config.vision_config.hidden_size, config.embed_dim)
        self.text_proj = nn.Linear(config.text_config.hidden_size, config.embed_dim)
        self.temp = nn.Parameter(torch.tensor(config.temperature))
        gated = config.fusion_injection == "gated"
        self.text_gate = nn.Parameter(torch.zeros(config.layout_config.hidden_size)) if gated else None
        self.image_gate = nn.Parameter(torch.zeros(config.layout_config.hidden_size)) if gated else None
        # DeiT adds a distillation token after [CLS]; patches start after all prefix tokens.
        self.vision_prefix_tokens = 2 if config.vision_config.model_type == "deit" else 1

        if config.uses_momentum:
            self.vision_model_m = AutoModel.from_config(config.vision_config, add_pooling_layer=False)
            self.text_model_m = AutoModel.from_config(config.text_config, add_pooling_layer=False)
            self.vision_proj_m = nn.Linear(config.vision_config.hidden_size, config.embed_dim)
            self.text_proj_m = nn.Linear(config.text_config.hidden_size, config.embed_dim)
            self.queues = FeatureQueues(config.embed_dim, config.queue_size)

        # One module per enabled objective, in config order (see `alignment.py`: the registry and the bundle).
        self.objectives = nn.ModuleDict(
            {
                name: get_objective(name)(config, **config.objective_settings.get(name, {}))
                for name in config.alignment_objectives
            }
        )
        # Off when something else runs the EMA once per optimizer step (AETNetTrainer's MomentumUpdateCallback).
        self.momentum_update_in_forward = True
        self.post_init()
        self.freeze_momentum()

    def get_input_embeddings(self):
        return self.layoutlmv3.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.layoutlmv3.set_input_embeddings(value)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(online, momentum) module pairs; empty when no enabled objective needs momentum."""
        if not self.config.uses_momentum:
            return []
        return [
            (self.vision_model, self.vision_model_m),
            (self.vision_proj, self.vision_proj_m),
            (self.text_model, self.text_model_m),
            (self.text_proj, self.text_proj_m),
        ]

    @torch.no_grad()
    def copy_params(self, only: set[str] | None = None) -> None:
        """Set momentum weights equal to the online weights (all pairs, or the momentum modules named in `only`)."""
        for online, momentum in self.momentum_pairs():
            if only is None or any(getattr(self, name) is momentum for name in only):
                for param, param_m in zip(online.parameters(), momentum.parameters()):
                    param_m.copy_(param)

    def freeze_momentum(self) -> None:
        """
        Freeze the momentum encoders, and LayoutLMv3's relative-position bias tables: transformers builds their
        biases under `no_grad`, so they never receive a gradient, and DDP without `find_unused_parameters` (the
        Trainer's choice with gradient checkpointing) fails on trainable parameters that get none.
        """
        for _, momentum in self.momentum_pairs():
            momentum.requires_grad_(False)
        for name in ("rel_pos_bias", "rel_pos_x_bias", "rel_pos_y_bias"):
            table = getattr(self.layoutlmv3.encoder, name, None)
            if table is not None:
                table.requires_grad_(False)

    @torch.no_grad()
    def momentum_update(self) -> None:
        """EMA step `param_m = m * param_m + (1 - m) * param` for every momentum parameter. Once per optimizer step."""
        pairs = [
            (param, param_m)
            for online, momentum in self.momentum_pairs()
            for param, param_m in zip(online.parameters(), momentum.parameters())
        ]
        if not pairs:
            return
        online_params, momentum_params = (list(group) for group in zip(*pairs))
        m = self.config.momentum
        torch._foreach_mul_(momentum_params, m)
        torch._foreach_add_(momentum_params, online_params, alpha=1 - m)

    # ALBEF's names for the queue buffers, which live in `self.queues` (see `momentum.FeatureQueues`).
    image_queue = property(lambda self: self.queues.image_queue)
    text_queue = property(lambda self: self.queues.text_queue)
    queue_ptr = property(lambda self: self.queues.queue_ptr)
    queue_filled = property(lambda self: self.queues.queue_filled)

    @torch.no_grad()
    def clamp_temperature_(self) -> None:
        """Put `temp` back into its range in place (ALBEF's rule; `AETNetTrainer` runs it after every optimizer step)."""
        self.temp.clamp_(*TEMPERATURE_RANGE)

    def _clamped_temperature(self) -> torch.Tensor:
        if self.training:
            # ALBEF clamps the parameter itself so that the optimizer state never runs away outside the range.
            self.clamp_temperature_()
        return self.temp.clamp(*TEMPERATURE_RANGE)

    def _special_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """`(batch, length)` bool: the `<s>`, `</s>` and padding tokens."""
        layout = self.config.layout_config
        special = torch.tensor(
            [i for i in (layout.bos_token_id, layout.eos_token_id, layout.pad_token_id) if i is not None],
            device=input_ids.device,
        )
        return torch.isin(input_ids, special)

    @can_return_tuple
    def get_image_features(
        self, pixel_values: torch.Tensor, **kwargs: Unpack[TransformersKwargs]
    ) -> BaseModelOutputWithPooling:
        """
        The ViT aligner on `pixel_values`: its output (`last_hidden_state`, and `hidden_states` / `attentions` when
        asked for) with `pooler_output` the L2-normalised projected [CLS] feature, `(batch_size, embed_dim)`, that
        DITC compares with `get_text_features`.
        """
        outputs = self.vision_model(pixel_values, return_dict=True, **kwargs)
        return self._with_projected_cls(outputs, self.vision_proj)

    @can_return_tuple
    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        """
        The RoBERTa aligner on `input_ids`: its output with `pooler_output` the L2-normalised projected [CLS]
        feature, `(batch_size, embed_dim)`.
        """
        outputs = self.text_model(input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)
        return self._with_projected_cls(outputs, self.text_proj)

    @staticmethod
    def _with_projected_cls(outputs: ModelOutput, projection: nn.Linear) -> BaseModelOutputWithPooling:
        return BaseModelOutputWithPooling(
            last_hidden_state=outputs.last_hidden_state,
            pooler_output=F.normalize(projection(outputs.last_hidden_state[:, 0]), dim=-1),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        bbox: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_values_aug: torch.FloatTensor | None = None,
        return_alignment_losses: bool | None = None,
        distill_alpha: float | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> AETNetModelOutput:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, text_length)`):
                Token ids, read by LayoutLMv3 and by the RoBERTa aligner.
            bbox (`torch.LongTensor` of shape `(batch_size, text_length, 4)`):
                Token boxes in 0-1000 units (x0, y0, x1, y1); special tokens have `[0, 0, 0, 0]`.
            attention_mask (`torch.Tensor` of shape `(batch_size, text_length)`, *optional*):
                1 for real tokens, 0 for padding.
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`):
                The page, as prepared by the processor; read by LayoutLMv3 and by the online ViT aligner.
            pixel_values_aug (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`, *optional*):
                An augmented view of the page for the momentum ViT (IMC's image positive). Defaults to
                `pixel_values`.
            return_alignment_losses (`bool`, *optional*):
                Compute `alignment_losses`. Defaults to `self.training`. In eval mode nothing is enqueued.
            distill_alpha (`float`, *optional*):
                Overrides `config.distill_alpha` for this call (the trainer ramps it up).
            kwargs:
                transformers' output options for LayoutLMv3 (`output_hidden_states`, `output_attentions`, the
                latter with `attn_implementation="eager"`), and `return_dict`.

        In training mode `loss` is the weighted sum of the alignment objectives and, unless
        `momentum_update_in_forward` is off, the momentum encoders take their EMA step first (ALBEF's rule, so that a
        plain training loop trains what `AETNetTrainer` trains).
        """
        config = self.config
        if return_alignment_losses is None:
            return_alignment_losses = self.training
        compute_losses = return_alignment_losses and bool(config.alignment_objectives)
        use_aligners = compute_losses or config.fusion_injection != "none"
        if use_aligners and (input_ids is None or pixel_values is None):
            raise ValueError(
                "AETNet's aligners need both `input_ids` and `pixel_values` (got input_ids="
                f"{None if input_ids is None else tuple(input_ids.shape)}, pixel_values="
                f"{None if pixel_values is None else tuple(pixel_values.shape)})"
            )
        if attention_mask is None and input_ids is not None:
            attention_mask = torch.ones_like(input_ids)
        if bbox is None and input_ids is not None:
            bbox = torch.zeros(*input_ids.shape, 4, dtype=torch.long, device=input_ids.device)

        if compute_losses and self.training and self.momentum_update_in_forward:
            self.momentum_update()
        image_embeds = text_embeds = aligned_text = aligned_image = None
        if use_aligners:
            image_embeds = self.vision_model(pixel_values, return_dict=True).last_hidden_state
            text_embeds = self.text_model(input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state
            if config.fusion_injection != "none":
                aligned_text = text_embeds
                aligned_image = torch.cat([image_embeds[:, :1], image_embeds[:, self.vision_prefix_tokens :]], dim=1)
                if config.fusion_injection == "gated":
                    aligned_text, aligned_image = aligned_text * self.text_gate, aligned_image * self.image_gate

        outputs = self.layoutlmv3(
            input_ids,
            bbox=bbox,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            pixel_values=pixel_values,
            aligned_text_embeds=aligned_text,
            aligned_image_embeds=aligned_image,
            return_dict=True,
            **kwargs,
        )
        alignment_losses = None
        if compute_losses:
            alignment_losses = self._alignment_losses(
                input_ids,
                bbox,
                attention_mask,
                image_embeds,
                text_embeds,
                pixel_values if pixel_values_aug is None else pixel_values_aug,
                config.distill_alpha if distill_alpha is None else distill_alpha,
            )
        return AETNetModelOutput(
            loss=weighted_objective(None, alignment_losses, config.alignment_loss_weights),
            last_hidden_state=outputs.last_hidden_state,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_embeds=image_embeds,
            text_embeds=text_embeds,
            alignment_losses=alignment_losses,
        )

    def _alignment_losses(
        self, input_ids, bbox, attention_mask, image_embeds, text_embeds, pixel_values_m, distill_alpha
    ) -> dict[str, torch.Tensor]:
        """Fill the `AlignmentFeatures` bundle once, run every enabled objective on it, then enqueue (training)."""
        real_tokens = attention_mask.bool() & ~self._special_tokens(input_ids)
        features = AlignmentFeatures(
            input_ids=input_ids,
            bbox=bbox,
            attention_mask=attention_mask,
            real_tokens=real_tokens,
            boxed_tokens=real_tokens & (bbox != 0).any(dim=-1),
            image_embeds=image_embeds,
            patch_embeds=image_embeds[:, self.vision_prefix_tokens :],
            text_embeds=text_embeds,
            image_feat=F.normalize(self.vision_proj(image_embeds[:, 0]), dim=-1),
            text_feat=F.normalize(self.text_proj(text_embeds[:, 0]), dim=-1),
            vision_proj=self.vision_proj,
            text_proj=self.text_proj,
            temp=self._clamped_temperature(),
            grid_size=self.config.grid_size,
            distill_alpha=distill_alpha,
        )
        if self.config.uses_momentum:
            with torch.no_grad():
                image_embeds_m = self.vision_model_m(pixel_values_m, return_dict=True).last_hidden_state
                text_embeds_m = self.text_model_m(
                    input_ids, attention_mask=attention_mask, return_dict=True
                ).last_hidden_state
                features.patch_embeds_m = image_embeds_m[:, self.vision_prefix_tokens :]
                features.text_embeds_m = text_embeds_m
                features.image_feat_m = F.normalize(self.vision_proj_m(image_embeds_m[:, 0]), dim=-1)
                features.text_feat_m = F.normalize(self.text_proj_m(text_embeds_m[:, 0]), dim=-1)
            features.vision_proj_m, features.text_proj_m = self.vision_proj_m, self.text_proj_m
            # Clones: the queues are overwritten in place below, before backward reads them.
            features.image_queue = self.queues.image_queue.clone()
            features.text_queue = self.queues.text_queue.clone()
            features.queue_valid = self.queues.valid()  # a new tensor: the uint8 buffer read as bool
        losses = {name: objective(features) for name, objective in self.objectives.items()}
        if self.config.uses_momentum and self.training:
            self.queues.enqueue(features.image_feat_m, features.text_feat_m)
        return losses

class _AETNetHeadMixin:
    """Shared plumbing of the task heads: run `AETNetModel` and return its LayoutLMv3 output with the losses."""

    def get_input_embeddings(self):
        return self.aetnet.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.aetnet.set_input_embeddings(value)

    def _head_config(self):
        """LayoutLMv3's head reads hidden size, dropout and `num_labels` from one config: the layout config's
        fields with AETNet's label count."""
        head_config = self.config.layout_config.__class__(**self.config.layout_config.to_dict())
        head_config.num_labels = self.config.num_labels
        return head_config

    def momentum_update(self) -> None:
        self.aetnet.momentum_update()

    def _objective(self, task_loss: torch.Tensor | None, outputs: AETNetModelOutput) -> torch.Tensor | None:
        """The task loss plus the weighted alignment terms of this forward (`config.alignment_loss_weights`)."""
        return weighted_objective(task_loss, outputs.alignment_losses, self.config.alignment_loss_weights)

    def to_layoutlmv3(self) -> PreTrainedModel:
        """
        Stock LayoutLMv3 with this head (`LayoutLMv3ForTokenClassification`, ...) holding copies of this model's
        LayoutLMv3 and head weights, on the same device and dtype.

        It is the fair baseline for a comparison: plain LayoutLMv3 fine-tuned from exactly AETNet's start. The aligners,
        projections, queues and temperature are left behind, so its outputs equal this model's only where the aligned
        features do not enter LayoutLMv3 (`fusion_injection="none"`, eval mode).
        """
        config = self._head_config()
        config.id2label, config.label2id = dict(self.config.id2label), dict(self.config.label2id)
        config._attn_implementation = self.config.layout_config._attn_implementation
        baseline = self._layoutlmv3_class(config)
        baseline.layoutlmv3.load_state_dict(self.aetnet.layoutlmv3.state_dict())
        for name in self._layoutlmv3_head_names:
            getattr(baseline, name).load_state_dict(getattr(self, name).state_dict())
        return baseline.to(device=self.device, dtype=self.dtype)


class AETNetForTokenClassification(_AETNetHeadMixin, AETNetPreTrainedModel):
    """AETNet with LayoutLMv3's token classification head (linear below 10 labels, an MLP from 10), e.g. FUNSD, CORD."""

    _layoutlmv3_class = LayoutLMv3ForTokenClassification
    _layoutlmv3_head_names = ("classifier",)

    def __init__(self, config: AETNetConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.aetnet = AETNetModel(config)
        self.dropout = nn.Dropout(config.layout_config.hidden_dropout_prob)
        if config.num_labels < 10:
            self.classifier = nn.Linear(config.layout_config.hidden_size, config.num_labels)
        else:
            self.classifier = LayoutLMv3ClassificationHead(self._head_config(), pool_feature=False)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        bbox: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_values_aug: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        return_alignment_losses: bool | None = None,
        distill_alpha: float | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> AETNetTokenClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, text_length)`, *optional*):
            Token labels in `[0, num_labels)`, -100 for ignored tokens.

        See `AETNetModel.forward` for the other arguments.
        """
        outputs = self.aetnet(
            input_ids,
            bbox=bbox,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            pixel_values=pixel_values,
            pixel_values_aug=pixel_values_aug,
            return_alignment_losses=return_alignment_losses,
            distill_alpha=distill_alpha,
            return_dict=True,
            **kwargs,
        )
        sequence_output = self.dropout(outputs.last_hidden_state[:, : input_ids.shape[1]])
        logits = self.classifier(sequence_output)
        task_loss = None
        if labels is not None:
            task_loss = CrossEntropyLoss()(logits.view(-1, self.num_labels), labels.view(-1))
        return AETNetTokenClassifierOutput(
            loss=self._objective(task_loss, outputs),
            task_loss=task_loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            alignment_losses=outputs.alignment_losses,
        )


class AETNetForSequenceClassification(_AETNetHeadMixin, AETNetPreTrainedModel):
    """AETNet with LayoutLMv3's document classification head on the [CLS] output, e.g. RVL-CDIP."""

    _layoutlmv3_class = LayoutLMv3ForSequenceClassification
    _layoutlmv3_head_names = ("classifier",)

    def __init__(self, config: AETNetConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.aetnet = AETNetModel(config)
        self.classifier = LayoutLMv3ClassificationHead(self._head_config(), pool_feature=False)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        bbox: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_values_aug: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        return_alignment_losses: bool | None = None,
        distill_alpha: float | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> AETNetSequenceClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Document labels; regression, single- or multi-label as in `LayoutLMv3ForSequenceClassification`.

        See `AETNetModel.forward` for the other arguments.
        """
        outputs = self.aetnet(
            input_ids,
            bbox=bbox,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            pixel_values=pixel_values,
            pixel_values_aug=pixel_values_aug,
            return_alignment_losses=return_alignment_losses,
            distill_alpha=distill_alpha,
            return_dict=True,
            **kwargs,
        )
        logits = self.classifier(outputs.last_hidden_state[:, 0, :])
        task_loss = None
        if labels is not None:
            if self.config.problem_type is None:
                if self.num_labels == 1:
                    self.config.problem_type = "regression"
                elif labels.dtype in (torch.long, torch.int):
                    self.config.problem_type = "single_label_classification"
                else:
                    self.config.problem_type = "multi_label_classification"
            if self.config.problem_type == "regression":
                squeeze = self.num_labels == 1
                task_loss = MSELoss()(logits.squeeze(), labels.squeeze()) if squeeze else MSELoss()(logits, labels)
            elif self.config.problem_type == "single_label_classification":
                task_loss = CrossEntropyLoss()(logits.view(-1, self.num_labels), labels.view(-1))
            else:
                task_loss = BCEWithLogitsLoss()(logits, labels)
        return AETNetSequenceClassifierOutput(
            loss=self._objective(task_loss, outputs),
            task_loss=task_loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            alignment_losses=outputs.alignment_losses,
        )


class AETNetForQuestionAnswering(_AETNetHeadMixin, AETNetPreTrainedModel):
    """AETNet with LayoutLMv3's extractive QA head (start/end logits over every position), e.g. DocVQA."""

    _layoutlmv3_class = LayoutLMv3ForQuestionAnswering
    _layoutlmv3_head_names = ("qa_outputs",)

    def __init__(self, config: AETNetConfig):
        super().__init__(config)
        if config.num_labels != 2:
            raise ValueError(
                f"AETNetForQuestionAnswering predicts a start and an end logit: `num_labels` must be 2, got "
                f"{config.num_labels}"
            )
        self.num_labels = config.num_labels
        self.aetnet = AETNetModel(config)
        self.qa_outputs = LayoutLMv3ClassificationHead(self._head_config(), pool_feature=False)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        bbox: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_values_aug: torch.FloatTensor | None = None,
        start_positions: torch.LongTensor | None = None,
        end_positions: torch.LongTensor | None = None,
        return_alignment_losses: bool | None = None,
        distill_alpha: float | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> AETNetQuestionAnsweringModelOutput:
        r"""
        start_positions, end_positions (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Token indices of the answer span; positions outside the sequence are ignored.

        See `AETNetModel.forward` for the other arguments.
        """
        outputs = self.aetnet(
            input_ids,
            bbox=bbox,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            pixel_values=pixel_values,
            pixel_values_aug=pixel_values_aug,
            return_alignment_losses=return_alignment_losses,
            distill_alpha=distill_alpha,
            return_dict=True,
            **kwargs,
        )
        logits = self.qa_outputs(outputs.last_hidden_state)
        start_logits, end_logits = (t.squeeze(-1).contiguous() for t in logits.split(1, dim=-1))
        task_loss = None
        if start_positions is not None and end_positions is not None:
            ignored_index = start_logits.size(1)
            start_positions = start_positions.view(-1).clamp(0, ignored_index)
            end_positions = end_positions.view(-1).clamp(0, ignored_index)
            loss_fct = CrossEntropyLoss(ignore_index=ignored_index)
            task_loss = (loss_fct(start_logits, start_positions) + loss_fct(end_logits, end_positions)) / 2
        return AETNetQuestionAnsweringModelOutput(
            loss=self._objective(task_loss, outputs),
            task_loss=task_loss,
            start_logits=start_logits,
            end_logits=end_logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            alignment_losses=outputs.alignment_losses,
        )


__all__ = [
    "AETNetForQuestionAnswering",
    "AETNetForSequenceClassification",
    "AETNetForTokenClassification",
    "AETNetLayoutLMv3Model",
    "AETNetModel",
    "AETNetModelOutput",
    "AETNetPreTrainedModel",
    "AETNetQuestionAnsweringModelOutput",
    "AETNetSequenceClassifierOutput",
    "AETNetTokenClassifierOutput",
    "CheckpointMismatchError",
]
