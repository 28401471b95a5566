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
"""Tests of the on-disk OCR cache (keys, hits and misses, corrupt entries, workers, progress bar), of `ocr_dataset`
and `with_page_pixels`, and one real Tesseract run on a small rendered page."""

from __future__ import annotations

import json
import logging
import shutil

import datasets
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from transformers import LayoutLMv3ImageProcessorPil

import aetnet.data.ocr_cache as ocr_cache_module
from aetnet import AETNetProcessor
from aetnet.data.ocr_cache import (
    OCR_CACHE_ENV,
    OCRCache,
    default_ocr_cache_dir,
    load_page_image,
    ocr_dataset,
    with_page_pixels,
)
from aetnet.data.tokenizer_training import train_layoutlmv3_tokenizer


def render_page(lines: list[str], size: tuple[int, int] = (420, 160)) -> Image.Image:
    page = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=22)
    for index, line in enumerate(lines):
        draw.text((12, 12 + 44 * index), line, fill="black", font=font)
    return page


class FakeOCR:
    """An OCR engine that counts its calls and returns one word per page: the page's width."""

    def __init__(self):
        self.calls = 0

    def __call__(self, page, lang, config):
        self.calls += 1
        return [f"w{page.size[0]}", lang], [[0, 0, 10, 10], [10, 10, 20, 20]]


@pytest.fixture
def pages(tmp_path):
    paths = []
    for index, width in enumerate((30, 31, 32)):
        path = tmp_path / "pages" / f"page{index}.png"
        path.parent.mkdir(exist_ok=True)
        Image.new("L", (width, 20), 200 + index).save(path)
        paths.append(path)
    return paths


def test_hits_misses_and_content_keys(tmp_path, pages):
    engine = FakeOCR()
    cache = OCRCache(tmp_path / "cache", ocr_function=engine, engine="fake")
    results = cache.ocr_pages([pages[0], pages[1], pages[0]], show_progress=False)
    assert [words[0] for words, _ in results] == ["w30", "w31", "w30"]
    assert engine.calls == 2 and (cache.hits, cache.misses) == (0, 2)  # the repeated page is OCR-ed once

    # A second cache on the same folder (a second run) reads everything back; a copy of a page under another name
    # has the same content, hence the same key.
    copy = tmp_path / "copy.png"
    shutil.copy(pages[1], copy)
    again = OCRCache(tmp_path / "cache", ocr_function=engine, engine="fake")
    assert again.ocr_pages([pages[0], copy], show_progress=False) == [results[0], results[1]]
    assert engine.calls == 2 and (again.hits, again.misses) == (2, 0)
    assert again.key(copy) == again.key(pages[1]) != again.key(pages[0])

    # Other settings never reuse an entry: another language, other flags, another engine name.
    for other in (
        OCRCache(tmp_path / "cache", ocr_lang="deu", ocr_function=engine, engine="fake"),
        OCRCache(tmp_path / "cache", tesseract_config="--psm 6", ocr_function=engine, engine="fake"),
        OCRCache(tmp_path / "cache", ocr_function=engine, engine="fake 2"),
    ):
        calls = engine.calls
        other(pages[0])
        assert engine.calls == calls + 1
    assert OCRCache(tmp_path / "cache", ocr_lang="deu", ocr_function=engine, engine="fake")(pages[0])[0] == [
        "w30",
        "deu",
    ]

    # In-memory images are keyed by their decoded pixels: the same pixels hit, other pixels miss.
    memory = OCRCache(tmp_path / "cache", ocr_function=engine, engine="fake")
    image = load_page_image(pages[2])
    memory(image)
    calls = engine.calls
    memory(np.asarray(image).copy())
    assert engine.calls == calls
    memory(Image.new("RGB", image.size, "black"))
    assert engine.calls == calls + 1


def test_entries_on_disk_and_corrupt_entries(tmp_path, pages, caplog):
    engine = FakeOCR()
    cache = OCRCache(tmp_path / "cache", ocr_function=engine, engine="fake")
    words, boxes = cache(pages[0])
    key = cache.key(pages[0])
    entry = tmp_path / "cache" / key[:2] / f"{key}.json"
    stored = json.loads(entry.read_text())
    assert (stored["words"], stored["boxes"], stored["width"], stored["height"]) == (words, boxes, 30, 20)
    assert not list((tmp_path / "cache").rglob(".tmp-*"))  # written atomically, nothing left behind

    entry.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="aetnet.data.ocr_cache"):
        assert cache(pages[0]) == (words, boxes)
    assert engine.calls == 2 and "Unreadable OCR cache entry" in caplog.text
    assert json.loads(entry.read_text())["words"] == words  # repaired


def test_workers_keep_order_and_progress_bar(tmp_path, pages, capsys):
    engine = FakeOCR()
    cache = OCRCache(tmp_path / "cache", ocr_function=engine, engine="fake")
    results = cache.ocr_pages(pages, num_workers=3, desc="OCR test")
    assert [words[0] for words, _ in results] == ["w30", "w31", "w32"]
    assert "OCR test" in capsys.readouterr().err and engine.calls == 3
    with pytest.raises(ValueError, match="num_workers"):
        cache.ocr_pages(pages, num_workers=0)
    with pytest.raises(ValueError, match="Cannot read the page image"):
        cache.ocr_pages([tmp_path / "missing.png"])


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv(OCR_CACHE_ENV, str(tmp_path / "here"))
    assert default_ocr_cache_dir() == tmp_path / "here"
    monkeypatch.delenv(OCR_CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_ocr_cache_dir() == tmp_path / "xdg" / "aetnet" / "ocr"


def test_ocr_dataset_and_lazy_page_pixels(tmp_path, pages, monkeypatch, caplog):
    engine = FakeOCR()
    cache = OCRCache(tmp_path / "cache", ocr_function=engine, engine="fake")
    rows = datasets.Dataset.from_dict({"image": [str(pages[0]), str(pages[1]), str(pages[0])], "label": [0, 1, 0]})
    with_words = ocr_dataset(rows, cache, show_progress=False)
    assert with_words["words"] == [["w30", "eng"], ["w31", "eng"], ["w30", "eng"]] and engine.calls == 2
    assert ocr_dataset(with_words, cache) is with_words  # data that carry OCR are left alone

    blank = datasets.Dataset.from_dict({"image": [str(pages[2])]})
    silent = OCRCache(tmp_path / "cache", ocr_function=lambda page, lang, config: ([], []), engine="none")
    with caplog.at_level(logging.WARNING, logger="aetnet.data.ocr_cache"):
        empty = ocr_dataset(blank, silent, show_progress=False)
    assert empty["words"] == [[]] and empty["bboxes"] == [[]] and "found no word" in caplog.text

    loads = []
    original = ocr_cache_module.load_page_image
    monkeypatch.setattr(ocr_cache_module, "load_page_image", lambda page: loads.append(page) or original(page))
    image_processor = LayoutLMv3ImageProcessorPil(apply_ocr=False, size={"height": 16, "width": 16})
    lazy = with_page_pixels(with_words, image_processor)
    batch = lazy[:3]
    assert np.asarray(batch["pixel_values"]).shape == (3, 3, 16, 16)
    assert batch["label"] == [0, 1, 0] and len(loads) == 2  # the repeated page is decoded once
    assert np.asarray(lazy[1]["pixel_values"]).shape == (3, 16, 16)
    with pytest.raises(ValueError, match="image_column"):
        with_page_pixels(with_words.remove_columns("image"), image_processor)


def test_real_tesseract_matches_the_processor_and_is_cached(tmp_path, monkeypatch):
    page = render_page(["Invoice number 12345", "Total amount 250"])
    path = tmp_path / "invoice.png"
    page.save(path)
    cache = OCRCache(tmp_path / "cache")
    assert cache.engine.startswith("tesseract ")
    words, boxes = cache(path)
    assert {"Invoice", "number", "12345", "Total"} <= set(words)
    assert len(words) == len(boxes) and all(0 <= c <= 1000 for box in boxes for c in box)

    tokenizer = train_layoutlmv3_tokenizer(["invoice number total amount"], vocab_size=300)
    processor = AETNetProcessor(image_processor=LayoutLMv3ImageProcessorPil(apply_ocr=True), tokenizer=tokenizer)
    assert processor.apply_tesseract(page) == (words, boxes)  # the same words and boxes as `apply_ocr=True`

    def no_tesseract(*args):
        raise AssertionError("Tesseract ran although the page is cached")

    monkeypatch.setattr(ocr_cache_module, "_tesseract", no_tesseract)
    assert OCRCache(tmp_path / "cache")(path) == (words, boxes)
