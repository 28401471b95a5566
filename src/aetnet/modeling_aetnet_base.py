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
The AETNet encoder (Wang et al., AAAI 2023): LayoutLMv3 fine-tuned beside a ViT and a RoBERTa alignment encoder,
their momentum copies, two feature queues and the enabled alignment objectives. Stock transformers classes do all the
encoding; this file only wires them together. The task heads are in `modeling_aetnet.py`.

This module imports only torch, transformers and its sibling modules, so that `save_pretrained` can ship it as Hub
remote code (`trust_remote_code=True`).
"""

import zlib

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import ModelOutput
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple

from .alignment import (
    SHARED_PARTS,
    AlignmentFeatures,
    AlignmentObjective,
    get_objective,
    page_modalities,
    split_by_modalities,
)
from .configuration_aetnet import TEMPERATURE_RANGE, AETNetConfig
from .modeling_aetnet_features import DocumentFeaturesMixin, feature_center
from .modeling_aetnet_knobs import AETNetTrainingKnobsMixin
from .modeling_aetnet_layoutlmv3 import AETNetLayoutLMv3Model
from .modeling_aetnet_loading import AETNetCheckpointMixin
from .modeling_aetnet_outputs import AETNetModelOutput
from .momentum import FeatureQueues, MomentumEncodersMixin
from .objectives import BUILT_IN_OBJECTIVE_CLASSES  # noqa: F401 (importing the index registers the objectives)
from .spatial_bias import locality_bias_


class AETNetPreTrainedModel(AETNetTrainingKnobsMixin, AETNetCheckpointMixin, PreTrainedModel):
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
        seed = getattr(module, "_aetnet_init_seed", None)
        # An objective's module draws from its own seed (see AETNetModel.__init__), not from the global stream.
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            self._init_module(module)

    def _init_module(self, module):
        super()._init_weights(module)
        if isinstance(module, FeatureQueues):
            # Empty queues: only the first `queue_filled` entries are ever read, so zeros are as good as ALBEF's
            # random vectors, and deterministic (meta-device initialisation gives the same buffers).
            for buffer in module.buffers():
                init.zeros_(buffer)
        if isinstance(module, AlignmentObjective) and module.needs_generator:
            # A checkpoint saved without the objective: its first draw is draw 0, not uninitialised memory.
            init.zeros_(module.draws)
        if isinstance(module, AETNetModel):
            init.constant_(module.temp, module.config.temperature)
            for gate in (module.text_gate, module.image_gate):
                if gate is not None:
                    init.zeros_(gate)
            if module.config.spatial_bias_init == "locality":
                locality_bias_(module.layoutlmv3.encoder, module.config.grid_size)
            # Children are initialised before their parent, so the online modules are final here.
            for online, momentum in module.momentum_pairs():
                for param, param_m in zip(online.parameters(), momentum.parameters()):
                    init.copy_(param_m, param)


class AETNetModel(MomentumEncodersMixin, DocumentFeaturesMixin, AETNetPreTrainedModel):
    """
    The AETNet encoder: LayoutLMv3 (`layoutlmv3`), the ViT and RoBERTa aligners (`vision_model`, `text_model`) with
    their projections into the contrastive space (`vision_proj`, `text_proj`), the frozen momentum copies (`_m`
    suffix), the learnable temperature `temp` and the feature queues `queues` (`image_queue` / `text_queue` in ALBEF's
    layout `(embed_dim, queue_size)`, `queue_ptr` and `queue_filled`, the number of real entries so far; also readable
    as `model.image_queue` etc.).

    In training mode `forward` first takes the momentum EMA step (ALBEF's rule), then enqueues the momentum features
    of a batch with both text and page images. The training knobs (loss weights, distillation weight and ramp, when
    the EMA step runs, queue length) are set through the methods of `modeling_aetnet_knobs.AETNetTrainingKnobsMixin`.
    """

    momentum_module_names = ("vision_model", "vision_proj", "text_model", "text_proj")

    def __init__(self, config: AETNetConfig):
        super().__init__(config)
        self.layoutlmv3 = AETNetLayoutLMv3Model(config.layout_config)
        self.vision_model = AutoModel.from_config(config.vision_config, add_pooling_layer=False)
        self.text_model = AutoModel.from_config(config.text_config, add_pooling_layer=False)
        self.vision_proj = nn.Linear(config.vision_config.hidden_size, config.embed_dim)
        self.text_proj = nn.Linear(config.text_config.hidden_size, config.embed_dim)
        self.image_center = feature_center(config.vision_config.hidden_size, config.feature_centering)
        self.text_center = feature_center(config.text_config.hidden_size, config.feature_centering)
        self.temp = nn.Parameter(torch.tensor(config.temperature))
        gated = config.fusion_injection == "gated"
        self.text_gate = nn.Parameter(torch.zeros(config.layout_config.hidden_size)) if gated else None
        self.image_gate = nn.Parameter(torch.zeros(config.layout_config.hidden_size)) if gated else None
        # DeiT adds a distillation token after [CLS]; patches start after all prefix tokens.
        self.vision_prefix_tokens = 2 if config.vision_config.model_type == "deit" else 1

        self.has_momentum = config.uses_momentum
        if self.has_momentum:
            self.vision_model_m = AutoModel.from_config(config.vision_config, add_pooling_layer=False)
            self.text_model_m = AutoModel.from_config(config.text_config, add_pooling_layer=False)
            self.vision_proj_m = nn.Linear(config.vision_config.hidden_size, config.embed_dim)
            self.text_proj_m = nn.Linear(config.text_config.hidden_size, config.embed_dim)
            self.queues = FeatureQueues(config.embed_dim, config.queue_size)

        # One module per enabled objective, in config order (see `alignment.py`: the registry and the bundle). Their
        # weights are drawn apart from the global random stream, here and in `_init_weights` (a seed per module from
        # the global seed and its name), so that switching an objective on leaves every other weight, the task
        # head's included, as it is without it: an added objective starts from exactly the weights of its baseline.
        with torch.random.fork_rng(devices=[]):
            self.objectives = nn.ModuleDict(
                {
                    name: get_objective(name)(config, **config.objective_settings.get(name, {}))
                    for name in config.alignment_objectives
                }
            )
        for name, module in self.objectives.named_modules():
            module._aetnet_init_seed = (torch.initial_seed() + zlib.crc32(name.encode())) % 2**63
        self.set_momentum_update("forward")
        self.set_distill_ramp(1.0)
        self.post_init()
        self.freeze_momentum()

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """The aligners' pairs and those of objectives with momentum copies of their own (e.g. PSL's keyword head),
        so that one EMA step, one freeze and one initial copy cover them all."""
        pairs = super().momentum_pairs()
        for objective in self.objectives.values():
            pairs += objective.own_momentum_pairs(self)
        return pairs

    def get_input_embeddings(self):
        return self.layoutlmv3.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.layoutlmv3.set_input_embeddings(value)

    def freeze_momentum(self) -> None:
        """
        Freeze every parameter that never receives a gradient, since DDP without `find_unused_parameters` (the
        default of `AETNetTrainingArguments`) fails on trainable parameters that get none: the momentum encoders,
        LayoutLMv3's relative-position bias tables (transformers builds their biases under `no_grad`), and the shared
        parts (`temp`, the aligners, the projections) that no enabled objective trains (`AlignmentObjective.trains`)
        and the feature injection does not use.
        """
        super().freeze_momentum()
        for name in ("rel_pos_bias", "rel_pos_x_bias", "rel_pos_y_bias"):
            table = getattr(self.layoutlmv3.encoder, name, None)
            if table is not None:
                table.requires_grad_(False)
        trained = {part for objective in self.objectives.values() for part in objective.trains}
        if self.config.fusion_injection != "none":
            trained |= {"vision_model", "text_model"}
        for part in SHARED_PARTS:
            if part not in trained:
                getattr(self, part).requires_grad_(False)

    @torch.no_grad()
    def clamp_temperature_(self) -> None:
        """Put `temp` back into its range in place (ALBEF's rule; `AETNetTrainer` runs it after every optimizer step)."""
        self.temp.clamp_(*TEMPERATURE_RANGE)

    @torch.no_grad()
    def fusion_gate_openings(self) -> dict[str, float]:
        """
        How far the aligners' features enter LayoutLMv3, per modality (`text`, `image`): the mean absolute value of
        its fusion gate under `fusion_injection="gated"` (0.0 at initialisation), 1.0 under `"add"` (the paper's
        full-scale sum), 0.0 under `"none"`. A fine-tuning whose gates stay near 0 has left LayoutLMv3 as it was.
        """
        injection = self.config.fusion_injection
        if injection != "gated":
            return dict.fromkeys(("text", "image"), 1.0 if injection == "add" else 0.0)
        return {"text": self.text_gate.abs().mean().item(), "image": self.image_gate.abs().mean().item()}

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
        **kwargs: Unpack[TransformersKwargs],
    ) -> AETNetModelOutput:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, text_length)`, *optional*):
                Token ids, read by LayoutLMv3 and by the RoBERTa aligner.
            bbox (`torch.LongTensor` of shape `(batch_size, text_length, 4)`, *optional*):
                Token boxes in 0-1000 units (x0, y0, x1, y1); special tokens have `[0, 0, 0, 0]`. Default: all zero.
            attention_mask (`torch.Tensor` of shape `(batch_size, text_length)`, *optional*):
                1 for real tokens, 0 for padding.
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`, *optional*):
                The page, as prepared by the processor; read by LayoutLMv3 and by the online ViT aligner.
            pixel_values_aug (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`, *optional*):
                An augmented view of the page for the momentum ViT (IMC's image positive). Defaults to
                `pixel_values`.
            return_alignment_losses (`bool`, *optional*):
                Compute `alignment_losses`. Defaults to `self.training`. In eval mode nothing is enqueued.
            kwargs:
                transformers' output options for LayoutLMv3 (`output_hidden_states`, `output_attentions`, the
                latter with `attn_implementation="eager"`), and `return_dict`.

        As LayoutLMv3, AETNet runs on the modalities it is given: text and layout without `pixel_values`, or the page
        image alone. The aligner of a missing modality does not run and injects nothing; the objectives that read it
        (`AlignmentObjective.modalities`) are not computed and are named in `skipped_objectives`.

        In training mode `loss` is the weighted sum of the alignment objectives and, unless
        `set_momentum_update("step")` was called, the momentum encoders take their EMA step first (ALBEF's rule, so
        that a plain training loop trains what `AETNetTrainer` trains).
        """
        if input_ids is None and pixel_values is None:
            raise ValueError("AETNet needs `input_ids` (text), `pixel_values` (the page image) or both; got neither")
        if pixel_values_aug is not None and pixel_values is None:
            raise ValueError("`pixel_values_aug` is an augmented view of `pixel_values`; got it without `pixel_values`")
        if return_alignment_losses is None:
            return_alignment_losses = self.training
        asked = return_alignment_losses and bool(self.config.alignment_objectives)
        inputs = self._page_inputs(input_ids, bbox, attention_mask, pixel_values)
        runs, skipped = split_by_modalities(self.objectives if asked else {}, page_modalities(input_ids, pixel_values))
        if asked and self.training and self.momentum_update_in_forward:
            self.momentum_update()
        image_embeds, text_embeds, aligned_text, aligned_image = self._aligner_states(inputs, bool(runs))
        fusion_inputs, prepared = self._fusion_inputs(inputs, runs)
        outputs = self.layoutlmv3(
            **fusion_inputs,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            aligned_text_embeds=aligned_text,
            aligned_image_embeds=aligned_image,
            return_dict=True,
            **kwargs,
        )
        alignment_losses = {} if asked else None
        if runs:
            pixel_values_m = pixel_values if pixel_values_aug is None else pixel_values_aug
            states = (image_embeds, text_embeds, outputs.last_hidden_state, pixel_values_m)
            alignment_losses = self._alignment_losses(runs, inputs, prepared, *states)
        return AETNetModelOutput(
            loss=self.weighted_loss(None, alignment_losses),
            last_hidden_state=outputs.last_hidden_state,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_embeds=image_embeds,
            text_embeds=text_embeds,
            alignment_losses=alignment_losses,
            skipped_objectives=skipped or None,
        )

    @staticmethod
    def _page_inputs(input_ids, bbox, attention_mask, pixel_values) -> dict[str, torch.Tensor | None]:
        """The page as every part reads it (all tokens attended to and unboxed unless told otherwise)."""
        if attention_mask is None and input_ids is not None:
            attention_mask = torch.ones_like(input_ids)
        if bbox is None and input_ids is not None:
            bbox = torch.zeros(*input_ids.shape, 4, dtype=torch.long, device=input_ids.device)
        return dict(input_ids=input_ids, bbox=bbox, attention_mask=attention_mask, pixel_values=pixel_values)

    def _aligner_states(self, inputs: dict[str, torch.Tensor], for_objectives: bool) -> tuple[torch.Tensor | None, ...]:
        """The online ViT's and RoBERTa's last hidden states and what LayoutLMv3 is given of them (the text, the image's
        [CLS] and patches, no DeiT token; via any gates), None for a modality the page lacks or the injection skips."""
        inject = self.config.fusion_injection != "none"
        image_embeds = text_embeds = aligned_text = aligned_image = None
        if not (for_objectives or inject):
            return image_embeds, text_embeds, aligned_text, aligned_image
        if inputs["pixel_values"] is not None:
            image_embeds = self.vision_model(inputs["pixel_values"], return_dict=True).last_hidden_state
            if inject:
                aligned_image = torch.cat([image_embeds[:, :1], image_embeds[:, self.vision_prefix_tokens :]], dim=1)
                aligned_image = aligned_image * self.image_gate if self.image_gate is not None else aligned_image
        if inputs["input_ids"] is not None:
            text_embeds = self.text_model(
                inputs["input_ids"], attention_mask=inputs["attention_mask"], return_dict=True
            ).last_hidden_state
            if inject:
                aligned_text = text_embeds * self.text_gate if self.text_gate is not None else text_embeds
        return image_embeds, text_embeds, aligned_text, aligned_image

    def _fusion_inputs(self, inputs: dict[str, torch.Tensor], runs: dict[str, nn.Module]) -> tuple[dict, dict]:
        """What LayoutLMv3 sees in this forward, and what each objective of `runs` prepared for its loss (e.g. TIA
        covers text regions of the page); the aligners and the momentum view keep `inputs`."""
        fusion_inputs, prepared = inputs, {}
        for name, objective in runs.items():
            fusion_inputs, prepared[name] = objective.prepare_fusion_inputs(fusion_inputs)
        return fusion_inputs, prepared

    def _alignment_losses(
        self, runs, inputs, prepared, image_embeds, text_embeds, fusion_hidden_states, pixel_values_m
    ) -> dict[str, torch.Tensor]:
        """Build the `AlignmentFeatures` bundle once, run the objectives `runs` on it, then enqueue (training)."""
        input_ids, bbox, attention_mask = inputs["input_ids"], inputs["bbox"], inputs["attention_mask"]
        real_tokens = None if input_ids is None else attention_mask.bool() & ~self._special_tokens(input_ids)

        def fusion(**overrides) -> ModelOutput:
            # A further LayoutLMv3 forward for an objective: the step's inputs with some replaced, no aligned features
            # injected (they were computed from the unchanged inputs and would leak what an objective hides).
            return self.layoutlmv3(**{**inputs, **overrides}, return_dict=True)

        momentum, image, text = {}, image_embeds is not None, text_embeds is not None
        if self.training:
            self.update_feature_centers(image_embeds, text_embeds)  # before any feature: online and momentum alike
        if any(objective.needs_momentum for objective in runs.values()):
            momentum = self.momentum_features(input_ids, attention_mask, pixel_values_m, self.vision_prefix_tokens)
        features = AlignmentFeatures(
            input_ids=input_ids,
            bbox=bbox,
            attention_mask=attention_mask,
            pixel_values=inputs["pixel_values"],
            real_tokens=real_tokens,
            boxed_tokens=None if real_tokens is None else real_tokens & (bbox != 0).any(dim=-1),
            image_embeds=image_embeds,
            patch_embeds=image_embeds[:, self.vision_prefix_tokens :] if image else None,
            text_embeds=text_embeds,
            image_feat=self.document_feature(image_embeds, "image") if image else None,
            text_feat=self.document_feature(text_embeds, "text") if text else None,
            vision_proj=self.vision_proj,
            text_proj=self.text_proj,
            temp=self._clamped_temperature(),
            grid_size=self.config.grid_size,
            fusion_hidden_states=fusion_hidden_states,
            fusion=fusion,
            prepared=prepared,
            word_embeddings=self.layoutlmv3.get_input_embeddings(),
            distill_ramp=self.distill_ramp,
            **momentum,
        )
        losses = {name: objective(features) for name, objective in runs.items()}
        if self.training and momentum:
            self.queues.enqueue(features.image_feat_m, features.text_feat_m)
        return losses


__all__ = ["AETNetModel", "AETNetPreTrainedModel"]
