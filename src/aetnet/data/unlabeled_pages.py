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
Readers of unlabelled pages for pre-training: folders of page images with their words, plain folders of images and
PDFs, and text-only corpora.

A folder given to [`find_unlabeled_pages`] is read in the first of these layouts that fits:

- `images/` with `words/<stem>.json` (`{"words": [...], "boxes": [[x0, y0, x1, y1], ...]}` in the image's pixels),
  `ocr/<stem>.json` (SROIE: text lines `{"text", "box"}`, each word gets its line's box) or
  `annotations/<stem>.json` (FUNSD: `form` entities with their `words`); an image without such a file falls back to
  OCR;
- a FUNSD release (`training_data/`, `testing_data/`): its training pages;
- a folder with `train.jsonl` (`{"image": ...}` per line, as rvlcdip3): the images it lists;
- any other folder: its images and PDFs (not recursive); a PDF's words come from its text layer.

Pages whose words are still unknown are read by Tesseract through an [`OCRCache`], so a second run does not OCR again.
Pages of a split that a benchmark evaluates on (FUNSD `testing_data`, rvlcdip3 `dev`, SROIE `test`) are never read:
pre-training on them would leak the test pages into every fine-tuned score. They are skipped and counted, and a folder
that is such a split is refused. Nothing is dropped silently: [`PageCollection.skipped`] and the `skipped` counter of
[`iter_unlabeled_pages`] count every page left out, by reason.

Words are returned with boxes on LayoutLMv3's 0-1000 grid (`bboxes`), the pages as `{"bytes", "path"}` dicts that
[`load_page_image`] and `with_page_pixels` read lazily.
"""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from transformers.utils import logging

from ..pages import IMAGE_EXTENSIONS, PageLoadError, PageSource, collect_page_sources
from .ocr_cache import OCRCache
from .reader_utils import clip_bbox, normalize_bbox


logger = logging.get_logger(__name__)

# Word files next to `images/`, in the order they are looked for, and the format each holds.
WORD_FOLDERS = (("words", "words"), ("ocr", "sroie"), ("annotations", "funsd"))


class UnlabeledPagesError(ValueError):
    """Input that cannot give pre-training pages; the message names the argument and the value at fault."""


@dataclass(frozen=True)
class UnlabeledPage:
    """
    One page to read. `path` is an image or a PDF (`index`: its 0-based page), `words_file` a file of its words in
    `words_format` (`"words"`, `"sroie"` or `"funsd"`, see the module), `folder` the input folder it was found in.
    """

    path: str
    name: str
    folder: str
    index: int | None = None
    words_file: str | None = None
    words_format: str | None = None


@dataclass
class PageCollection:
    """The pages found in the input folders, and how many were left out, by reason."""

    pages: list[UnlabeledPage] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)

    def report(self) -> str:
        """One line: pages found and pages skipped by reason."""
        skipped = ", ".join(f"{count} {reason}" for reason, count in sorted(self.skipped.items())) or "none"
        return f"{len(self.pages)} page(s) found; skipped: {skipped}"


def find_unlabeled_pages(folders: Iterable[str | os.PathLike], argument: str = "--train_dirs") -> PageCollection:
    """
    The pages of `folders` (see the module for the layouts), without decoding them.

    Raises:
        [`UnlabeledPagesError`]: naming `argument` and the folder, for a path that is no folder, a folder without a
            page, a benchmark's evaluated split, or a PDF that cannot be opened (e.g. without the `pdf` extra).
    """
    collection = PageCollection()
    folders = list(folders)
    if not folders:
        raise UnlabeledPagesError(f"{argument} names no folder")
    for raw in folders:
        folder = Path(raw)
        if not folder.is_dir():
            raise UnlabeledPagesError(f"{argument} {str(raw)!r}: no such folder")
        _refuse_evaluated_split(folder, argument)
        if (folder / "training_data").is_dir() and (folder / "testing_data").is_dir():
            evaluated = folder / "testing_data" / "images"
            count = len(_image_files(evaluated)) if evaluated.is_dir() else 0
            collection.skipped["FUNSD testing_data page(s) (a benchmark's test split)"] += count
            logger.warning(f"{argument} {str(raw)!r}: reading training_data only, not the {count} test pages.")
            folder = folder / "training_data"
        pages = _folder_pages(folder, str(raw), argument)
        excluded = _evaluated_files(folder)
        kept = [page for page in pages if os.path.realpath(page.path) not in excluded]
        if len(kept) < len(pages):
            collection.skipped["page(s) of a benchmark's evaluated split"] += len(pages) - len(kept)
            logger.warning(
                f"{argument} {str(raw)!r}: skipped {len(pages) - len(kept)} page(s) of a split a benchmark evaluates."
            )
        if not kept:
            raise UnlabeledPagesError(f"{argument} {str(raw)!r}: the folder holds no page (image or PDF) to read")
        collection.pages.extend(kept)
    return collection


def _refuse_evaluated_split(folder: Path, argument: str) -> None:
    """Refuse a folder that is (inside) FUNSD's `testing_data`."""
    if "testing_data" in folder.resolve().parts:
        raise UnlabeledPagesError(
            f"{argument} {str(folder)!r}: FUNSD testing_data is the benchmark's test split; pre-train on "
            "training_data (or the FUNSD folder, whose training pages are read)"
        )


def _evaluated_files(folder: Path) -> set[str]:
    """Real paths of the pages of evaluated splits that `folder` may hold: rvlcdip3's `dev.jsonl` images and SROIE's
    `test.txt` receipts, looked up in the folder and the two above it (e.g. given `sroie/images` or `rvlcdip3/email`)."""
    excluded = set()
    for base in (folder, folder.parent, folder.parent.parent):
        if (base / "dev.jsonl").is_file() and (base / "train.jsonl").is_file():
            for row in _jsonl(base / "dev.jsonl"):
                if "image" in row:
                    excluded.add(os.path.realpath(base / row["image"]))
        if (base / "test.txt").is_file() and (base / "images").is_dir():
            ids = set((base / "test.txt").read_text().split())
            excluded.update(os.path.realpath(path) for path in _image_files(base / "images") if path.stem in ids)
    return excluded


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _folder_pages(folder: Path, raw: str, argument: str) -> list[UnlabeledPage]:
    """The pages of one folder, in the first layout that fits it."""
    images = folder / "images"
    if images.is_dir():
        words_dir, words_format = next(
            ((folder / name, fmt) for name, fmt in WORD_FOLDERS if (folder / name).is_dir()), (None, None)
        )
        pages = []
        for path in _image_files(images):
            words_file = None if words_dir is None else words_dir / f"{path.stem}.json"
            has_words = words_file is not None and words_file.is_file()
            pages.append(
                UnlabeledPage(
                    str(path),
                    path.stem,
                    raw,
                    words_file=str(words_file) if has_words else None,
                    words_format=words_format if has_words else None,
                )
            )
        return pages
    if (folder / "train.jsonl").is_file():
        rows = _jsonl(folder / "train.jsonl")
        return [UnlabeledPage(str(folder / row["image"]), Path(row["image"]).stem, raw) for row in rows]
    sources, errors = collect_page_sources([folder])
    errors = [(path, message) for path, message in errors if path != str(folder)]
    if errors:
        path, message = errors[0]
        raise UnlabeledPagesError(f"{argument} {raw!r}: {path}: {message}")
    return [UnlabeledPage(source.path, source.name, raw, index=source.index) for source in sources]


def read_unlabeled_page(
    page: UnlabeledPage, ocr_cache: OCRCache | None = None, pdf_dpi: float = 200.0, argument: str = "--train_dirs"
) -> dict:
    """
    The page as a row: `id`, `image` (`{"bytes", "path"}`: the file's path, or a rendered PDF page's PNG bytes),
    `words` and `bboxes` (0-1000). Words come from the page's words file, else a PDF's text layer, else `ocr_cache`;
    `words` is empty when none of these finds a word.

    Raises:
        [`UnlabeledPagesError`]: no word comes from a words file or a text layer, and OCR is off (`ocr_cache=None`) or
            fails (e.g. Tesseract is not installed); an unreadable page or words file.
    """
    where = f"{argument} {page.folder!r}: page {page.name!r} ({page.path})"
    try:
        if page.index is not None and page.path.lower().endswith(".pdf"):
            image = PageSource(page.path, page.index, page.name).load(pdf_dpi)
            words, boxes = pdf_text_layer(page.path, page.index)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            cell, source = {"bytes": buffer.getvalue(), "path": None}, image
        else:
            with Image.open(page.path) as opened:
                size = opened.size
            cell, source = {"bytes": None, "path": page.path}, page.path
            words, boxes = _words_of_file(page, size) if page.words_file else ([], [])
    except (OSError, ValueError, KeyError, PageLoadError) as error:
        raise UnlabeledPagesError(f"{where}: {error}") from error
    if not words:
        if ocr_cache is None:
            raise UnlabeledPagesError(f"{where}: no word from a words file or a text layer, and OCR is off")
        try:
            words, boxes = ocr_cache(source)
        except Exception as error:  # pytesseract raises its own types when Tesseract is missing or fails
            raise UnlabeledPagesError(
                f"{where}: no word from a words file or a text layer, and OCR failed ({type(error).__name__}: "
                f"{error}); install Tesseract or give the words"
            ) from error
    boxes = [[min(max(int(v), 0), 1000) for v in box] for box in boxes]
    return {"id": page.name, "image": cell, "words": list(words), "bboxes": boxes}


def _words_of_file(page: UnlabeledPage, size: tuple[int, int]) -> tuple[list[str], list[list[int]]]:
    """Words and 0-1000 boxes of a words file in one of the `WORD_FOLDERS` formats (pixel boxes of the image)."""
    with open(page.words_file, encoding="utf-8") as handle:
        content = json.load(handle)
    pairs = []
    if page.words_format == "words":
        if len(content["words"]) != len(content["boxes"]):
            raise ValueError(f"{page.words_file}: {len(content['words'])} words but {len(content['boxes'])} boxes")
        pairs = list(zip(content["words"], content["boxes"]))
    elif page.words_format == "sroie":
        pairs = [(word, line["box"]) for line in content for word in line["text"].split()]
    elif page.words_format == "funsd":
        pairs = [(word["text"], word["box"]) for entity in content["form"] for word in entity["words"]]
    pairs = [(word.strip(), box) for word, box in pairs if word.strip()]
    width, height = size
    return [w for w, _ in pairs], [normalize_bbox(clip_bbox(b, width, height), width, height) for _, b in pairs]


def pdf_text_layer(path: str, index: int) -> tuple[list[str], list[list[int]]]:
    """The words of page `index` of a PDF's text layer (whitespace-separated runs of characters) with their boxes on
    the 0-1000 grid of the page; empty for a scanned PDF without text. Needs pypdfium2 (the `pdf` extra)."""
    try:
        import pypdfium2
    except ImportError as error:
        raise PageLoadError("reading PDFs needs pypdfium2: pip install 'aetnet[pdf]'") from error
    document = pypdfium2.PdfDocument(path)
    try:
        pdf_page = document[index]
        width, height = pdf_page.get_size()
        text_page = pdf_page.get_textpage()
        words, boxes, current, box = [], [], [], None
        for i in range(text_page.count_chars()):
            char = text_page.get_text_range(i, 1)
            if not char or char.isspace():
                if current:
                    words.append("".join(current))
                    boxes.append(box)
                current, box = [], None
                continue
            left, bottom, right, top = text_page.get_charbox(i)
            char_box = [left, height - top, right, height - bottom]
            box = char_box if box is None else [*map(min, box[:2], char_box[:2]), *map(max, box[2:], char_box[2:])]
            current.append(char)
        if current:
            words.append("".join(current))
            boxes.append(box)
    finally:
        document.close()
    return words, [normalize_bbox(clip_bbox(b, width, height), width, height) for b in boxes]


def iter_unlabeled_pages(
    pages: Iterable[UnlabeledPage],
    ocr_cache: OCRCache | None = None,
    skipped: Counter | None = None,
    pdf_dpi: float = 200.0,
    argument: str = "--train_dirs",
) -> Iterator[dict]:
    """
    [`read_unlabeled_page`] of every page, in order; a page on which no word is found (not even by OCR) is left out,
    counted in `skipped["page(s) without any word"]` and logged by name.
    """
    for page in pages:
        row = read_unlabeled_page(page, ocr_cache, pdf_dpi, argument)
        if not row["words"]:
            if skipped is not None:
                skipped["page(s) without any word"] += 1
            logger.warning(f"{argument} {page.folder!r}: page {page.name!r} has no word; skipped.")
            continue
        yield row


def load_text_corpus(paths: Iterable[str | os.PathLike], argument: str = "--text_files") -> list[str]:
    """
    The documents of text corpora: `.jsonl` files with a `text` field per line, or plain text files (one document
    per non-empty line). Empty documents are left out.

    Raises:
        [`UnlabeledPagesError`]: naming `argument` and the file, for a missing file, a line without `text`, or a
            corpus without any document.
    """
    paths, texts = list(paths), []
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise UnlabeledPagesError(f"{argument} {str(raw)!r}: no such file")
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                if path.suffix == ".jsonl":
                    row = json.loads(line)
                    if not isinstance(row, dict) or "text" not in row:
                        raise UnlabeledPagesError(f"{argument} {str(raw)!r}: line {number} has no `text` field")
                    line = row["text"]
                if line.strip():
                    texts.append(line.strip())
    if not texts:
        raise UnlabeledPagesError(f"{argument} {[str(p) for p in paths]!r}: the corpus holds no text")
    return texts


__all__ = [
    "WORD_FOLDERS",
    "PageCollection",
    "UnlabeledPage",
    "UnlabeledPagesError",
    "find_unlabeled_pages",
    "iter_unlabeled_pages",
    "load_text_corpus",
    "pdf_text_layer",
    "read_unlabeled_page",
]
