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
Helpers shared by the readers of form-like documents (`funsd.py`, `cord.py`, `synthetic.py`): the token
classification schema they all produce, box arithmetic on the LayoutLMv3 0-1000 grid, BIO tags of an entity, and the
check-then-read of a release folder with one sub-folder per split.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import datasets


def token_classification_features(label_names: Sequence[str]) -> datasets.Features:
    """The schema of one labelled page: `id`, `words`, `bboxes` (0-1000), `ner_tags` (`ClassLabel` over
    `label_names`) and `image`. `image` decodes to RGB because scans are often 8-bit gray and LayoutLMv3's image
    processor normalises three channels."""
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "words": datasets.Sequence(datasets.Value("string")),
            "bboxes": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=list(label_names))),
            "image": datasets.Image(mode="RGB"),
        }
    )


def normalize_bbox(box: Sequence[float], width: int, height: int) -> list[int]:
    """Scale a pixel box `[x0, y0, x1, y1]` on a `width` x `height` page to LayoutLMv3's 0-1000 integer grid."""
    x0, y0, x1, y1 = box
    return [int(1000 * x0 / width), int(1000 * y0 / height), int(1000 * x1 / width), int(1000 * y1 / height)]


def clip_bbox(box: Sequence[float], width: int, height: int) -> list[float]:
    """Clip a pixel box `[x0, y0, x1, y1]` to a `width` x `height` page (annotations may overshoot the edges); a result
    that differs from `box` tells the reader to count a clipped box."""
    x0, y0, x1, y1 = box
    return [min(max(x0, 0), width), min(max(y0, 0), height), min(max(x1, 0), width), min(max(y1, 0), height)]


def union_bbox(boxes: Iterable[Sequence[int]]) -> list[int]:
    """The smallest box that covers all `boxes`: the box of a segment (text line or entity) made of words."""
    x0s, y0s, x1s, y1s = zip(*boxes)
    return [min(x0s), min(y0s), max(x1s), max(y1s)]


def bio_tags(entity_type: str | None, num_words: int) -> list[str]:
    """BIO tags of an entity of `num_words` words; `entity_type=None` (FUNSD "other") gives all `O`."""
    if entity_type is None:
        return ["O"] * num_words
    return [f"B-{entity_type}"] + [f"I-{entity_type}"] * (num_words - 1)


def annotation_files(
    name: str, split_dir: Path, folders: Sequence[Path], layout: str, pattern: str = "*.json"
) -> list[Path]:
    """The sorted annotation files (`pattern`) of one split of the `name` release, after checking that `split_dir`
    and its `folders` (the first holds the annotations) exist; `layout` tells the expected layout when one is
    missing."""
    for folder in (split_dir, *folders):
        if not folder.is_dir():
            raise FileNotFoundError(f"{name} folder {folder} does not exist; expected {layout}.")
    paths = sorted(folders[0].glob(pattern))
    if not paths:
        raise FileNotFoundError(f"No {name} annotation ({pattern}) in {folders[0]}.")
    return paths


def load_split_folders(
    name: str,
    data_dir,
    splits: str | Sequence[str],
    split_folders: Mapping[str, str],
    load_split: Callable[[Path, bool], datasets.Dataset],
    word_level: bool,
) -> datasets.DatasetDict:
    """Check `data_dir` and `splits` (names of `split_folders`), then `load_split(folder, word_level)` each split."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{name} `data_dir` {data_dir} is not a directory.")
    if isinstance(splits, str):
        splits = (splits,)
    unknown = [split for split in splits if split not in split_folders]
    if unknown or not splits:
        raise ValueError(f"`splits` must be a non-empty subset of {list(split_folders)}, got {list(splits)}.")
    return datasets.DatasetDict({split: load_split(data_dir / split_folders[split], word_level) for split in splits})


__all__ = [
    "annotation_files",
    "bio_tags",
    "clip_bbox",
    "load_split_folders",
    "normalize_bbox",
    "token_classification_features",
    "union_bbox",
]
