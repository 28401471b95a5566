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
"""Read a folder of labelled page images (RVL-CDIP and subsets of it) for document classification.

Two layouts are understood, each with one file per split:

- JSON lines, `<data_dir>/{train,dev,validation,val,test}.jsonl`, one `{"image": "email/doc_1.png", "label":
  "email"}` per line (image paths relative to the file), optionally with the page's own OCR as `"words"` and
  `"bboxes"` (0-1000). This is the layout of `shared/data/rvlcdip3`.
- The RVL-CDIP release, `<data_dir>/labels/{train,val,test}.txt`, one `imagesa/a/a/a/aaa06d00/50486482-6482.tif 6`
  per line, image paths relative to `<data_dir>/images/`, labels as ids into `RVLCDIP_LABELS` (or as names).

Each split becomes a `datasets.Dataset` with `id` (the relative path), `image` (the absolute path: pages are opened
when needed, never all held in memory), `label` (`ClassLabel`) and, when the files carry them, `words` and `bboxes`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import datasets


logger = logging.getLogger(__name__)

# The 16 RVL-CDIP classes, in the order of the label ids of the release (Harley et al., ICDAR 2015).
RVLCDIP_LABELS = [
    "letter",
    "form",
    "email",
    "handwritten",
    "advertisement",
    "scientific report",
    "scientific publication",
    "specification",
    "file folder",
    "news article",
    "budget",
    "invoice",
    "presentation",
    "questionnaire",
    "resume",
    "memo",
]
# File stems of each split, first match wins; `dev` and `val` are read as the validation split.
_SPLIT_STEMS = {"train": ("train",), "validation": ("validation", "dev", "val"), "test": ("test",)}


def _read_jsonl(path: Path, image_root: Path) -> list[dict]:
    records = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_number} is not valid JSON: {error}") from None
            if not isinstance(record, dict) or "image" not in record or "label" not in record:
                raise ValueError(
                    f"{path}:{line_number} must be an object with `image` and `label`, got {line.strip()!r}"
                )
            has_words, has_boxes = "words" in record, "bboxes" in record
            if has_words != has_boxes:
                raise ValueError(f"{path}:{line_number} has `words` without `bboxes` or the reverse: give both.")
            if has_words and len(record["words"]) != len(record["bboxes"]):
                raise ValueError(
                    f"{path}:{line_number} has {len(record['words'])} words but {len(record['bboxes'])} bboxes."
                )
            records.append({**record, "_where": f"{path}:{line_number}", "_root": image_root})
    return records


def _read_labels_file(path: Path, image_root: Path) -> list[dict]:
    records = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").rsplit(maxsplit=1)
            if len(parts) != 2:
                raise ValueError(f"{path}:{line_number} must read `<image path> <label>`, got {line.strip()!r}")
            image, label = parts
            records.append(
                {"image": image.strip(), "label": label, "_where": f"{path}:{line_number}", "_root": image_root}
            )
    return records


def _resolve_labels(records: list[dict], label_names: Sequence[str] | None) -> list[str]:
    """The class names: given, RVL-CDIP's for integer labels, else the sorted names found in the files."""
    labels = [record["label"] for record in records]
    as_ids = all(isinstance(label, int) or (isinstance(label, str) and label.isdigit()) for label in labels)
    if label_names is not None:
        names = list(label_names)
    elif as_ids:
        names = RVLCDIP_LABELS
    else:
        names = sorted({str(label) for label in labels})
    for record in records:
        label = record["label"]
        if as_ids:
            index = int(label)
            if not 0 <= index < len(names):
                raise ValueError(f"{record['_where']}: label id {index} is outside the {len(names)} classes {names}.")
            record["label"] = index
        elif str(label) in names:
            record["label"] = names.index(str(label))
        else:
            raise ValueError(f"{record['_where']}: label {label!r} is not one of the classes {names}.")
    return names


def _to_dataset(records: list[dict], names: list[str]) -> datasets.Dataset:
    features = {
        "id": datasets.Value("string"),
        "image": datasets.Value("string"),
        "label": datasets.ClassLabel(names=names),
    }
    with_ocr = ["words" in record for record in records]
    if any(with_ocr) and not all(with_ocr):
        where = records[with_ocr.index(False)]["_where"]
        raise ValueError(
            f"{where} has no `words`/`bboxes` while other lines of the split do: give OCR for all or none."
        )
    if records and all(with_ocr):
        features["words"] = datasets.Sequence(datasets.Value("string"))
        features["bboxes"] = datasets.Sequence(datasets.Sequence(datasets.Value("int64")))
    columns = {name: [] for name in features}
    for record in records:
        image = Path(record["_root"]) / record["image"]
        if not image.is_file():
            raise FileNotFoundError(f"{record['_where']}: the image {image} does not exist.")
        columns["id"].append(record["image"])
        columns["image"].append(str(image.resolve()))
        columns["label"].append(record["label"])
        if "words" in features:
            columns["words"].append([str(word) for word in record["words"]])
            columns["bboxes"].append([[int(c) for c in box] for box in record["bboxes"]])
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def _split_files(data_dir: Path) -> tuple[dict[str, Path], Path | None]:
    """Find the split files of `data_dir` and the image root of the RVL-CDIP layout (None for JSON lines)."""
    for folder, suffix, image_root in ((data_dir, ".jsonl", None), (data_dir / "labels", ".txt", data_dir / "images")):
        found = {}
        for split, stems in _SPLIT_STEMS.items():
            path = next((folder / f"{stem}{suffix}" for stem in stems if (folder / f"{stem}{suffix}").is_file()), None)
            if path is not None:
                found[split] = path
        if found:
            return found, image_root
    raise FileNotFoundError(
        f"No split files in {data_dir}: expected `train.jsonl` / `dev.jsonl` / `test.jsonl` or the RVL-CDIP layout "
        "`labels/train.txt`, `labels/val.txt`, `labels/test.txt` with `images/`."
    )


def load_rvlcdip(
    data_dir: str | os.PathLike | None = None,
    *,
    train_file: str | os.PathLike | None = None,
    validation_file: str | os.PathLike | None = None,
    test_file: str | os.PathLike | None = None,
    image_root: str | os.PathLike | None = None,
    label_names: Sequence[str] | None = None,
) -> datasets.DatasetDict:
    """
    Load labelled page images for document classification.

    Args:
        data_dir (`str` or `os.PathLike`, *optional*): a folder in one of the two layouts of the module docstring.
        train_file, validation_file, test_file (`str` or `os.PathLike`, *optional*): split files given one by one
            instead (`.jsonl`, or a labels file of `<path> <label>` lines); they override those of `data_dir`.
        image_root (`str` or `os.PathLike`, *optional*): the folder image paths are relative to. Defaults to the
            folder of each JSON-lines file, and to `<data_dir>/images` (or the labels file's folder) otherwise.
        label_names (`Sequence[str]`, *optional*): the class names, in label-id order. Defaults to `RVLCDIP_LABELS`
            when every label is an integer id, else to the sorted names found in all the split files.

    Returns:
        `datasets.DatasetDict` with the splits found among `train`, `validation` (`dev`, `val`) and `test`.

    Example:

    ```python
    >>> from aetnet.data.rvlcdip import load_rvlcdip
    >>> pages = load_rvlcdip("../shared/data/rvlcdip3")
    >>> pages["train"].features["label"].names
    ['email', 'paper', 'resume']
    ```
    """
    files: dict[str, Path] = {}
    default_root = None
    if data_dir is not None:
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise FileNotFoundError(f"`data_dir` {data_dir} is not a directory.")
        files, default_root = _split_files(data_dir)
    for split, path in (("train", train_file), ("validation", validation_file), ("test", test_file)):
        if path is not None:
            if not Path(path).is_file():
                raise FileNotFoundError(f"The {split} file {path} does not exist.")
            files[split] = Path(path)
    if not files:
        raise ValueError("Give `data_dir` or at least one of `train_file`, `validation_file`, `test_file`.")

    records = {}
    for split, path in files.items():
        root = Path(image_root) if image_root is not None else None
        if path.suffix == ".jsonl":
            records[split] = _read_jsonl(path, root or path.parent)
        else:
            records[split] = _read_labels_file(path, root or default_root or path.parent)
        if not records[split]:
            raise ValueError(f"The {split} file {path} lists no image.")
    names = _resolve_labels([record for split_records in records.values() for record in split_records], label_names)
    result = datasets.DatasetDict({split: _to_dataset(records[split], names) for split in records})
    sizes = ", ".join(f"{split}: {len(dataset)} pages" for split, dataset in result.items())
    logger.info(f"{sizes}; classes {names}")
    return result


__all__ = ["RVLCDIP_LABELS", "load_rvlcdip"]
