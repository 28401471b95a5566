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
What FUNSD relation-extraction F1 means without learning: two geometric rules that link every answer to one
question from the gold entities' boxes alone, scored with the example's own rule (`relation_decoding.relation_scores`,
the LayoutXLM convention). A learnt linker that does not beat them has learnt nothing the page layout does not give
away for free; the models' numbers in BENCHMARKS.md stand beside these.

- `nearest`: the question whose box centre is closest to the answer's.
- `left-or-above`: the closest question on the answer's line and to its left (boxes overlap vertically, gap
  measured horizontally), else the closest question above it whose box overlaps it horizontally (gap measured
  vertically), else none: how a reader looks for a field's label.

    python benchmarks/bench_re_geometry.py --dataset_dir ../shared/data/funsd \
        --out benchmarks/results/funsd-re-geometry
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from aetnet.data import ENTITY_LABELS, load_funsd_relations, union_bbox
from aetnet.relations import relation_scores


__all__ = ["left_or_above", "link_page", "main", "nearest"]

QUESTION, ANSWER = ENTITY_LABELS.index("QUESTION"), ENTITY_LABELS.index("ANSWER")
Box = Sequence[int]


def nearest(answer: Box, question: Box) -> float | None:
    """Distance between the box centres."""
    centre = lambda box: ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)  # noqa: E731
    return math.dist(centre(answer), centre(question))


def left_or_above(answer: Box, question: Box) -> float | None:
    """The horizontal gap to a question on the answer's line and left of it, else the vertical gap (plus a
    page's width, so that any same-line question wins) to a question above that overlaps it horizontally, else
    None (not a candidate)."""
    same_line = min(answer[3], question[3]) > max(answer[1], question[1])
    if same_line and question[0] < answer[0]:
        return max(0, answer[0] - question[2])
    overlaps_horizontally = min(answer[2], question[2]) > max(answer[0], question[0])
    if overlaps_horizontally and question[1] < answer[1]:
        return 1000 + max(0, answer[1] - question[3])
    return None


def link_page(page: dict, distance: Callable[[Box, Box], float | None]) -> list[tuple[int, int]]:
    """Every answer of the page linked to its closest candidate question under `distance` (if it has one)."""
    boxes = [union_bbox(page["bboxes"][start:end]) for start, end in page["entity_word_spans"]]
    questions = [i for i, label in enumerate(page["entity_labels"]) if label == QUESTION]
    links = []
    for answer, label in enumerate(page["entity_labels"]):
        if label != ANSWER:
            continue
        scored = [(d, q) for q in questions if (d := distance(boxes[answer], boxes[q])) is not None]
        if scored:
            links.append((min(scored)[1], answer))
    return links


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_dir", required=True, help="A FUNSD folder (training_data/, testing_data/).")
    parser.add_argument("--out", type=Path, help="Write OUT.json and OUT.md (default: print only).")
    args = parser.parse_args(argv)
    pages, stats = load_funsd_relations(args.dataset_dir, splits=("test",))
    test = pages["test"]
    gold = [[tuple(link) for link in page] for page in test["relations"]]
    rows = {}
    for name, rule in (("nearest", nearest), ("left-or-above", left_or_above)):
        rows[name] = relation_scores([link_page(page, rule) for page in test], gold)
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python benchmarks/bench_re_geometry.py", *(sys.argv[1:] if argv is None else argv)]),
        "pages": len(test),
        "links": stats["test"].to_dict(),
        "rules": rows,
    }
    lines = ["| rule | precision | recall | F1 | predicted | gold |", "|---|---|---|---|---|---|"]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} "
            f"| {row['predicted_links']} | {row['gold_links']} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
        args.out.with_suffix(".md").write_text(table + "\n")
    return result


if __name__ == "__main__":
    main()
