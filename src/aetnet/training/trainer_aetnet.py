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
Training AETNet with the transformers `Trainer`: a trainer that logs every term of the objective, runs the momentum
update once per optimizer step and writes a model card. Its arguments are in `training_args_aetnet.py`, its callbacks
(EMA step, distillation ramp, temperature range, non-finite guard) in `callbacks.py`, the card in `modelcard.py`.

The models themselves return the whole objective as `loss` in training mode (`task + sum_k weight_k * loss_k`,
weights in `config.alignment_loss_weights`), so a plain `Trainer`, PEFT or `accelerate` train what this trainer
trains; `AETNetTrainer` minimises that same `loss` and adds what a plain loop lacks: label smoothing of the task
term, the distillation ramp, per-term logs, the non-finite guard and an EMA step per optimizer step rather than per
forward. The model owns its training knobs: the trainer sets them through the model's methods
(`modeling_aetnet_knobs.py`) and never writes them itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, Trainer
from transformers.modelcard import extract_hyperparameters_from_trainer
from transformers.utils import logging

from ..configuration_aetnet import AETNetConfig
from ..data_collator import AETNetDataCollator
from ..momentum import fitted_queue_size
from .callbacks import (
    AugmentationStepCallback,
    DistillationRampCallback,
    MomentumUpdateCallback,
    NonFiniteGradientGuard,
    TemperatureRangeCallback,
    unwrap_model,
)
from .gradient_clipping import clip_gradient_parts, separate_clipping_parts
from .modelcard import generate_model_card
from .trainer_utils import LossTermLog, preserved_random_states
from .training_args_aetnet import AETNetTrainingArguments


logger = logging.get_logger(__name__)

# Scalars that must keep their own value: weight decay would pull the temperature and the zero-initialised fusion
# gates towards 0 for no reason.
NO_DECAY_PARAMETER_NAMES = ("temp", "text_gate", "image_gate")
# Hyper-parameters of the AETNet recipe that the model card lists next to the Trainer's own.
CARD_ARGUMENTS = ("distill_alpha", "alpha_warmup_steps", "weight_decay", "max_grad_norm", "grad_clipping")


class AETNetTrainer(Trainer):
    """
    [`Trainer`] for AETNet models: the loss is the model's `loss`, the task loss plus the weighted alignment
    objectives (`config.alignment_loss_weights`, which `AETNetTrainingArguments.loss_weights` sets through the
    model's `set_alignment_loss_weights`), and `loss_task` and `loss_<objective>` for every enabled objective
    (unweighted) are logged next to `loss`, in training and, prefixed, in evaluation (`eval_loss_ditc`, ...), or
    `skipped_<objective>` (how many micro-batches lacked a modality it reads) in place of a loss none computed.

    It also:

    - divides the per-batch mean loss by the accumulation steps itself, so gradient accumulation gives the loss and
      gradients of the equivalent larger batch (the contrastive terms still see micro-batch negatives);
    - runs the momentum update once per optimizer step ([`MomentumUpdateCallback`]) instead of the model's own
      once-per-forward rule (`set_momentum_update("step")`);
    - ramps the distillation weights (`distill_alpha`, `alpha_warmup_steps`; [`DistillationRampCallback`]);
    - keeps the temperature and the fusion gates out of weight decay;
    - clips the task model's and the alignment side's gradients each on their own (`grad_clipping`), so that the
      alignment gradients never shrink the task's step;
    - shortens a feature queue longer than half the training set (stale false negatives);
    - skips non-finite losses (`skip_nonfinite_loss`);
    - writes a model card (`README.md`) with the measured evaluation results next to every saved model.

    A plain `TrainingArguments` works too (the config's weights and `distill_alpha`).
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
        # The task loss is a plain mean, never normalised by num_items_in_batch.
        self.model_accepts_loss_kwargs = False
        self._loss_terms = LossTermLog()
        self._card_kwargs: dict[str, Any] = {}
        model = unwrap_model(self.model, self.accelerator)
        self._is_aetnet = isinstance(getattr(model, "config", None), AETNetConfig)
        if hasattr(model, "add_model_tags"):
            model.add_model_tags(self._default_tags())
        if self._is_aetnet:
            self._set_training_knobs(model)
        self._add_callbacks()
        separate = self._argument("grad_clipping") == "separate" and self.args.max_grad_norm > 0 and self._is_aetnet
        self._gradient_parts = separate_clipping_parts(model, self.args, self.accelerator) if separate else {}
        self._part_norms: dict[str, torch.Tensor] = {}

    def _default_tags(self) -> list[str]:
        return self._tag_names if self._is_aetnet else self._baseline_tag_names

    def _set_training_knobs(self, model: PreTrainedModel) -> None:
        """Give the model the arguments' loss weights and distillation weight and a queue fitted to the training set
        (its config follows, so the saved model says what it was trained with), and one EMA step per optimizer step
        (the callback) instead of one per forward."""
        weights = getattr(self.args, "alignment_loss_weights", None)
        if weights:
            model.set_alignment_loss_weights(weights)
        alpha = self._argument("distill_alpha")
        if alpha is not None:
            model.set_distill_alpha(alpha)
        model.set_momentum_update("step")
        self._fit_queue_to_dataset(model)

    def _add_callbacks(self) -> None:
        """The recipe's callbacks: distillation ramp (AETNet), EMA step and temperature range after every optimizer
        step, the seeded collator's batch numbering, and the non-finite guard (the EMA step and numbering once)."""
        callbacks = self.callback_handler.callbacks
        if self._is_aetnet:
            self.add_callback(DistillationRampCallback(self._argument("alpha_warmup_steps"), self.accelerator))
        if not any(isinstance(cb, MomentumUpdateCallback) for cb in callbacks):
            self.add_callback(MomentumUpdateCallback(self.accelerator))
        self.add_callback(TemperatureRangeCallback(self.accelerator))
        collator = self.data_collator
        if (
            isinstance(collator, AETNetDataCollator)
            and collator.seed is not None
            and collator.generator is None
            and not any(isinstance(cb, AugmentationStepCallback) for cb in callbacks)
        ):
            self.add_callback(AugmentationStepCallback(collator))
        if self._argument("skip_nonfinite_loss"):
            self.add_callback(NonFiniteGradientGuard())

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

    def _fit_queue_to_dataset(self, model: PreTrainedModel) -> None:
        """
        Shorten a feature queue longer than half the training set (`momentum.fitted_queue_size`) with the model's
        `resize_feature_queues` (the config follows, so the saved model says what it was trained with), unless
        `fit_queue_to_dataset` is off, in which case a queue longer than the training set only warns. The new queue
        starts empty.
        """
        if not model.base_model.has_momentum or self.train_dataset is None:
            return
        try:
            num_examples = len(self.train_dataset)
        except TypeError:  # iterable dataset
            return
        queue_size = model.config.queue_size
        if not self._argument("fit_queue_to_dataset"):
            if queue_size > num_examples:
                logger.warning(
                    f"queue_size ({queue_size}) exceeds the number of training examples ({num_examples}): once the "
                    "queue has filled, it holds stale copies of every document, including the current positive, "
                    "which then act as false negatives for DITC and IMC."
                )
            return
        size = fitted_queue_size(queue_size, num_examples)
        if size < queue_size:
            logger.warning(
                f"queue_size {queue_size} -> {size}: at most half the {num_examples} training examples, so that "
                "documents rarely meet their own older copies as negatives (`fit_queue_to_dataset=False` keeps the "
                "configured size)."
            )
            model.resize_feature_queues(size)

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

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """
        The model's `loss` (task loss plus the weighted alignment objectives); the unweighted terms are accumulated
        for logging.

        `num_items_in_batch` is unused (the model's losses are per-batch means; see `loss_is_scaled_for_ga`), but
        required by the Trainer's signature.
        """
        mode = "train" if model.training else "eval"
        labels = inputs.pop("labels") if self.label_smoother is not None and "labels" in inputs else None
        if self._is_aetnet:
            # Also in eval, so that the evaluation logs report every term (eval never touches the queues).
            inputs = {**inputs, "return_alignment_losses": True}
        outputs = model(**inputs)
        loss, components = self._loss_and_terms(model, outputs, labels)
        skipped = _get(outputs, "skipped_objectives") or ()
        if loss is None:
            raise ValueError(
                "The model returned neither a task loss nor alignment losses; pass `labels` (got inputs "
                f"{sorted(inputs)}; objectives skipped for a missing modality: {list(skipped)})."
            )
        if mode == "train" and self._argument("skip_nonfinite_loss") and not torch.isfinite(loss.detach()).item():
            bad = [name for name, value in components.items() if not torch.isfinite(value.detach()).item()]
            logger.warning(
                f"Non-finite loss ({loss.item()}) at step {self.state.global_step}, from {bad or 'the weighted sum'}: "
                "this micro-batch is skipped (zero loss; non-finite gradients are zeroed before the optimizer step)."
            )
            self._loss_terms.add_nonfinite(mode)
            # Backward still runs through the real graph, so that DDP's gradient hooks fire as on every other rank;
            # NaNs that reach the gradients anyway are removed by NonFiniteGradientGuard on every rank alike.
            loss = torch.nan_to_num(loss, nan=0.0, posinf=0.0, neginf=0.0) * 0.0
        else:
            self._loss_terms.add(mode, components, skipped)
        return (loss, outputs) if return_outputs else loss

    def _loss_and_terms(
        self, model: nn.Module, outputs: Any, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """The loss to minimise and its unweighted terms (`task`, one per objective). Without label smoothing the loss
        is the model's own; with it, the model got no labels, and the smoothed task loss takes the task term's place
        in the model's weighted sum (`weighted_loss`)."""
        alignment_losses = _get(outputs, "alignment_losses") or {}
        if labels is not None:
            task_loss = self.label_smoother(outputs, labels)
            model = unwrap_model(model, self.accelerator)
            loss = model.weighted_loss(task_loss, alignment_losses) if self._is_aetnet else task_loss
        else:  # AETNet models expose the task term as `task_loss`; a plain model's `loss` is its task loss
            task_loss = _get(outputs, "task_loss" if self._is_aetnet else "loss")
            loss = _get(outputs, "loss")
        components = {} if task_loss is None else {"task": task_loss}
        components.update(alignment_losses)
        return loss, components

    def train(self, *args, **kwargs):
        self._loss_terms.reset("train")
        return super().train(*args, **kwargs)

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        """The Trainer's loop, plus the averaged loss terms in the metrics (`eval_loss_ditc`, `test_loss_ditc`...)."""
        self._loss_terms.reset("eval")
        output = super().evaluation_loop(
            dataloader,
            description,
            prediction_loss_only=prediction_loss_only,
            ignore_keys=ignore_keys,
            metric_key_prefix=metric_key_prefix,
        )
        output.metrics.update(
            self._loss_terms.flush("eval", self.accelerator, self.args.device, f"{metric_key_prefix}_")
        )
        return output

    def evaluate(self, *args, **kwargs) -> dict[str, float]:
        """`Trainer.evaluate`, leaving the random states as it found them: the evaluation data loader draws a seed,
        which would otherwise change every later dropout mask of a run that evaluates."""
        with preserved_random_states():
            return super().evaluate(*args, **kwargs)

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
            nonfinite = self._argument("skip_nonfinite_loss")
            logs.update(self._loss_terms.flush("train", self.accelerator, self.args.device, track_nonfinite=nonfinite))
            logs.update({f"grad_norm_{name}": norm.item() for name, norm in self._part_norms.items()})
        super().log(logs, start_time)

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
        Write `README.md` in `output_dir` from the package's template (`training/templates/model_card.md`, see
        [`generate_model_card`]): Hub metadata (tags, datasets, base models, a `model-index` with the last measured
        evaluation results), usage with `trust_remote_code=True`, hyper-parameters, loss weights, training log,
        framework versions and the AETNet citation. Arguments are those of [`Trainer.create_model_card`]; later saves
        write the card with them again.
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
        """Gather this run's values (model, tags, hyper-parameters, log) and write their card into `output_dir`."""
        model = unwrap_model(self.model, self.accelerator)
        card_kwargs = dict(self._card_kwargs)
        model_name = card_kwargs.pop("model_name", None) or Path(self.args.output_dir).resolve().name
        hyperparameters = extract_hyperparameters_from_trainer(self)
        hyperparameters.update({name: value for name in CARD_ARGUMENTS if (value := self._argument(name)) is not None})
        card = generate_model_card(
            model_name=model_name,
            class_name=type(model).__name__,
            config=model.config,
            model_tags=list(getattr(model, "model_tags", None) or self._default_tags()),
            hyperparameters=hyperparameters,
            log_history=self.state.log_history,
            repo_id=self.hub_model_id or self.args.hub_model_id or model_name,
            **card_kwargs,
        )
        os.makedirs(output_dir, exist_ok=True)
        card.save(os.path.join(output_dir, "README.md"))


def _get(outputs: Any, name: str) -> Any:
    if isinstance(outputs, dict):
        return outputs.get(name)
    return getattr(outputs, name, None)


__all__ = ["AETNetTrainer"]
