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
Training loss curves from a `Trainer` log history: [`loss_curves`] extracts each loss term per optimizer step and
[`plot_loss_curves`] draws them to a PNG (the `loss_curves.png` the example scripts write), so that one can see which
objectives learn. matplotlib is imported only when a plot is drawn.
"""

from __future__ import annotations


def loss_curves(log_history: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """The training loss terms of a `Trainer` log history (`loss`, `loss_task`, `loss_ditc`, ...), each as
    (optimizer steps, values). Evaluation entries (`eval_loss_*`) are left out."""
    curves: dict[str, tuple[list[int], list[float]]] = {}
    for entry in log_history:
        if "loss" not in entry or "step" not in entry:
            continue
        for name, value in entry.items():
            if name == "loss" or (name.startswith("loss_") and isinstance(value, (int, float))):
                steps, values = curves.setdefault(name, ([], []))
                steps.append(entry["step"])
                values.append(value)
    return curves


def plot_loss_curves(
    log_history: list[dict], path: str, title: str | None = None, levels: dict[str, float] | None = None
) -> str | None:
    """
    Plot the training loss terms of a `Trainer` log history (`loss`, `loss_task`, `loss_ditc`, ... against the step)
    to a PNG, one line per term, so that one can see which objectives learn. `title` names the plot (default
    "AETNet training losses"); `levels` (e.g. chance levels, `{"mlm": 6.1, "mlm_uniform": 9.0}`) are drawn as
    horizontal lines in the colour of the term they belong to (`loss_mlm` for both examples), dashed for the term's
    own name and dotted for a variant. Returns the path, or None when the history has no training loss. Needs
    matplotlib (`pip install 'aetnet[examples]'`).
    """
    curves = loss_curves(log_history)
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    colours = {}
    for name, (steps, values) in sorted(curves.items()):
        (line,) = axis.plot(
            steps, values, marker="o", markersize=3, label="total (weighted)" if name == "loss" else name[5:]
        )
        colours[name] = line.get_color()
    for name, value in sorted((levels or {}).items()):
        term = name if f"loss_{name}" in colours else name.split("_")[0]
        style = "--" if term == name else ":"
        colour = colours.get(f"loss_{term}", "0.4")
        axis.axhline(value, color=colour, linestyle=style, linewidth=1, label=f"{name} chance {value:.3g}")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss (alignment terms unweighted)")
    axis.set_yscale("log")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, ncol=2)
    axis.set_title(title or "AETNet training losses")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


__all__ = ["loss_curves", "plot_loss_curves"]
