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
Pictures of predicted links: every entity box in its type's colour (the colours of
[`~aetnet.visualization.drawing.draw_prediction`]) and an arrow from each head (question) box to its tail (answer) box, its
width growing with the link's score. The arrow runs between the two boxes' edges, on the line joining their
centres, so that it never hides the text it points at.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw

from .drawing import PALETTE, label_colors


ARROW_COLOR = (214, 39, 40)  # red: apart from the FUNSD entity colours


def box_exit(box: Sequence[float], toward: tuple[float, float]) -> tuple[float, float]:
    """Where the segment from the centre of `box` to the point `toward` leaves the box (the centre itself when the
    point is inside)."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    dx, dy = toward[0] - cx, toward[1] - cy
    limits = [abs((x1 - x0) / 2 / dx) if dx else math.inf, abs((y1 - y0) / 2 / dy) if dy else math.inf]
    t = min(1.0, *limits)
    return cx + t * dx, cy + t * dy


def arrow_segment(head_box: Sequence[float], tail_box: Sequence[float]) -> tuple[tuple[float, float], ...]:
    """The `(start, end)` of the arrow from `head_box` to `tail_box`: between their edges, on their centres' line."""
    head_centre = ((head_box[0] + head_box[2]) / 2, (head_box[1] + head_box[3]) / 2)
    tail_centre = ((tail_box[0] + tail_box[2]) / 2, (tail_box[1] + tail_box[3]) / 2)
    return box_exit(head_box, tail_centre), box_exit(tail_box, head_centre)


def draw_relations(
    image: Image.Image,
    entities: Sequence[dict],
    links: Sequence[dict],
    *,
    page_size: tuple[int, int] | None = None,
    colors: dict[str, tuple[int, int, int]] | None = None,
    arrow_color: tuple[int, int, int] = ARROW_COLOR,
) -> Image.Image:
    """
    Draw `entities` (dicts with `box` in pixels of `page_size` and `label`) and `links` (dicts with `head` and `tail`
    entity indices and an optional `score`, as [`~aetnet.relations.decoding.links_to_json`] writes them) on a copy of
    `image`.

    Args:
        image (`PIL.Image.Image`): the page.
        page_size (`tuple[int, int]`, *optional*): the `(width, height)` the boxes refer to; boxes are rescaled to
            `image` when it differs (default: the image's size).
        colors (`dict[str, tuple[int, int, int]]`, *optional*): colour per entity label (see `label_colors`).
        arrow_color (`tuple[int, int, int]`, *optional*): the arrows' colour.

    Returns:
        `PIL.Image.Image`: an RGB image of the same size as `image`.
    """
    page = image.convert("RGB")
    width, height = page.size
    scale_x, scale_y = (width / page_size[0], height / page_size[1]) if page_size else (1.0, 1.0)
    colors = colors or label_colors(sorted({entity.get("label", "") for entity in entities}))
    line = max(2, round(min(width, height) / 400))

    def scaled(box):
        return [box[0] * scale_x, box[1] * scale_y, box[2] * scale_x, box[3] * scale_y]

    overlay = Image.new("RGBA", page.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    boxes = [scaled(entity["box"]) for entity in entities]
    for entity, box in zip(entities, boxes):
        color = colors.get(entity.get("label", ""), PALETTE[-1])
        draw.rectangle(box, fill=(*color, 40), outline=(*color, 255), width=line)
    for link in links:
        head, tail = link["head"], link["tail"]
        if not (0 <= head < len(boxes) and 0 <= tail < len(boxes)):
            raise ValueError(f"link {link} names an entity outside the {len(boxes)} entities given.")
        start, end = arrow_segment(boxes[head], boxes[tail])
        width_px = max(1, round(line * (0.5 + float(link.get("score", 1.0)))))
        draw.line([start, end], fill=(*arrow_color, 255), width=width_px)
        # The head stays short on a short arrow, so that it does not cover the words either side.
        length = math.dist(start, end)
        _arrow_head(draw, start, end, size=min(4 * width_px, 0.4 * length), color=(*arrow_color, 255))
    return Image.alpha_composite(page.convert("RGBA"), overlay).convert("RGB")


def _arrow_head(draw: ImageDraw.ImageDraw, start, end, size: float, color) -> None:
    angle = math.atan2(end[1] - start[1], end[0] - start[0])
    left = (end[0] - size * math.cos(angle - 0.45), end[1] - size * math.sin(angle - 0.45))
    right = (end[0] - size * math.cos(angle + 0.45), end[1] - size * math.sin(angle + 0.45))
    draw.polygon([end, left, right], fill=color)


__all__ = ["ARROW_COLOR", "arrow_segment", "box_exit", "draw_relations"]
