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
    leader_obstacles: list[list[float]] = (),
    font_sizes: tuple[int, ...] = (9, 7),
    gap: float = 1.0,
    displace: bool = True,
) -> list[dict | None]:
    """
    Place one tag per box so that no tag covers an obstacle (the page's words and the entity boxes), another tag or
    the page border, and so that every tag either touches its box or is joined to it by a leader line that crosses
    none of `leader_obstacles` (the page's words) and no other tag.

    For each box, in reading order of the boxes (top to bottom), the texts of `texts[i]` (longest first, e.g. with
    and without the confidence) are tried at each of `font_sizes` in turn, at the candidate places of
    [`_candidates`]: touching the box (above, below, left, right) if one is free, else (with `displace`) the free
    place nearest to the box, further along its row or in the page margins, whose leader line is clear.

    Args:
        boxes (`list[list[float]]`): `[x0, y0, x1, y1]` of each box to tag, in pixels.
        texts (`list[list[str]]`): the tag texts to try for each box, preferred first (none: the box gets no tag).
        size (`tuple[int, int]`): page width and height.
        obstacles (`list[list[float]]`, *optional*): rectangles no tag may overlap.
        leader_obstacles (`list[list[float]]`, *optional*): rectangles no leader line may cross (outside its own box).
        font_sizes (`tuple[int, ...]`, *optional*, defaults to `(9, 7)`): font sizes to try, preferred first.
        gap (`float`, *optional*, defaults to 1): free pixels between a tag and what it must not touch.
        displace (`bool`, *optional*, defaults to `True`): whether a tag may sit away from its box (with a leader).

    Returns:
        `list[dict | None]`: per box, `{"box": [x0, y0, x1, y1], "text", "font_size", "leader"}` (`leader`: `None`
        where the tag touches its box, else the line `[x0, y0, x1, y1]` from the tag to the box), or `None` when no
        free place was found, for the caller to mark the box otherwise (see [`layout_badges`]).
    """
    blocked = np.asarray(list(obstacles), dtype=float).reshape(-1, 4)
    lines_blocked = np.asarray(list(leader_obstacles), dtype=float).reshape(-1, 4)
    placed, leaders = np.empty((0, 4)), np.empty((0, 4))
    results: list[dict | None] = [None] * len(boxes)
    for index in sorted(range(len(boxes)), key=lambda i: (boxes[i][1], boxes[i][0])):
        for font_size in font_sizes:
            for text in texts[index]:
                tag_width, tag_height = _tag_extent(text, font_size)
                corners, num_near = _candidates(boxes[index], tag_width, tag_height, size, gap)
                rects = np.concatenate([corners, corners + [tag_width, tag_height]], axis=1)
                if not displace:
                    rects = rects[:num_near]
                crossed = _crossings(leaders, rects).any(axis=0)  # a tag must not sit on another tag's line
                choice, leader = _choose(
                    rects, num_near, boxes[index], size, gap, blocked, placed, lines_blocked, crossed
                )
                if choice is not None:
                    results[index] = {"box": choice, "text": text, "font_size": font_size, "leader": leader}
                    break
            if results[index] is not None:
                placed = np.vstack([placed, results[index]["box"]])
                if results[index]["leader"] is not None:
                    leaders = np.vstack([leaders, results[index]["leader"]])
                break
    return results


def _choose(
    rects, num_near, box, size, gap, blocked, placed, lines_blocked, crossed
) -> tuple[list | None, list | None]:
    """The place of a tag among the candidate `rects` (not `crossed` by a line): the first free one touching the box,
    else the free one nearest to the box whose leader crosses neither `lines_blocked` nor a placed tag; and its
    leader (`None` where the tag touches its box)."""
    width, height = size
    inside = (rects[:, 0] >= 0) & (rects[:, 1] >= 0) & (rects[:, 2] <= width) & (rects[:, 3] <= height)
    free = np.flatnonzero(inside & ~crossed & ~_hits(rects, blocked, gap) & ~_hits(rects, placed, gap))
    near = free[free < num_near]
    if near.size:
        return [float(v) for v in rects[near[0]]], None
    far = free[free >= num_near]
    far = far[np.argsort(_distances(rects[far], box), kind="stable")]
    lines_blocked = np.concatenate([lines_blocked, placed])
    # Nearest first, in chunks: on most pages one of the first few places has a clear line.
    for start in range(0, len(far), 64):
        chunk = far[start : start + 64]
        leaders = _leaders(rects[chunk], box)
        clear = np.flatnonzero(~_lines_cross(leaders, lines_blocked, box))
        if clear.size:
            return [float(v) for v in rects[chunk[clear[0]]]], [float(v) for v in leaders[clear[0]]]
    return None, None


def layout_badges(
    boxes: list[list[float]],
    numbers: list[str],
    size: tuple[int, int],
    *,
    obstacles: list[list[float]] = (),
    placed: list[list[float]] = (),
    font_size: int = 7,
    gap: float = 1.0,
) -> list[dict]:
    """
    Place a small number at each box whose tag found no place (the legend lists its label under that number):
    touching the box where a place is free of `obstacles` (the page's words, the boxes, the legend) and of the `placed`
    tags, else inside the box along its top or bottom edge, over no obstacle if it can (between the words) and over
    no tag or other number in any case, so that no box goes unmarked.

    Returns:
        `list[dict]`: per box, `{"box", "text", "font_size", "leader": None}`, as [`layout_tags`] returns a tag.
    """
    placements = layout_tags(
        boxes, [[number] for number in numbers], size, obstacles=[*obstacles, *placed], font_sizes=(font_size,),
        gap=gap, displace=False,
    )  # fmt: skip
    blocked = np.asarray(list(obstacles), dtype=float).reshape(-1, 4)
    taken = [list(rect) for rect in placed] + [p["box"] for p in placements if p is not None]
    for index, placement in enumerate(placements):
        if placement is not None:
            continue
        x0, y0, x1, y1 = boxes[index]
        badge_width, badge_height = _tag_extent(numbers[index], font_size)
        xs = np.arange(x0, max(x0, x1 - badge_width) + 1)
        corners = [(x, y) for y in (y0, max(y0, y1 - badge_height)) for x in xs]
        rects = np.asarray([[x, y, x + badge_width, y + badge_height] for x, y in corners])
        free = ~_hits(rects, np.asarray(taken, dtype=float).reshape(-1, 4), 0)
        # What the number should not cover there: the words, not the box itself (nor a box around it).
        around = (blocked[:, 0] <= x0) & (blocked[:, 1] <= y0) & (blocked[:, 2] >= x1) & (blocked[:, 3] >= y1)
        inside_blocked = blocked[~around]
        clear = np.flatnonzero(free & ~_hits(rects, inside_blocked, 0))
        choice = clear[0] if clear.size else (np.flatnonzero(free)[0] if free.any() else 0)
        rect = [float(v) for v in rects[choice]]
        placements[index] = {"box": rect, "text": numbers[index], "font_size": font_size, "leader": None}
        taken.append(rect)
    return placements


def _leaders(rects: np.ndarray, box) -> np.ndarray:
    """The line (n, 4) from each tag rectangle's side nearest the box to the nearest point of the box's edge."""
    cx = np.clip((rects[:, 0] + rects[:, 2]) / 2, box[0], box[2])
    cy = np.clip((rects[:, 1] + rects[:, 3]) / 2, box[1], box[3])
    middle_x, middle_y = (rects[:, 0] + rects[:, 2]) / 2, (rects[:, 1] + rects[:, 3]) / 2
    tx = np.where(rects[:, 2] <= box[0], rects[:, 2], np.where(rects[:, 0] >= box[2], rects[:, 0], middle_x))
    ty = np.where(rects[:, 3] <= box[1], rects[:, 3], np.where(rects[:, 1] >= box[3], rects[:, 1], middle_y))
    return np.stack([tx, ty, cx, cy], axis=1)


def _lines_cross(lines: np.ndarray, rects: np.ndarray, own_box) -> np.ndarray:
    """Which of the segments (n, 4) pass through the inside of any of `rects` (m, 4), leaving out the rectangles that
    lie within `own_box` (the tagged entity's own words)."""
    within = (rects[:, 0] >= own_box[0]) & (rects[:, 1] >= own_box[1]) & (rects[:, 2] <= own_box[2])
    return _crossings(lines, rects[~(within & (rects[:, 3] <= own_box[3]))]).any(axis=1)


def _crossings(lines: np.ndarray, rects: np.ndarray) -> np.ndarray:
    """(n, m): whether segment i passes through the inside of rectangle j, by clipping it to the rectangle's x and y
    ranges in turn (a segment that only touches an edge or a corner does not cross)."""
    if not len(rects) or not len(lines):
        return np.zeros((len(lines), len(rects)), dtype=bool)
    enter, leave = np.zeros((len(lines), len(rects))), np.ones((len(lines), len(rects)))
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis in (0, 1):
            start, delta = lines[:, None, axis], lines[:, None, axis + 2] - lines[:, None, axis]
            low, high = rects[None, :, axis] - start, rects[None, :, axis + 2] - start
            t_low, t_high = low / delta, high / delta
            # A segment parallel to this axis's edges is inside the range everywhere or nowhere.
            enter = np.maximum(
                enter, np.where(delta == 0, np.where(low < 0, -np.inf, np.inf), np.minimum(t_low, t_high))
            )
            leave = np.minimum(
                leave, np.where(delta == 0, np.where(high > 0, np.inf, -np.inf), np.maximum(t_low, t_high))
            )
    return enter < leave


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


__all__ = ["TAG_PADDING", "layout_badges", "layout_tags", "load_font"]
