"""
Training AETNet with the transformers `Trainer`: the loss weights as training arguments, a trainer that adds the
weighted alignment objectives to the task loss and logs every term, and the callback that runs the momentum (EMA)
update once per optimizer step.

The models return the *task* loss as `loss` and the unweighted alignment terms in `alignment_losses`, so a plain
`Trainer` still trains the task (the alignment encoders then learn through the task loss only). `AETNetTrainer` is
what trains the paper's objective, `L = L_task + L_ditc + L_imc + L_glitc + L_pita`.
"""

from __future__ import annotations

import inspect
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainingArguments
from transformers.modelcard import extract_hyperparameters_from_trainer, make_markdown_table, parse_log_history
from transformers.utils import logging

from .data_collator import AETNetDataCollator


logger = logging.get_logger(__name__)

LOSS_COMPONENTS = ("task", "ditc", "imc", "glitc", "pita")
# Scalars that must keep their own value: weight decay would pull the temperature and the zero-initialised fusion
# gates towards 0 for no reason.
NO_DECAY_PARAMETER_NAMES = ("temp", "text_gate", "image_gate")
MODEL_CARD_TEMPLATE = Path(__file__).parent / "templates" / "model_card.md"
AETNET_CITATION = """@inproceedings{wang2023aetnet,
  title     = {Alignment-Enriched Tuning for Patch-Level Pre-trained Document Image Models},
  author    = {Wang, Lei and He, Jiabang and Xu, Xing and Liu, Ning and Liu, Hui},
  booktitle = {Proceedings of the AAAI Conference on Artificial Intelligence},
  volume    = {37},
  number    = {2},
  year      = {2023},
  doi       = {10.1609/aaai.v37i2.25357},
  eprint    = {2211.14777},
  archivePrefix = {arXiv}
}"""
_PIPELINE_TAGS = {
    "AETNetForTokenClassification": "token-classification",
    "AETNetForSequenceClassification": "text-classification",
    "AETNetForQuestionAnswering": "document-question-answering",
}
_AUTO_CLASSES = {
    f"{model}For{head}": f"AutoModelFor{head}"
    for model in ("AETNet", "LayoutLMv3")  # LayoutLMv3: the baselines of the examples
    for head in ("TokenClassification", "SequenceClassification", "QuestionAnswering")
}
_NON_METRIC_KEYS = (
    "runtime", "samples_per_second", "steps_per_second", "epoch", "step", "model_preparation_time", "samples"
)


@dataclass
class AETNetTrainingArguments(TrainingArguments):
    r"""
    [`TrainingArguments`] plus the knobs of the AETNet objective.

    > Weights of the alignment objectives (the total loss is `task + sum_k weight_k * loss_k`)

    Each objective is already the mean of its two directions (image-to-text and text-to-image, or image and text),
    so unit weights are the paper's `L_so + L_ditc + L_imc + L_glitc + L_pita`. The official FUNSD code instead puts
    the three contrastive objectives together at 1/3 of that (method.md 2.5): weights of 1/3 reproduce it.

    > Momentum distillation

    `distill_alpha` overrides the model config's DITC soft-target weight and `alpha_warmup_steps` ramps it linearly
    from 0, as ALBEF does over its first epoch.

    > Robustness

    `skip_nonfinite_loss` replaces a NaN or infinite total loss by a zero loss with a warning, counts it in the logs
    as `nonfinite_losses`, and zeroes the gradients of any optimizer step that still gets non-finite ones (so that
    the weights are never corrupted, also under DDP, where all ranks skip the same step).
    """

    ditc_loss_weight: float = field(
        default=1.0, metadata={"help": "Weight of DITC, the document-level image-text contrastive loss (paper: 1)."}
    )
    imc_loss_weight: float = field(
        default=1.0, metadata={"help": "Weight of IMC, the intra-modal contrastive loss (paper: 1)."}
    )
    glitc_loss_weight: float = field(
        default=1.0, metadata={"help": "Weight of GLITC, the global-local contrastive loss (paper: 1)."}
    )
    pita_loss_weight: float = field(
        default=1.0, metadata={"help": "Weight of PITA, the patch-level image-text alignment loss (paper: 1)."}
    )
    distill_alpha: float | None = field(
        default=None,
        metadata={"help": "Momentum-distillation weight of DITC's soft targets; None uses the model config's value."},
    )
    alpha_warmup_steps: int = field(
        default=0,
        metadata={"help": "Ramp distill_alpha linearly from 0 over this many optimizer steps (ALBEF); 0 = no ramp."},
    )
    skip_nonfinite_loss: bool = field(
        default=True,
        metadata={"help": "Replace a NaN/inf training loss by a zero loss and count it (nonfinite_losses)."},
    )

    def __post_init__(self):
        super().__post_init__()
        for name in (f"{component}_loss_weight" for component in LOSS_COMPONENTS[1:]):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"`{name}` must be a finite non-negative number, got {value}")
        if self.distill_alpha is not None and not 0.0 <= self.distill_alpha <= 1.0:
            raise ValueError(f"`distill_alpha` must be in [0, 1] or None, got {self.distill_alpha}")
        if self.alpha_warmup_steps < 0:
            raise ValueError(f"`alpha_warmup_steps` must be >= 0, got {self.alpha_warmup_steps}")

    @property
    def alignment_loss_weights(self) -> dict[str, float]:
        """`{"ditc": w, "imc": w, "glitc": w, "pita": w}`."""
        return {component: getattr(self, f"{component}_loss_weight") for component in LOSS_COMPONENTS[1:]}


def _unwrap(model: nn.Module, accelerator=None) -> nn.Module:
    """The model inside DDP / DataParallel / accelerate wrappers."""
    if accelerator is not None:
        model = accelerator.unwrap_model(model)
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model


class MomentumUpdateCallback(TrainerCallback):
    """
    Runs `model.momentum_update()` (the EMA of the momentum encoders) after every optimizer step.

    ALBEF and the official AET code update in every forward pass, so their EMA horizon shrinks with gradient
    accumulation and the momentum weights even move during evaluation; one update per optimizer step keeps the
    horizon at `1 / (1 - momentum)` steps whatever the accumulation.
    """

    def __init__(self, accelerator=None):
        self.accelerator = accelerator

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        if model is None:
            return
        model = _unwrap(model, self.accelerator)
        update = getattr(model, "momentum_update", None) or getattr(
            getattr(model, "base_model", None), "momentum_update", None
        )
        if update is not None:
            update()


class _NonFiniteGradientGuard(TrainerCallback):
    """
    Zeroes the gradients of an optimizer step when any of them is not finite (`skip_nonfinite_loss`). DDP averages
    gradients across ranks, so every rank sees the same non-finite values and skips the same step.
    """

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        grads = [param.grad for param in model.parameters() if param.grad is not None]
        if grads and not torch.stack([torch.isfinite(grad).all() for grad in grads]).all().item():
            logger.warning(f"Non-finite gradients at step {state.global_step}: this step gets zero gradients.")
            for grad in grads:
                grad.zero_()


class AugmentationStepCallback(TrainerCallback):
    """
    Keep a seeded [`AETNetDataCollator`]'s batch numbering in step with the Trainer, so that a run resumed with
    `resume_from_checkpoint` draws exactly the momentum views of an uninterrupted run (the Trainer restores its own
    RNG states, but not the collator's). At the start of every epoch, resumed ones included, the next batch is
    numbered `global_step * gradient_accumulation_steps`: the number of training batches drawn so far. Batches that
    `Trainer.evaluate` collates with the same collator are not counted.

    Args:
        collator (`AETNetDataCollator`): the training collator, built with `seed`.

    Example: `trainer.add_callback(AugmentationStepCallback(trainer.data_collator))`.
    """

    def __init__(self, collator: AETNetDataCollator):
        if collator.seed is None or collator.generator is not None:
            raise ValueError("`AugmentationStepCallback` needs a collator built with `seed` and without `generator`.")
        self.collator = collator
        self._calls_before_evaluation: int | None = None

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.collator.set_batch_index(state.global_step * args.gradient_accumulation_steps)

    def on_step_end(self, args, state, control, **kwargs):
        self._calls_before_evaluation = self.collator._calls

    def on_evaluate(self, args, state, control, **kwargs):
        # The Trainer evaluates with the training collator: its batches must not shift the training numbering.
        if self._calls_before_evaluation is not None:
            self.collator._calls = self._calls_before_evaluation


class AETNetTrainer(Trainer):
    """
    [`Trainer`] for AETNet models: the loss is the model's task loss plus the weighted alignment objectives
    (`AETNetTrainingArguments.*_loss_weight`), and `loss_task`, `loss_ditc`, `loss_imc`, `loss_glitc` and `loss_pita`
    (unweighted) are logged next to `loss`, in training and, prefixed, in evaluation (`eval_loss_ditc`, ...).

    It also:

    - divides the per-batch mean loss by the accumulation steps itself, so gradient accumulation gives the loss and
      gradients of the equivalent larger batch (the contrastive terms still see micro-batch negatives);
    - runs the momentum update once per optimizer step ([`MomentumUpdateCallback`]);
    - ramps the DITC distillation weight (`distill_alpha`, `alpha_warmup_steps`);
    - keeps the temperature and the fusion gates out of weight decay;
    - warns when the feature queue is larger than the training set (stale false negatives, method.md bug 19);
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
        unwrapped = _unwrap(self.model, self.accelerator)
        forward_parameters = inspect.signature(unwrapped.forward).parameters
        self._is_aetnet = "return_alignment_losses" in forward_parameters
        if hasattr(unwrapped, "add_model_tags"):
            unwrapped.add_model_tags(self._tag_names if self._is_aetnet else self._baseline_tag_names)
        if not any(isinstance(cb, MomentumUpdateCallback) for cb in self.callback_handler.callbacks):
            self.add_callback(MomentumUpdateCallback(self.accelerator))
        collator = self.data_collator
        if (
            isinstance(collator, AETNetDataCollator)
            and collator.seed is not None
            and collator.generator is None
            and not any(isinstance(cb, AugmentationStepCallback) for cb in self.callback_handler.callbacks)
        ):
            self.add_callback(AugmentationStepCallback(collator))
        if self._argument("skip_nonfinite_loss"):
            self.add_callback(_NonFiniteGradientGuard())
        self._warn_if_queue_exceeds_dataset(unwrapped)

    def _argument(self, name: str) -> Any:
        """An AETNet training argument, with its default when `args` is a plain `TrainingArguments`."""
        if hasattr(self.args, name):
            return getattr(self.args, name)
        return AETNetTrainingArguments.__dataclass_fields__[name].default

    def _warn_if_queue_exceeds_dataset(self, model: nn.Module) -> None:
        config = getattr(model, "config", None)
        if not getattr(config, "uses_momentum", False) or self.train_dataset is None:
            return
        try:
            num_examples = len(self.train_dataset)
        except TypeError:  # iterable dataset
            return
        if config.queue_size > num_examples:
            logger.warning(
                f"queue_size ({config.queue_size}) exceeds the number of training examples ({num_examples}): once "
                "the queue has filled, it holds stale copies of every document, including the current positive, "
                "which then act as false negatives for DITC and IMC. Use a queue_size below the training set size."
            )

    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        """The Trainer's decay list (no biases or norms), minus the temperature `temp` and the fusion gates."""
        names = super().get_decay_parameter_names(model)
        return [name for name in names if name.rsplit(".", 1)[-1] not in NO_DECAY_PARAMETER_NAMES]

    def current_distill_alpha(self, model: nn.Module) -> float | None:
        """The DITC distillation weight for this step (None: let the model use its config)."""
        base = self._argument("distill_alpha")
        warmup = self._argument("alpha_warmup_steps")
        if base is None and warmup == 0:
            return None
        if base is None:
            base = _unwrap(model, self.accelerator).config.distill_alpha
        if warmup > 0:
            base *= min(1.0, self.state.global_step / warmup)
        return base

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
            alpha = self.current_distill_alpha(model)
            if alpha is not None:
                inputs["distill_alpha"] = alpha
        outputs = model(**inputs)

        task_loss = self.label_smoother(outputs, labels) if labels is not None else _get(outputs, "loss")
        alignment_losses = _get(outputs, "alignment_losses") or {}
        if task_loss is None and not alignment_losses:
            raise ValueError(
                "The model returned neither a task loss nor alignment losses; pass `labels` (got inputs "
                f"{sorted(inputs)})."
            )
        components = {} if task_loss is None else {"task": task_loss}
        components.update(alignment_losses)
        loss = task_loss
        for name, value in alignment_losses.items():
            weight = self._argument(f"{name}_loss_weight")
            if weight:
                loss = weight * value if loss is None else loss + weight * value

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
        target = _unwrap(model, self.accelerator)
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
        super().log(logs, start_time)

    # ---- Model card ----

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        super()._save(output_dir, state_dict=state_dict)
        if self.args.should_save:
            self._write_model_card(output_dir if output_dir is not None else self.args.output_dir)

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
        from huggingface_hub import EvalResult, ModelCard, ModelCardData

        kwargs = getattr(self, "_card_kwargs", {})
        model = _unwrap(self.model, self.accelerator)
        config = model.config
        class_name = model.__class__.__name__
        model_name = kwargs.get("model_name") or Path(self.args.output_dir).resolve().name
        repo_id = self.hub_model_id or self.args.hub_model_id or model_name
        task = _first(kwargs.get("tasks")) or _PIPELINE_TAGS.get(class_name, "token-classification")
        datasets = _as_list(kwargs.get("dataset"))
        dataset_tags = _as_list(kwargs.get("dataset_tags")) or datasets
        base_models = [name for name in _as_list(kwargs.get("finetuned_from")) if _is_hub_id(name)]
        base_models = base_models or _hub_base_models(config)

        _, log_lines, _ = parse_log_history(self.state.log_history)
        eval_metrics = _last_eval_metrics(self.state.log_history)
        eval_results = [
            EvalResult(
                task_type=task,
                dataset_type=dataset_tags[0] if dataset_tags else "custom",
                dataset_name=datasets[0] if datasets else "evaluation set",
                dataset_args=_first(kwargs.get("dataset_args")),
                metric_type=name,
                metric_name=name.replace("_", " ").title(),
                metric_value=value,
            )
            for name, value in eval_metrics.items()
            if not name.startswith(("loss", "nonfinite"))
        ]
        default_tags = self._tag_names if self._is_aetnet else self._baseline_tag_names
        tags = _as_list(kwargs.get("tags")) + list(getattr(model, "model_tags", None) or default_tags) + [task]
        card_data = ModelCardData(
            language=kwargs.get("language"),
            license=kwargs.get("license"),
            library_name="transformers",
            tags=list(dict.fromkeys(tags)),
            datasets=dataset_tags or None,
            base_model=(base_models[0] if len(base_models) == 1 else base_models) or None,
            model_name=model_name,
            pipeline_tag=task,
            eval_results=eval_results or None,
        )
        hyperparameters = extract_hyperparameters_from_trainer(self)
        for name in ("distill_alpha", "alpha_warmup_steps", "weight_decay", "max_grad_norm"):
            if self._argument(name) is not None:
                hyperparameters[name] = self._argument(name)
        card = ModelCard.from_template(
            card_data,
            template_path=str(MODEL_CARD_TEMPLATE),
            model_name=model_name,
            repo_id=repo_id,
            auto_class=_AUTO_CLASSES.get(class_name, "AutoModel"),
            base_models=base_models,
            datasets_text=", ".join(datasets) if datasets else "an unspecified dataset",
            eval_metrics=eval_metrics,
            hyperparameters=hyperparameters,
            is_aetnet=self._is_aetnet,
            loss_weights={name: self._argument(f"{name}_loss_weight") for name in LOSS_COMPONENTS[1:]},
            aetnet_config=_config_summary(config) if self._is_aetnet else {},
            training_log=make_markdown_table(log_lines),
            framework_versions=_framework_versions(),
            citation=AETNET_CITATION,
        )
        os.makedirs(output_dir, exist_ok=True)
        card.save(os.path.join(output_dir, "README.md"))


def _get(outputs: Any, name: str) -> Any:
    if isinstance(outputs, dict):
        return outputs.get(name)
    return getattr(outputs, name, None)


def _as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _first(value: str | list[str] | None) -> str | None:
    values = _as_list(value)
    return values[0] if values else None


def _last_eval_metrics(log_history: list[dict]) -> dict[str, float]:
    """The metrics of the most recent evaluation in the trainer state, without the `eval_` prefix and timings."""
    for entry in reversed(log_history):
        if "eval_loss" in entry or any(key.startswith("eval_") and key.endswith("f1") for key in entry):
            return {
                key.removeprefix("eval_"): value
                for key, value in entry.items()
                if key.startswith("eval_") and key.removeprefix("eval_") not in _NON_METRIC_KEYS
            }
    return {}


def _hub_base_models(config) -> list[str]:
    """Hub ids the encoders were loaded from (local folders and empty names are not Hub ids)."""
    names = [getattr(config, "_name_or_path", "")]
    for sub in ("layout_config", "vision_config", "text_config"):
        names.append(getattr(getattr(config, sub, None), "_name_or_path", ""))
    return [name for name in dict.fromkeys(names) if _is_hub_id(name)]


def _is_hub_id(name: str) -> bool:
    """`owner/name` or `name`, and not a local path."""
    if not name or os.path.isabs(name) or name.startswith(".") or os.path.exists(name):
        return False
    return name.count("/") <= 1


def _config_summary(config) -> dict[str, Any]:
    summary = {
        name: getattr(config, name, None)
        for name in (
            "alignment_objectives",
            "fusion_injection",
            "embed_dim",
            "queue_size",
            "momentum",
            "temperature",
            "distill_alpha",
            "pita_loss",
            "pita_span_policy",
        )
    }
    for sub in ("layout_config", "vision_config", "text_config"):
        sub_config = getattr(config, sub, None)
        if sub_config is not None:
            summary[sub] = (
                f"{sub_config.model_type}: hidden {sub_config.hidden_size}, {sub_config.num_hidden_layers} layers, "
                f"{sub_config.num_attention_heads} heads"
            )
    num_labels = getattr(config, "num_labels", None)
    if num_labels:
        summary["labels"] = ", ".join(str(label) for label in config.id2label.values())
    return {key: value for key, value in summary.items() if value is not None}


def _framework_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("aetnet", "transformers", "torch", "accelerate", "datasets", "tokenizers"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    return versions


__all__ = [
    "AETNetTrainer",
    "AETNetTrainingArguments",
    "AugmentationStepCallback",
    "LOSS_COMPONENTS",
    "MomentumUpdateCallback",
]
