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
"""Read FUNSD (form understanding in noisy scanned documents) into a `datasets.DatasetDict`.

The reader takes the original release layout::

    <data_dir>/training_data/annotations/<id>.json   <data_dir>/training_data/images/<id>.png
    <data_dir>/testing_data/annotations/<id>.json    <data_dir>/testing_data/images/<id>.png

and produces one example per form with the columns of `funsd_features()`: `id`, `words`, `bboxes`, `ner_tags`
(BIO over HEADER / QUESTION / ANSWER, "other" entities are `O`) and `image`. The columns follow the LayoutLMv3
fine-tuning convention used by the Hub dataset `nielsr/funsd-layoutlmv3` (which calls `words` `tokens`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
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

FUNSD_LABELS = ["O", "B-HEADER", "I-HEADER", "B-QUESTION", "I-QUESTION", "B-ANSWER", "I-ANSWER"]
FUNSD_SPLIT_FOLDERS = {"train": "training_data", "test": "testing_data"}
_ENTITY_TYPES = {"header": "HEADER", "question": "QUESTION", "answer": "ANSWER", "other": None}


def funsd_features() -> datasets.Features:
    """The schema shared by `load_funsd` and the synthetic forms of `aetnet.data.synthetic`
    ([`~aetnet.data.reader_utils.token_classification_features`] over `FUNSD_LABELS`)."""
    return token_classification_features(FUNSD_LABELS)


def read_form(
    annotation_path: Path, image_path: Path, word_level: bool, counts: dict[str, int], entities: list | None = None
) -> dict:
    """Turn one FUNSD annotation file into an example; `counts` accumulates skipped words and clipped boxes. With an
    `entities` list, one dict per annotated entity is appended to it, in file order: its `id`, `label` (lower case, as
    annotated), `linking` and the `[start, end)` word positions of its kept words in the example (`None` for an entity
    left without words), for the relation reader (`aetnet.data.funsd_relations`)."""
    with open(annotation_path, encoding="utf-8") as handle:
        form = json.load(handle).get("form")
    if not isinstance(form, list):
        raise ValueError(f"{annotation_path} has no `form` list of entities; is it a FUNSD annotation file?")
    with Image.open(image_path) as image:
        width, height = image.size

    words, bboxes, tags = [], [], []
    for entity_index, entity in enumerate(form):
        label = entity.get("label")
        if label not in _ENTITY_TYPES:
            raise ValueError(
                f"{annotation_path}: entity {entity_index} has label {label!r}, expected one of {list(_ENTITY_TYPES)}."
            )
        entity_words, entity_boxes = [], []
        for word_index, word in enumerate(entity.get("words", [])):
            text = word["text"].strip()
            if not text:
                counts["empty_words"] += 1
                continue
            x0, y0, x1, y1 = word["box"]
            if x0 > x1 or y0 > y1:
                raise ValueError(
                    f"{annotation_path}: entity {entity_index}, word {word_index} has an inverted box {word['box']}."
                )
            clipped = clip_bbox((x0, y0, x1, y1), width, height)
            if clipped != [x0, y0, x1, y1]:
                counts["clipped_boxes"] += 1
            entity_words.append(text)
            entity_boxes.append(normalize_bbox(clipped, width, height))
        if entities is not None:
            start = len(words) if entity_words else None
            end = len(words) + len(entity_words) if entity_words else None
            entities.append(
                {
                    "id": entity.get("id", entity_index),
                    "label": label,
                    "linking": entity.get("linking", []),
                    "start": start,
                    "end": end,
                }
            )
        if not entity_words:
            counts["empty_entities"] += 1
            continue
        if not word_level:
            # Segment-level layout as in LayoutLMv3 and AET: every word carries the box of its whole entity, taken as
            # the union of its (kept, clipped) word boxes rather than the annotated entity box, so both options agree.
            entity_boxes = [union_bbox(entity_boxes)] * len(entity_boxes)
        words.extend(entity_words)
        bboxes.extend(entity_boxes)
        tags.extend(bio_tags(_ENTITY_TYPES[label], len(entity_words)))
    return {"id": annotation_path.stem, "words": words, "bboxes": bboxes, "ner_tags": tags, "image": str(image_path)}


def _load_split(split_dir: Path, word_level: bool) -> datasets.Dataset:
    annotation_dir, image_dir = split_dir / "annotations", split_dir / "images"
    layout = "the original layout <data_dir>/{training_data,testing_data}/{annotations,images}"
    annotation_paths = annotation_files("FUNSD", split_dir, (annotation_dir, image_dir), layout)

    counts = {"empty_words": 0, "empty_entities": 0, "clipped_boxes": 0}
    examples = []
    for annotation_path in annotation_paths:
        image_path = image_dir / f"{annotation_path.stem}.png"
        if not image_path.is_file():
            raise FileNotFoundError(f"FUNSD image {image_path} for annotation {annotation_path} does not exist.")
        examples.append(read_form(annotation_path, image_path, word_level, counts))
    if counts["empty_words"] or counts["clipped_boxes"]:
        logger.warning(
            f"{split_dir}: skipped {counts['empty_words']} words with empty text (and so {counts['empty_entities']} "
            f"entities left without words); clipped {counts['clipped_boxes']} word boxes into their page."
        )
    columns = {name: [example[name] for example in examples] for name in funsd_features()}
    return datasets.Dataset.from_dict(columns, features=funsd_features())


def load_funsd(
    data_dir: str | os.PathLike,
    *,
    word_level: bool = False,
    splits: Sequence[str] = ("train", "test"),
) -> datasets.DatasetDict:
    """Load the original FUNSD release from `data_dir` into a `DatasetDict`.

    Args:
        data_dir (`str` or `os.PathLike`):
            The folder that holds `training_data/` and `testing_data/`, each with `annotations/*.json` and
            `images/*.png`.
        word_level (`bool`, *optional*, defaults to `False`):
            By default every word gets the box of its entity (segment-level layout, as LayoutLMv3 and AETNet are
            fine-tuned on FUNSD): the union of the entity's word boxes. With `True` each word keeps its own box.
        splits (`Sequence[str]`, *optional*, defaults to `("train", "test")`):
            Which splits to read: `"train"` is `training_data/`, `"test"` is `testing_data/`.

    Returns:
        `datasets.DatasetDict`: one example per form, sorted by file name, with columns `id` (the file stem),
        `words`, `bboxes` (`[x0, y0, x1, y1]` integers normalised to 0-1000 by the page width and height, after
        clipping into the page), `ner_tags` (`ClassLabel` over `FUNSD_LABELS`; "other" entities are `O`) and `image`
        (decoded as RGB). Words whose text is empty or blank are dropped; their number is logged.

    Example:

    ```python
    >>> from aetnet.data.funsd import load_funsd
    >>> funsd = load_funsd("data/funsd")
    >>> funsd["train"].features["ner_tags"].feature.names[:3]
    ['O', 'B-HEADER', 'I-HEADER']
    ```
    """
    return load_split_folders("FUNSD", data_dir, splits, FUNSD_SPLIT_FOLDERS, _load_split, word_level)


def load_funsd_like(
    path_or_hub_id: str | os.PathLike,
    *,
    word_level: bool = False,
    splits: Sequence[str] = ("train", "test"),
    **load_dataset_kwargs,
) -> datasets.DatasetDict:
    """Load FUNSD from a local original-layout folder (`load_funsd`) or from a Hub dataset id.

    A Hub dataset must have LayoutLMv3-style columns (`tokens` or `words`, `bboxes`, `ner_tags`, `image`), such as
    `nielsr/funsd-layoutlmv3`; `tokens` is renamed to `words` and other columns are dropped. Hub datasets come with
    their own boxes, so `word_level=True` is only accepted for local folders. `load_dataset_kwargs` go to
    `datasets.load_dataset`.
    """
    path = Path(path_or_hub_id)
    if path.is_dir():
        return load_funsd(path, word_level=word_level, splits=splits)
    name = str(path_or_hub_id)
    if path.is_absolute() or name.startswith((".", "~")):
        raise FileNotFoundError(f"FUNSD folder {name} does not exist.")
    if word_level:
        raise ValueError(f"`word_level=True` needs a local FUNSD folder; {name!r} is read as a Hub dataset id.")
    try:
        raw = datasets.load_dataset(name, **load_dataset_kwargs)
    except Exception as error:
        raise FileNotFoundError(
            f"{name!r} is not a local folder and could not be loaded from the Hugging Face Hub ({error}). "
            "Pass the path of a FUNSD folder with training_data/ and testing_data/, or a reachable Hub dataset id."
        ) from error

    result = {}
    for split in [splits] if isinstance(splits, str) else splits:
        if split not in raw:
            raise ValueError(f"Hub dataset {name!r} has no split {split!r}; it has {list(raw)}.")
        dataset = raw[split]
        if "tokens" in dataset.column_names and "words" not in dataset.column_names:
            dataset = dataset.rename_column("tokens", "words")
        missing = [column for column in funsd_features() if column not in dataset.column_names]
        if missing:
            raise ValueError(f"Hub dataset {name!r} split {split!r} lacks the columns {missing}.")
        label_names = getattr(dataset.features["ner_tags"].feature, "names", None)
        if label_names is not None and label_names != FUNSD_LABELS:
            logger.warning(f"Hub dataset {name!r} labels its tags {label_names}, not FUNSD_LABELS {FUNSD_LABELS}.")
        result[split] = dataset.select_columns(list(funsd_features()))
    return datasets.DatasetDict(result)


__all__ = ["FUNSD_LABELS", "FUNSD_SPLIT_FOLDERS", "funsd_features", "load_funsd", "load_funsd_like", "read_form"]
