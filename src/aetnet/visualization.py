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
Pictures of page predictions: one colour per entity type, a box and a small tag per entity, and a legend.

[`draw_prediction`] takes a page image and the dict that [`~aetnet.inference.DocumentPredictor`] returns for it
(token classification, sequence classification or question answering) and returns an RGB image of the same size as
the page, so that the picture can be laid over or next to the scan. The legend goes in the corner that hides the
fewest predicted boxes.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable

from PIL import Image, ImageDraw, ImageFont


# Okabe-Ito colours (distinguishable with the common colour-vision deficiencies), then tab10 for larger label sets.
PALETTE = [
    (0, 114, 178),
    (230, 159, 0),
    (0, 158, 115),
    (204, 121, 167),
    (213, 94, 0),
    (86, 180, 233),
    (153, 153, 0),
    (148, 103, 189),
    (140, 86, 75),
    (127, 127, 127),
    (23, 190, 207),
    (214, 39, 40),
]
# FUNSD's entity types keep the same colour in every picture.
KNOWN_COLORS = {"QUESTION": PALETTE[0], "ANSWER": PALETTE[1], "HEADER": PALETTE[2], "OTHER": PALETTE[9]}


def label_colors(labels: Iterable[str]) -> dict[str, tuple[int, int, int]]:
    """A stable colour per label: FUNSD types have fixed colours, other labels take the palette in the given order
    (cycling when there are more labels than colours)."""
    free = [c for c in PALETTE if c not in KNOWN_COLORS.values()] + list(KNOWN_COLORS.values())
    colors, used = {}, 0
    for label in labels:
        if label in colors:
            continue
        if label.upper() in KNOWN_COLORS:
            colors[label] = KNOWN_COLORS[label.upper()]
        else:
            colors[label], used = free[used % len(free)], used + 1
    return colors


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont:
    """DejaVu Sans where the system has it (clear at small sizes), else Pillow's bundled font."""
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default(size=size)


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _overlap(a: list[float], b: list[float]) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return max(width, 0) * max(height, 0)


def draw_prediction(
    image: Image.Image,
    prediction: dict,
    *,
    colors: dict[str, tuple[int, int, int]] | None = None,
    show_confidence: bool = True,
    font_size: int | None = None,
) -> Image.Image:
    """
    Draw one page's prediction on a copy of its image.

    Args:
        image (`PIL.Image.Image`): the page. Boxes are rescaled when its size differs from the prediction's
            `width` / `height`.
        prediction (`dict`): one page of [`~aetnet.inference.DocumentPredictor`]'s output.
        colors (`dict[str, tuple[int, int, int]]`, *optional*): colour per entity label; see [`label_colors`].
        show_confidence (`bool`, *optional*, defaults to `True`): add the confidence to each tag.
        font_size (`int`, *optional*): legend text size, about 1/75 of the page height by default; tags are a little
            smaller.

    Returns:
        `PIL.Image.Image`: an RGB image of the same size as `image`.
    """
    page = image.convert("RGB")
    width, height = page.size
    scale_x = width / prediction.get("width", width)
    scale_y = height / prediction.get("height", height)
    font_size = font_size or max(10, round(height / 75))
    font, tag_font = _font(font_size), _font(max(8, round(font_size * 0.8)))
    line = max(2, round(min(width, height) / 400))

    task = prediction.get("task", "token-classification")
    if task == "question-answering":
        items = [(f"A{i + 1}", a) for i, a in enumerate(prediction.get("answers", [])) if a.get("box") is not None]
        tags = [(name, answer["box"], answer.get("score")) for name, answer in items]
        colors = colors or label_colors(name for name, _ in items)
        legend = [(name, f"{name}: {a['question']} -> {a['text'] or '(no answer)'}") for name, a in items]
    elif task == "sequence-classification":
        tags, colors = [], colors or {}
        scores = sorted(prediction.get("scores", {}).items(), key=lambda kv: -kv[1])[:5]
        legend = [(None, f"{label}: {score:.2f}") for label, score in scores]
    else:
        entities = prediction.get("entities", [])
        tags = [(e["label"], e["box"], e.get("confidence")) for e in entities]
        colors = colors or label_colors(sorted({e["label"] for e in entities}))
        counts = Counter(e["label"] for e in entities)
        legend = [(label, f"{label} ({count})") for label, count in sorted(counts.items())]
        if not legend:
            legend = [(None, "no entities found")]

    overlay = Image.new("RGBA", page.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    drawn = []
    for label, box, _ in tags:
        color = colors.get(label, PALETTE[-1])
        x0, y0, x1, y1 = box[0] * scale_x, box[1] * scale_y, box[2] * scale_x, box[3] * scale_y
        draw.rectangle([x0, y0, x1, y1], fill=(*color, 40), outline=(*color, 255), width=line)
        drawn.append([x0, y0, x1, y1])
    for (label, _, confidence), (x0, y0, _, _) in zip(tags, drawn):
        color = colors.get(label, PALETTE[-1])
        text = label if confidence is None or not show_confidence else f"{label} {confidence:.2f}"
        text_width, text_height = _text_size(draw, text, tag_font)
        top = y0 - text_height - 4 if y0 - text_height - 4 >= 0 else y0
        draw.rectangle([x0, top, x0 + text_width + 4, top + text_height + 4], fill=(*color, 220))
        draw.text((x0 + 2, top + 1), text, fill=(255, 255, 255, 255), font=tag_font)

    if task == "sequence-classification":
        banner = f"{prediction.get('label')} ({prediction.get('score', 0):.2f})"
        banner_font = _font(max(14, round(height / 30)))
        text_width, text_height = _text_size(draw, banner, banner_font)
        draw.rectangle([0, 0, text_width + 16, text_height + 16], fill=(*PALETTE[0], 230))
        draw.text((8, 6), banner, fill=(255, 255, 255, 255), font=banner_font)
        drawn.append([0, 0, text_width + 16, text_height + 16])
    _draw_legend(draw, legend, colors, font, page.size, drawn)
    return Image.alpha_composite(page.convert("RGBA"), overlay).convert("RGB")


def _draw_legend(draw, entries, colors, font, size, drawn) -> None:
    """A white box listing the entries with colour swatches, in the corner that covers the least drawn area."""
    if not entries:
        return
    pad = 6
    rows = [_text_size(draw, text, font) for _, text in entries]
    row_height = max(h for _, h in rows) + 4
    swatch = row_height - 4
    box_width = min(size[0], max(w for w, _ in rows) + swatch + 3 * pad)
    box_height = min(size[1], len(entries) * row_height + 2 * pad)
    corners = [
        (size[0] - box_width, 0),
        (size[0] - box_width, size[1] - box_height),
        (0, size[1] - box_height),
        (0, 0),
    ]
    left, top = min(
        corners, key=lambda c: sum(_overlap([c[0], c[1], c[0] + box_width, c[1] + box_height], b) for b in drawn)
    )
    outline = (60, 60, 60, 255)
    draw.rectangle([left, top, left + box_width - 1, top + box_height - 1], fill=(255, 255, 255, 235), outline=outline)
    y = top + pad
    for label, text in entries:
        x = left + pad
        if label is not None:
            draw.rectangle([x, y + 2, x + swatch, y + 2 + swatch - 2], fill=(*colors.get(label, PALETTE[-1]), 255))
            x += swatch + pad
        draw.text((x, y), text, fill=(20, 20, 20, 255), font=font)
        y += row_height


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


def plot_loss_curves(log_history: list[dict], path: str, title: str | None = None) -> str | None:
    """
    Plot the training loss terms of a `Trainer` log history (`loss`, `loss_task`, `loss_ditc`, ... against the step)
    to a PNG, one line per term, so that one can see which objectives learn. Returns the path, or None when the
    history has no training loss. Needs matplotlib (`pip install 'aetnet[examples]'`).
    """
    curves = loss_curves(log_history)
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for name, (steps, values) in sorted(curves.items()):
        axis.plot(steps, values, marker="o", markersize=3, label="total (weighted)" if name == "loss" else name[5:])
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


__all__ = ["KNOWN_COLORS", "PALETTE", "draw_prediction", "label_colors", "loss_curves", "plot_loss_curves"]
