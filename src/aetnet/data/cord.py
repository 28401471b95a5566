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
"""Read CORD (receipt key information extraction, Park et al. 2019) into a `datasets.DatasetDict`.

The reader takes the layout of the CORD v2 release::

    <data_dir>/{train,dev,test}/json/receipt_00000.json     <data_dir>/{train,dev,test}/image/receipt_00000.png

where each JSON file lists `valid_line`s, each a text line of one `category` (e.g. `menu.nm`) with its `words`,
each word a `text` and a `quad` (four corners `x1..y4` in pixels of the image size in `meta.image_size`). Every line
becomes one entity in BIO notation over the 30 CORD entity types (`CORD_LABELS`, 61 labels: more than 10, so
LayoutLMv3 and AETNet use their MLP token head). The examples have the columns of the FUNSD reader (`id`, `words`,
`bboxes`, `ner_tags`, `image`), with boxes on the 0-1000 scale. `dev/` is read as the `validation` split.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import datasets
from PIL import Image

from .reader_utils import (
    annotation_files,
    bio_tags,
    clip_bbox,
    load_split_folders,
    normalize_bbox,
    token_classification_features,
    union_bbox,
)


logger = logging.getLogger(__name__)

# The 30 entity types of CORD v2 (category names upper-cased), in the order of the LayoutLMv3 CORD label list.
CORD_ENTITY_TYPES = [
    "MENU.NM",
    "MENU.NUM",
    "MENU.UNITPRICE",
    "MENU.CNT",
    "MENU.DISCOUNTPRICE",
    "MENU.PRICE",
    "MENU.ITEMSUBTOTAL",
    "MENU.VATYN",
    "MENU.ETC",
    "MENU.SUB_NM",
    "MENU.SUB_UNITPRICE",
    "MENU.SUB_CNT",
    "MENU.SUB_PRICE",
    "MENU.SUB_ETC",
    "VOID_MENU.NM",
    "VOID_MENU.PRICE",
    "SUB_TOTAL.SUBTOTAL_PRICE",
    "SUB_TOTAL.DISCOUNT_PRICE",
    "SUB_TOTAL.SERVICE_PRICE",
    "SUB_TOTAL.OTHERSVC_PRICE",
    "SUB_TOTAL.TAX_PRICE",
    "SUB_TOTAL.ETC",
    "TOTAL.TOTAL_PRICE",
    "TOTAL.TOTAL_ETC",
    "TOTAL.CASHPRICE",
    "TOTAL.CHANGEPRICE",
    "TOTAL.CREDITCARDPRICE",
    "TOTAL.EMONEYPRICE",
    "TOTAL.MENUTYPE_CNT",
    "TOTAL.MENUQTY_CNT",
]
CORD_LABELS = ["O"] + [f"B-{name}" for name in CORD_ENTITY_TYPES] + [f"I-{name}" for name in CORD_ENTITY_TYPES]
CORD_SPLIT_FOLDERS = {"train": "train", "validation": "dev", "test": "test"}
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def cord_features() -> datasets.Features:
    """The FUNSD schema ([`~aetnet.data.reader_utils.token_classification_features`]) over `CORD_LABELS`."""
    return token_classification_features(CORD_LABELS)


def quad_to_box(quad: Mapping[str, float]) -> list[float]:
    """The axis-aligned box `[x0, y0, x1, y1]` around a CORD quadrilateral `{"x1": .., "y1": .., ..., "y4": ..}`."""
    try:
        xs = [float(quad[f"x{i}"]) for i in range(1, 5)]
        ys = [float(quad[f"y{i}"]) for i in range(1, 5)]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"A CORD quad needs numeric x1..x4 and y1..y4, got {quad!r}") from None
    return [min(xs), min(ys), max(xs), max(ys)]


def _page_size(path: Path, annotation: dict, image_path: Path, counts: Counter) -> tuple[int, int]:
    """The size the quads refer to: `meta.image_size` when present (it stays right for resized copies of the
    images), else the image's own size; a disagreement is counted."""
    with Image.open(image_path) as image:
        actual = image.size
    size = (annotation.get("meta") or {}).get("image_size") or {}
    if "width" in size and "height" in size:
        declared = (int(size["width"]), int(size["height"]))
        if declared[0] <= 0 or declared[1] <= 0:
            raise ValueError(f"{path}: `meta.image_size` must be positive, got {size}.")
        if declared != actual:
            counts["size_mismatch"] += 1
        return declared
    return actual


def _read_receipt(path: Path, image_path: Path, word_level: bool, counts: Counter) -> dict:
    with open(path, encoding="utf-8") as handle:
        annotation = json.load(handle)
    lines = annotation.get("valid_line") if isinstance(annotation, dict) else None
    if not isinstance(lines, list):
        raise ValueError(f"{path} has no `valid_line` list; is it a CORD annotation file?")
    width, height = _page_size(path, annotation, image_path, counts)

    words, bboxes, tags = [], [], []
    for line_index, line in enumerate(lines):
        category = str(line.get("category", "")).upper()
        if category not in CORD_ENTITY_TYPES:
            counts[f"unknown category {category!r}"] += len(line.get("words", []))
            category = None
        line_words, line_boxes = [], []
        for word_index, word in enumerate(line.get("words", [])):
            text = str(word.get("text", "")).strip()
            if not text:
                counts["empty_words"] += 1
                continue
            if "quad" not in word:
                raise ValueError(f"{path}: valid_line[{line_index}].words[{word_index}] has no `quad`.")
            x0, y0, x1, y1 = quad_to_box(word["quad"])
            clipped = clip_bbox((x0, y0, x1, y1), width, height)
            if clipped != [x0, y0, x1, y1]:
                counts["clipped_boxes"] += 1
            line_words.append(text)
            line_boxes.append(normalize_bbox(clipped, width, height))
        if not line_words:
            continue
        if not word_level:
            # Segment-level layout, as LayoutLMv3 and AET are fine-tuned on CORD: each word gets its line's box.
            line_boxes = [union_bbox(line_boxes)] * len(line_boxes)
        words.extend(line_words)
        bboxes.extend(line_boxes)
        tags.extend(bio_tags(category, len(line_words)))
    return {"id": path.stem, "words": words, "bboxes": bboxes, "ner_tags": tags, "image": str(image_path)}


def _load_split(split_dir: Path, word_level: bool) -> datasets.Dataset:
    json_dir, image_dir = split_dir / "json", split_dir / "image"
    paths = annotation_files("CORD", split_dir, (json_dir, image_dir), "<data_dir>/{train,dev,test}/{json,image}")
    counts: Counter = Counter()
    examples = []
    for path in paths:
        candidates = [image_dir / f"{path.stem}{suffix}" for suffix in _IMAGE_SUFFIXES]
        image_path = next((candidate for candidate in candidates if candidate.is_file()), None)
        if image_path is None:
            raise FileNotFoundError(f"No image {path.stem}{{{','.join(_IMAGE_SUFFIXES)}}} in {image_dir} for {path}.")
        examples.append(_read_receipt(path, image_path, word_level, counts))
    if counts:
        logger.warning(
            f"{split_dir}: "
            + ", ".join(f"{name}: {count}" for name, count in sorted(counts.items()))
            + " (empty words are dropped, words of unknown categories are tagged O; size_mismatch counts receipts "
            "whose image size differs from meta.image_size, by which the boxes are normalised)"
        )
    columns = {name: [example[name] for example in examples] for name in cord_features()}
    return datasets.Dataset.from_dict(columns, features=cord_features())


def load_cord(
    data_dir: str | os.PathLike,
    *,
    word_level: bool = False,
    splits: Sequence[str] = ("train", "validation", "test"),
) -> datasets.DatasetDict:
    """
    Load the CORD v2 release from `data_dir`.

    Args:
        data_dir (`str` or `os.PathLike`): the folder with `train/`, `dev/` and `test/`, each holding `json/` and
            `image/`.
        word_level (`bool`, *optional*, defaults to `False`): by default every word gets the box of its line (the
            union of the line's word boxes, segment-level layout); with `True` each word keeps its own box.
        splits (`Sequence[str]`, *optional*): which of `"train"`, `"validation"` (`dev/`) and `"test"` to read.

    Returns:
        `datasets.DatasetDict`: one example per receipt, sorted by file name, with `id`, `words`, `bboxes` (0-1000,
        after clipping into the page), `ner_tags` (`ClassLabel` over `CORD_LABELS`) and `image` (RGB). Empty words
        are dropped and words of categories outside the 30 types are tagged `O`; both are counted in a warning.
    """
    return load_split_folders("CORD", data_dir, splits, CORD_SPLIT_FOLDERS, _load_split, word_level)


__all__ = ["CORD_ENTITY_TYPES", "CORD_LABELS", "CORD_SPLIT_FOLDERS", "cord_features", "load_cord", "quad_to_box"]
