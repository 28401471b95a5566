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
Pictures of page predictions: one colour per entity type, a box and a small tag per entity, and a legend. Tags
are placed where they cover no word of the page, touching their box or joined to it by a leader line; where neither
fits, a number at the box refers to the legend ([`~aetnet.visualization.tag_layout.layout_tags`]).

[`draw_prediction`] takes a page image and the dict that [`~aetnet.inference.DocumentPredictor`] returns for it
(token classification, sequence classification or question answering) and returns an RGB image of the same size as
the page, so that the picture can be laid over or next to the scan. The legend goes in the corner that hides the
fewest predicted boxes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from PIL import Image, ImageDraw

from .tag_layout import TAG_PADDING, layout_badges, layout_tags, load_font


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

    Each entity (or answer) gets a translucent box in its label's colour and a small tag with its label (and
    confidence). Tags never cover a word of the page, an entity box, another tag or the legend: each goes to the
    first free place just above, below, left or right of its box, else to the free place nearest to it, along its
    row or in the page margins, joined to its box by a thin leader line that crosses no word and no other tag, with a
    shorter text or a smaller font if needed. A tag that finds no such place becomes a small number at its box, and
    the legend lists its text under that number, so that every entity is labelled. See [`layout_tags`] and
    [`layout_badges`].

    Args:
        image (`PIL.Image.Image`): the page. Boxes are rescaled when its size differs from the prediction's
            `width` / `height`.
        prediction (`dict`): one page of [`~aetnet.inference.DocumentPredictor`]'s output.
        colors (`dict[str, tuple[int, int, int]]`, *optional*): colour per entity label; see [`label_colors`].
        show_confidence (`bool`, *optional*, defaults to `True`): add the confidence to each tag where it fits.
        font_size (`int`, *optional*): legend text size, about 1/75 of the page height by default; tags are about
            60% of it (at least 7 pixels).

    Returns:
        `PIL.Image.Image`: an RGB image of the same size as `image`.
    """
    page = image.convert("RGB")
    width, height = page.size
    scale = (width / prediction.get("width", width), height / prediction.get("height", height))
    font_size = font_size or max(10, round(height / 75))
    font = load_font(font_size)
    tags, colors, legend = _tags_and_legend(prediction, colors)
    overlay = Image.new("RGBA", page.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    drawn = _draw_boxes(draw, tags, colors, scale, line=max(2, round(min(width, height) / 400)))
    if prediction.get("task", "token-classification") == "sequence-classification":
        drawn.append(_draw_banner(draw, prediction, height))
    words = [_scaled(w["box"], scale) for w in prediction.get("words", []) if w.get("box") is not None]
    tag_size = max(7, round(font_size * 0.6))
    texts = [
        [label] if confidence is None or not show_confidence else [f"{label} {confidence:.2f}", label]
        for label, _, confidence in tags
    ]
    placements, legend, legend_box = _layout_tags_and_legend(
        draw, tags, texts, drawn, words, legend, font, page.size, tag_size
    )
    _draw_tags(draw, tags, placements, colors)
    _draw_legend(draw, legend, colors, font, legend_box)
    return Image.alpha_composite(page.convert("RGBA"), overlay).convert("RGB")


def _tags_and_legend(prediction: dict, colors: dict | None) -> tuple[list, dict, list]:
    """What a page's picture shows, by task: the tags `(label, box, confidence)` (entities, or answers named A1, A2,
    ...), the colour of each label, and the legend entries `(label or None, text)`."""
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
    return tags, colors, legend


def _scaled(box, scale: tuple[float, float]) -> list[float]:
    """A box of the prediction's page size in pixels of the picture."""
    return [box[0] * scale[0], box[1] * scale[1], box[2] * scale[0], box[3] * scale[1]]


def _draw_boxes(draw, tags, colors, scale: tuple[float, float], line: int) -> list[list[float]]:
    """A translucent box with an opaque outline in its label's colour per tag; returns the boxes in picture pixels."""
    drawn = [_scaled(box, scale) for _, box, _ in tags]
    for (label, _, _), box in zip(tags, drawn):
        color = colors.get(label, PALETTE[-1])
        draw.rectangle(box, fill=(*color, 40), outline=(*color, 255), width=line)
    return drawn


def _draw_banner(draw, prediction: dict, height: int) -> list[float]:
    """The page class and its score in the top-left corner (sequence classification); returns the banner's box."""
    banner = f"{prediction.get('label')} ({prediction.get('score', 0):.2f})"
    banner_font = load_font(max(14, round(height / 30)))
    text_width, text_height = _text_size(draw, banner, banner_font)
    draw.rectangle([0, 0, text_width + 16, text_height + 16], fill=(*PALETTE[0], 230))
    draw.text((8, 6), banner, fill=(255, 255, 255, 255), font=banner_font)
    return [0, 0, text_width + 16, text_height + 16]


def _layout_tags_and_legend(
    draw, tags, texts, drawn, words, legend, font, size, tag_size: int
) -> tuple[list, list, dict]:
    """Where each tag and the legend go. A tag that finds no free place touching its box or joined to it by a clear
    leader line gets a number at its box instead, and its label goes to the legend under that number. The legend grows
    by those entries and covers no tag, so the tags are laid out again around the larger legend until no new tag needs
    a number (each round adds one at least, so this ends)."""
    boxes = drawn[: len(tags)]
    numbered: list[int] = []
    while True:
        entries = legend + _numbered_entries(draw, font, [tags[i][0] for i in numbered], max(size[0] // 3, 1))
        legend_box = _legend_layout(draw, entries, font, size, drawn + words)
        fixed = [legend_box["box"]] if legend_box else []
        tried = [[] if i in numbered else text for i, text in enumerate(texts)]
        placements = layout_tags(
            boxes, tried, size, obstacles=words + drawn + fixed, leader_obstacles=words + fixed,
            font_sizes=(tag_size, 7),
        )  # fmt: skip
        missing = [i for i, placement in enumerate(placements) if placement is None and i not in numbered]
        if not missing:
            break
        numbered = sorted(numbered + missing)
    badges = layout_badges(
        [boxes[i] for i in numbered], [str(n) for n in range(1, len(numbered) + 1)], size,
        obstacles=words + drawn + fixed, placed=[p["box"] for p in placements if p is not None], font_size=7,
    )  # fmt: skip
    drawn_tags = list(placements)
    for index, badge in zip(numbered, badges):
        drawn_tags[index] = {**badge, "number": int(badge["text"])}
    return drawn_tags, entries, legend_box


def _numbered_entries(draw, font, labels: list[str], max_width: int) -> list[tuple[str, str]]:
    """The legend rows of the numbered tags (number `n` is `labels[n - 1]`): one row per label, `LABEL: 1, 4, 7`,
    wrapped into more rows of the same label where wider than `max_width`, so that the legend stays small on a page
    with many numbers (their confidences are left out, as tags leave them out where they do not fit)."""
    numbers: dict[str, list[str]] = {}
    for number, label in enumerate(labels, 1):
        numbers.setdefault(label, []).append(str(number))
    rows = []
    for label, members in numbers.items():
        text = f"{label}: {members[0]}"
        for member in members[1:]:
            if _text_size(draw, f"{text}, {member}", font)[0] > max_width:
                rows.append((label, f"{text},"))
                text = member
            else:
                text = f"{text}, {member}"
        rows.append((label, text))
    return rows


def _draw_tags(draw, tags, placements, colors) -> None:
    """Each tag (or number, for a tag listed in the legend) where [`_layout_tags_and_legend`] put it, joined to its
    box by a thin line where it sits away from the box."""
    for (label, _, _), placement in zip(tags, placements):
        color = colors.get(label, PALETTE[-1])
        rectangle, text, font_size = placement["box"], placement["text"], placement["font_size"]
        if placement["leader"] is not None:
            draw.line(placement["leader"], fill=(*color, 150), width=1)
        draw.rectangle(rectangle, fill=(*color, 230))
        origin = (rectangle[0] + TAG_PADDING, rectangle[1] + TAG_PADDING)
        draw.text(origin, text, fill=(255, 255, 255, 255), font=load_font(font_size))


def redact_page(image: Image.Image, prediction: dict) -> Image.Image:
    """
    A stand-in for the page that shows where its words are and nothing of what they say: a white page of the same
    size with each word's box in grey. Drawing on it (`aetnet predict --draw --redact`) shows a prediction's layout
    on a page that may not be shared (a confidential document, or a data set whose licence forbids copies) without
    one pixel of the scan.
    """
    page = Image.new("RGB", image.size, (255, 255, 255))
    scale = (image.width / prediction.get("width", image.width), image.height / prediction.get("height", image.height))
    draw = ImageDraw.Draw(page)
    for word in prediction.get("words", []):
        box = word.get("box")
        if box is not None:
            draw.rectangle(_scaled(box, scale), fill=(200, 200, 200))
    return page


def _legend_layout(draw, entries, font, size, drawn) -> dict | None:
    """Where the legend goes: a box listing the entries, in the corner that covers the least drawn area."""
    if not entries:
        return None
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
    box = [left, top, left + box_width - 1, top + box_height - 1]
    return {"box": box, "pad": pad, "row_height": row_height, "swatch": swatch}


def _draw_legend(draw, entries, colors, font, layout) -> None:
    """A white box listing the entries with colour swatches, where [`_legend_layout`] put it."""
    if layout is None:
        return
    left, top = layout["box"][:2]
    pad, row_height, swatch = layout["pad"], layout["row_height"], layout["swatch"]
    draw.rectangle(layout["box"], fill=(255, 255, 255, 235), outline=(60, 60, 60, 255))
    y = top + pad
    for label, text in entries:
        x = left + pad
        if label is not None:
            draw.rectangle([x, y + 2, x + swatch, y + 2 + swatch - 2], fill=(*colors.get(label, PALETTE[-1]), 255))
            x += swatch + pad
        draw.text((x, y), text, fill=(20, 20, 20, 255), font=font)
        y += row_height


__all__ = [
    "KNOWN_COLORS",
    "PALETTE",
    "draw_prediction",
    "label_colors",
    "redact_page",
]
