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
"""Document classification scores (accuracy, macro F1, per-class F1) and the confusion matrix, with a plot of it.

Plain numpy, so that a `Trainer`'s `compute_metrics` needs neither scikit-learn nor the Hub. The definitions follow
scikit-learn's: macro F1 is the unweighted mean of the per-class F1 over the classes that occur in the labels or
in the predictions, and a class with no predicted (or no true) example has precision (or recall) 0.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np


def _as_class_ids(predictions, labels, num_labels: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate and flatten predictions (class ids or logits) and labels; returns them and the number of classes."""
    labels = np.asarray(labels)
    predictions = np.asarray(predictions)
    if labels.ndim != 1:
        raise ValueError(f"`labels` must be one class id per example, got shape {labels.shape}")
    if predictions.ndim == 2:
        if num_labels is not None and predictions.shape[1] != num_labels:
            raise ValueError(f"`predictions` has {predictions.shape[1]} logits per example for {num_labels} classes")
        num_labels = predictions.shape[1] if num_labels is None else num_labels
        predictions = predictions.argmax(axis=-1)
    if predictions.shape != labels.shape:
        raise ValueError(
            f"`predictions` must have the shape of `labels` {labels.shape} (or that plus a class axis), got "
            f"{predictions.shape}"
        )
    if num_labels is None:
        num_labels = int(max(labels.max(initial=-1), predictions.max(initial=-1))) + 1
    for name, ids in (("labels", labels), ("predictions", predictions)):
        if not np.issubdtype(ids.dtype, np.integer) and ids.size:
            raise ValueError(f"`{name}` must hold integer class ids, got dtype {ids.dtype}")
        invalid = np.flatnonzero((ids < 0) | (ids >= num_labels))
        if invalid.size:
            index = int(invalid[0])
            raise ValueError(f"`{name}[{index}]` is {int(ids[index])}, outside [0, {num_labels})")
    return predictions.astype(np.int64), labels.astype(np.int64), num_labels


def confusion_matrix(predictions, labels, num_labels: int | None = None) -> np.ndarray:
    """
    Counts of (true class, predicted class) pairs.

    Args:
        predictions (`np.ndarray`): class ids of shape `(num_examples,)` or logits of shape
            `(num_examples, num_labels)` (the arg-max is taken).
        labels (`np.ndarray` of shape `(num_examples,)`): true class ids.
        num_labels (`int`, *optional*): number of classes; by default the logits width, or the largest id + 1.

    Returns:
        `np.ndarray` of shape `(num_labels, num_labels)`: row = true class, column = predicted class.
    """
    predictions, labels, num_labels = _as_class_ids(predictions, labels, num_labels)
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def classification_metrics(
    predictions, labels, label_names: Sequence[str] | None = None, per_class: bool = False
) -> dict[str, float]:
    """
    Accuracy and macro F1 of a document classifier.

    Args:
        predictions (`np.ndarray`): class ids or logits (see [`confusion_matrix`]).
        labels (`np.ndarray` of shape `(num_examples,)`): true class ids.
        label_names (`Sequence[str]`, *optional*): class names; fixes the number of classes and names the
            per-class entries.
        per_class (`bool`, *optional*, defaults to `False`): also return `f1_<name>` for every class.

    Returns:
        `dict[str, float]`: `accuracy`, `macro_f1` (mean F1 over the classes seen in labels or predictions), plus
        the per-class F1 when asked.
    """
    num_labels = None if label_names is None else len(label_names)
    matrix = confusion_matrix(predictions, labels, num_labels)
    total = matrix.sum()
    true_positives = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0)
    actual = matrix.sum(axis=1)
    denominator = predicted + actual  # F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (predicted + actual)
    f1 = np.divide(2 * true_positives, denominator, out=np.zeros_like(true_positives), where=denominator > 0)
    seen = denominator > 0
    results = {
        "accuracy": float(true_positives.sum() / total) if total else 0.0,
        "macro_f1": float(f1[seen].mean()) if seen.any() else 0.0,
    }
    if per_class:
        names = list(label_names) if label_names is not None else [str(i) for i in range(len(f1))]
        results.update({f"f1_{name}": float(value) for name, value in zip(names, f1)})
    return results


def plot_confusion_matrix(
    matrix: np.ndarray,
    label_names: Sequence[str],
    path: str | os.PathLike,
    normalize: bool = False,
    title: str | None = None,
) -> str:
    """
    Save a confusion matrix as an image (PNG, or any format matplotlib infers from `path`).

    Every cell is annotated with its count (and, with `normalize=True`, coloured by the row-normalised rate, i.e.
    the recall of the true class). Needs `matplotlib` (the `examples` extra). It draws on a bare `Figure`, never
    through `pyplot`, so it neither needs a display nor changes the caller's matplotlib backend.

    Returns:
        `str`: the path written.
    """
    from matplotlib.figure import Figure

    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] != len(label_names):
        raise ValueError(
            f"`matrix` must be square with one row per label ({len(label_names)}), got shape {matrix.shape}"
        )
    rows = matrix.sum(axis=1, keepdims=True)
    colours = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0) if normalize else matrix
    size = max(4.0, 0.6 * len(label_names) + 2.0)
    figure = Figure(figsize=(size + 1.0, size))
    axes = figure.subplots()
    image = axes.imshow(colours, cmap="Blues", vmin=0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    ticks = np.arange(len(label_names))
    axes.set_xticks(ticks, labels=list(label_names), rotation=45, ha="right")
    axes.set_yticks(ticks, labels=list(label_names))
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    threshold = colours.max() / 2 if colours.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            text = f"{matrix[i, j]}" if not normalize else f"{matrix[i, j]}\n{colours[i, j]:.0%}"
            colour = "white" if colours[i, j] > threshold else "black"
            axes.text(j, i, text, ha="center", va="center", color=colour, fontsize=8)
    accuracy = np.trace(matrix) / matrix.sum() if matrix.sum() else 0.0
    axes.set_title(title or f"Confusion matrix (accuracy {accuracy:.1%}, {int(matrix.sum())} examples)")
    figure.tight_layout()
    path = os.fspath(path)
    figure.savefig(path, dpi=120)
    return path


__all__ = ["classification_metrics", "confusion_matrix", "plot_confusion_matrix"]
