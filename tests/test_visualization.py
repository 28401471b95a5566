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
"""Where `draw_prediction` puts entity tags: never over a word of the page, another tag or the legend, also on a page
where the lines of text leave no room between them."""

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import aetnet.visualization.drawing as visualization
from aetnet.entities import group_entities
from aetnet.visualization import draw_prediction, layout_tags
from aetnet.visualization.drawing import KNOWN_COLORS


LABELS = ["QUESTION", "ANSWER", "HEADER"]
FUNSD_DIR = Path(os.environ.get("AETNET_FUNSD_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "funsd"))


def overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def dense_page(rows: int = 30, columns: int = 9, width: int = 1000, height: int = 800):
    """Lines of words 14 px high, 6 px apart (less than a tag's height), with 70 px margins; every three words of a
    line form an entity. Returns the page image and its prediction dict."""
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    words, entities = [], []
    word_width = (width - 140) // columns
    for row in range(rows):
        top = 60 + row * 20
        for column in range(columns):
            left = 70 + column * word_width
            box = [left, top, left + word_width - 8, top + 14]
            draw.rectangle(box, fill=(0, 0, 0))
            label = LABELS[(row + column // 3) % 3]
            words.append({"text": f"w{row}.{column}", "box": box, "label": f"B-{label}", "confidence": 0.9})
        for group in range(columns // 3):
            members = list(range(row * columns + 3 * group, row * columns + 3 * group + 3))
            boxes = np.array([words[i]["box"] for i in members])
            entities.append(
                {
                    "label": LABELS[(row + group) % 3],
                    "text": " ".join(words[i]["text"] for i in members),
                    "box": [*boxes[:, :2].min(0).tolist(), *boxes[:, 2:].max(0).tolist()],
                    "confidence": 0.87,
                    "words": members,
                }
            )
    prediction = {"task": "token-classification", "width": width, "height": height, "words": words}
    prediction["entities"] = entities
    return image, prediction


def record_drawing(monkeypatch) -> dict:
    """Record what `draw_prediction` lays out and draws: every `layout_tags` run (boxes, obstacles, placements), the
    tags and numbers drawn, and the legend's rows."""
    record = {"layouts": []}

    def recording_layout(boxes, texts, size, **kwargs):
        placements = layout_tags(boxes, texts, size, **kwargs)
        record["layouts"].append((boxes, kwargs["obstacles"], placements))
        return placements

    def recording_tags(draw, tags, placements, colors):
        record["drawn"] = placements
        return draw_tags(draw, tags, placements, colors)

    def recording_legend(draw, entries, colors, font, layout):
        record["legend"] = entries
        return draw_legend(draw, entries, colors, font, layout)

    draw_tags, draw_legend = visualization._draw_tags, visualization._draw_legend
    monkeypatch.setattr(visualization, "layout_tags", recording_layout)
    monkeypatch.setattr(visualization, "_draw_tags", recording_tags)
    monkeypatch.setattr(visualization, "_draw_legend", recording_legend)
    return record


def distance(a, b) -> float:
    dx = max(0.0, b[0] - a[2], a[0] - b[2])
    dy = max(0.0, b[1] - a[3], a[1] - b[3])
    return float(np.hypot(dx, dy))


def crosses_a_word(line, words, own_box) -> bool:
    """Whether the segment passes through a word outside `own_box`, sampled every half pixel."""
    x0, y0, x1, y1 = line
    t = np.linspace(0, 1, int(2 * max(abs(x1 - x0), abs(y1 - y0))) + 2)
    xs, ys = x0 + (x1 - x0) * t, y0 + (y1 - y0) * t
    keep = ~((xs >= own_box[0]) & (xs <= own_box[2]) & (ys >= own_box[1]) & (ys <= own_box[3]))
    words = np.asarray(words, dtype=float)
    inside = (xs[keep, None] > words[:, 0]) & (xs[keep, None] < words[:, 2])
    inside &= (ys[keep, None] > words[:, 1]) & (ys[keep, None] < words[:, 3])
    return bool(inside.any())


def check_every_entity_is_labelled(record, image, picture, prediction) -> dict:
    """Every entity has its tag touching its box, or a tag joined to its box by a leader line that crosses no word, or
    a number at its box that the legend lists under its label; nothing overlaps another tag. Returns the counts."""
    entities, drawn = prediction["entities"], record["drawn"]
    words = [w["box"] for w in prediction["words"]]
    assert len(drawn) == len(entities) and all(p is not None for p in drawn), "an entity was left without a tag"
    legend_numbers, label = {}, None
    for row_label, text in record["legend"]:
        body = text
        if row_label is not None and text.startswith(f"{row_label}: "):
            label, body = row_label, text[len(row_label) + 2 :]
        elif row_label is None or not re.fullmatch(r"[\d, ]+", text):
            continue
        legend_numbers.update({int(n): label for n in re.findall(r"\d+", body)})
    counts = {"touching": 0, "displaced": 0, "leader": 0, "number": 0}
    pixels, page = np.asarray(picture).astype(int), np.asarray(image.convert("RGB")).astype(int)
    for placement, entity in zip(drawn, entities):
        box, tag = entity["box"], placement["box"]
        if "number" in placement:
            counts["displaced"] += 1
            counts["number"] += 1
            assert distance(tag, box) <= 1.5, (placement, box)  # at its box: touching or inside
            assert legend_numbers.get(placement["number"]) == entity["label"], (placement, record["legend"])
            others = [w["box"] for i, w in enumerate(prediction["words"]) if i not in entity["words"]]
            assert not any(overlaps(tag, word) for word in others), placement
            continue
        assert placement["text"].split()[0] == entity["label"]
        assert not any(overlaps(tag, word) for word in words), placement
        if distance(tag, box) <= 1.5:
            counts["touching"] += 1
            continue
        counts["displaced"] += 1
        line = placement["leader"]
        if line is not None and not crosses_a_word(line, words, box):
            assert distance([line[0], line[1], line[0], line[1]], tag) <= 0.5, (line, tag)  # from the tag
            assert distance([line[2], line[3], line[2], line[3]], box) <= 0.5, (line, box)  # to the box
            x, y = round((line[0] + line[2]) / 2), round((line[1] + line[3]) / 2)
            near = (slice(max(y - 1, 0), y + 2), slice(max(x - 1, 0), x + 2))
            assert np.abs(pixels[near] - page[near]).max() >= 20, ("the leader line was not drawn", line)
            counts["leader"] += 1
    assert counts["displaced"] == counts["leader"] + counts["number"], counts
    assert sorted(legend_numbers) == list(range(1, counts["number"] + 1))
    rects = [p["box"] for p in drawn]
    for i, a in enumerate(rects):
        assert not any(overlaps(a, b) for b in rects[i + 1 :]), a
    return counts


def test_tags_do_not_cover_words_on_a_dense_page(monkeypatch):
    image, prediction = dense_page()
    record = record_drawing(monkeypatch)
    picture = draw_prediction(image, prediction)
    assert picture.size == image.size
    # The layout runs again around a larger legend while tags need legend numbers; the last run is the one drawn.
    boxes, obstacles, placements = record["layouts"][-1]
    assert len(boxes) == len(prediction["entities"]) == 90
    # Lines 6 px apart leave no room for a tag between them: a tag sits at its box's row in the margin with a leader
    # line along the gap above its box, or gives way to a number at its box. Most still get their tag.
    placed = [p["box"] for p in placements if p is not None]
    assert len(placed) >= 0.85 * len(boxes), f"only {len(placed)} of {len(boxes)} tags found a place"
    counts = check_every_entity_is_labelled(record, image, picture, prediction)
    assert counts["number"] == len(boxes) - len(placed)
    word_boxes = [w["box"] for w in prediction["words"]]
    for tag in placed:
        assert 0 <= tag[0] and 0 <= tag[1] and tag[2] <= image.width and tag[3] <= image.height
        assert not any(overlaps(tag, word) for word in word_boxes), tag
        assert not any(overlaps(tag, entity["box"]) for entity in prediction["entities"]), tag
    for i, a in enumerate(placed):
        assert not any(overlaps(a, b) for b in placed[i + 1 :])
    # The legend is an obstacle too, and every tag was drawn where it was placed, in its entity's colour.
    legend = obstacles[-1]
    assert not any(overlaps(tag["box"], legend) for tag in record["drawn"])
    pixels = np.asarray(picture)
    for placement, entity in zip(placements, prediction["entities"]):
        if placement is None:
            continue
        x0, y0, x1, y1 = (int(round(v)) for v in placement["box"])
        corner = pixels[y0 + 1, x0]  # padding, left of the text
        expected = np.array(KNOWN_COLORS[entity["label"]])
        assert np.abs(corner.astype(int) - (expected * 0.9 + 255 * 0.1)).max() <= 3, (placement, corner)
    # Words are untouched by tags: inside each word (away from entity outlines) only the translucent fill shows, but
    # where a number sits on its own entity's words.
    numbers = [p["box"] for p in record["drawn"] if "number" in p]
    for word in word_boxes:
        if any(overlaps(word, number) for number in numbers):
            continue
        inside = pixels[word[1] + 3 : word[3] - 3, word[0] + 3 : word[2] - 3]
        assert inside.max() < 60


def densest_funsd_page() -> tuple[Image.Image, dict]:
    """The FUNSD test page with the most words, as a prediction whose labels are the gold ones (no model needed):
    its non-blank words with their boxes and BIO labels, and the entities grouped from them as inference does."""

    def words_of(path: Path) -> list[dict]:
        words = []
        for entity in json.loads(path.read_text())["form"]:
            kind = entity["label"].upper()
            texts = [word for word in entity["words"] if word["text"].strip()]
            for i, word in enumerate(texts):
                label = "O" if kind == "OTHER" else f"{'I' if i else 'B'}-{kind}"
                words.append({"text": word["text"], "box": word["box"], "label": label, "confidence": 1.0})
        return words

    annotations = sorted((FUNSD_DIR / "testing_data" / "annotations").glob("*.json"))
    path = max(annotations, key=lambda path: len(words_of(path)))
    image = Image.open(FUNSD_DIR / "testing_data" / "images" / f"{path.stem}.png")
    words = words_of(path)
    prediction = {"task": "token-classification", "width": image.width, "height": image.height, "words": words}
    prediction["entities"] = group_entities(words, bio=True)
    return image, prediction


@pytest.mark.shared_data
def test_every_displaced_tag_has_a_leader_or_a_number_on_a_dense_funsd_page(monkeypatch):
    image, prediction = densest_funsd_page()
    assert len(prediction["words"]) > 400 and len(prediction["entities"]) > 60
    record = record_drawing(monkeypatch)
    picture = draw_prediction(image, prediction)
    counts = check_every_entity_is_labelled(record, image, picture, prediction)
    # Tags away from their box are common on this page, and most of them still get a line rather than a number.
    assert counts["displaced"] >= 10 and counts["leader"] > counts["number"], counts
    assert counts["touching"] + counts["displaced"] == len(prediction["entities"])
    entities = [entity["box"] for entity in prediction["entities"]]
    for placement in record["drawn"]:
        if "number" not in placement:
            assert not any(overlaps(placement["box"], box) for box in entities), placement


def test_tags_sit_next_to_their_box_when_there_is_room():
    boxes = [[100, 100, 200, 120], [100, 300, 180, 320]]
    placements = layout_tags(boxes, [["QUESTION 0.90", "QUESTION"], ["ANSWER"]], (400, 400), obstacles=boxes)
    first, second = placements
    assert first["text"] == "QUESTION 0.90" and not first["leader"]
    assert first["box"][3] <= 100 and first["box"][0] == pytest.approx(100)  # just above, left-aligned
    assert second["box"][3] <= 300 and not second["leader"]


def test_a_tag_without_room_is_left_out():
    page = [0, 0, 100, 100]
    assert layout_tags([[10, 10, 90, 90]], [["QUESTION"]], (100, 100), obstacles=[page]) == [None]
