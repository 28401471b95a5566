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
Copy a folder of page-classification split files (`train.jsonl`, `dev.jsonl`, `test.jsonl`, the `rvlcdip3` layout)
with each page's Tesseract OCR written into its line (`words`, `bboxes` on the 0-1000 scale), and the images beside.

`examples/run_rvlcdip.py` reads such files without OCR-ing, so the copy trains where Tesseract is not installed (a
lent GPU machine). OCR goes through the usual on-disk cache (`aetnet.data.ocr_cache.OCRCache`), so a rerun is quick.

    python benchmarks/inline_ocr.py ../shared/data/rvlcdip3 .gpu/data/rvlcdip3
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from aetnet.data import OCRCache, load_rvlcdip, ocr_dataset


SPLIT_FILES = {"train": "train.jsonl", "validation": "dev.jsonl", "test": "test.jsonl"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="Folder with the .jsonl split files and the images they name.")
    parser.add_argument("target", type=Path, help="Folder to write; its split files and images are replaced.")
    parser.add_argument("--ocr_cache_dir", default=None, help="OCR cache folder (default: aetnet's).")
    parser.add_argument("--ocr_num_workers", type=int, default=2, help="Tesseract processes.")
    args = parser.parse_args(argv)
    if args.source.resolve() == args.target.resolve():
        parser.error(f"target {args.target} is the source folder; give another")
    raw = load_rvlcdip(str(args.source))
    cache = OCRCache(args.ocr_cache_dir)
    args.target.mkdir(parents=True, exist_ok=True)
    for split, dataset in raw.items():
        dataset = ocr_dataset(dataset, cache, num_workers=args.ocr_num_workers, desc=f"OCR {split}")
        names = dataset.features["label"].names
        text = (args.source / SPLIT_FILES[split]).read_text(encoding="utf-8")
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        if len(lines) != len(dataset):
            raise ValueError(f"{SPLIT_FILES[split]}: {len(lines)} lines but {len(dataset)} pages were read")
        with open(args.target / SPLIT_FILES[split], "w", encoding="utf-8") as writer:
            for record, words, boxes, label in zip(lines, dataset["words"], dataset["bboxes"], dataset["label"]):
                if names[label] != str(record["label"]):
                    raise ValueError(f"{SPLIT_FILES[split]}: line order differs from the dataset at {record}")
                target_image = args.target / record["image"]
                target_image.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(args.source / record["image"], target_image)
                writer.write(json.dumps({**record, "words": words, "bboxes": boxes}) + "\n")
        words = sum(map(len, dataset["words"]))
        print(f"{split}: {len(lines)} pages, {words} words -> {args.target / SPLIT_FILES[split]}")
    print(f"OCR cache {cache.cache_dir}: {cache.hits} page(s) read from it, {cache.misses} OCR-ed now")


if __name__ == "__main__":
    main()
