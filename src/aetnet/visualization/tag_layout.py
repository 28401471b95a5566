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
Where the tags of a page picture go: [`layout_tags`] places one small tag per box so that no tag covers a word of the
page, an entity box, another tag or the page border, trying places touching the box first and then the free place
nearest to it, along its row or in the page margins, with shorter texts and smaller fonts when needed.

Kept apart from the drawing ([`~aetnet.visualization.drawing.draw_prediction`]) because it is plain geometry on rectangles:
it measures texts with the font the picture is drawn in ([`load_font`]) and draws nothing.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import ImageFont


TAG_PADDING = 1


@functools.lru_cache(maxsize=16)
def load_font(size: int) -> ImageFont.ImageFont:
    """DejaVu Sans where the system has it (clear at small sizes), else Pillow's bundled font."""
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default(size=size)


def _tag_extent(text: str, font_size: int) -> tuple[int, int]:
    """Width and height of a tag: the text's ink box from the origin plus the padding around it."""
    left, top, right, bottom = load_font(font_size).getbbox(text)
    return right + 2 * TAG_PADDING, bottom + 2 * TAG_PADDING


def _candidates(box, tag_width: float, tag_height: float, size: tuple[int, int], gap: float) -> tuple[np.ndarray, int]:
    """Top-left corners to try for a tag of a box, best first, and how many of them touch the box (the rest, in the
    margins and further along the row, get a leader line)."""
    x0, y0, x1, y1 = box
    width, height = size
    cy = (y0 + y1) / 2 - tag_height / 2
    near = [
        (x0, y0 - tag_height - gap),  # above, at the left
        (x1 - tag_width, y0 - tag_height - gap),  # above, at the right
        (x0, y1 + gap),  # below
        (x1 - tag_width, y1 + gap),
        (x0 - tag_width - gap, cy),  # left
        (x1 + gap, cy),  # right
    ]
    far = []
    step = max(tag_height / 2, 2)
    # Along the line above and below the box, then further left and right on its row.
    for offset in np.arange(step, max(width, 1), step * 2):
        far += [(x0 + offset, y0 - tag_height - gap), (x0 - offset, y0 - tag_height - gap)]
        far += [(x0 + offset, y1 + gap), (x0 - offset, y1 + gap)]
        if len(far) > 400:
            break
    # The page margins, from the box's row outwards.
    for offset in np.arange(0, height, step):
        for y in (cy - offset, cy + offset):
            far += [(gap, y), (width - tag_width - gap, y)]
    corners = np.asarray(near + far, dtype=float)
    return corners, len(near)


def layout_tags(
    boxes: list[list[float]],
    texts: list[list[str]],
    size: tuple[int, int],
    *,
    obstacles: list[list[float]] = (),
    font_sizes: tuple[int, ...] = (9, 7),
    gap: float = 1.0,
) -> list[dict | None]:
    """
    Place one tag per box so that no tag covers an obstacle (the page's words and the entity boxes), another tag or
    the page border.

    For each box, in reading order of the boxes (top to bottom), the texts of `texts[i]` (longest first, e.g. with
    and without the confidence) are tried at each of `font_sizes` in turn, at the candidate places of
    [`_candidates`]: touching the box (above, below, left, right) if one is free, else the free place nearest to
    the box, further along its row or in the page margins.

    Args:
        boxes (`list[list[float]]`): `[x0, y0, x1, y1]` of each box to tag, in pixels.
        texts (`list[list[str]]`): the tag texts to try for each box, preferred first.
        size (`tuple[int, int]`): page width and height.
        obstacles (`list[list[float]]`, *optional*): rectangles no tag may overlap.
        font_sizes (`tuple[int, ...]`, *optional*, defaults to `(9, 7)`): font sizes to try, preferred first.
        gap (`float`, *optional*, defaults to 1): free pixels between a tag and what it must not touch.

    Returns:
        `list[dict | None]`: per box, `{"box": [x0, y0, x1, y1], "text", "font_size", "leader"}` (`leader`: the tag
        does not touch its box and needs a line to it), or `None` when no free place was found.
    """
    width, height = size
    blocked = np.asarray(list(obstacles), dtype=float).reshape(-1, 4)
    placed = np.empty((0, 4))
    results: list[dict | None] = [None] * len(boxes)
    order = sorted(range(len(boxes)), key=lambda i: (boxes[i][1], boxes[i][0]))
    for index in order:
        box = boxes[index]
        found = None
        for font_size in font_sizes:
            for text in texts[index]:
                tag_width, tag_height = _tag_extent(text, font_size)
                corners, num_near = _candidates(box, tag_width, tag_height, size, gap)
                rects = np.concatenate([corners, corners + [tag_width, tag_height]], axis=1)
                inside = (rects[:, 0] >= 0) & (rects[:, 1] >= 0) & (rects[:, 2] <= width) & (rects[:, 3] <= height)
                free = inside & ~_hits(rects, blocked, gap) & ~_hits(rects, placed, gap)
                hits = np.flatnonzero(free)
                if hits.size:
                    near = hits[hits < num_near]
                    # Touching the box if possible; otherwise the free place nearest to it (shortest leader line).
                    choice = int(near[0]) if near.size else int(hits[np.argmin(_distances(rects[hits], box))])
                    found = {
                        "box": [float(v) for v in rects[choice]],
                        "text": text,
                        "font_size": font_size,
                        "leader": choice >= num_near,
                    }
                    break
            if found:
                break
        if found:
            results[index] = found
            placed = np.vstack([placed, found["box"]])
    return results


def _distances(rects: np.ndarray, box) -> np.ndarray:
    """Distance from each rectangle (n, 4) to `box`: 0 where they touch."""
    dx = np.maximum(0, np.maximum(box[0] - rects[:, 2], rects[:, 0] - box[2]))
    dy = np.maximum(0, np.maximum(box[1] - rects[:, 3], rects[:, 1] - box[3]))
    return np.hypot(dx, dy)


def _hits(rects: np.ndarray, others: np.ndarray, gap: float) -> np.ndarray:
    """Which of `rects` (n, 4) come within `gap` of any of `others` (m, 4)."""
    if not len(others) or not len(rects):
        return np.zeros(len(rects), dtype=bool)
    overlap_x = (rects[:, None, 0] < others[None, :, 2] + gap) & (others[None, :, 0] - gap < rects[:, None, 2])
    overlap_y = (rects[:, None, 1] < others[None, :, 3] + gap) & (others[None, :, 1] - gap < rects[:, None, 3])
    return (overlap_x & overlap_y).any(axis=1)


__all__ = ["TAG_PADDING", "layout_tags", "load_font"]
