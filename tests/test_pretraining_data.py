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
"""Tests of the readers of unlabelled pages (`aetnet.data.unlabeled_pages`): the folder layouts, the evaluated splits
that are never read, the OCR fallback, PDFs, text corpora, and the clear errors of bad input."""

from __future__ import annotations

import io
import json
import sys
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from aetnet.data import (
    OCRCache,
    UnlabeledPagesError,
    find_unlabeled_pages,
    generate_synthetic_forms,
    iter_unlabeled_pages,
    load_text_corpus,
    pdf_text_layer,
    read_unlabeled_page,
)


def write_pages(folder: Path, count: int = 3, seed: int = 0, words: str | None = "words") -> list[dict]:
    """`count` synthetic forms as `images/<id>.png` and, unless `words` is None, `<words>/<id>.json` (the vrdu-pages
    layout, pixel boxes); returns the forms (`words`, `bboxes` on 0-1000)."""
    forms = generate_synthetic_forms(count, seed=seed, word_level=True, image_size=(600, 800))
    (folder / "images").mkdir(parents=True, exist_ok=True)
    if words:
        (folder / words).mkdir(exist_ok=True)
    rows = []
    for form in forms:
        image = Image.open(io.BytesIO(form["image"]["bytes"])) if isinstance(form["image"], dict) else form["image"]
        image.save(folder / "images" / f"{form['id']}.png")
        width, height = image.size
        pixels = [
            [b[0] * width / 1000, b[1] * height / 1000, b[2] * width / 1000, b[3] * height / 1000]
            for b in form["bboxes"]
        ]
        if words:
            content = {"words": form["words"], "boxes": pixels}
            (folder / words / f"{form['id']}.json").write_text(json.dumps(content))
        rows.append(form)
    return rows


def fake_ocr(words=("scanned", "words")):
    """An OCR function of the cache that needs no Tesseract: the same words on every page."""

    def ocr(page, lang, config):
        return list(words), [[10 * i, 10, 10 * i + 8, 20] for i in range(len(words))]

    return ocr


def test_page_folder_with_words_gives_its_words_and_boxes(tmp_path):
    forms = write_pages(tmp_path / "pages")
    collection = find_unlabeled_pages([tmp_path / "pages"])
    assert [page.name for page in collection.pages] == [form["id"] for form in forms]
    assert not collection.skipped
    rows = list(iter_unlabeled_pages(collection.pages))
    for row, form in zip(rows, forms):
        assert row["id"] == form["id"]
        assert row["words"] == form["words"]
        assert all(abs(a - b) <= 1 for box, gold in zip(row["bboxes"], form["bboxes"]) for a, b in zip(box, gold))
        assert row["image"]["path"].endswith(".png")


def test_page_without_words_uses_the_ocr_cache_and_errors_clearly_without_ocr(tmp_path):
    write_pages(tmp_path / "scans", count=2, words=None)
    pages = find_unlabeled_pages([str(tmp_path / "scans")]).pages
    with pytest.raises(UnlabeledPagesError, match=r"--train_dirs .*scans.*no word from a words file.*OCR is off"):
        read_unlabeled_page(pages[0])
    cache = OCRCache(tmp_path / "cache", ocr_function=fake_ocr(), engine="fake")
    row = read_unlabeled_page(pages[0], cache)
    assert row["words"] == ["scanned", "words"]

    def missing_tesseract(page, lang, config):
        raise OSError("tesseract is not installed or it's not in your PATH")

    broken = OCRCache(tmp_path / "cache2", ocr_function=missing_tesseract, engine="missing")
    with pytest.raises(UnlabeledPagesError, match=r"--train_dirs .*scans.*OCR failed.*Tesseract"):
        read_unlabeled_page(pages[1], broken)


def test_page_without_any_word_is_counted_not_silently_dropped(tmp_path):
    write_pages(tmp_path / "scans", count=2, words=None)
    pages = find_unlabeled_pages([tmp_path / "scans"]).pages
    cache = OCRCache(tmp_path / "cache", ocr_function=fake_ocr(()), engine="empty")
    skipped = Counter()
    assert list(iter_unlabeled_pages(pages, cache, skipped)) == []
    assert skipped["page(s) without any word"] == 2


def test_empty_and_missing_folders_name_the_argument_and_value(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnlabeledPagesError, match=r"--train_dirs '.*empty': the folder holds no page"):
        find_unlabeled_pages([tmp_path / "empty"])
    with pytest.raises(UnlabeledPagesError, match=r"--pages '.*nowhere': no such folder"):
        find_unlabeled_pages([tmp_path / "nowhere"], argument="--pages")


def test_funsd_test_split_is_refused_and_skipped(tmp_path):
    funsd = tmp_path / "funsd"
    for split, count in (("training_data", 2), ("testing_data", 1)):
        write_pages(funsd / split, count=count, words=None)
    with pytest.raises(UnlabeledPagesError, match="testing_data is the benchmark's test split"):
        find_unlabeled_pages([funsd / "testing_data"])
    collection = find_unlabeled_pages([funsd])
    assert len(collection.pages) == 2
    assert all("training_data" in page.path for page in collection.pages)
    assert sum(collection.skipped.values()) == 1


def test_sroie_test_receipts_are_skipped_and_lines_give_words(tmp_path):
    sroie = tmp_path / "sroie"
    forms = write_pages(sroie, count=3, words=None)
    (sroie / "ocr").mkdir()
    for form in forms:
        lines = [{"text": "TOTAL 12.00", "box": [10, 10, 200, 30]}]
        (sroie / "ocr" / f"{form['id']}.json").write_text(json.dumps(lines))
    (sroie / "test.txt").write_text(forms[2]["id"] + "\n")
    for folder in (sroie, sroie / "images"):
        collection = find_unlabeled_pages([folder])
        assert [page.name for page in collection.pages] == [forms[0]["id"], forms[1]["id"]]
        assert collection.skipped["page(s) of a benchmark's evaluated split"] == 1
    row = read_unlabeled_page(find_unlabeled_pages([sroie]).pages[0])
    assert row["words"] == ["TOTAL", "12.00"]
    assert row["bboxes"][0] == row["bboxes"][1]


def test_rvlcdip_dev_images_are_never_read(tmp_path):
    root = tmp_path / "rvlcdip3"
    (root / "email").mkdir(parents=True)
    names = [f"doc_{i:06d}.png" for i in range(3)]
    for name in names:
        Image.new("L", (60, 80), 255).save(root / "email" / name)
    rows = [{"image": f"email/{name}", "label": "email"} for name in names]
    (root / "train.jsonl").write_text("\n".join(json.dumps(row) for row in rows[:2]))
    (root / "dev.jsonl").write_text(json.dumps(rows[2]))
    assert [page.name for page in find_unlabeled_pages([root]).pages] == ["doc_000000", "doc_000001"]
    collection = find_unlabeled_pages([root / "email"])
    assert [page.name for page in collection.pages] == ["doc_000000", "doc_000001"]
    assert collection.skipped["page(s) of a benchmark's evaluated split"] == 1


# A one-page PDF with the words "Total due" in its text layer (Helvetica, 24 pt, at (72, 700) of a letter page).
_PDF_OBJECTS = [
    "<< /Type /Catalog /Pages 2 0 R >>",
    "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
    "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
    None,
    "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
]


def write_text_pdf(path: Path) -> None:
    stream = "BT /F1 24 Tf 72 700 Td (Total due) Tj ET"
    objects = list(_PDF_OBJECTS)
    objects[3] = f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream"
    body, offsets = "%PDF-1.4\n", []
    for number, content in enumerate(objects, 1):
        offsets.append(len(body))
        body += f"{number} 0 obj\n{content}\nendobj\n"
    xref = len(body)
    body += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n"
    body += "".join(f"{offset:010d} 00000 n \n" for offset in offsets)
    body += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n"
    path.write_bytes(body.encode("latin-1"))


def test_pdf_words_come_from_the_text_layer(tmp_path):
    pytest.importorskip("pypdfium2")
    (tmp_path / "pdfs").mkdir()
    write_text_pdf(tmp_path / "pdfs" / "invoice.pdf")
    words, boxes = pdf_text_layer(str(tmp_path / "pdfs" / "invoice.pdf"), 0)
    assert words == ["Total", "due"]
    x0, y0, x1, y1 = boxes[0]
    assert 110 < x0 < 125 and 85 < y0 < y1 < 125 and boxes[1][0] > x1
    pages = find_unlabeled_pages([tmp_path / "pdfs"]).pages
    row = read_unlabeled_page(pages[0], pdf_dpi=36)
    assert row["words"] == ["Total", "due"] and row["image"]["bytes"] and row["image"]["path"] is None


def test_pdf_without_the_pdf_extra_names_the_argument(tmp_path, monkeypatch):
    (tmp_path / "pdfs").mkdir()
    write_text_pdf(tmp_path / "pdfs" / "invoice.pdf")
    monkeypatch.setitem(sys.modules, "pypdfium2", None)
    with pytest.raises(UnlabeledPagesError, match=r"--train_dirs '.*pdfs'.*invoice.pdf.*aetnet\[pdf\]"):
        find_unlabeled_pages([str(tmp_path / "pdfs")])


def test_text_corpus_reads_jsonl_and_plain_text(tmp_path):
    (tmp_path / "docs.jsonl").write_text('{"text": "first doc"}\n\n{"text": "second"}\n')
    (tmp_path / "more.txt").write_text("plain line\n\n")
    assert load_text_corpus([tmp_path / "docs.jsonl", tmp_path / "more.txt"]) == ["first doc", "second", "plain line"]
    (tmp_path / "bad.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(UnlabeledPagesError, match=r"--text_files '.*bad.jsonl': line 1 has no `text`"):
        load_text_corpus([tmp_path / "bad.jsonl"])
    with pytest.raises(UnlabeledPagesError, match="no such file"):
        load_text_corpus([tmp_path / "missing.jsonl"])
