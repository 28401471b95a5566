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
ONNX export of trained AETNet checkpoints, for inference, and an ONNX Runtime model that `aetnet predict` runs.

[`export_onnx`] writes the eval-mode forward pass of a task head (the full AETNet model with its aligners, or, with
`baseline=True`, the stock LayoutLMv3 of `to_layoutlmv3()`) with the inputs `input_ids`, `bbox`, `attention_mask`
and `pixel_values`, dynamic batch and sequence axes, and the outputs named as in transformers: `logits` (token and
sequence classification) or `start_logits` and `end_logits` (question answering, over the text and the visual
tokens, as the PyTorch head returns them). It uses `torch.onnx.export(..., dynamo=True)` (the `torch.export`-based
exporter, which needs `onnxscript`) and checks the file against PyTorch with ONNX Runtime.

[`ONNXDocumentModel`] runs such a file and answers like the PyTorch model (`output.logits`, ...), so that
[`~aetnet.inference.DocumentPredictor`] uses the same pre- and post-processing for both.

Needs `pip install 'aetnet[onnx]'` (onnx, onnxruntime, onnxscript).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from transformers import AutoConfig, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import (
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)

from ..tasks import MODEL_INPUT_NAMES, model_class, task_of


OUTPUT_NAMES = {
    "token-classification": ("logits",),
    "sequence-classification": ("logits",),
    "question-answering": ("start_logits", "end_logits"),
}
_OUTPUT_CLASSES = {
    "token-classification": TokenClassifierOutput,
    "sequence-classification": SequenceClassifierOutput,
    "question-answering": QuestionAnsweringModelOutput,
}
_METADATA_PREFIX = "aetnet."
# Initializers above this size go to an external `<file>.data` (ONNX protobufs stop at 2 GiB).
_EXTERNAL_DATA_BYTES = 1_800_000_000


@dataclass(frozen=True)
class ONNXExport:
    """What [`export_onnx`] wrote: the file, the task, whether it is the LayoutLMv3 baseline, and the largest
    absolute difference to PyTorch seen by the check (`None` without the check)."""

    path: Path
    task: str
    baseline: bool
    max_abs_diff: float | None


class _InferenceForward(torch.nn.Module):
    """The eval-mode forward of a task head with positional inputs and a tuple of named outputs, for the exporter."""

    def __init__(self, model: PreTrainedModel, output_names: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.output_names = output_names

    def forward(self, input_ids, bbox, attention_mask, pixel_values):
        output = self.model(
            input_ids=input_ids, bbox=bbox, attention_mask=attention_mask, pixel_values=pixel_values, return_dict=True
        )
        return tuple(output[name] for name in self.output_names)


def _example_inputs(config, batch_size: int, length: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random but valid inputs: token ids above the special ones, boxes with x0 <= x1 and y0 <= y1, a padded tail."""
    layout = getattr(config, "layout_config", config)
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, layout.vocab_size, (batch_size, length), generator=generator)
    corner = torch.randint(0, 900, (batch_size, length, 2), generator=generator)
    size = torch.randint(0, 100, (batch_size, length, 2), generator=generator)
    bbox = torch.cat([corner, corner + size], dim=-1)
    attention_mask = torch.ones(batch_size, length, dtype=torch.long)
    attention_mask[0, length - max(1, length // 4) :] = 0
    image_size = getattr(layout, "input_size", 224)
    pixel_values = torch.randn(batch_size, layout.num_channels, image_size, image_size, generator=generator)
    return input_ids, bbox, attention_mask, pixel_values


def _max_positions(config) -> int:
    layout = getattr(config, "layout_config", config)
    return getattr(layout, "max_position_embeddings", 514) - 2


def export_onnx(
    model: str | os.PathLike | PreTrainedModel,
    output: str | os.PathLike,
    *,
    baseline: bool = False,
    opset_version: int | None = None,
    check: bool = True,
    atol: float = 1e-4,
) -> ONNXExport:
    """
    Export a trained AETNet task head to an ONNX file for inference.

    Args:
        model (`str`, `os.PathLike` or `PreTrainedModel`): a checkpoint folder (loaded with the Auto class of its
            task, read from `config.architectures`) or a loaded AETNet token classification, sequence classification
            or question answering model.
        output (`str` or `os.PathLike`): the `.onnx` file to write (its folder is created). Models whose weights
            exceed about 1.8 GB also get `<output>.data`.
        baseline (`bool`, *optional*, defaults to `False`): export the stock LayoutLMv3 model of `to_layoutlmv3()`
            (this model's LayoutLMv3 and head weights, without the aligners) instead of the full AETNet model.
        opset_version (`int`, *optional*): the ONNX opset; the exporter's default otherwise.
        check (`bool`, *optional*, defaults to `True`): run the file with ONNX Runtime at two batch sizes and two
            lengths and compare with PyTorch.
        atol (`float`, *optional*, defaults to 1e-4): the largest absolute difference the check accepts.

    Returns:
        [`ONNXExport`]: the path, task, `baseline` and the check's largest difference.

    Raises:
        `ValueError` when the model has no supported head, `baseline=True` is asked of a model without
        `to_layoutlmv3`, or the check finds a difference above `atol`.

    The graph takes `input_ids` and `attention_mask` (int64, `(batch, sequence)`), `bbox` (int64, `(batch, sequence,
    4)`, 0-1000) and `pixel_values` (float32, `(batch, 3, size, size)`), and returns `logits` or `start_logits` /
    `end_logits`, in eval mode (dropout off, no alignment losses).

    Example:

    ```python
    >>> from aetnet.inference.onnx_export import export_onnx
    >>> export_onnx("outputs/funsd-synthetic", "outputs/funsd-synthetic/model.onnx").max_abs_diff < 1e-4
    True
    ```
    """
    model, task, source_config = _model_to_export(model, baseline)
    output_names = OUTPUT_NAMES[task]
    wrapper = _InferenceForward(model, output_names).eval()
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    program = _export_program(wrapper, source_config, output_names, opset_version)
    metadata = {
        "task": task,
        "baseline": "layoutlmv3" if baseline else "",
        "model_type": getattr(model.config, "model_type", ""),
        "architecture": type(model).__name__,
        "outputs": ",".join(output_names),
    }
    for key, value in metadata.items():
        program.model.metadata_props[_METADATA_PREFIX + key] = value
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    program.save(str(path), external_data=weight_bytes > _EXTERNAL_DATA_BYTES)
    max_abs_diff = _check(wrapper, path, source_config, atol) if check else None
    return ONNXExport(path=path, task=task, baseline=baseline, max_abs_diff=max_abs_diff)


def _model_to_export(
    model: str | os.PathLike | PreTrainedModel, baseline: bool
) -> tuple[PreTrainedModel, str, PreTrainedConfig]:
    """The eval-mode float32 CPU model to export (loaded from a checkpoint folder, or its `to_layoutlmv3()` baseline),
    its task, and the config it was given with (which sizes the example inputs)."""
    if isinstance(model, (str, os.PathLike)):
        config = AutoConfig.from_pretrained(str(model))
        task = task_of(config)
        if task not in OUTPUT_NAMES:
            raise ValueError(f"Cannot export a model for {task!r}; supported: {list(OUTPUT_NAMES)}")
        model = model_class(task).from_pretrained(str(model))
    else:
        # A model that was never saved has no `architectures`: its class names the head.
        task = task_of(SimpleNamespace(architectures=model.config.architectures or [type(model).__name__]))
    if task not in OUTPUT_NAMES:
        raise ValueError(f"Cannot export a model for {task!r}; supported: {list(OUTPUT_NAMES)}")
    source_config = model.config
    if baseline:
        if not hasattr(model, "to_layoutlmv3"):
            raise ValueError(f"`baseline=True` needs an AETNet head with `to_layoutlmv3()`, got {type(model).__name__}")
        model = model.to_layoutlmv3()
    return model.to(device="cpu", dtype=torch.float32).eval(), task, source_config


def _export_program(wrapper: torch.nn.Module, config, output_names: tuple[str, ...], opset_version: int | None):
    """The ONNX program of `wrapper` from `torch.onnx.export(..., dynamo=True)`, traced on example inputs, with a
    dynamic batch and a dynamic sequence up to the model's positions."""
    positions = _max_positions(config)
    example = _example_inputs(config, batch_size=2, length=min(16, positions))
    batch = torch.export.Dim("batch", min=1, max=4096)
    sequence = torch.export.Dim("sequence", min=1, max=positions)
    dynamic_shapes = {
        "input_ids": {0: batch, 1: sequence},
        "bbox": {0: batch, 1: sequence},
        "attention_mask": {0: batch, 1: sequence},
        "pixel_values": {0: batch},
    }
    with torch.no_grad(), _quiet_exporter():
        return torch.onnx.export(
            wrapper,
            example,
            input_names=list(MODEL_INPUT_NAMES),
            output_names=list(output_names),
            dynamic_shapes=dynamic_shapes,
            opset_version=opset_version,
            dynamo=True,
            verbose=False,
        )


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's notes for developers (skipped torchvision ops, axis renaming, constant folding of `log(0)`)
    are noise to someone exporting a model: keep its errors only."""
    exporter_logger = logging.getLogger("torch.onnx")
    level = exporter_logger.level
    exporter_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        exporter_logger.setLevel(level)


def _check(wrapper: torch.nn.Module, path: Path, config, atol: float) -> float:
    """Largest |ONNX Runtime - PyTorch| over two batch sizes and two lengths; `ValueError` above `atol`."""
    session = _session(path, providers=["CPUExecutionProvider"])
    positions = _max_positions(config)
    worst = 0.0
    for seed, (batch_size, length) in enumerate(((1, min(9, positions)), (3, min(40, positions)))):
        inputs = _example_inputs(config, batch_size, length, seed=seed + 1)
        with torch.no_grad():
            expected = wrapper(*inputs)
        feeds = {name: tensor.numpy() for name, tensor in zip(MODEL_INPUT_NAMES, inputs)}
        for reference, value in zip(expected, session.run(None, feeds)):
            worst = max(worst, float(np.abs(reference.numpy() - value).max()))
    if worst > atol:
        raise ValueError(f"{path}: ONNX Runtime differs from PyTorch by up to {worst:.2e} (> {atol:.0e})")
    return worst


def _onnxruntime():
    """onnxruntime, an optional dependency (imported in a `try`, so that remote-code checks do not require it)."""
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError("Running ONNX files needs onnxruntime: pip install 'aetnet[onnx]'") from error
    return onnxruntime


def _session(path: str | os.PathLike, providers: list[str] | None = None):
    onnxruntime = _onnxruntime()
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    return onnxruntime.InferenceSession(str(path), sess_options=options, providers=providers)


def onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The `aetnet.*` metadata [`export_onnx`] stores in a file (`task`, `baseline`, `architecture`, ...), without
    the prefix."""
    try:
        import onnx
    except ImportError as error:
        raise ImportError("Reading ONNX metadata needs onnx: pip install 'aetnet[onnx]'") from error
    model = onnx.load(str(path), load_external_data=False)
    return {
        entry.key[len(_METADATA_PREFIX) :]: entry.value
        for entry in model.metadata_props
        if entry.key.startswith(_METADATA_PREFIX)
    }


class ONNXDocumentModel:
    """
    An ONNX file written by [`export_onnx`], run by ONNX Runtime, that answers like the PyTorch task head: calling it
    with `input_ids`, `bbox`, `attention_mask` and `pixel_values` (torch tensors) returns a `TokenClassifierOutput`,
    `SequenceClassifierOutput` or `QuestionAnsweringModelOutput` of CPU tensors.
    [`~aetnet.inference.DocumentPredictor`] takes it in place of the model.

    Args:
        path (`str` or `os.PathLike`): the `.onnx` file.
        config (`PretrainedConfig`): the checkpoint's config (labels, window length); its task must be the file's.
        device (`str`, *optional*): `"cuda"` (or `"cuda:N"`) runs on CUDA when ONNX Runtime has that provider; the
            CPU otherwise.
        providers (`list[str]`, *optional*): ONNX Runtime execution providers, overriding `device`.
    """

    def __init__(
        self, path: str | os.PathLike, config, *, device: str | None = None, providers: list[str] | None = None
    ):
        if providers is None:
            providers = ["CPUExecutionProvider"]
            if device is not None and str(device).startswith(("cuda", "auto")):
                if "CUDAExecutionProvider" in _onnxruntime().get_available_providers():
                    providers = ["CUDAExecutionProvider", *providers]
        self.path = Path(path)
        self.session = _session(path, providers=providers)
        self.config = config
        self.task = task_of(config)
        self.output_names = tuple(output.name for output in self.session.get_outputs())
        inputs = tuple(item.name for item in self.session.get_inputs())
        if set(inputs) != set(MODEL_INPUT_NAMES):
            raise ValueError(f"{path}: expected the inputs {list(MODEL_INPUT_NAMES)}, the file has {list(inputs)}")
        if self.output_names != OUTPUT_NAMES[self.task]:
            raise ValueError(
                f"{path} returns {list(self.output_names)}, but the config's {self.task} head returns "
                f"{list(OUTPUT_NAMES[self.task])}: was it exported from this checkpoint?"
            )

    def __call__(self, input_ids, bbox, attention_mask, pixel_values, **unused):
        feeds = {
            "input_ids": input_ids.detach().cpu().long().numpy(),
            "bbox": bbox.detach().cpu().long().numpy(),
            "attention_mask": attention_mask.detach().cpu().long().numpy(),
            "pixel_values": pixel_values.detach().cpu().float().numpy(),
        }
        values = self.session.run(list(self.output_names), feeds)
        return _OUTPUT_CLASSES[self.task](**{name: torch.from_numpy(v) for name, v in zip(self.output_names, values)})


__all__ = ["ONNXDocumentModel", "ONNXExport", "OUTPUT_NAMES", "export_onnx", "onnx_metadata"]
