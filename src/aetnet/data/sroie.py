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
Read SROIE 2019 receipts (task 3, key information extraction: `company`, `date`, `address`, `total`) as token
classification, in the FUNSD-shaped schema of the other readers.

The folder layout is::

    <dataset_dir>/images/<id>.jpg  ocr/<id>.json  fields/<id>.json  train.txt  test.txt  duplicate_images.tsv

where `ocr/<id>.json` lists the text lines, each `{"text": str, "box": [x0, y0, x1, y1]}` in pixels of the image,
and `fields/<id>.json` holds the four field strings. SROIE annotates fields as strings, not as OCR words, so the
reader finds each field among the words and tags the words it covers in BIO notation (`SROIE_LABELS`).

Words are the lines split on whitespace. A word's box is the share of its line box between the word's first and last
character, proportional to character positions in the line text (the OCR gives no word boxes); by default, as
LayoutLMv3 is fine-tuned on receipts, every word gets its whole line's box instead (segment-level layout).

The match rule (`match_field`): a field and the receipt's words are compared with all whitespace removed and
upper-cased, so that a field matches a contiguous run of words whether it spans several lines (address, company) or
the words are spaced differently than in the field string. A match must start at the start of a word and end at the
end of a word ("whole-word" match); when the field has none, a match inside words is accepted (e.g. a date printed
as `DATE:25/12/2018`) and the words it touches are tagged; when there is neither, a whole-word match is sought
with punctuation ignored as well (letters and digits only: the annotation and the OCR often differ in a comma or a
full stop, e.g. `NO 122.124.` against `NO 122.124`). Among several matches of the same kind, the first in
reading order wins for `company`, `address` and `date` (they head the receipt), the last for `total` (the amount
recurs as an item price or subtotal above it; the grand total comes after them). Fields the rule does not find
(mostly OCR misspellings) tag nothing, nor does a match that overlaps the words of a field matched before it (in
the order company, date, address, total: a word has one label); [`SroieMatchStatistics`] counts them per field,
and the reader logs the counts.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from pathlib import Path

import datasets
from PIL import Image

from .reader_utils import bio_tags, clip_bbox, normalize_bbox, token_classification_features


logger = logging.getLogger(__name__)

SROIE_FIELDS = ["company", "date", "address", "total"]
SROIE_LABELS = ["O"] + [f"{prefix}-{name.upper()}" for name in SROIE_FIELDS for prefix in ("B", "I")]
SROIE_SPLITS = ("train", "test")
# Fields whose last match wins (see the module docstring); the others take their first.
_LAST_MATCH_FIELDS = frozenset({"total"})


@dataclass
class SroieMatchStatistics:
    """
    How many field strings of a split the match rule found among the OCR words. Per field name:
    `fields = matched + unmatched`, `matched = whole_word + inside_word + without_punctuation`, and `empty` fields
    (missing or blank) are counted apart and not in `fields`.

    Attributes:
        receipts: receipts read. duplicates_left_out: test receipts left out because their image is a training image.
        fields, empty: non-empty and empty fields. unmatched: fields without a match.
        whole_word, inside_word, without_punctuation: matches of each kind ([`match_field`]).
    """

    receipts: int = 0
    duplicates_left_out: int = 0
    fields: Counter = field(default_factory=Counter)
    empty: Counter = field(default_factory=Counter)
    whole_word: Counter = field(default_factory=Counter)
    inside_word: Counter = field(default_factory=Counter)
    without_punctuation: Counter = field(default_factory=Counter)
    unmatched: Counter = field(default_factory=Counter)

    def matched(self, name: str | None = None) -> int:
        """Matched non-empty fields, of field `name` or of all four."""
        names = SROIE_FIELDS if name is None else [name]
        return sum(self.whole_word[n] + self.inside_word[n] + self.without_punctuation[n] for n in names)

    def coverage(self, name: str | None = None) -> float:
        """Matched / non-empty fields, of field `name` or of all four (1.0 when there is none)."""
        total = self.fields[name] if name is not None else sum(self.fields.values())
        return self.matched(name) / total if total else 1.0

    def to_dict(self) -> dict:
        """The counts as plain JSON-ready values, with the coverage per field and overall."""
        counts = {}
        for attribute in dataclass_fields(self):
            value = getattr(self, attribute.name)
            counts[attribute.name] = dict(value) if isinstance(value, Counter) else value
        counts["coverage"] = {name: self.coverage(name) for name in SROIE_FIELDS} | {"overall": self.coverage()}
        return counts

    def summary(self) -> str:
        """One line for the log."""
        per_field = ", ".join(
            f"{name} {self.matched(name)}/{self.fields[name]} ({self.inside_word[name]} inside words, "
            f"{self.without_punctuation[name]} without punctuation)"
            for name in SROIE_FIELDS
        )
        return (
            f"{self.receipts} receipts ({self.duplicates_left_out} duplicates of training images left out); "
            f"fields matched to words: {per_field}; overall {self.matched()}/{sum(self.fields.values())} = "
            f"{self.coverage():.2%} of the non-empty fields ({sum(self.empty.values())} empty fields not counted)"
        )


def sroie_features() -> datasets.Features:
    """The FUNSD schema ([`~aetnet.data.reader_utils.token_classification_features`]) over `SROIE_LABELS`."""
    return token_classification_features(SROIE_LABELS)


def _squeeze(text: str, keep_punctuation: bool = True) -> str:
    """`text` upper-cased without whitespace, and without punctuation unless `keep_punctuation`."""
    return re.sub(r"\s+" if keep_punctuation else r"[\W_]+", "", text).upper()


def _find(words: Sequence[str], value: str, keep_punctuation: bool) -> tuple[list, list]:
    """The whole-word and the inside-word matches of `value` in `words` under one normalisation, as word spans."""
    target = _squeeze(value, keep_punctuation)
    if not target:
        return [], []
    starts, owner = set(), []
    for index, word in enumerate(words):
        starts.add(len(owner))
        owner.extend([index] * len(_squeeze(word, keep_punctuation)))
    joined = "".join(_squeeze(word, keep_punctuation) for word in words)
    whole, inside = [], []
    for found in re.finditer(f"(?={re.escape(target)})", joined):
        start, end = found.start(), found.start() + len(target)
        at_word_end = end == len(owner) or owner[end] != owner[end - 1]
        (whole if start in starts and at_word_end else inside).append((owner[start], owner[end - 1] + 1))
    return whole, inside


def match_field(words: Sequence[str], value: str, last: bool = False) -> tuple[tuple[int, int] | None, str | None]:
    """
    Where the field string `value` lies in `words` (the receipt's words in reading order), by the module's rule.

    Returns:
        `(span, kind)`: `span` is `(first, end)` word indices (end exclusive) or `None` without a match; `kind` is
        `"whole_word"` (the match starts and ends at word boundaries), `"inside_word"` (it does not), or
        `"without_punctuation"` (a whole-word match found only when punctuation is ignored too), the first kind
        that has a match in this order, and `None` without a match. `last` picks the last match of that kind instead of the first.
    """
    whole, inside = _find(words, value, keep_punctuation=True)
    # Without punctuation only whole words: a short amount such as `1.00` would otherwise match inside `11000`.
    loose = _find(words, value, keep_punctuation=False)[0]
    for spans, kind in ((whole, "whole_word"), (inside, "inside_word"), (loose, "without_punctuation")):
        if spans:
            return (spans[-1] if last else spans[0]), kind
    return None, None


def _split_line(line: dict, width: int, height: int, word_level: bool) -> tuple[list[str], list[list[int]]]:
    """The words of an OCR line and their 0-1000 boxes (the line's, or each word's character share of it)."""
    text = str(line.get("text", ""))
    x0, y0, x1, y1 = clip_bbox([float(v) for v in line["box"]], width, height)
    words, boxes = [], []
    for found in re.finditer(r"\S+", text):
        words.append(found.group())
        if word_level:
            left = x0 + (x1 - x0) * found.start() / len(text)
            right = x0 + (x1 - x0) * found.end() / len(text)
            boxes.append(normalize_bbox((left, y0, right, y1), width, height))
        else:
            boxes.append(normalize_bbox((x0, y0, x1, y1), width, height))
    return words, boxes


def read_sroie_fields(dataset_dir: str | os.PathLike, receipt_id: str) -> dict[str, str]:
    """The four field strings of a receipt as annotated (`""` for a missing field)."""
    with open(Path(dataset_dir) / "fields" / f"{receipt_id}.json", encoding="utf-8") as handle:
        fields = json.load(handle)
    return {name: str(fields.get(name) or "") for name in SROIE_FIELDS}


def _read_receipt(root: Path, receipt_id: str, word_level: bool, stats: SroieMatchStatistics) -> dict:
    image_path = root / "images" / f"{receipt_id}.jpg"
    with Image.open(image_path) as image:
        width, height = image.size
    with open(root / "ocr" / f"{receipt_id}.json", encoding="utf-8") as handle:
        lines = json.load(handle)
    words, bboxes = [], []
    for line in lines:
        line_words, line_boxes = _split_line(line, width, height, word_level)
        words.extend(line_words)
        bboxes.extend(line_boxes)
    tags = ["O"] * len(words)
    for name, value in read_sroie_fields(root, receipt_id).items():
        if not value.strip():
            stats.empty[name] += 1
            continue
        stats.fields[name] += 1
        span, kind = match_field(words, value, last=name in _LAST_MATCH_FIELDS)
        if span is None or any(tag != "O" for tag in tags[span[0] : span[1]]):
            # Overlapping another field's words counts as no match: a word carries one label.
            stats.unmatched[name] += 1
            continue
        getattr(stats, kind)[name] += 1
        tags[span[0] : span[1]] = bio_tags(name.upper(), span[1] - span[0])
    stats.receipts += 1
    return {"id": receipt_id, "words": words, "bboxes": bboxes, "ner_tags": tags, "image": str(image_path)}


def duplicate_test_receipts(dataset_dir: str | os.PathLike) -> list[str]:
    """The test receipts whose image is also a training image (`duplicate_images.tsv`, rows `train-test`)."""
    with open(Path(dataset_dir) / "duplicate_images.tsv", encoding="utf-8") as handle:
        rows = csv.DictReader(handle, delimiter="\t")
        return sorted(row["id_b"] for row in rows if row["splits"] == "train-test")


def _load_split(
    root: Path, split: str, word_level: bool, drop_duplicates: bool
) -> tuple[datasets.Dataset, SroieMatchStatistics]:
    ids = (root / f"{split}.txt").read_text(encoding="utf-8").split()
    stats = SroieMatchStatistics()
    if split == "test" and drop_duplicates:
        duplicates = set(duplicate_test_receipts(root))
        left_out = [receipt_id for receipt_id in ids if receipt_id in duplicates]
        stats.duplicates_left_out = len(left_out)
        ids = [receipt_id for receipt_id in ids if receipt_id not in duplicates]
        logger.info(f"SROIE test: leaving out {', '.join(left_out)}, whose images are training images.")
    examples = [_read_receipt(root, receipt_id, word_level, stats) for receipt_id in ids]
    logger.info(f"SROIE {split}: {stats.summary()}")
    columns = {name: [example[name] for example in examples] for name in sroie_features()}
    return datasets.Dataset.from_dict(columns, features=sroie_features()), stats


def load_sroie(
    dataset_dir: str | os.PathLike,
    *,
    splits: str | Sequence[str] = SROIE_SPLITS,
    word_level: bool = False,
    drop_test_duplicates: bool = True,
) -> tuple[datasets.DatasetDict, dict[str, SroieMatchStatistics]]:
    """
    Load SROIE receipts from `dataset_dir` with BIO tags of the four fields found by the module's match rule.

    Args:
        dataset_dir (`str` or `os.PathLike`): the folder with `images/`, `ocr/`, `fields/`, `train.txt`, `test.txt`.
        splits (`str` or `Sequence[str]`, *optional*): which of `"train"` and `"test"` to read.
        word_level (`bool`, *optional*, defaults to `False`): by default every word gets its line's box; with
            `True` each word gets its character share of the line box.
        drop_test_duplicates (`bool`, *optional*, defaults to `True`): leave out the test receipts whose image is a
            training image (`duplicate_images.tsv`), so that the test score measures unseen receipts.

    Returns:
        `(DatasetDict, dict[str, SroieMatchStatistics])`: per split, one example per receipt in the order of
        `<split>.txt` with `id`, `words`, `bboxes` (0-1000), `ner_tags` (`ClassLabel` over `SROIE_LABELS`) and
        `image` (RGB), and the counts of the field matching (logged too).
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"SROIE `dataset_dir` {root} is not a directory.")
    splits = (splits,) if isinstance(splits, str) else tuple(splits)
    if not splits or any(split not in SROIE_SPLITS for split in splits):
        raise ValueError(f"`splits` must be a non-empty subset of {list(SROIE_SPLITS)}, got {list(splits)}.")
    loaded = {split: _load_split(root, split, word_level, drop_test_duplicates) for split in splits}
    return datasets.DatasetDict({s: d for s, (d, _) in loaded.items()}), {s: st for s, (_, st) in loaded.items()}


__all__ = [
    "SROIE_FIELDS",
    "SROIE_LABELS",
    "SroieMatchStatistics",
    "duplicate_test_receipts",
    "load_sroie",
    "match_field",
    "read_sroie_fields",
    "sroie_features",
]
