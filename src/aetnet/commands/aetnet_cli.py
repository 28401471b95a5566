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
The `aetnet` command line.

    aetnet predict MODEL PATH... [--output-dir DIR] [--draw [--redact]] [--words-json FILE] [--question TEXT]...
                   [--onnx FILE] [--entities FILE | --entity-model CKPT]
    aetnet export MODEL --onnx OUT [--baseline]
    aetnet info MODEL [--json]

`predict` runs a trained checkpoint (saved with its processor) on images, folders and PDFs and writes one JSON per
page, plus a picture per page with `--draw`; with `--onnx` (or an `.onnx` MODEL next to its checkpoint's config and
processor) ONNX Runtime runs the forward pass, with the same pre- and post-processing. A relation extraction
checkpoint links the page's entities, from `--entities` or from a token classification `--entity-model`, and draws
the links as arrows. A page that cannot be read is reported on stderr and the others go on; the exit code is 1 when
any page failed and 2 for usage errors (bad options, a model that cannot be loaded). `export` writes the
checkpoint's inference graph to an ONNX file.

This module parses the command line; the sub-commands are implemented in `aetnet.commands`, one module each.
"""

from __future__ import annotations

import argparse
import sys

from aetnet.commands import EXIT_USAGE, UsageError
from aetnet.commands.export import export_command
from aetnet.commands.info import info_command
from aetnet.commands.predict import predict_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aetnet", description="Use trained AETNet document models.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    predict = commands.add_parser(
        "predict",
        help="label the words of pages (or classify pages, or answer questions) and write one JSON per page",
        description="Run MODEL on images, folders of images and PDFs; write <stem>[_page<N>].json per page.",
    )
    predict.add_argument(
        "model",
        metavar="MODEL",
        help="checkpoint folder saved with its processor, or an .onnx file in such a folder (see `aetnet export`)",
    )
    predict.add_argument("paths", metavar="PATH", nargs="+", help="image file, folder of images/PDFs, or PDF")
    predict.add_argument(
        "-o",
        "--output-dir",
        default="aetnet-predictions",
        help="where the JSON (and PNG) files go (default: %(default)s)",
    )
    predict.add_argument("--draw", action="store_true", help="also write <name>.png with the predictions drawn")
    predict.add_argument(
        "--redact",
        action="store_true",
        help="with --draw: draw on a blank page that shows only the word boxes (grey), none of the scan or its text",
    )
    predict.add_argument(
        "--words-json",
        metavar="FILE",
        help='words and boxes instead of OCR: {"words": [...], "boxes": [[x0, y0, x1, y1], ...], '
        '"boxes_normalized": false} for a single page, or an object mapping page names, file names or paths to such '
        "entries",
    )
    predict.add_argument("--question", action="append", default=[], help="question for a QA model (repeat for several)")
    relations = predict.add_argument_group(
        "relation extraction", "a relation checkpoint links the page's entities, given or predicted"
    )
    relations.add_argument(
        "--entities",
        metavar="FILE",
        help='the page\'s entities, in FUNSD\'s annotation shape: [{"label": "question", "words": [{"text": ..., '
        '"box": [x0, y0, x1, y1]}, ...]}, ...] in pixels (a FUNSD annotations/*.json file works as is), or an object '
        "mapping page names, file names or paths to such lists; the page's words are then the entities' words",
    )
    relations.add_argument(
        "--entity-model",
        metavar="CKPT",
        help="a token classification checkpoint whose predicted entities (from OCR or --words-json) are linked",
    )
    relations.add_argument(
        "--link-threshold", type=float, default=None, help="link probability from which a pair is a link (0.5)"
    )
    relations.add_argument("--one-head-per-tail", action="store_true", help="keep only the best question per answer")
    predict.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps or auto (default)")
    predict.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="pages loaded together and windows per forward pass (default: %(default)s)",
    )
    precision = predict.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="run the model in float16")
    precision.add_argument("--bf16", action="store_true", help="run the model in bfloat16")
    predict.add_argument("--ocr-lang", default=None, help="Tesseract language(s), e.g. eng or eng+deu")
    predict.add_argument("--tesseract-config", default=None, help='extra Tesseract flags, e.g. "--psm 6"')
    predict.add_argument("--max-length", type=int, default=None, help="window length in tokens (default: model's)")
    predict.add_argument("--stride", type=int, default=None, help="tokens shared by consecutive windows")
    predict.add_argument(
        "--pdf-dpi", type=float, default=200, help="resolution PDF pages are rendered at (default: %(default)s)"
    )
    predict.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    predict.add_argument(
        "--onnx",
        metavar="FILE",
        default=None,
        help="run this ONNX file (from `aetnet export`) with ONNX Runtime instead of the PyTorch weights of MODEL",
    )

    export = commands.add_parser(
        "export",
        help="export a checkpoint's inference graph to ONNX",
        description="Write MODEL's eval-mode forward pass (inputs input_ids, bbox, attention_mask, pixel_values; "
        "dynamic batch and length; outputs logits, or start_logits and end_logits) to an ONNX file, and check it "
        "against PyTorch with ONNX Runtime. Needs pip install 'aetnet[onnx]'.",
    )
    export.add_argument("model", metavar="MODEL", help="checkpoint folder")
    export.add_argument("--onnx", metavar="OUT", required=True, help="the .onnx file to write")
    export.add_argument(
        "--baseline",
        action="store_true",
        help="export the stock LayoutLMv3 model of to_layoutlmv3() (the same LayoutLMv3 and head weights, without "
        "the aligners) instead of the full AETNet model",
    )
    export.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    export.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs PyTorch check")

    info = commands.add_parser("info", help="summarise a checkpoint: config, labels, parameters per component")
    info.add_argument("model", metavar="MODEL", help="checkpoint folder")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `aetnet` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "predict":
            return predict_command(args)
        if args.command == "export":
            return export_command(args)
        return info_command(args)
    except UsageError as error:
        print(f"aetnet {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE


__all__ = ["build_parser", "main"]


if __name__ == "__main__":
    sys.exit(main())
