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
"""`PreTrainingTrainer`: transformers' `Trainer` that logs each pre-training objective on its own and resumes masks."""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer

from .data_collator_layoutlmv3_pretraining import MaskingStepCallback


# The per-objective losses of `LayoutLMv3ForPreTrainingOutput`, logged as `loss_<name>`.
OBJECTIVE_LOSSES = ("mlm", "mim", "wpa")


class PreTrainingTrainer(Trainer):
    """
    A `Trainer` for the pre-training models of this package, with two additions:

    - each objective's unweighted loss (`mlm_loss`, `mim_loss`, `wpa_loss` of [`LayoutLMv3ForPreTraining`]'s output,
      when computed) is logged as `loss_mlm` ... next to `loss`, averaged over the logging interval and the
      processes, and in evaluation as `eval_loss_mlm` ...;
    - a collator with seeded masks (`set_batch_index`: [`DataCollatorForLayoutLMv3PreTraining`],
      [`DataCollatorForSimMIM`]) gets a [`MaskingStepCallback`], so that a resumed run draws the masks of an
      uninterrupted one.

    Models whose output has no such terms (`ViTForMaskedImageModeling`, `RobertaForMaskedLM`) train as with `Trainer`.
    Pass `TrainingArguments(remove_unused_columns=False)` when the dataset has a `word_index` column: it is no model
    input, and the Trainer would drop it before the collator sees it.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._term_sums: dict[str, dict[str, torch.Tensor]] = {"train": {}, "eval": {}}
        self._term_counts: dict[str, dict[str, int]] = {"train": {}, "eval": {}}
        if hasattr(self.data_collator, "set_batch_index") and hasattr(self.data_collator, "state_dict"):
            self.add_callback(MaskingStepCallback(self.data_collator))
        if self.args.label_names is None:
            # The objectives' labels come and go with the objectives: computing the evaluation loss must not wait
            # for all of them (the Trainer's rule for `label_names`), and no label is needed to return a loss.
            self.label_names = []
            self.can_return_loss = True

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        """The model's loss; its per-objective terms are accumulated on the device for logging."""
        outputs = model(**inputs)
        mode = "train" if model.training else "eval"
        sums, counts = self._term_sums[mode], self._term_counts[mode]
        for name in OBJECTIVE_LOSSES:
            value = outputs.get(f"{name}_loss") if hasattr(outputs, "get") else None
            if value is not None:
                value = value.detach().float()
                sums[name] = sums[name] + value if name in sums else value
                counts[name] = counts.get(name, 0) + 1
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs[0]
        return (loss, outputs) if return_outputs else loss

    def _flush_terms(self, mode: str, prefix: str = "") -> dict[str, float]:
        """The accumulated terms averaged over micro-batches and processes; resets them."""
        sums, counts = self._term_sums[mode], self._term_counts[mode]
        self._term_sums[mode], self._term_counts[mode] = {}, {}
        if not sums:
            return {}
        names = sorted(sums)
        device = self.args.device
        values = [sums[name].to(device) for name in names]
        values += [torch.tensor(float(counts[name]), device=device) for name in names]
        totals = self.accelerator.gather(torch.stack(values)[None]).sum(dim=0).tolist()
        return {f"{prefix}loss_{name}": totals[i] / max(totals[len(names) + i], 1.0) for i, name in enumerate(names)}

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:  # a training log: its interval's terms
            logs = {**logs, **self._flush_terms("train")}
        super().log(logs, *args, **kwargs)

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        """The Trainer's loop, plus the averaged terms in the metrics (`eval_loss_mlm`, ...)."""
        self._term_sums["eval"], self._term_counts["eval"] = {}, {}
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        output.metrics.update(self._flush_terms("eval", prefix=f"{metric_key_prefix}_"))
        return output


__all__ = ["OBJECTIVE_LOSSES", "PreTrainingTrainer"]
