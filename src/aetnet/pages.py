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
Pages for [`~aetnet.inference.DocumentPredictor`] and `aetnet predict`: image files, folders and PDFs (rendered with
pypdfium2) expanded into page sources, decoded into RGB images, and pages in memory with their words and boxes when
they are known.

This module imports only numpy and PIL (pypdfium2 when a PDF is read), so that checkpoints can ship it with their
pipeline as remote code.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from transformers.utils import logging


logger = logging.get_logger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".pbm")
PDF_EXTENSIONS = (".pdf",)


class PageLoadError(ValueError):
    """A path that does not exist, is not an image or a PDF, or cannot be decoded."""


def _pypdfium2():
    """pypdfium2, imported when a PDF is read (an optional dependency: `pip install 'aetnet[pdf]'`)."""
    try:
        import pypdfium2
    except ImportError as error:
        raise PageLoadError("reading PDFs needs pypdfium2: pip install 'aetnet[pdf]'") from error
    return pypdfium2


@dataclass(frozen=True)
class PageSource:
    """One page to load: `index` is the 0-based page of a PDF or multi-frame TIFF, `None` for a plain image."""

    path: str
    index: int | None
    name: str

    def load(self, pdf_dpi: float = 200) -> Image.Image:
        """Decode the page into an RGB image (EXIF rotation applied, PDF pages rendered at `pdf_dpi`)."""
        try:
            if self.path.lower().endswith(PDF_EXTENSIONS):
                document = _pypdfium2().PdfDocument(self.path)
                try:
                    return document[self.index].render(scale=pdf_dpi / 72).to_pil().convert("RGB")
                finally:
                    document.close()
            with Image.open(self.path) as image:
                if self.index is not None:
                    image.seek(self.index)
                return ImageOps.exif_transpose(image).convert("RGB")
        except Exception as error:  # PIL and pdfium raise many types for damaged files
            raise PageLoadError(f"unreadable {'image' if self.index is None else 'page'}: {error}") from error


@dataclass
class Page:
    """A page in memory, with its words and boxes when they are known (else Tesseract reads them)."""

    image: Image.Image
    name: str = "page"
    source: str | None = None
    page_number: int | None = None
    words: list[str] | None = None
    boxes: list[list[float]] | None = None
    boxes_normalized: bool = False


def collect_page_sources(paths: Iterable[str | os.PathLike]) -> tuple[list[PageSource], list[tuple[str, str]]]:
    """
    Expand files and folders into pages without decoding them.

    Folders contribute their images and PDFs (sorted, not recursive); other files in them are skipped with a warning
    that counts them. A PDF gives one source per page (`<stem>_page<N>`), a multi-frame TIFF one per frame.

    Returns:
        `(sources, errors)`: the pages, and `(path, message)` for every path that cannot be used.
    """
    sources, errors = [], []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            entries = [p for p in path.iterdir() if p.is_file()]
            files = sorted(p for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS + PDF_EXTENSIONS)
            skipped = len(entries) - len(files)
            if skipped:
                logger.warning(f"{path}: skipped {skipped} file(s) that are not images or PDFs.")
            if not files:
                errors.append((str(path), "folder holds no image or PDF file"))
        elif path.is_file():
            files = [path]
        else:
            errors.append((str(path), "no such file or folder"))
            continue
        for file in files:
            try:
                sources.extend(_file_pages(file))
            except PageLoadError as error:
                errors.append((str(file), str(error)))
    return sources, errors


def _file_pages(file: Path) -> list[PageSource]:
    if file.suffix.lower() in PDF_EXTENSIONS:
        pypdfium2 = _pypdfium2()
        try:
            document = pypdfium2.PdfDocument(str(file))
        except Exception as error:
            raise PageLoadError(f"not a readable PDF ({error})") from error
        try:
            count = len(document)
        finally:
            document.close()
        if count == 0:
            raise PageLoadError("PDF has no pages")
        return [PageSource(str(file), i, f"{file.stem}_page{i + 1}") for i in range(count)]
    try:
        with Image.open(file) as image:
            frames = getattr(image, "n_frames", 1) if image.format == "TIFF" else 1
    except (UnidentifiedImageError, OSError) as error:
        raise PageLoadError(f"not a readable image ({error})") from error
    if frames == 1:
        return [PageSource(str(file), None, file.stem)]
    return [PageSource(str(file), i, f"{file.stem}_page{i + 1}") for i in range(frames)]


def as_page(
    item, index: int = 0, name: str | None = None, source: str | None = None, page_number: int | None = None
) -> Page:
    """A [`Page`] from a `Page`, a PIL image / array, or a dict `{"image", "words", "boxes", "boxes_normalized"}`."""
    if isinstance(item, Page):
        return item
    entry = item if isinstance(item, dict) else {"image": item}
    where = f"page {name!r}" if name else f"`inputs[{index}]`"
    if "image" not in entry:
        raise ValueError(f"{where} is a dict without an `image`")
    image = entry["image"]
    if isinstance(image, (str, os.PathLike)):
        image = PageSource(str(image), None, Path(image).stem).load()
    elif not isinstance(image, Image.Image):
        image = Image.fromarray(np.asarray(image))
    words, boxes = entry.get("words"), entry.get("boxes")
    if (words is None) != (boxes is None):
        raise ValueError(f"{where} must give both `words` and `boxes`, or neither (to run OCR)")
    if words is not None and (not isinstance(words, list) or not isinstance(boxes, list) or len(words) != len(boxes)):
        raise ValueError(
            f"{where} needs lists `words` and `boxes` of equal length, got "
            f"{type(words).__name__} of {len(words) if hasattr(words, '__len__') else '?'} and "
            f"{type(boxes).__name__} of {len(boxes) if hasattr(boxes, '__len__') else '?'}"
        )
    return Page(
        image=image.convert("RGB"),
        name=name or f"page{index}",
        source=source,
        page_number=page_number,
        words=words,
        boxes=boxes,
        boxes_normalized=bool(entry.get("boxes_normalized", False)),
    )


def load_pages(inputs, pdf_dpi: float = 200) -> list[Page]:
    """Every page of `inputs` (a path to an image, folder or PDF, an image, a dict or a [`Page`], or a list of these)
    in memory, PDF pages rendered at `pdf_dpi`; raises [`PageLoadError`] for the first path that cannot be read."""
    items = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    pages = []
    for index, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            sources, errors = collect_page_sources([item])
            if errors:
                raise PageLoadError(f"{errors[0][0]}: {errors[0][1]}")
            for source in sources:
                number = None if source.index is None else source.index + 1
                pages.append(Page(source.load(pdf_dpi), source.name, source.path, number))
        else:
            pages.append(as_page(item, index))
    return pages


def words_key_for(words: dict[str, dict], source: PageSource) -> str | None:
    """The key of a page in a `--words-json` mapping: its page name, file name, stem or path; `None` if absent."""
    path = Path(source.path)
    for key in (source.name, path.name, path.stem, source.path, str(path.resolve())):
        if key in words:
            return key
    return None


def words_entry(words: dict[str, dict], source: PageSource) -> dict:
    key = words_key_for(words, source)
    entry = None if key is None else words[key]
    if entry is None:
        raise ValueError(f"no entry for page {source.name!r} in the words JSON (keys: {sorted(words)[:5]})")
    if not isinstance(entry, dict):
        raise ValueError(f"the words JSON entry of page {source.name!r} must be an object, got {type(entry).__name__}")
    return entry


__all__ = [
    "IMAGE_EXTENSIONS",
    "PDF_EXTENSIONS",
    "Page",
    "PageLoadError",
    "PageSource",
    "as_page",
    "collect_page_sources",
    "load_pages",
    "words_entry",
    "words_key_for",
]
