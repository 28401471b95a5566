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
`LayoutLMv3ForPreTraining`: stock `LayoutLMv3Model` with the heads of LayoutLMv3's three pre-training objectives
(Huang et al., ACM MM 2022, arXiv 2204.08387) beside it: masked language modelling (MLM), masked image modelling
(MIM) and word-patch alignment (WPA). The released LayoutLMv3 checkpoints carry no pre-training heads and no
pre-training code exists in transformers; this model rebuilds them from the paper's description.

What it saves is a LayoutLMv3 checkpoint: the encoder's weights sit under `layoutlmv3.` (the `base_model_prefix`), so
`LayoutLMv3Model.from_pretrained` and `LayoutLMv3ForTokenClassification.from_pretrained` (and the `layout_` side of
`AETNetForTokenClassification.from_encoders_pretrained`) load it with no missing encoder weight; the heads and the
mask embedding are keys those classes do not have, reported as unexpected and dropped.

How masked patches enter: LayoutLMv3 has no mask token and `LayoutLMv3Model.forward` takes no patch embeddings. As
in BEiT, whose masking LayoutLMv3 uses, the embedding of each masked patch is replaced by a learnable mask embedding
before the position embeddings are added: a forward hook on the encoder's public `patch_embed` module (which
`forward_image` calls and whose output is exactly the patch embeddings, `(B, P, H)`) swaps them, reading the mask
that `forward` sets for the duration of the call. The encoder stays a stock `LayoutLMv3Model` whose weights and
outputs are untouched whenever no mask is given, and whose state dict keys are exactly the stock ones.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LayoutLMv3Model, LayoutLMv3PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import ModelOutput
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs

from ..alignment import prior_entropy
from ..objective_xmm_text import TiedLMHead
from ..spatial_bias import locality_bias_
from .chance_levels import mlm_chance_level
from .configuration_layoutlmv3_pretraining import LayoutLMv3PreTrainingConfig
from .masking import mim_targets


@dataclass
class LayoutLMv3ForPreTrainingOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            The weighted sum of the objectives that were computed (those whose labels were given).
        mlm_loss, mim_loss, wpa_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Each objective's unweighted loss: MLM cross-entropy over the masked tokens, MIM regression over the masked
            patches (mean squared error for normalised pixels, L1 for pixels), WPA binary cross-entropy over the
            labelled words. A mean over the batch's items, or their sum divided by the objective's entry of
            `num_items_per_objective` when it was given.
        mlm_logits (`torch.FloatTensor` of shape `(num_masked_tokens, vocab_size)`, *optional*):
            Vocabulary scores at the masked tokens only (`mlm_labels != -100`, in batch then position order): all
            positions would be `B x L x vocab`, gigabytes at RoBERTa's vocabulary.
        mim_logits (`torch.FloatTensor` of shape `(batch_size, num_patches, patch_size ** 2 * num_channels)`, *optional*):
            The predicted target of every patch (channels last within a patch), when `bool_masked_pos` was given.
        wpa_logits (`torch.FloatTensor` of shape `(batch_size, text_length)`, *optional*):
            The "unaligned" logit of every token, when `wpa_labels` were given.
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, text_length + 1 + num_patches, hidden_size)`):
            LayoutLMv3's output: the text tokens, then the visual [CLS] and the patches.
        hidden_states, attentions: LayoutLMv3's, when asked for.
    """

    loss: torch.FloatTensor | None = None
    mlm_loss: torch.FloatTensor | None = None
    mim_loss: torch.FloatTensor | None = None
    wpa_loss: torch.FloatTensor | None = None
    mlm_logits: torch.FloatTensor | None = None
    mim_logits: torch.FloatTensor | None = None
    wpa_logits: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class WordPatchAlignmentHead(nn.Module):
    """The paper's two-layer MLP on a text token's output state: one logit, "the patches under this word are masked"."""

    def __init__(self, config: LayoutLMv3PreTrainingConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = ACT2FN[config.hidden_act]
        self.classifier = nn.Linear(config.hidden_size, 1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.activation(self.dense(hidden_states))).squeeze(-1)


class LayoutLMv3ForPreTraining(LayoutLMv3PreTrainedModel):
    """
    LayoutLMv3 with its pre-training heads: `mlm_head` (RoBERTa's LM head, its decoder tied to the word embeddings),
    `mim_head` (a linear map from each patch's output state to its `patch_size ** 2 * num_channels` target values),
    `wpa_head` ([`WordPatchAlignmentHead`]) and `mim_mask_token` (the embedding of masked patches). The masks and
    labels come from [`DataCollatorForLayoutLMv3PreTraining`]; the MIM targets are computed here from `pixel_values`
    (`aetnet.pretraining.masking.mim_targets`), on the model's device: a deterministic function of the page, like
    `ViTForMaskedImageModeling`'s, that would double what the DataLoader moves to the device if collated.

    Each objective is computed when its labels are given and enters `loss` with its weight (`config.mlm_weight`,
    `mim_weight`, `wpa_weight`); its unweighted loss is returned on its own (`mlm_loss`, ...) for logging, and
    [`~LayoutLMv3ForPreTraining.chance_levels`] gives the loss of a model that ignores the page, per objective.

    Each loss is a mean over its own items (masked tokens, masked patches, labelled words), whose numbers differ from
    batch to batch: a mean of per-batch means is not the mean over the batches. To train on several processes or
    micro-batches as on one batch, pass each objective's number of items over all of them
    (`num_items_per_objective`, counted by [`~LayoutLMv3ForPreTraining.count_objective_items`]): each loss is then
    the batch's sum divided by that number, and the sum over the processes and micro-batches is the mean over the
    whole step ([`PreTrainingTrainer`] does so).
    """

    config: LayoutLMv3PreTrainingConfig
    # One `num_items_in_batch` cannot normalise three objectives: the Trainer's count of `labels` is not used, and
    # `PreTrainingTrainer` passes `num_items_per_objective` itself.
    accepts_loss_kwargs = False

    def __init__(self, config: LayoutLMv3PreTrainingConfig):
        super().__init__(config)
        if not (config.text_embed and config.visual_embed):
            raise ValueError("LayoutLMv3 pre-training needs both text and patches (`text_embed`, `visual_embed`)")
        self.layoutlmv3 = LayoutLMv3Model(config)
        self.patch_size = int(config.patch_size if isinstance(config.patch_size, int) else config.patch_size[0])
        self.mlm_head = TiedLMHead(config.hidden_size, config.vocab_size, config.layer_norm_eps, config.hidden_act)
        self.mim_head = nn.Linear(config.hidden_size, self.patch_size**2 * config.num_channels)
        self.wpa_head = WordPatchAlignmentHead(config)
        self.mim_mask_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self._bool_masked_pos: torch.Tensor | None = None
        self.layoutlmv3.patch_embed.register_forward_hook(self._mask_patch_embeddings)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        # transformers calls this on the model itself only while one of its own parameters (the mask token) is not
        # initialised yet: at construction, or when a checkpoint without it (a stock LayoutLMv3) is loaded.
        if isinstance(module, LayoutLMv3ForPreTraining):
            init.normal_(module.mim_mask_token, std=self.config.initializer_range)  # BEiT's mask token
            if self.config.spatial_bias_init == "locality" and self.config.has_spatial_attention_bias:
                # After the encoder's own initialisation (children come first); a no-op on tables a checkpoint loaded.
                locality_bias_(module.layoutlmv3.encoder, self.config.input_size // self.patch_size)

    def get_input_embeddings(self) -> nn.Module:
        return self.layoutlmv3.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.layoutlmv3.set_input_embeddings(value)

    def _mask_patch_embeddings(self, module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
        """`patch_embed`'s forward hook: the masked patches' embeddings become the mask embedding."""
        mask = self._bool_masked_pos
        if mask is None:
            return output
        if mask.shape != output.shape[:2]:
            raise ValueError(
                f"`bool_masked_pos` has shape {tuple(mask.shape)} but the page has {output.shape[1]} patches "
                f"({tuple(output.shape[:2])} expected)"
            )
        weight = mask.to(device=output.device, dtype=output.dtype)[..., None]
        return output * (1 - weight) + self.mim_mask_token.to(output.dtype) * weight

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        bbox: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        bool_masked_pos: torch.BoolTensor | None = None,
        mlm_labels: torch.LongTensor | None = None,
        wpa_labels: torch.LongTensor | None = None,
        num_items_per_objective: Mapping[str, torch.Tensor | int] | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> LayoutLMv3ForPreTrainingOutput:
        r"""
        Args:
            input_ids, bbox, attention_mask, pixel_values: LayoutLMv3's inputs, the text already masked (`<mask>` at
                the MLM positions) and the page unmasked.
            bool_masked_pos (`torch.BoolTensor` of shape `(batch_size, num_patches)`, *optional*):
                The patches to mask (row-major), whose embeddings are replaced by the mask embedding; MIM is computed
                when it is given, against `mim_targets(pixel_values, patch_size, config.mim_target)`.
            mlm_labels (`torch.LongTensor` of shape `(batch_size, text_length)`, *optional*):
                The original ids at the masked tokens, -100 elsewhere; MLM is computed when given.
            wpa_labels (`torch.LongTensor` of shape `(batch_size, text_length)`, *optional*):
                1 "unaligned", 0 "aligned", -100 no label (`word_patch_alignment_labels`); WPA is computed when given.
            num_items_per_objective (`Mapping[str, torch.Tensor | int]`, *optional*):
                For `"mlm"`, `"mim"`, `"wpa"`: the objective's number of items (masked tokens, masked patches,
                labelled words) over every process and micro-batch of the optimizer step, as
                `count_objective_items` counts them. An objective given here returns the sum of its batch's item
                losses divided by that number (transformers' `num_items_in_batch`, one per objective); the others
                the mean over their batch's items.
        """
        if bool_masked_pos is not None and pixel_values is None:
            raise ValueError("`bool_masked_pos` masks patches of `pixel_values`, which were not given")
        self._bool_masked_pos = bool_masked_pos
        try:
            outputs = self.layoutlmv3(
                input_ids=input_ids, bbox=bbox, attention_mask=attention_mask, pixel_values=pixel_values, **kwargs
            )
        finally:
            self._bool_masked_pos = None
        hidden = outputs.last_hidden_state
        text_length = 0 if input_ids is None else input_ids.shape[1]
        text_states, patch_states = hidden[:, :text_length], hidden[:, text_length + 1 :]
        num_items = dict(num_items_per_objective or {})
        logits, losses = {}, {}
        if mlm_labels is not None:
            logits["mlm"], item_losses = self._mlm(text_states, mlm_labels)
            losses["mlm"] = _reduce(item_losses, num_items.get("mlm"))
        if bool_masked_pos is not None:
            targets = mim_targets(pixel_values, self.patch_size, self.config.mim_target)
            logits["mim"], item_losses = self._mim(patch_states, bool_masked_pos, targets)
            losses["mim"] = _reduce(item_losses, num_items.get("mim"))
        if wpa_labels is not None:
            logits["wpa"] = self.wpa_head(text_states)
            labelled = wpa_labels != -100
            item_losses = F.binary_cross_entropy_with_logits(
                logits["wpa"][labelled].float(), wpa_labels[labelled].float(), reduction="none"
            )
            losses["wpa"] = _reduce(item_losses, num_items.get("wpa"))
        weighted = [getattr(self.config, f"{name}_weight") * loss for name, loss in losses.items()]
        return LayoutLMv3ForPreTrainingOutput(
            loss=torch.stack(weighted).sum() if weighted else None,
            **{f"{name}_loss": loss for name, loss in losses.items()},
            **{f"{name}_logits": value for name, value in logits.items()},
            last_hidden_state=hidden,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    @staticmethod
    def count_objective_items(inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """
        The number of items each objective of `inputs` (a collated batch) averages its loss over: the masked tokens
        (`mlm_labels != -100`), the masked patches (`bool_masked_pos`) and the labelled words (`wpa_labels != -100`),
        for the objectives whose labels are there. Summed over the processes and micro-batches of a step, they are
        the `num_items_per_objective` of `forward`.
        """
        items = {}
        if inputs.get("mlm_labels") is not None:
            items["mlm"] = (inputs["mlm_labels"] != -100).sum()
        if inputs.get("bool_masked_pos") is not None:
            items["mim"] = inputs["bool_masked_pos"].bool().sum()
        if inputs.get("wpa_labels") is not None:
            items["wpa"] = (inputs["wpa_labels"] != -100).sum()
        return items

    def _mlm(self, text_states: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits at the masked tokens and their cross-entropies."""
        masked = labels != -100
        logits = self.mlm_head(text_states[masked], self.get_input_embeddings().weight)
        return logits, F.cross_entropy(logits.float(), labels[masked], reduction="none")

    def _mim(
        self, patch_states: torch.Tensor, bool_masked_pos: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions of every patch and the loss of each masked one (averaged over its values)."""
        predictions = self.mim_head(patch_states)
        if predictions.shape != targets.shape:
            raise ValueError(f"MIM predicts {tuple(predictions.shape)} but the targets are {tuple(targets.shape)}")
        masked = bool_masked_pos.to(predictions.device).bool()
        prediction, target = predictions[masked].float(), targets.to(predictions.device)[masked].float()
        if self.config.mim_target == "pixels":
            return predictions, F.l1_loss(prediction, target, reduction="none").mean(dim=-1)
        return predictions, F.mse_loss(prediction, target, reduction="none").mean(dim=-1)

    @torch.no_grad()
    def chance_levels(
        self, batch: dict[str, torch.Tensor], log_frequencies: torch.Tensor | None = None
    ) -> dict[str, float]:
        """
        Each objective's loss on `batch` (a collated batch) of the best prediction that ignores the document, for the
        objectives whose labels the batch has; a model whose loss falls clearly below it has learnt about the page.

        MLM (`"mlm"`): the loss of a model that learns the unigram prior and reads no context, the masked tokens'
        cross-entropy under the training corpus' token `log_frequencies` (`token_log_frequencies`); without them the
        entropy of the batch's own masked-token frequencies, lower (a small sample fits its own frequencies); and
        `"mlm_uniform"`, `log(vocab_size)`, the loss of a uniform guess, which a model reaches by learning nothing.
        MIM: the loss of the mean target (normalised pixels: their variance around the mean patch, at most 1.0 per
        value) or, for the L1 loss of `"pixels"`, of the median target, over all the batch's patches (the masked ones
        are drawn from them). WPA: the entropy of the batch's aligned / unaligned label frequencies (at most `log 2`:
        with most words under a masked patch, much less).
        """
        levels = {}
        if batch.get("mlm_labels") is not None:
            levels["mlm"] = mlm_chance_level(batch["mlm_labels"], log_frequencies)
            levels["mlm_uniform"] = math.log(self.config.vocab_size)
        if batch.get("bool_masked_pos") is not None:
            targets = mim_targets(batch["pixel_values"], self.patch_size, self.config.mim_target).flatten(0, 1)
            if self.config.mim_target == "pixels":
                levels["mim"] = float((targets - targets.median(dim=0).values).abs().mean())
            else:
                levels["mim"] = float((targets - targets.mean(dim=0)).pow(2).mean())
        if batch.get("wpa_labels") is not None:
            labels = batch["wpa_labels"]
            levels["wpa"] = prior_entropy(torch.bincount(labels[labels != -100].cpu(), minlength=2))
        return levels


def _reduce(item_losses: torch.Tensor, num_items: torch.Tensor | int | None) -> torch.Tensor:
    """
    The mean of `item_losses` (one per item of the batch), or their sum divided by `num_items` (the items of the
    whole step) when it is given. No item gives a zero that still reaches the head, so that every process of a
    distributed run backpropagates through the same parameters.
    """
    if num_items is None:
        return item_losses.mean() if item_losses.numel() else item_losses.sum()
    total = torch.as_tensor(num_items, device=item_losses.device, dtype=item_losses.dtype)
    return item_losses.sum() / total.clamp(min=1)


__all__ = ["LayoutLMv3ForPreTraining", "LayoutLMv3ForPreTrainingOutput", "WordPatchAlignmentHead"]
