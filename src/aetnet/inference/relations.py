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
Run a relation extraction checkpoint ([`~aetnet.modeling_aetnet_relation.AETNetForRelationExtraction`]) on document
pages, the way `aetnet predict` does: the links (question -> answer) between a page's entities, with their scores.

A relation model reads a page's entities (their words and types), not only its words. They come either from an
annotation in FUNSD's shape ([`parse_entities`], [`entities_page`]: the page's words are then the entities' words, as
in the FUNSD training data), or from the entities a token classification checkpoint predicted (the `entities` of a
[`~aetnet.inference.DocumentPredictor`] page, with word indices, taken as they are). Either way the page is the dict
`DocumentPredictor` returns, and [`RelationPredictor.add_links`] adds its `links`.

Windows, scoring and decoding are those of the example's evaluation (`examples/run_funsd_re.py`), so that a link
predicted here is one the evaluation counts: [`~aetnet.relations.windows.relation_windows`] (windows of whole
entities), [`~aetnet.relations.windows.score_relation_windows`], [`~aetnet.relations.decoding.merge_page_scores`]
(windows merged per page), [`~aetnet.relations.decoding.decode_links`] and
[`~aetnet.relations.decoding.links_to_json`] (the records of the page JSON). Every word of an entity is given the box
of its entity (the union of its words' boxes), the segment-level layout the example trains on by default.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from transformers.utils import logging

from ..entities import word_span
from ..page_predictor import resolve_device, resolve_dtype_and_batch_size, text_positions
from ..page_results import page_result
from ..pages import PageSource, as_page, words_key_for
from ..processing_inputs import prepare_boxes
from ..relations.decoding import decode_links, links_to_json, merge_page_scores
from ..relations.windows import RelationDataCollator, WindowStatistics, relation_windows, score_relation_windows
from ..tasks import RELATION_EXTRACTION, task_of
from .checkpoints import load_checkpoint


logger = logging.get_logger(__name__)

_PAGE_ERRORS = (ValueError, RuntimeError, OSError)


def parse_entities(entities, entity_labels: Sequence[str]) -> tuple[list[dict], int]:
    """
    Check one page's entities in FUNSD's annotation shape and keep what a relation model reads.

    Args:
        entities: a list of `{"label", "words": [{"text", "box"}, ...]}` (FUNSD's `form` list; other keys, e.g.
            `id`, `linking`, are allowed), or a whole FUNSD annotation `{"form": [...]}`. An entity without `words`
            is one word, its own `text` and `box`. Boxes are `[x0, y0, x1, y1]` in pixels of the page image.
        entity_labels (`list[str]`): the checkpoint's entity types (`config.entity_labels`); labels match them
            ignoring case (FUNSD writes `question`, the checkpoint `QUESTION`).

    Returns:
        `(entities, dropped)`: per kept entity `{"id", "label", "words"}` (`id`: the entity's own, or its position in
        the list; `label`: the checkpoint's spelling), and the number of entities left out because none of their
        words has text (FUNSD has a few; its reader drops them too).

    Raises:
        `ValueError` naming the entity (its position in the list), the field and the offending value.
    """
    if isinstance(entities, dict) and isinstance(entities.get("form"), list):
        entities = entities["form"]
    if not isinstance(entities, list):
        raise ValueError(
            f"entities must be a list of entities (FUNSD's `form` list), or an object with a `form` list; got "
            f"{type(entities).__name__}"
        )
    known = {str(label).upper(): label for label in entity_labels}
    kept, dropped = [], 0
    for index, entity in enumerate(entities):
        where = f"entity {index}"
        if not isinstance(entity, dict):
            raise ValueError(f"{where} must be an object with `label` and `words`, got {type(entity).__name__}")
        label = entity.get("label")
        if not isinstance(label, str) or label.upper() not in known:
            raise ValueError(f"{where} has label {label!r}, which the checkpoint does not know: {list(entity_labels)}")
        words = entity.get("words")
        if words is None:
            words = [{"text": entity.get("text"), "box": entity.get("box")}]
            where += " (no `words`: its `text` and `box`)"
        if not isinstance(words, list):
            raise ValueError(f"{where}: `words` must be a list of {{text, box}} objects, got {type(words).__name__}")
        entity_words = [_check_word(word, f"{where}, word {i}") for i, word in enumerate(words)]
        entity_words = [word for word in entity_words if word["text"]]
        if not entity_words:
            dropped += 1
            continue
        kept.append({"id": entity.get("id", index), "label": known[label.upper()], "words": entity_words})
    return kept, dropped


def _check_word(word, where: str) -> dict:
    """`{"text", "box"}` of one annotated word, its text stripped; errors name `where`."""
    if not isinstance(word, dict):
        raise ValueError(f"{where} must be an object with `text` and `box`, got {word!r}")
    text, box = word.get("text"), word.get("box")
    if not isinstance(text, str):
        raise ValueError(f"{where}: `text` must be a string, got {text!r}")
    if (
        not isinstance(box, (list, tuple))
        or len(box) != 4
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)
    ):
        raise ValueError(f"{where}: `box` must be 4 numbers [x0, y0, x1, y1] (pixels), got {box!r}")
    if box[0] > box[2] or box[1] > box[3]:
        raise ValueError(f"{where}: `box` must have x0 <= x1 and y0 <= y1, got {list(box)}")
    return {"text": text.strip(), "box": list(box)}


def entities_page(
    entities: list[dict],
    image: Image.Image,
    *,
    name: str = "page0",
    source: str | None = None,
    page_number: int | None = None,
) -> dict:
    """
    The page dict of `image` (as [`~aetnet.inference.DocumentPredictor`] returns it, task `relation-extraction`)
    whose words are the words of `entities` ([`parse_entities`]' output), in their order, and whose `entities` are
    `{"id", "label", "text", "box", "words"}` (`words`: their indices in the page's `words`).
    """
    words = [word for entity in entities for word in entity["words"]]
    page = as_page(
        {"image": image, "words": [w["text"] for w in words], "boxes": [w["box"] for w in words]},
        0,
        name,
        source,
        page_number,
    )
    result = page_result(page, page.words, page.boxes, False, RELATION_EXTRACTION)
    start, result["entities"] = 0, []
    for entity in entities:
        end = start + len(entity["words"])
        span = word_span(result["words"], start, end - 1)
        members = list(range(start, end))
        result["entities"].append({"id": entity["id"], "label": entity["label"], **span, "words": members})
        start = end
    return result


class RelationPredictor:
    """
    Predict the links between the entities of document pages with a relation extraction checkpoint.

    Args:
        model ([`~aetnet.modeling_aetnet_relation.AETNetForRelationExtraction`] or its LayoutLMv3 baseline): the
            model; `config.entity_labels` names the entity types it reads.
        processor ([`~aetnet.processing_aetnet.AETNetProcessor`]): the processor saved with the model.
        device (`str` or `torch.device`, *optional*): where to run; `"auto"` (default) picks CUDA, MPS, then CPU.
        dtype (`str` or `torch.dtype`, *optional*): `"float16"` or `"bfloat16"` to run in half precision.
        batch_size (`int`, *optional*, defaults to 8): pages prepared together and windows per forward pass.
        max_length (`int`, *optional*): window length in tokens; defaults to what the model and tokenizer accept, at
            most 512. Windows hold whole entities (see `relation_windows`), so no stride applies.
        threshold (`float`, *optional*, defaults to 0.5): link probability from which a pair is a link.
        one_head_per_tail (`bool`, *optional*, defaults to `False`): keep only the best question of each answer.
    """

    task = RELATION_EXTRACTION

    def __init__(
        self,
        model,
        processor,
        *,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype | None = None,
        batch_size: int = 8,
        max_length: int | None = None,
        threshold: float = 0.5,
        one_head_per_tail: bool = False,
    ):
        if task_of(model.config) != RELATION_EXTRACTION:
            raise ValueError(f"RelationPredictor needs a relation extraction model, got {type(model).__name__}")
        dtype = resolve_dtype_and_batch_size(dtype, batch_size)
        if not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise ValueError(f"`threshold` must be a number in [0, 1], got {threshold!r}")
        self.device = resolve_device(device)
        self.model = model.to(device=self.device, dtype=dtype).eval()
        self.dtype = next(self.model.parameters()).dtype
        self.processor, self.batch_size = processor, batch_size
        self.threshold, self.one_head_per_tail = float(threshold), one_head_per_tail
        limit = text_positions(self.model.config, processor.tokenizer)
        self.max_length = min(512, limit) if max_length is None else max_length
        if not isinstance(self.max_length, int) or not 8 <= self.max_length <= limit:
            raise ValueError(f"`max_length` must be an int in [8, {limit}] for this model, got {self.max_length!r}")
        self.entity_labels = list(self.model.config.entity_labels)
        self.collator = RelationDataCollator(tokenizer=processor.tokenizer, keep_keys=("entity_index",))

    @classmethod
    def from_pretrained(cls, model_name_or_path: str | os.PathLike, **kwargs) -> RelationPredictor:
        """Load a relation checkpoint and its processor from one folder; `kwargs` go to `RelationPredictor`."""
        model, processor, task = load_checkpoint(model_name_or_path, device=kwargs.get("device"))
        if task != RELATION_EXTRACTION:
            raise ValueError(f"{model_name_or_path} is a {task} checkpoint, not a relation extraction one")
        return cls(model, processor, **kwargs)

    def add_links(self, results: Sequence[dict], images: Sequence[Image.Image]) -> None:
        """
        Fill the `links` of page dicts `results` (words with pixel boxes and `entities` with word indices, as
        [`entities_page`] or a token classification `DocumentPredictor` gives them) from their page `images`: the
        records of [`~aetnet.relations.decoding.links_to_json`], `head` / `tail` indices into the page's `entities`.
        The windows of all pages share forward passes. Raises `ValueError` for an entity whose words are not
        consecutive word indices, or whose label the checkpoint does not know.
        """
        self._link([(result, self.windows(result, image)) for result, image in zip(results, images, strict=True)])

    def _link(self, prepared: list[tuple[dict, list[dict]]]) -> None:
        """Score the windows of every `(page dict, windows)`, merge them per page and write the page's `links`."""
        windows = [window for _, page_windows in prepared for window in page_windows]
        window_pages = [page for page, (_, page_windows) in enumerate(prepared) for _ in page_windows]
        scores = score_relation_windows(self.model, windows, self.collator, self.batch_size) if windows else []
        for (result, _), pair_scores in zip(prepared, merge_page_scores(scores, window_pages, len(prepared))):
            links = decode_links(pair_scores, self.threshold, self.one_head_per_tail)
            result["links"] = links_to_json(links, result["entities"])

    def windows(self, result: dict, image: Image.Image) -> list[dict]:
        """The relation windows of one page dict (`relation_windows`: whole entities, 0-1000 boxes), each with the
        page's `pixel_values`; none for a page without entities. Errors name the entity and its bad field."""
        words, entities = result["words"], result["entities"]
        known = {label.upper(): index for index, label in enumerate(self.entity_labels)}
        spans, labels = [], []
        for index, entity in enumerate(entities):
            members, label = entity.get("words"), str(entity.get("label"))
            if not members or list(members) != list(range(members[0], members[0] + len(members))):
                raise ValueError(f"entity {index}: `words` must be consecutive word indices, got {members!r}")
            if not 0 <= members[0] <= members[-1] < len(words):
                raise ValueError(f"entity {index}: `words` {members!r} name words beyond the page's {len(words)}")
            if label.upper() not in known:
                raise ValueError(
                    f"entity {index} has label {label!r}, which the checkpoint does not know: {self.entity_labels}"
                )
            spans.append([members[0], members[-1] + 1])
            labels.append(known[label.upper()])
        if not entities:
            return []
        boxes = prepare_boxes([word["box"] for word in words], 0, image.size, False)[0]
        for start, end in spans:  # segment-level layout: the entity's box on each of its words
            members = np.asarray(boxes[start:end])
            boxes[start:end] = [[*members[:, :2].min(0).tolist(), *members[:, 2:].max(0).tolist()]] * (end - start)
        pixel_values = self.processor.image_processor(image, apply_ocr=False, return_tensors="pt")["pixel_values"]
        stats = WindowStatistics()
        texts = [word["text"] for word in words]
        windows = relation_windows(self.processor.tokenizer, texts, boxes, spans, labels, None, self.max_length, stats)
        if stats.entities_truncated:
            cut = stats.entities_truncated
            logger.warning(f"{result['name']}: {cut} entity(ies) longer than a window (`max_length`) were truncated.")
        return [{**window, "pixel_values": pixel_values[0].to(self.dtype)} for window in windows]

    def predict_sources(
        self,
        sources: Sequence[PageSource],
        *,
        entities: dict[str, object] | None = None,
        entity_predictor=None,
        pdf_dpi: float = 200,
        words: dict[str, dict] | None = None,
        return_images: bool = False,
    ) -> Iterator[tuple[PageSource, dict | Exception, Image.Image | None]]:
        """
        Load and predict pages `batch_size` at a time, yielding `(source, outcome, image)` in order, as
        [`~aetnet.inference.DocumentPredictor.predict_sources`] does (a page that fails has its exception as outcome).

        The entities come from exactly one of `entities`, a mapping of page names (or file names, stems, paths) to
        the page's entities in FUNSD's shape ([`parse_entities`]; the page's words are then theirs), or
        `entity_predictor`, a token classification `DocumentPredictor` whose predicted entities (from OCR, or from
        `words` as `DocumentPredictor.predict_sources` takes them) are linked.
        """
        if (entities is None) == (entity_predictor is None):
            raise ValueError("Give the pages' entities with exactly one of `entities` and `entity_predictor`.")
        if entity_predictor is not None:
            pages = entity_predictor.predict_sources(sources, pdf_dpi=pdf_dpi, words=words, return_images=True)
        else:
            pages = (self._annotated_page(source, entities, pdf_dpi) for source in sources)
        for batch in _batches(pages, self.batch_size):
            outcomes, prepared = [], []
            for source, result, image in batch:
                if not isinstance(result, Exception):
                    try:
                        result["task"] = RELATION_EXTRACTION
                        prepared.append((result, self.windows(result, image)))
                    except _PAGE_ERRORS as error:
                        result = error
                outcomes.append((source, result, image if return_images else None))
            self._link(prepared)
            yield from outcomes

    def _annotated_page(self, source: PageSource, entities: dict, pdf_dpi: float):
        """`(source, page dict or error, image)` of one page whose entities are given."""
        try:
            image = source.load(pdf_dpi)
            key = words_key_for(entities, source)
            if key is None:
                raise ValueError(f"no entry for page {source.name!r} in the entities (keys: {sorted(entities)[:5]})")
            parsed, dropped = parse_entities(entities[key], self.entity_labels)
            if dropped:
                logger.warning(f"{source.name}: {dropped} entities without words were left out.")
            number = None if source.index is None else source.index + 1
            result = entities_page(parsed, image, name=source.name, source=source.path, page_number=number)
            return source, result, image
        except _PAGE_ERRORS as error:
            return source, error, None


def _batches(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of `size` items (the last one shorter), drawn lazily: pages are loaded as they are needed."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


__all__ = ["RelationPredictor", "entities_page", "parse_entities"]
