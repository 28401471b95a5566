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
AETNet models: LayoutLMv3 fine-tuned with a ViT and a RoBERTa alignment encoder, their momentum copies, two feature
queues and pluggable alignment objectives (Wang et al., AAAI 2023). This file holds the task heads; the encoder is
`AETNetModel` (`modeling_aetnet_base.py`), re-exported here with the rest of the public model API.

The heads are LayoutLMv3's own: their layers are built by the stock `LayoutLMv3For*` class and their task losses are
transformers' (`PreTrainedModel.loss_function`), so an AETNet head is exactly a LayoutLMv3 head on the fused output.

This module imports only torch, transformers and its sibling modules, so that `save_pretrained` can ship it as Hub
remote code (`trust_remote_code=True`).
"""

import torch
from transformers import (
    LayoutLMv3ForQuestionAnswering,
    LayoutLMv3ForSequenceClassification,
    LayoutLMv3ForTokenClassification,
    PreTrainedModel,
)
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple, logging

from .configuration_aetnet import AETNetConfig
from .modeling_aetnet_base import AETNetModel, AETNetPreTrainedModel
from .modeling_aetnet_outputs import (
    AETNetModelOutput,
    AETNetQuestionAnsweringModelOutput,
    AETNetSequenceClassifierOutput,
    AETNetTokenClassifierOutput,
)


logger = logging.get_logger(__name__)


class _AETNetHeadMixin:
    """
    What the three heads share: `self.aetnet` (the encoder), the stock head's layers, and the output with the whole
    objective as `loss`.

    A head's `forward` takes LayoutLMv3's inputs and its task labels; every other keyword argument goes to
    `AETNetModel.forward` (`pixel_values_aug`, `return_alignment_losses`, transformers' output options), as
    LayoutLMv3's heads pass theirs to `self.layoutlmv3`. The training knobs (`set_alignment_loss_weights`,
    `set_distill_alpha`, ..., `modeling_aetnet_knobs.py`) act on the encoder.
    """

    _layoutlmv3_class: type[PreTrainedModel]

    def __init__(self, config: AETNetConfig):
        """The encoder, and the stock head's own layers (all of its children but `layoutlmv3`)."""
        super().__init__(config)
        self.num_labels = config.num_labels
        self.aetnet = AETNetModel(config)
        # Built on the meta device, so that the stock head's LayoutLMv3 costs nothing; `post_init` initialises the
        # layers kept, with AETNet's rules.
        device = torch.get_default_device()
        with torch.device("meta"):
            stock = self._layoutlmv3_class(self._head_config())
        self.task_head_names = tuple(name for name, _ in stock.named_children() if name != "layoutlmv3")
        for name in self.task_head_names:
            self.add_module(name, getattr(stock, name).to_empty(device=device))
        self.post_init()

    def get_input_embeddings(self):
        return self.aetnet.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.aetnet.set_input_embeddings(value)

    def _head_config(self):
        """The stock head reads hidden size, dropout and `num_labels` from one config: the layout config's fields
        with AETNet's labels and attention implementation."""
        head_config = self.config.layout_config.__class__(**self.config.layout_config.to_dict())
        head_config.num_labels = self.config.num_labels
        head_config.id2label, head_config.label2id = dict(self.config.id2label), dict(self.config.label2id)
        head_config._attn_implementation = self.config.layout_config._attn_implementation
        return head_config

    def momentum_update(self) -> None:
        self.aetnet.momentum_update()

    def _output(self, output_class: type, task_loss: torch.Tensor | None, outputs: AETNetModelOutput, **predictions):
        """The head's output: `loss` = task loss + the weighted alignment terms of this forward."""
        return output_class(
            loss=self.weighted_loss(task_loss, outputs.alignment_losses),
            task_loss=task_loss,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            alignment_losses=outputs.alignment_losses,
            skipped_objectives=outputs.skipped_objectives,
            **predictions,
        )

    def to_layoutlmv3(self) -> PreTrainedModel:
        """
        Stock LayoutLMv3 with this head (`LayoutLMv3ForTokenClassification`, ...) holding copies of this model's
        LayoutLMv3 and head weights, on the same device and dtype.

        It is the fair baseline for a comparison: plain LayoutLMv3 fine-tuned from exactly AETNet's start. The aligners,
        projections, queues and temperature are left behind, so its outputs equal this model's only where the aligned
        features do not enter LayoutLMv3 (`fusion_injection="none"`, eval mode).
        """
        baseline = self._layoutlmv3_class(self._head_config())
        baseline.layoutlmv3.load_state_dict(self.aetnet.layoutlmv3.state_dict())
        for name in self.task_head_names:
            getattr(baseline, name).load_state_dict(getattr(self, name).state_dict())
        return baseline.to(device=self.device, dtype=self.dtype)


class AETNetForTokenClassification(_AETNetHeadMixin, AETNetPreTrainedModel):
    """AETNet with LayoutLMv3's token classification head (linear below 10 labels, an MLP from 10), e.g. FUNSD, CORD."""

    _layoutlmv3_class = LayoutLMv3ForTokenClassification

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        bbox: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> AETNetTokenClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, text_length)`, *optional*):
            Token labels in `[0, num_labels)`, -100 for ignored tokens.

        See `AETNetModel.forward` for the other arguments (`pixel_values_aug`, `return_alignment_losses`). The page
        image is optional, as for LayoutLMv3 (the stock `token-classification` pipeline passes text alone); the text
        is not: the head labels its tokens.
        """
        if input_ids is None:
            raise ValueError("AETNetForTokenClassification labels text tokens: `input_ids` is required, got None")
        outputs = self.aetnet(
            input_ids, bbox, attention_mask, token_type_ids, position_ids, pixel_values, return_dict=True, **kwargs
        )
        logits = self.classifier(self.dropout(outputs.last_hidden_state[:, : input_ids.shape[1]]))
        task_loss = None if labels is None else self.loss_function(logits, labels, self.config)
        return self._output(AETNetTokenClassifierOutput, task_loss, outputs, logits=logits)


class AETNetForSequenceClassification(_AETNetHeadMixin, AETNetPreTrainedModel):
    """AETNet with LayoutLMv3's document classification head on the [CLS] output, e.g. RVL-CDIP."""

    _layoutlmv3_class = LayoutLMv3ForSequenceClassification

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        bbox: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> AETNetSequenceClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Document labels; regression, single- or multi-label as in `LayoutLMv3ForSequenceClassification`.

        See `AETNetModel.forward` for the other arguments (`pixel_values_aug`, `return_alignment_losses`).
        """
        outputs = self.aetnet(
            input_ids, bbox, attention_mask, token_type_ids, position_ids, pixel_values, return_dict=True, **kwargs
        )
        logits = self.classifier(outputs.last_hidden_state[:, 0, :])
        task_loss = None if labels is None else self.loss_function(labels, logits, self.config)
        return self._output(AETNetSequenceClassifierOutput, task_loss, outputs, logits=logits)


class AETNetForQuestionAnswering(_AETNetHeadMixin, AETNetPreTrainedModel):
    """AETNet with LayoutLMv3's extractive QA head (start/end logits over every position), e.g. DocVQA."""

    _layoutlmv3_class = LayoutLMv3ForQuestionAnswering

    def __init__(self, config: AETNetConfig):
        if config.num_labels != 2:
            raise ValueError(
                f"AETNetForQuestionAnswering predicts a start and an end logit: `num_labels` must be 2, got "
                f"{config.num_labels}"
            )
        super().__init__(config)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        bbox: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        start_positions: torch.LongTensor | None = None,
        end_positions: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> AETNetQuestionAnsweringModelOutput:
        r"""
        start_positions, end_positions (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Token indices of the answer span; positions outside the sequence are ignored.

        See `AETNetModel.forward` for the other arguments (`pixel_values_aug`, `return_alignment_losses`).

        A keyword `image` is not read. transformers' stock `document-question-answering` pipeline passes the page
        under that name (LayoutLMv2's) and decodes start / end logits over the text tokens alone, while LayoutLMv3's
        head (this one) scores every position, text and page patches alike; so that pipeline's answers come from the
        text and layout, as with stock LayoutLMv3, which drops the argument silently. Here a warning says so once.
        `AETNetDocumentQuestionAnsweringPipeline` (`pipeline_aetnet.py`) reads the page. (No `image` parameter: the
        Trainer would then keep a dataset's `image` column for the model.)
        """
        if kwargs.pop("image", None) is not None:
            logger.warning_once(
                "AETNetForQuestionAnswering does not read `image` (LayoutLMv2's name for the page, which the stock "
                "`document-question-answering` pipeline passes): it answers from the text and layout, as LayoutLMv3 "
                "does there. Pass the page as `pixel_values`, e.g. with AETNetDocumentQuestionAnsweringPipeline."
            )
        outputs = self.aetnet(
            input_ids, bbox, attention_mask, token_type_ids, position_ids, pixel_values, return_dict=True, **kwargs
        )
        logits = self.qa_outputs(outputs.last_hidden_state)
        start_logits, end_logits = (t.squeeze(-1).contiguous() for t in logits.split(1, dim=-1))
        task_loss = self.loss_function(start_logits, end_logits, start_positions, end_positions)
        return self._output(
            AETNetQuestionAnsweringModelOutput, task_loss, outputs, start_logits=start_logits, end_logits=end_logits
        )


__all__ = [
    "AETNetForQuestionAnswering",
    "AETNetForSequenceClassification",
    "AETNetForTokenClassification",
]
