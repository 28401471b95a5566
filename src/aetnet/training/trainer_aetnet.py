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
Training AETNet with the transformers `Trainer`: a trainer that combines the task loss with the weighted alignment
objectives, logs every term and writes a model card. Its arguments are in `training_args_aetnet.py`, its callbacks
(EMA step, distillation ramp, temperature range, non-finite guard) in `trainer_callbacks.py`, the card writer in
`modelcard_aetnet.py`.

The models themselves already return the whole objective as `loss` in training mode (`task + sum_k weight_k *
loss_k`, weights in `config.alignment_loss_weights`), so a plain `Trainer`, PEFT or `accelerate` train what this
trainer trains. `AETNetTrainer` recombines the same terms with the same weights (`loss_utils.weighted_objective`) to
add what a plain loop lacks: label smoothing of the task term, the distillation ramp, per-term logs, the non-finite
guard and an EMA step per optimizer step rather than per forward.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel, Trainer
from transformers.utils import logging

from ..configuration_aetnet import AETNetConfig
from ..data_collator import AETNetDataCollator
from ..loss_utils import weighted_objective
from ..momentum import FeatureQueues, fitted_queue_size
from .callbacks import (
    AugmentationStepCallback,
    DistillationRampCallback,
    MomentumUpdateCallback,
    NonFiniteGradientGuard,
    TemperatureRangeCallback,
    unwrap_model,
)
from .gradient_clipping import clip_gradient_parts, separate_clipping_parts
from .modelcard import write_model_card
from .training_args_aetnet import AETNetTrainingArguments


logger = logging.get_logger(__name__)

# Scalars that must keep their own value: weight decay would pull the temperature and the zero-initialised fusion
# gates towards 0 for no reason.
NO_DECAY_PARAMETER_NAMES = ("temp", "text_gate", "image_gate")


class AETNetTrainer(Trainer):
    """
    [`Trainer`] for AETNet models: the loss is the model's task loss plus the weighted alignment objectives
    (`config.alignment_loss_weights`, which `AETNetTrainingArguments.loss_weights` sets), and `loss_task` and
    `loss_<objective>` for every enabled objective
    (unweighted) are logged next to `loss`, in training and, prefixed, in evaluation (`eval_loss_ditc`, ...).

    It also:

    - divides the per-batch mean loss by the accumulation steps itself, so gradient accumulation gives the loss and
      gradients of the equivalent larger batch (the contrastive terms still see micro-batch negatives);
    - runs the momentum update once per optimizer step ([`MomentumUpdateCallback`]) instead of the model's own
      once-per-forward rule (`momentum_update_in_forward` is switched off);
    - ramps the distillation weights (`distill_alpha`, `alpha_warmup_steps`; [`DistillationRampCallback`]);
    - keeps the temperature and the fusion gates out of weight decay;
    - clips the task model's and the alignment side's gradients each on their own (`grad_clipping`), so that the
      alignment gradients never shrink the task's step;
    - shortens a feature queue longer than half the training set (stale false negatives, method.md bug 19);
    - skips non-finite losses (`skip_nonfinite_loss`);
    - writes a model card (`README.md`) with the measured evaluation results next to every saved model.

    A plain `TrainingArguments` works too (unit weights, config `distill_alpha`).
    """

    # compute_loss returns a per-micro-batch mean: training_step must divide it by the accumulation steps.
    loss_is_scaled_for_ga = False
    _tag_names = ["aetnet", "layoutlmv3", "document-ai"]
    # A plain model trained by this trainer (`--baseline layoutlmv3` of the examples) is not tagged as AETNet.
    _baseline_tag_names = ["layoutlmv3", "document-ai", "aetnet-baseline"]

    def __init__(self, *args, **kwargs):
        if kwargs.get("compute_loss_func") is not None:
            raise ValueError(
                "`compute_loss_func` is not supported by AETNetTrainer: the task loss comes from the model and the "
                "alignment terms are added to it; use a plain Trainer for a custom loss."
            )
        super().__init__(*args, **kwargs)
        # The task loss is a plain mean, never normalised by num_items_in_batch (style doc 4.6).
        self.model_accepts_loss_kwargs = False
        self._loss_sums = {"train": {}, "eval": {}}
        self._loss_counts = {"train": {}, "eval": {}}
        self._nonfinite_losses = {"train": 0, "eval": 0}
        unwrapped = unwrap_model(self.model, self.accelerator)
        self._is_aetnet = isinstance(getattr(unwrapped, "config", None), AETNetConfig)
        if hasattr(unwrapped, "add_model_tags"):
            unwrapped.add_model_tags(self._tag_names if self._is_aetnet else self._baseline_tag_names)
        config = getattr(unwrapped, "config", None)
        given = getattr(self.args, "alignment_loss_weights", None) or {}
        if self._is_aetnet and given:
            unknown = sorted(set(given) - set(config.alignment_objectives))
            if unknown:
                raise ValueError(
                    f"`loss_weights` names {unknown}, which the model does not compute; its objectives: "
                    f"{config.alignment_objectives}"
                )
            config.alignment_loss_weights = {**config.alignment_loss_weights, **given}
        base = getattr(unwrapped, "base_model", unwrapped)
        if self._is_aetnet:
            self._set_distill_alpha(base, self._argument("distill_alpha"))
            # One EMA step per optimizer step (the callback), not one per forward (the model's own rule).
            base.momentum_update_in_forward = False
            self.add_callback(DistillationRampCallback(self._argument("alpha_warmup_steps"), self.accelerator))
        if not any(isinstance(cb, MomentumUpdateCallback) for cb in self.callback_handler.callbacks):
            self.add_callback(MomentumUpdateCallback(self.accelerator))
        self.add_callback(TemperatureRangeCallback(self.accelerator))
        collator = self.data_collator
        if (
            isinstance(collator, AETNetDataCollator)
            and collator.seed is not None
            and collator.generator is None
            and not any(isinstance(cb, AugmentationStepCallback) for cb in self.callback_handler.callbacks)
        ):
            self.add_callback(AugmentationStepCallback(collator))
        if self._argument("skip_nonfinite_loss"):
            self.add_callback(NonFiniteGradientGuard())
        self._fit_queue_to_dataset(unwrapped)
        separate = self._argument("grad_clipping") == "separate" and self.args.max_grad_norm > 0 and self._is_aetnet
        self._gradient_parts = separate_clipping_parts(unwrapped, self.args, self.accelerator) if separate else {}
        self._part_norms: dict[str, torch.Tensor] = {}

    def training_step(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch=None) -> torch.Tensor:
        """The Trainer's step; on the micro-batch that completes the gradients, the separate clip of each part (the
        Trainer's joint clip that follows then finds nothing to do)."""
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self._gradient_parts and self.accelerator.sync_gradients:
            self._part_norms = clip_gradient_parts(self._gradient_parts, self.args.max_grad_norm)
        return loss

    def _argument(self, name: str) -> Any:
        """An AETNet training argument, with its default when `args` is a plain `TrainingArguments`."""
        if hasattr(self.args, name):
            return getattr(self.args, name)
        return AETNetTrainingArguments.__dataclass_fields__[name].default

    def _fit_queue_to_dataset(self, model: nn.Module) -> None:
        """
        Shorten a feature queue longer than half the training set (`momentum.fitted_queue_size`; the config follows,
        so the saved model says what it was trained with), unless `fit_queue_to_dataset` is off, in which case a
        queue longer than the training set only warns. The new queue starts empty.
        """
        base = getattr(model, "base_model", model)
        if not getattr(base, "has_momentum", False) or self.train_dataset is None:
            return
        try:
            num_examples = len(self.train_dataset)
        except TypeError:  # iterable dataset
            return
        config = base.config
        if not self._argument("fit_queue_to_dataset"):
            if config.queue_size > num_examples:
                logger.warning(
                    f"queue_size ({config.queue_size}) exceeds the number of training examples ({num_examples}): "
                    "once the queue has filled, it holds stale copies of every document, including the current "
                    "positive, which then act as false negatives for DITC and IMC."
                )
            return
        size = fitted_queue_size(config.queue_size, num_examples)
        if size < config.queue_size:
            logger.warning(
                f"queue_size {config.queue_size} -> {size}: at most half the {num_examples} training examples, so "
                "that documents rarely meet their own older copies as negatives (`fit_queue_to_dataset=False` keeps "
                "the configured size)."
            )
            old = base.queues.image_queue
            base.queues = FeatureQueues(config.embed_dim, size).to(device=old.device, dtype=old.dtype)
            config.queue_size = size

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """The Trainer's optimizer, with the temperature in a group of its own when `temperature_learning_rate` is set."""
        optimizer = super().create_optimizer(model)
        lr = self._argument("temperature_learning_rate")
        temp = getattr(getattr(unwrap_model(self.model, self.accelerator), "base_model", None), "temp", None)
        if lr is None or temp is None:
            return optimizer
        for group in optimizer.param_groups:
            group["params"] = [p for p in group["params"] if p is not temp]
        optimizer.add_param_group({"params": [temp], "lr": lr, "weight_decay": 0.0})
        return optimizer

    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        """The Trainer's decay list (no biases or norms), minus the temperature `temp` and the fusion gates."""
        names = super().get_decay_parameter_names(model)
        return [name for name in names if name.rsplit(".", 1)[-1] not in NO_DECAY_PARAMETER_NAMES]

    @staticmethod
    def _set_distill_alpha(base: nn.Module, alpha: float | None) -> None:
        """Give every objective that distils (has a `distill_alpha`) the argument's weight, in the model and in its
        config's `objective_settings`, so that the saved model says what it was trained with."""
        if alpha is None:
            return
        settings = dict(base.config.objective_settings)
        for name, objective in base.objectives.items():
            if hasattr(objective, "distill_alpha"):
                objective.distill_alpha = alpha
                settings[name] = {**settings.get(name, {}), "distill_alpha": alpha}
        base.config.objective_settings = settings

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """
        Task loss plus the weighted alignment objectives; the unweighted terms are accumulated for logging.

        `num_items_in_batch` is unused (the model's losses are per-batch means; see `loss_is_scaled_for_ga`), but
        required by the Trainer's signature.
        """
        mode = "train" if model.training else "eval"
        labels = inputs.pop("labels") if self.label_smoother is not None and "labels" in inputs else None
        if self._is_aetnet:
            # Also in eval, so that the evaluation logs report every term (eval never touches the queues).
            inputs = {**inputs, "return_alignment_losses": True}
        outputs = model(**inputs)

        if labels is not None:
            task_loss = self.label_smoother(outputs, labels)
        else:  # AETNet models expose the task term as `task_loss`; a plain model's `loss` is its task loss
            task_loss = _get(outputs, "task_loss") if self._is_aetnet else _get(outputs, "loss")
        alignment_losses = _get(outputs, "alignment_losses") or {}
        if task_loss is None and not alignment_losses:
            raise ValueError(
                "The model returned neither a task loss nor alignment losses; pass `labels` (got inputs "
                f"{sorted(inputs)})."
            )
        components = {} if task_loss is None else {"task": task_loss}
        components.update(alignment_losses)
        weights = getattr(unwrap_model(model, self.accelerator).config, "alignment_loss_weights", None) or {}
        loss = weighted_objective(task_loss, alignment_losses, weights)

        if mode == "train" and self._argument("skip_nonfinite_loss") and not torch.isfinite(loss.detach()).item():
            bad = [name for name, value in components.items() if not torch.isfinite(value.detach()).item()]
            logger.warning(
                f"Non-finite loss ({loss.item()}) at step {self.state.global_step}, from {bad or 'the weighted sum'}: "
                "this micro-batch is skipped (zero loss; non-finite gradients are zeroed before the optimizer step)."
            )
            self._nonfinite_losses[mode] += 1
            # Backward still runs through the real graph, so that DDP's gradient hooks fire as on every other rank;
            # NaNs that reach the gradients anyway are removed by _NonFiniteGradientGuard on every rank alike.
            loss = torch.nan_to_num(loss, nan=0.0, posinf=0.0, neginf=0.0) * 0.0
        else:
            self._accumulate(mode, components)
        return (loss, outputs) if return_outputs else loss

    def _accumulate(self, mode: str, components: dict[str, torch.Tensor]) -> None:
        """Keep on-device sums; nothing synchronises with the host until the values are logged."""
        sums, counts = self._loss_sums[mode], self._loss_counts[mode]
        for name, value in components.items():
            value = value.detach().float()
            sums[name] = sums[name] + value if name in sums else value
            counts[name] = counts.get(name, 0) + 1

    def _flush_loss_components(self, mode: str, prefix: str = "") -> dict[str, float]:
        """Average the accumulated terms over micro-batches and processes, and reset them."""
        sums, counts, nonfinite = self._loss_sums[mode], self._loss_counts[mode], self._nonfinite_losses[mode]
        self._loss_sums[mode], self._loss_counts[mode], self._nonfinite_losses[mode] = {}, {}, 0
        names = sorted(sums)
        track_nonfinite = mode == "train" and self._argument("skip_nonfinite_loss")
        if not names and not track_nonfinite:
            return {}
        device = self.args.device
        values = [sums[name].to(device) for name in names] + [
            torch.tensor(float(counts[name]), device=device) for name in names
        ]
        values.append(torch.tensor(float(nonfinite), device=device))
        totals = self.accelerator.gather(torch.stack(values)[None]).sum(dim=0).tolist()
        logs = {f"{prefix}loss_{name}": totals[i] / max(totals[len(names) + i], 1.0) for i, name in enumerate(names)}
        if track_nonfinite:
            logs[f"{prefix}nonfinite_losses"] = int(totals[-1])
        return logs

    def train(self, *args, **kwargs):
        self._loss_sums["train"], self._loss_counts["train"], self._nonfinite_losses["train"] = {}, {}, 0
        return super().train(*args, **kwargs)

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        """The Trainer's loop, plus the averaged loss terms in the metrics (`eval_loss_ditc`, `test_loss_ditc`...)."""
        self._loss_sums["eval"], self._loss_counts["eval"], self._nonfinite_losses["eval"] = {}, {}, 0
        output = super().evaluation_loop(
            dataloader,
            description,
            prediction_loss_only=prediction_loss_only,
            ignore_keys=ignore_keys,
            metric_key_prefix=metric_key_prefix,
        )
        output.metrics.update(self._flush_loss_components("eval", prefix=f"{metric_key_prefix}_"))
        return output

    def evaluate(self, *args, **kwargs) -> dict[str, float]:
        """`Trainer.evaluate`, leaving the random states as it found them: the evaluation data loader draws a seed,
        which would otherwise change every later dropout mask of a run that evaluates."""
        states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])
            if cuda_states is not None:
                torch.cuda.set_rng_state_all(cuda_states)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        """
        Load a checkpoint's weights through `from_pretrained`. The stock loader reads `model.safetensors` with a plain
        `load_state_dict(strict=False)`, which skips transformers' key conversions: `save_pretrained` writes the ViT
        aligners under their legacy names, so a resumed run would silently keep freshly initialised ViT weights.
        `AETNetPreTrainedModel.from_pretrained` converts the names and raises on any missing encoder weight.
        """
        model = self.model if model is None else model
        target = unwrap_model(model, self.accelerator)
        if not isinstance(target, PreTrainedModel):
            return super()._load_from_checkpoint(resume_from_checkpoint, model=model)
        loaded = type(target).from_pretrained(resume_from_checkpoint, config=target.config)
        target.load_state_dict(loaded.state_dict(), strict=True)

    def _load_best_model(self) -> None:
        """`load_best_model_at_end` through the same converting loader as resuming."""
        logger.info(f"Loading best model from {self.state.best_model_checkpoint} (score: {self.state.best_metric}).")
        self._load_from_checkpoint(self.state.best_model_checkpoint)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # the periodic training log
            logs.update(self._flush_loss_components("train"))
            logs.update({f"grad_norm_{name}": norm.item() for name, norm in self._part_norms.items()})
        super().log(logs, start_time)

    # ---- Model card ----

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        super()._save(output_dir, state_dict=state_dict)
        if self.args.should_save:
            output_dir = output_dir if output_dir is not None else self.args.output_dir
            self._write_model_card(output_dir)
            # The stock `pipeline(...)` finds the AETNet pipelines through config.json (a PEFT adapter has none).
            if self._is_aetnet and os.path.isfile(os.path.join(output_dir, "config.json")):
                from .custom_pipelines import save_custom_pipelines

                save_custom_pipelines(output_dir, unwrap_model(self.model, self.accelerator))

    def create_model_card(
        self,
        language: str | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | list[str] | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
    ) -> None:
        """
        Write `README.md` in `output_dir` from the package's template (`aetnet/templates/model_card.md`): Hub
        metadata (tags, datasets, base models, a `model-index` with the last measured evaluation results), usage
        with `trust_remote_code=True`, hyper-parameters, loss weights, training log, framework versions and the
        AETNet citation. Arguments are those of [`Trainer.create_model_card`].
        """
        if not self.is_world_process_zero():
            return
        self._card_kwargs = dict(
            language=language,
            license=license,
            tags=tags,
            model_name=model_name,
            finetuned_from=finetuned_from,
            tasks=tasks,
            dataset_tags=dataset_tags,
            dataset=dataset,
            dataset_args=dataset_args,
        )
        self._write_model_card(self.args.output_dir)

    def _write_model_card(self, output_dir: str) -> None:
        write_model_card(self, output_dir, getattr(self, "_card_kwargs", {}))


def _get(outputs: Any, name: str) -> Any:
    if isinstance(outputs, dict):
        return outputs.get(name)
    return getattr(outputs, name, None)


__all__ = ["AETNetTrainer"]
