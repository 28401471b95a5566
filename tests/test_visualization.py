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

import numpy as np
import pytest
from PIL import Image, ImageDraw

import aetnet.visualization.drawing as visualization
from aetnet.visualization import draw_prediction, layout_tags
from aetnet.visualization.drawing import KNOWN_COLORS


LABELS = ["QUESTION", "ANSWER", "HEADER"]


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


def test_tags_do_not_cover_words_on_a_dense_page(monkeypatch):
    image, prediction = dense_page()
    calls = []

    def recording_layout(boxes, texts, size, **kwargs):
        placements = layout_tags(boxes, texts, size, **kwargs)
        calls.append((boxes, kwargs["obstacles"], placements))
        return placements

    monkeypatch.setattr(visualization, "layout_tags", recording_layout)
    picture = draw_prediction(image, prediction)
    assert picture.size == image.size
    ((boxes, obstacles, placements),) = calls
    assert len(boxes) == len(prediction["entities"]) == 90
    placed = [p["box"] for p in placements if p is not None]
    assert len(placed) >= 0.9 * len(boxes), f"only {len(placed)} of {len(boxes)} tags found a place"
    word_boxes = [w["box"] for w in prediction["words"]]
    for tag in placed:
        assert 0 <= tag[0] and 0 <= tag[1] and tag[2] <= image.width and tag[3] <= image.height
        assert not any(overlaps(tag, word) for word in word_boxes), tag
        assert not any(overlaps(tag, entity["box"]) for entity in prediction["entities"]), tag
    for i, a in enumerate(placed):
        assert not any(overlaps(a, b) for b in placed[i + 1 :])
    # The legend is an obstacle too, and every tag was drawn where it was placed, in its entity's colour.
    legend = obstacles[-1]
    assert not any(overlaps(tag, legend) for tag in placed)
    pixels = np.asarray(picture)
    for placement, entity in zip(placements, prediction["entities"]):
        if placement is None:
            continue
        x0, y0, x1, y1 = (int(round(v)) for v in placement["box"])
        corner = pixels[y0 + 1, x0]  # padding, left of the text
        expected = np.array(KNOWN_COLORS[entity["label"]])
        assert np.abs(corner.astype(int) - (expected * 0.9 + 255 * 0.1)).max() <= 3, (placement, corner)
    # Words are untouched by tags: inside each word (away from entity outlines) only the translucent fill shows.
    for word in word_boxes:
        inside = pixels[word[1] + 3 : word[3] - 3, word[0] + 3 : word[2] - 3]
        assert inside.max() < 60


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
