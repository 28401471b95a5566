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
`PreTrainingTrainer`: transformers' `Trainer` that normalises each pre-training objective over the whole optimizer
step (every process and micro-batch), logs each objective on its own and resumes masks.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from transformers import Trainer

from .data_collator_layoutlmv3_pretraining import MaskingStepCallback


# The per-objective losses of `LayoutLMv3ForPreTrainingOutput` and `ViTForPagePreTrainingOutput`, logged as
# `loss_<name>`.
OBJECTIVE_LOSSES = ("mlm", "mim", "wpa", "page_contrast")


class PreTrainingTrainer(Trainer):
    """
    A `Trainer` for the pre-training models of this package, with three additions:

    - each objective is normalised by its number of items over the whole optimizer step, across the processes and
      the gradient-accumulation micro-batches (transformers' `num_items_in_batch` and `average_tokens_across_devices`,
      one count per objective): the masked tokens, masked patches and labelled words of [`LayoutLMv3ForPreTraining`]
      and the masked patches and contrasted pages of [`ViTForPagePreTraining`] (`count_objective_items`, passed as
      `num_items_per_objective`), the masked tokens (`labels != -100`) of a masked
      language model such as `RobertaForMaskedLM`, the masked patches (`bool_masked_pos`) of a masked image model
      such as `ViTForMaskedImageModeling` (whose mean loss is rescaled to the step's count). Two processes with half
      a batch each, or two accumulated half batches, so make the update of one whole batch: the mean of per-batch
      means would weigh a batch with few masked items like one with many (with `average_tokens_across_devices=False`
      the counts stay per process: each process's mean, averaged). Where a launcher pads the last batch of an epoch
      with repeated examples to share it evenly, the repeats lose their labels and count for nothing;
    - each objective's unweighted loss (`mlm_loss`, `mim_loss`, `wpa_loss`, `page_contrast_loss` of the model's
      output, when computed)
      is logged as `loss_mlm` ... next to `loss`: in training, the mean over each step's items, averaged over the
      logging interval; in evaluation (`eval_loss_mlm` ...), the mean of the per-batch means;
    - a collator with seeded masks (`set_batch_index`: [`DataCollatorForLayoutLMv3PreTraining`],
      [`DataCollatorForSimMIM`]) gets a [`MaskingStepCallback`], so that a resumed run draws the masks of an
      uninterrupted one.

    Other models train as with `Trainer` (per-batch means). Pass `TrainingArguments(remove_unused_columns=False)`
    when the dataset has a `word_index` column: it is no model input, and the Trainer would drop it before the
    collator sees it.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._term_sums: dict[str, dict[str, torch.Tensor]] = {"train": {}, "eval": {}}
        self._term_counts: dict[str, dict[str, int]] = {"train": {}, "eval": {}}
        # This step's number of items per objective over all processes and micro-batches (`get_batch_samples`).
        self._step_items: dict[str, torch.Tensor] | None = None
        # The Trainer's single count of `labels` is replaced by the per-objective counts; a stock model that takes
        # `**kwargs` would otherwise be given a `num_items_in_batch` it ignores, and its mean loss taken as a sum.
        self.model_accepts_loss_kwargs = False
        if hasattr(self.data_collator, "set_batch_index") and hasattr(self.data_collator, "state_dict"):
            self.add_callback(MaskingStepCallback(self.data_collator))
        if self.args.label_names is None:
            # The objectives' labels come and go with the objectives: computing the evaluation loss must not wait
            # for all of them (the Trainer's rule for `label_names`), and no label is needed to return a loss.
            self.label_names = []
            self.can_return_loss = True

    def count_objective_items(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """
        The number of items each objective of the model averages over in `inputs` (one micro-batch of this
        process): the model's own `count_objective_items` when it has one, else `{"loss": count}` for a masked
        language model (`labels != -100`) or a masked image model (`bool_masked_pos`); `{}` for another model,
        whose per-batch mean loss is then used as is.
        """
        model = self.accelerator.unwrap_model(self.model)
        if hasattr(model, "count_objective_items"):
            return dict(model.count_objective_items(inputs))
        if torch.is_tensor(inputs.get("labels")):
            return {"loss": (inputs["labels"] != -100).sum()}
        if torch.is_tensor(inputs.get("bool_masked_pos")):
            return {"loss": inputs["bool_masked_pos"].bool().sum()}
        return {}

    def get_batch_samples(
        self, epoch_iterator: Iterator, num_batches: int, device: torch.device
    ) -> tuple[list, torch.Tensor | int | None]:
        """
        The step's micro-batches, as the Trainer draws them; also counts each objective's items over them and over
        the processes (`_step_items`), for `compute_loss`. Returns no `num_items_in_batch`: the per-objective counts
        replace it.
        """
        batches = []
        for _ in range(num_batches):
            try:
                batch = next(epoch_iterator)
            except StopIteration:
                break
            batches.append(self._unlabel_padding(batch))
        self._step_items, self.loss_is_scaled_for_ga = None, False
        if self.args.n_gpu > 1:  # `DataParallel` splits the inputs itself: per-batch means, as the Trainer does
            return batches, None
        counts: dict[str, torch.Tensor] = {}
        for batch in batches:
            for name, count in self.count_objective_items(batch).items():
                counts[name] = counts.get(name, 0) + count.to(device)
        # One row of counts and one of presence, in a fixed order, so that every process takes part in the same
        # gather, even one with no batch left.
        names = (*OBJECTIVE_LOSSES, "loss")
        table = torch.zeros(2, len(names), device=device)
        for i, name in enumerate(names):
            if name in counts:
                table[0, i], table[1, i] = counts[name].float(), 1.0
        across = self.args.world_size > 1 and self.args.average_tokens_across_devices
        if across:
            table = self.accelerator.gather(table[None]).sum(dim=0)
        self._step_items = {name: table[0, i] for i, name in enumerate(names) if table[1, i] > 0}
        # The loss is normalised over the whole step: not divided again by the accumulation steps.
        self.loss_is_scaled_for_ga = bool(self._step_items)
        # Across processes, each holds its share of the step's mean and the step counts once; else each holds its
        # own mean, and the logged term is the mean over the processes.
        if self._step_items and (self.accelerator.is_main_process or not across):
            for name in OBJECTIVE_LOSSES:
                if name in self._step_items:
                    self._term_counts["train"][name] = self._term_counts["train"].get(name, 0) + 1
        return batches, None

    def _unlabel_padding(self, batch: Any) -> Any:
        """
        The last batch of an epoch, shared by several processes, may be padded by the launcher with repeats of the
        epoch's first examples; accelerate's rule (`gather_for_metrics`) says which: those whose position in the
        batch gathered over the processes is at or after the loader's `remainder`. Their labels become -100 and
        their patch masks `False`, so that no objective counts them, as it would not in one process.
        """
        state = self.accelerator.gradient_state
        if self.args.world_size <= 1 or not isinstance(batch, Mapping) or not state.end_of_dataloader:
            return batch
        sizes = [len(value) for value in batch.values() if torch.is_tensor(value) and value.dim() > 0]
        if state.remainder <= 0 or not sizes:
            return batch
        size = sizes[0]
        first_repeat = state.remainder - self.args.process_index * size
        if first_repeat >= size:
            return batch
        repeats = torch.arange(size) >= max(first_repeat, 0)
        for key, value in batch.items():
            if not torch.is_tensor(value) or value.dim() == 0 or len(value) != size:
                continue
            rows = repeats.to(value.device).view(-1, *([1] * (value.dim() - 1)))
            if key == "labels" or key.endswith("_labels"):
                batch[key] = value.masked_fill(rows, -100)
            elif key == "bool_masked_pos":
                batch[key] = value.masked_fill(rows, False)
        return batch

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        """
        The model's loss, normalised in training by each objective's items over the step (`get_batch_samples`) and
        scaled by the number of processes, whose gradients DDP averages; its per-objective terms are accumulated on
        the device for logging.
        """
        items = self._step_items if model.training else None
        unwrapped = self.accelerator.unwrap_model(model)
        if items and hasattr(unwrapped, "count_objective_items"):
            outputs = model(**inputs, num_items_per_objective=items)
        else:
            outputs = model(**inputs)
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs[0]
        if items and "loss" in items:  # a stock model's mean over this micro-batch's items
            local = self.count_objective_items(inputs)["loss"].to(loss.device)
            loss = loss * local / items["loss"].clamp(min=1)
        if items and self.args.average_tokens_across_devices:
            loss = loss * self.accelerator.num_processes
        self._accumulate_terms(outputs, "train" if model.training else "eval", per_step=bool(items))
        return (loss, outputs) if return_outputs else loss

    def _accumulate_terms(self, outputs: Any, mode: str, per_step: bool) -> None:
        """Add the output's per-objective terms; `per_step`: they are this process's share of the step's mean, and
        the step was counted in `get_batch_samples`; else each is a batch mean, counted here."""
        sums, counts = self._term_sums[mode], self._term_counts[mode]
        for name in OBJECTIVE_LOSSES:
            value = outputs.get(f"{name}_loss") if hasattr(outputs, "get") else None
            if value is not None:
                value = value.detach().float()
                sums[name] = sums[name] + value if name in sums else value
                if not per_step:
                    counts[name] = counts.get(name, 0) + 1

    def _flush_terms(self, mode: str, prefix: str = "") -> dict[str, float]:
        """The accumulated terms summed over the processes and divided by their count; resets them."""
        sums, counts = self._term_sums[mode], self._term_counts[mode]
        self._term_sums[mode], self._term_counts[mode] = {}, {}
        if not sums:
            return {}
        names = sorted(sums)
        device = self.args.device
        values = [sums[name].to(device) for name in names]
        values += [torch.tensor(float(counts.get(name, 0)), device=device) for name in names]
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
