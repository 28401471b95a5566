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
Entities and key-value links of forms, for relation extraction: FUNSD's `linking` field, normalised and counted
([`load_funsd_relations`]), and links derived from BIO tags for the synthetic forms ([`add_bio_relations`]).

A page gets three columns next to the token-classification ones: `entity_word_spans` (`[start, end)` word positions
of each entity with words, in file order), `entity_labels` (`ClassLabel` over `ENTITY_LABELS`) and `relations`
(`[head, tail]` indices into the page's entities, question -> answer). FUNSD lists every link on both of its
entities; [`LinkStatistics`] counts what the normalisation did with every listing, so that nothing is dropped
silently.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets

from .funsd import FUNSD_SPLIT_FOLDERS, funsd_features, read_form
from .reader_utils import annotation_files


logger = logging.getLogger(__name__)

ENTITY_LABELS = ["HEADER", "QUESTION", "ANSWER", "OTHER"]
# The relation FUNSD's RE benchmark scores (LayoutXLM convention): a question linked to its answer.
HEAD_LABEL, TAIL_LABEL = "question", "answer"


@dataclass
class LinkStatistics:
    """
    What the reader did with every `linking` listing of a split. The counts add up:
    `link_entries = self_links + dangling_links + duplicate_entries + links` and
    `links = relations + links_to_entities_without_words + sum(other_type_links.values())`.

    Attributes:
        forms, entities, entities_without_words: pages read, annotated entities, entities whose words are all empty.
        link_entries: `[a, b]` listings in the files (FUNSD lists each link on both entities: about twice `links`).
        self_links: listings `[a, a]`. dangling_links: listings naming an id that is no entity of the form.
        duplicate_entries: further listings of a link already seen (either direction).
        links: distinct links (unordered pairs of distinct entities).
        relations: question-answer links kept as `relations`, normalised to question -> answer.
        reversed_links: of those, links annotated answer -> question.
        links_to_entities_without_words: links with an end that has no words (no tokens to represent it).
        other_type_links: the other links by annotated label pair, e.g. `{"header->question": 2036}`; not relations.
    """

    forms: int = 0
    entities: int = 0
    entities_without_words: int = 0
    link_entries: int = 0
    self_links: int = 0
    dangling_links: int = 0
    duplicate_entries: int = 0
    links: int = 0
    relations: int = 0
    reversed_links: int = 0
    links_to_entities_without_words: int = 0
    other_type_links: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        return {**asdict(self), "other_type_links": dict(sorted(self.other_type_links.items()))}

    def summary(self) -> str:
        """One line for the log."""
        other = ", ".join(f"{k} {v}" for k, v in sorted(self.other_type_links.items())) or "none"
        return (
            f"{self.forms} forms, {self.entities} entities ({self.entities_without_words} without words); "
            f"{self.link_entries} link listings -> {self.links} distinct links ({self.duplicate_entries} duplicate "
            f"listings, {self.self_links} self-links, {self.dangling_links} dangling); {self.relations} "
            f"question->answer relations ({self.reversed_links} reversed); not relations: "
            f"{self.links_to_entities_without_words} to entities without words, other types: {other}"
        )


def relation_features() -> datasets.Features:
    """`funsd_features()` plus `entity_word_spans`, `entity_labels` and `relations`."""
    features = funsd_features()
    features["entity_word_spans"] = datasets.Sequence(datasets.Sequence(datasets.Value("int64")))
    features["entity_labels"] = datasets.Sequence(datasets.ClassLabel(names=ENTITY_LABELS))
    features["relations"] = datasets.Sequence(datasets.Sequence(datasets.Value("int64")))
    return features


def normalize_links(entities: list[dict], stats: LinkStatistics) -> tuple[list[list[int]], list[str], list[list[int]]]:
    """
    The `entity_word_spans`, `entity_labels` and `relations` of one form from `read_form`'s entity records (`id`,
    `label`, `linking`, `start`, `end`), counting into `stats`: self-links, dangling ids and repeated listings are
    counted and skipped; a question-answer link becomes one question -> answer relation whatever its annotated order;
    any other link is counted by its label pair.
    """
    by_id = {entity["id"]: entity for entity in entities}
    with_words = [entity for entity in entities if entity["start"] is not None]
    index = {entity["id"]: i for i, entity in enumerate(with_words)}
    stats.forms += 1
    stats.entities += len(entities)
    stats.entities_without_words += len(entities) - len(with_words)
    seen, relations = set(), []
    for entity in entities:
        for link in entity["linking"]:
            stats.link_entries += 1
            a, b = link
            if a == b:
                stats.self_links += 1
                continue
            if a not in by_id or b not in by_id:
                stats.dangling_links += 1
                continue
            key = frozenset((a, b))
            if key in seen:
                stats.duplicate_entries += 1
                continue
            seen.add(key)
            stats.links += 1
            if a not in index or b not in index:
                stats.links_to_entities_without_words += 1
                continue
            labels = by_id[a]["label"], by_id[b]["label"]
            if labels == (HEAD_LABEL, TAIL_LABEL):
                relations.append([index[a], index[b]])
            elif labels == (TAIL_LABEL, HEAD_LABEL):
                stats.reversed_links += 1
                relations.append([index[b], index[a]])
            else:
                stats.other_type_links["->".join(labels)] += 1
                continue
            stats.relations += 1
    spans = [[entity["start"], entity["end"]] for entity in with_words]
    return spans, [entity["label"].upper() for entity in with_words], sorted(relations)


def _load_split(split_dir: Path, word_level: bool) -> tuple[datasets.Dataset, LinkStatistics]:
    annotation_dir, image_dir = split_dir / "annotations", split_dir / "images"
    layout = "the original layout <data_dir>/{training_data,testing_data}/{annotations,images}"
    counts = {"empty_words": 0, "empty_entities": 0, "clipped_boxes": 0}
    stats, rows = LinkStatistics(), []
    for annotation_path in annotation_files("FUNSD", split_dir, (annotation_dir, image_dir), layout):
        image_path = image_dir / f"{annotation_path.stem}.png"
        if not image_path.is_file():
            raise FileNotFoundError(f"FUNSD image {image_path} for annotation {annotation_path} does not exist.")
        entities = []
        row = read_form(annotation_path, image_path, word_level, counts, entities)
        row["entity_word_spans"], row["entity_labels"], row["relations"] = normalize_links(entities, stats)
        rows.append(row)
    logger.info(f"{split_dir}: {stats.summary()}")
    columns = {name: [row[name] for row in rows] for name in relation_features()}
    return datasets.Dataset.from_dict(columns, features=relation_features()), stats


def load_funsd_relations(
    data_dir: str | os.PathLike, *, word_level: bool = False, splits: Sequence[str] = ("train", "test")
) -> tuple[datasets.DatasetDict, dict[str, LinkStatistics]]:
    """
    Load the original FUNSD release with its entities and question -> answer links.

    Args: as [`~aetnet.data.funsd.load_funsd`].

    Returns:
        `(DatasetDict, dict[str, LinkStatistics])`: the pages, with the columns of `load_funsd` plus
        `entity_word_spans`, `entity_labels` and `relations` (see the module docstring), and per split the counts of
        what was made of every `linking` listing (also logged).

    Example:

    ```python
    >>> pages, stats = load_funsd_relations("../shared/data/funsd")
    >>> stats["test"].relations, stats["test"].link_entries
    (823, 2152)
    ```
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"FUNSD `data_dir` {data_dir} is not a directory.")
    splits = (splits,) if isinstance(splits, str) else tuple(splits)
    if not splits or any(split not in FUNSD_SPLIT_FOLDERS for split in splits):
        raise ValueError(f"`splits` must be a non-empty subset of {list(FUNSD_SPLIT_FOLDERS)}, got {list(splits)}.")
    loaded = {split: _load_split(data_dir / FUNSD_SPLIT_FOLDERS[split], word_level) for split in splits}
    return datasets.DatasetDict({s: d for s, (d, _) in loaded.items()}), {s: st for s, (_, st) in loaded.items()}


def relations_from_bio(tags: Sequence[str]) -> tuple[list[list[int]], list[str], list[list[int]]]:
    """
    Entities and links of a page known only by its BIO word tags (the synthetic forms, which draw every answer right
    after its question): entities are BIO runs (as seqeval reads them), and each QUESTION entity is linked to the
    entity that follows it when that is an ANSWER. Returns `entity_word_spans`, `entity_labels` and `relations`.
    """
    spans, labels = [], []
    for position, tag in enumerate(tags):
        kind = None if tag == "O" else tag[2:]
        if kind is not None and (tag.startswith("B-") or not labels or labels[-1] != kind or spans[-1][1] != position):
            spans.append([position, position + 1])
            labels.append(kind)
        elif kind is not None:
            spans[-1][1] = position + 1
    relations = [[i, i + 1] for i in range(len(labels) - 1) if labels[i] == "QUESTION" and labels[i + 1] == "ANSWER"]
    return spans, labels, relations


def add_bio_relations(dataset: datasets.Dataset) -> datasets.Dataset:
    """`dataset` (FUNSD schema, e.g. `load_synthetic_funsd`) with the relation columns of [`relations_from_bio`]."""
    names = dataset.features["ner_tags"].feature.names

    def add(example):
        spans, labels, relations = relations_from_bio([names[tag] for tag in example["ner_tags"]])
        return {"entity_word_spans": spans, "entity_labels": labels, "relations": relations}

    return dataset.map(add, features=relation_features(), desc="BIO entities and links")


__all__ = [
    "ENTITY_LABELS",
    "LinkStatistics",
    "add_bio_relations",
    "load_funsd_relations",
    "normalize_links",
    "relation_features",
    "relations_from_bio",
]
