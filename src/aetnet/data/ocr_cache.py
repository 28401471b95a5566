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
Tesseract OCR of page images with an on-disk cache, and lazy page pixels for datasets of page images.

Tesseract needs seconds per page, so running it inside `dataset.map` at every epoch or every run is the slowest part
of a document-classification or DocVQA pipeline. [`OCRCache`] runs it once per distinct page and keeps the words
and boxes in a folder of small JSON files, keyed by a SHA-256 of the page content and of the OCR settings (engine and
version, language, extra flags): a second epoch, a second run or a second script reading the same pages does not run
OCR again, and changing a setting never returns stale words.

The words and boxes are those of the processor's own `apply_ocr=True` path (the stock LayoutLMv3 `apply_tesseract`):
empty words dropped, boxes normalised to 0-1000 by the page size.

[`with_page_pixels`] is the image side of the same idea: a dataset of windows keeps only the path of its page, and
the processor's pixel values are computed when a batch is drawn, so a large collection of pages (RVL-CDIP has
400,000) never has to hold `3 x 224 x 224` floats per page in memory or on disk.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image
from transformers.utils import logging

from ..processing_images import run_tesseract as _tesseract  # the default engine; tests replace it here
from ..processing_images import to_rgb_image


logger = logging.get_logger(__name__)

OCR_CACHE_ENV = "AETNET_OCR_CACHE"
_CACHE_FORMAT = 1

OCRFunction = Callable[[Image.Image, str, str], tuple[list[str], list[list[int]]]]


def default_ocr_cache_dir() -> Path:
    """`$AETNET_OCR_CACHE`, else `$XDG_CACHE_HOME/aetnet/ocr`, else `~/.cache/aetnet/ocr`."""
    if os.environ.get(OCR_CACHE_ENV):
        return Path(os.environ[OCR_CACHE_ENV]).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache_home) / "aetnet" / "ocr"


def load_page_image(image) -> Image.Image:
    """
    A page as an 8-bit RGB PIL image, converted exactly as [`AETNetProcessor`] converts its inputs.

    Accepts a path, a PIL image, a numpy array / torch tensor, or a `{"bytes": ..., "path": ...}` dict (a
    `datasets.Image(decode=False)` cell).
    """
    if isinstance(image, dict):
        if image.get("bytes") is not None:
            image = Image.open(io.BytesIO(image["bytes"]))
        elif image.get("path"):
            image = image["path"]
        else:
            raise ValueError(f"An image dict needs `bytes` or `path`, got keys {sorted(image)}")
    if isinstance(image, (str, os.PathLike)):
        try:
            with Image.open(image) as opened:
                opened.load()
                image = opened.copy()  # closing the file releases the pixels of the opened image
        except (OSError, Image.DecompressionBombError) as error:
            raise ValueError(f"Cannot read the page image {os.fspath(image)!r}: {error}") from None
    return to_rgb_image(image, 0)


@contextmanager
def _single_threaded_tesseract(enabled: bool) -> Iterator[None]:
    """Tesseract's OpenMP threads fight each other (and parallel workers) on a small CPU: one page on one thread is
    several times faster there. Applies to the Tesseract processes started inside the block, unless the user set
    `OMP_THREAD_LIMIT` already."""
    if not enabled or "OMP_THREAD_LIMIT" in os.environ:
        yield
        return
    os.environ["OMP_THREAD_LIMIT"] = "1"
    try:
        yield
    finally:
        os.environ.pop("OMP_THREAD_LIMIT", None)


class OCRCache:
    r"""
    OCR with a disk cache: `cache(page)` returns `(words, boxes)` for one page, `cache.ocr_pages(pages)` for many
    (with a progress bar while OCR runs and, optionally, several Tesseract processes at once).

    The key of a page is the SHA-256 of its content and of the settings: the raw file bytes for a path (or a
    `datasets.Image(decode=False)` dict with bytes), the decoded RGB pixels and size for an in-memory image. Entries
    are `<cache_dir>/<key[:2]>/<key>.json`, written atomically, so several processes may share a folder. An
    unreadable entry is reported and recomputed.

    Args:
        cache_dir (`str` or `os.PathLike`, *optional*): where entries live; see [`default_ocr_cache_dir`].
        ocr_lang (`str`, *optional*, defaults to `"eng"`): Tesseract language(s), e.g. `"eng+deu"`.
        tesseract_config (`str`, *optional*, defaults to `""`): extra Tesseract flags, e.g. `"--psm 6"`.
        ocr_function (`Callable`, *optional*): `(page, ocr_lang, tesseract_config) -> (words, boxes)` with boxes on
            the 0-1000 scale, to use another OCR engine; defaults to Tesseract through `pytesseract`.
        engine (`str`, *optional*): the name of the engine in the key; defaults to `"tesseract <version>"`, or the
            qualified name of `ocr_function`. Change it when the engine changes so that old entries are not reused.
        single_threaded_tesseract (`bool`, *optional*, defaults to `True`): run Tesseract with
            `OMP_THREAD_LIMIT=1` (unless already set).
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike | None = None,
        ocr_lang: str = "eng",
        tesseract_config: str = "",
        ocr_function: OCRFunction | None = None,
        engine: str | None = None,
        single_threaded_tesseract: bool = True,
    ):
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_ocr_cache_dir()
        self.ocr_lang = ocr_lang
        self.tesseract_config = tesseract_config or ""
        self.ocr_function = ocr_function or _tesseract
        if engine is None:
            if ocr_function is None:
                import pytesseract

                engine = f"tesseract {pytesseract.get_tesseract_version()}"
            else:
                name = getattr(ocr_function, "__qualname__", repr(ocr_function))
                engine = f"{getattr(ocr_function, '__module__', '')}.{name}"
        self.engine = engine
        self.single_threaded_tesseract = single_threaded_tesseract and ocr_function is None
        self.hits = 0
        self.misses = 0
        settings = json.dumps(
            {"format": _CACHE_FORMAT, "engine": engine, "lang": ocr_lang, "config": self.tesseract_config},
            sort_keys=True,
        )
        self._settings_digest = hashlib.sha256(settings.encode()).hexdigest()

    def key(self, image) -> str:
        """The cache key of a page (see the class docstring)."""
        digest = hashlib.sha256(self._settings_digest.encode())
        if isinstance(image, dict) and image.get("bytes") is not None:
            digest.update(b"file:" + image["bytes"])
        elif isinstance(image, (str, os.PathLike)) or isinstance(image, dict):
            path = image["path"] if isinstance(image, dict) else image
            try:
                with open(path, "rb") as handle:
                    digest.update(b"file:")
                    for chunk in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(chunk)
            except OSError as error:
                raise ValueError(f"Cannot read the page image {os.fspath(path)!r}: {error}") from None
        else:
            page = load_page_image(image)
            digest.update(f"pixels:{page.size[0]}x{page.size[1]}:".encode() + page.tobytes())
        return digest.hexdigest()

    def _entry_path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    def lookup(self, image) -> tuple[list[str], list[list[int]]] | None:
        """The cached `(words, boxes)` of a page, or `None` when it has not been OCR-ed with these settings."""
        return self._read(self.key(image))

    def _read(self, key: str) -> tuple[list[str], list[list[int]]] | None:
        path = self._entry_path(key)
        if not path.is_file():
            return None
        try:
            with open(path, encoding="utf-8") as handle:
                entry = json.load(handle)
            words, boxes = entry["words"], entry["boxes"]
            if len(words) != len(boxes):
                raise ValueError(f"{len(words)} words but {len(boxes)} boxes")
        except (OSError, ValueError, KeyError, TypeError) as error:
            logger.warning(f"Unreadable OCR cache entry {path} ({error}); the page is OCR-ed again.")
            return None
        return words, boxes

    def _write(self, key: str, words: list[str], boxes: list[list[int]], size: tuple[int, int]) -> None:
        path = self._entry_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {
            "words": words,
            "boxes": boxes,
            "width": size[0],
            "height": size[1],
            "engine": self.engine,
            "lang": self.ocr_lang,
            "config": self.tesseract_config,
        }
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump(entry, handle)
            os.replace(temporary, path)
        except BaseException:
            if os.path.exists(temporary):
                os.remove(temporary)
            raise

    def _run(self, image, key: str) -> tuple[list[str], list[list[int]]]:
        page = load_page_image(image)
        words, boxes = self.ocr_function(page, self.ocr_lang, self.tesseract_config)
        words, boxes = list(words), [list(map(int, box)) for box in boxes]
        if len(words) != len(boxes):
            raise ValueError(f"The OCR function returned {len(words)} words but {len(boxes)} boxes.")
        self._write(key, words, boxes, page.size)
        return words, boxes

    def __call__(self, image) -> tuple[list[str], list[list[int]]]:
        """`(words, boxes)` of one page (boxes on the 0-1000 scale), from the cache or from OCR."""
        return self.ocr_pages([image], show_progress=False)[0]

    def ocr_pages(
        self,
        images: Sequence,
        num_workers: int = 1,
        show_progress: bool = True,
        desc: str = "OCR",
    ) -> list[tuple[list[str], list[list[int]]]]:
        """
        `(words, boxes)` for every page, in order. Pages already in the cache are read from it; the others are
        OCR-ed (each distinct page once, even when it occurs several times, e.g. one page with many questions) with
        a `tqdm` progress bar, and stored.

        Args:
            images (`Sequence`): pages as paths, PIL images, arrays or `datasets.Image(decode=False)` dicts.
            num_workers (`int`, *optional*, defaults to 1): Tesseract processes run at once (threads that wait on
                them); about the number of CPU cores is best.
            show_progress (`bool`, *optional*, defaults to `True`): show the progress bar.
            desc (`str`, *optional*): the progress bar's label.
        """
        if num_workers < 1:
            raise ValueError(f"`num_workers` must be >= 1, got {num_workers}")
        keys = [self.key(image) for image in images]
        results: dict[str, tuple[list[str], list[list[int]]]] = {}
        todo: dict[str, object] = {}
        for key, image in zip(keys, images):
            if key in results or key in todo:
                continue
            cached = self._read(key)
            if cached is None:
                todo[key] = image
            else:
                results[key] = cached
        self.hits += len(results)
        self.misses += len(todo)
        if todo:
            from tqdm.auto import tqdm

            logger.info(
                f"OCR: {len(results)} distinct page(s) found in the cache {self.cache_dir}, {len(todo)} to OCR."
            )
            with (
                _single_threaded_tesseract(self.single_threaded_tesseract),
                tqdm(total=len(todo), desc=desc, unit="page", disable=not show_progress) as progress,
            ):
                if num_workers == 1:
                    for key, image in todo.items():
                        results[key] = self._run(image, key)
                        progress.update()
                else:
                    with ThreadPoolExecutor(max_workers=num_workers) as pool:
                        futures = {pool.submit(self._run, image, key): key for key, image in todo.items()}
                        for future in as_completed(futures):
                            results[futures[future]] = future.result()
                            progress.update()
        return [results[key] for key in keys]


def ocr_dataset(
    dataset,
    cache: OCRCache,
    image_column: str = "image",
    num_workers: int = 1,
    show_progress: bool = True,
    desc: str = "OCR",
):
    """
    Add `words` and `bboxes` (0-1000) columns to a dataset of pages, from `cache` (OCR on a miss).

    Rows that share a page (several questions on one DocVQA page) are OCR-ed once. A dataset that already has both
    columns is returned unchanged, so readers may carry their own OCR.

    Returns:
        `datasets.Dataset`: the dataset with `words` and `bboxes`; pages without text get empty lists (their number
        is logged as a warning, since such rows carry no text for the model).
    """
    if "words" in dataset.column_names and "bboxes" in dataset.column_names:
        return dataset
    if image_column not in dataset.column_names:
        raise ValueError(f"`image_column` {image_column!r} is not a column of the dataset {dataset.column_names}")
    for column in ("words", "bboxes"):
        if column in dataset.column_names:
            dataset = dataset.remove_columns(column)
    results = cache.ocr_pages(dataset[image_column], num_workers=num_workers, show_progress=show_progress, desc=desc)
    empty = sum(not words for words, _ in results)
    if empty:
        logger.warning(f"{empty} of {len(results)} row(s) have a page on which OCR found no word.")
    import datasets

    dataset = dataset.add_column(
        "words", [words for words, _ in results], feature=datasets.Sequence(datasets.Value("string"))
    )
    return dataset.add_column(
        "bboxes",
        [boxes for _, boxes in results],
        feature=datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
    )


def with_page_pixels(dataset, image_processor, image_column: str = "image", max_cached_pages: int = 32):
    """
    `dataset.with_transform(...)` that adds `pixel_values` to every row when it is read: the page named in
    `image_column` (a path, or any input of [`load_page_image`]) through `image_processor`.

    Rows of the same page (e.g. the windows of a long document, or the questions on one DocVQA page) reuse the last
    `max_cached_pages` pages. The transform needs `image_column` in every batch, so a `Trainer` given the result
    must run with `remove_unused_columns=False` (the AETNet collator drops the extra columns itself).

    Args:
        dataset (`datasets.Dataset`): rows with `image_column`.
        image_processor (`LayoutLMv3ImageProcessorPil`): called with `apply_ocr=False, return_tensors=None`, as
            the processor calls it.
        image_column (`str`, *optional*, defaults to `"image"`): the column naming each row's page.
        max_cached_pages (`int`, *optional*, defaults to 32): processed pages kept per process.

    Returns:
        `datasets.Dataset`: the same rows, plus `pixel_values` (`np.ndarray` of shape `(3, height, width)`).
    """
    if image_column not in dataset.column_names:
        raise ValueError(f"`image_column` {image_column!r} is not a column of the dataset {dataset.column_names}")
    cache: OrderedDict = OrderedDict()

    def pixels(page) -> np.ndarray:
        key = os.fspath(page) if isinstance(page, (str, os.PathLike)) else None
        if key is not None and key in cache:
            cache.move_to_end(key)
            return cache[key]
        value = image_processor(load_page_image(page), apply_ocr=False, return_tensors=None)["pixel_values"][0]
        if key is not None:
            cache[key] = value
            if len(cache) > max_cached_pages:
                cache.popitem(last=False)
        return value

    def transform(batch: dict) -> dict:
        if image_column not in batch:
            raise ValueError(
                f"The batch has no {image_column!r} column (got {sorted(batch)}); a Trainer must run with "
                "`remove_unused_columns=False` to keep it."
            )
        batch["pixel_values"] = [pixels(page) for page in batch[image_column]]
        return batch

    return dataset.with_transform(transform)


__all__ = ["OCRCache", "OCR_CACHE_ENV", "default_ocr_cache_dir", "load_page_image", "ocr_dataset", "with_page_pixels"]
