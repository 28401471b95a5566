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
"""benchmarks/bench_re_geometry.py: the geometric relation-extraction references that give the models' F1 a meaning."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_re_geometry import ANSWER, QUESTION, left_or_above, link_page, main, nearest  # noqa: E402


FUNSD_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "funsd"


def page(boxes_and_labels):
    """A page of one-word entities: each box is one word and one entity."""
    boxes = [box for box, _ in boxes_and_labels]
    return {
        "bboxes": boxes,
        "entity_word_spans": [[i, i + 1] for i in range(len(boxes))],
        "entity_labels": [label for _, label in boxes_and_labels],
    }


def test_left_or_above_prefers_the_label_on_the_answers_line_then_the_one_above():
    form = page(
        [
            ((100, 100, 200, 120), QUESTION),  # 0: "Name:" with its answer to the right
            ((300, 100, 500, 120), ANSWER),  # 1
            ((100, 200, 300, 220), QUESTION),  # 2: "Address" above its answer
            ((120, 260, 400, 280), ANSWER),  # 3
            ((600, 900, 700, 920), ANSWER),  # 4: nothing left of it on its line, nothing above it overlapping it
        ]
    )
    assert link_page(form, left_or_above) == [(0, 1), (2, 3)]
    # The nearest centre links every answer, the orphan too, and answer 1 to the wrong question: question 2's
    # centre is 224 from answer 1's, its own question 0's is 250.
    assert link_page(form, nearest) == [(2, 1), (2, 3), (2, 4)]
    assert left_or_above((300, 100, 500, 120), (600, 100, 700, 120)) is None  # a question right of the answer


@pytest.mark.shared_data
def test_the_rules_on_the_real_funsd_test_split(tmp_path):
    result = main(["--dataset_dir", str(FUNSD_DIR), "--out", str(tmp_path / "geometry")])
    assert result["pages"] == 50 and result["links"]["relations"] == 823
    for row in result["rules"].values():
        assert row["gold_links"] == 823 and 0 < row["predicted_links"] <= 1000
        assert 0.0 < row["f1"] < 1.0
    # The layout alone links most answers: a learnt linker has this to beat.
    assert result["rules"]["left-or-above"]["f1"] > result["rules"]["nearest"]["f1"] + 0.2
    assert (tmp_path / "geometry.md").read_text().count("\n") == 4
