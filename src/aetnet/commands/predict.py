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
`aetnet predict`: run a checkpoint (or its ONNX export) on images, folders and PDFs and write one JSON per page, and
a picture per page with `--draw`. A relation extraction checkpoint links the page's entities, given with `--entities`
or predicted by a token classification `--entity-model` (`predict_relations.py`); its pictures are arrows. A page
that cannot be read is reported on stderr and the others go on; the exit code is 1 when any page failed.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

from aetnet.commands import EXIT_FAILED_PAGES, EXIT_OK, UsageError, read_json_option
from aetnet.commands.predict_relations import (
    add_relation_options,
    check_entities,
    load_entities_json,
    reject_relation_options,
    relation_predictor,
    relation_summary,
)


RELATION_EXTRACTION = "relation-extraction"  # `aetnet.tasks.RELATION_EXTRACTION`, without torch


def register_subcommand(subparsers) -> None:
    """Add `aetnet predict` and its options to the `aetnet` sub-parsers: what to run on and where the results go, the
    relation extraction options, then how the model runs."""
    parser = subparsers.add_parser(
        "predict",
        help="label the words of pages (or classify pages, or answer questions) and write one JSON per page",
        description="Run MODEL on images, folders of images and PDFs; write <stem>[_page<N>].json per page.",
    )
    _add_input_output_options(parser)
    add_relation_options(parser)
    _add_runtime_options(parser)
    parser.set_defaults(func=predict_command)


def _add_input_output_options(parser) -> None:
    """MODEL, the pages, where the files go, the pictures, the words instead of OCR, and the questions."""
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="checkpoint folder saved with its processor, or an .onnx file in such a folder (see `aetnet export`)",
    )
    parser.add_argument("paths", metavar="PATH", nargs="+", help="image file, folder of images/PDFs, or PDF")
    parser.add_argument(
        "-o",
        "--output-dir",
        default="aetnet-predictions",
        help="where the JSON (and PNG) files go (default: %(default)s)",
    )
    parser.add_argument("--draw", action="store_true", help="also write <name>.png with the predictions drawn")
    parser.add_argument(
        "--redact",
        action="store_true",
        help="with --draw: draw on a blank page that shows only the word boxes (grey), none of the scan or its text",
    )
    parser.add_argument(
        "--words-json",
        metavar="FILE",
        help='words and boxes instead of OCR: {"words": [...], "boxes": [[x0, y0, x1, y1], ...], '
        '"boxes_normalized": false} for a single page, or an object mapping page names, file names or paths to such '
        "entries",
    )
    parser.add_argument("--question", action="append", default=[], help="question for a QA model (repeat for several)")


def _add_runtime_options(parser) -> None:
    """How the model runs: device, batch, precision, OCR, windows, PDF resolution, progress bar, ONNX Runtime."""
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps or auto (default)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="pages loaded together and windows per forward pass (default: %(default)s)",
    )
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="run the model in float16")
    precision.add_argument("--bf16", action="store_true", help="run the model in bfloat16")
    parser.add_argument("--ocr-lang", default=None, help="Tesseract language(s), e.g. eng or eng+deu")
    parser.add_argument("--tesseract-config", default=None, help='extra Tesseract flags, e.g. "--psm 6"')
    parser.add_argument("--max-length", type=int, default=None, help="window length in tokens (default: model's)")
    parser.add_argument("--stride", type=int, default=None, help="tokens shared by consecutive windows")
    parser.add_argument(
        "--pdf-dpi", type=float, default=200, help="resolution PDF pages are rendered at (default: %(default)s)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--onnx",
        metavar="FILE",
        default=None,
        help="run this ONNX file (from `aetnet export`) with ONNX Runtime instead of the PyTorch weights of MODEL",
    )


def _load_words_json(path: str | None) -> dict | None:
    if path is None:
        return None
    data = read_json_option(path, "--words-json")
    if not isinstance(data, dict):
        raise UsageError(f"--words-json {path} must hold a JSON object, got {type(data).__name__}")
    if "words" in data:
        return {None: data}
    bad = [key for key, entry in data.items() if not isinstance(entry, dict)]
    if bad:
        raise UsageError(f"--words-json {path}: entry {bad[0]!r} must be an object with `words` and `boxes`")
    return data


# The predictor's window settings, by the names the user typed them.
_WINDOW_OPTIONS = {"max_length": "--max-length", "stride": "--stride"}


def _document_predictor(predictor_class, model, processor, task, dtype, args):
    """MODEL's predictor with the command line's settings; a window setting the model cannot take is a usage error
    that names the option as typed (`--max-length 1024`), not a failure to load the model."""
    try:
        return predictor_class(
            model,
            processor,
            task=task,
            device=args.device,
            dtype=dtype,
            batch_size=args.batch_size,
            max_length=args.max_length,
            stride=args.stride,
            ocr_lang=args.ocr_lang,
            tesseract_config=args.tesseract_config,
        )
    except ValueError as error:
        for name, option in _WINDOW_OPTIONS.items():
            if str(error).startswith(f"`{name}`"):
                value = getattr(args, name)
                raise UsageError(
                    f"{option} {value}: {str(error).split(', got ')[0].replace(f'`{name}`', 'it')}"
                ) from None
        raise


def _load_predictor(args) -> tuple[object, object | None]:
    """`(predictor, entity_predictor)`: MODEL's `DocumentPredictor`, or for a relation extraction checkpoint its
    `RelationPredictor` and the `--entity-model` predictor (`None` with `--entities`)."""
    from transformers.utils import logging as transformers_logging

    from aetnet.inference import DocumentPredictor, load_checkpoint

    # One progress bar, over pages: not transformers' weight-loading bar.
    transformers_logging.disable_progress_bar()

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.pdf_dpi <= 0:
        raise UsageError(f"--pdf-dpi must be positive, got {args.pdf_dpi}")
    dtype = "float16" if args.fp16 else "bfloat16" if args.bf16 else None
    model_dir, onnx_file = args.model, args.onnx
    if onnx_file is None and args.model.endswith(".onnx"):
        model_dir, onnx_file = str(Path(args.model).parent), args.model
    if not Path(model_dir).is_dir():
        raise UsageError(f"MODEL {args.model} is not a folder (a checkpoint saved with save_pretrained)")
    if onnx_file is not None:
        if not Path(onnx_file).is_file():
            raise UsageError(f"--onnx {onnx_file}: no such file (write it with `aetnet export MODEL --onnx FILE`)")
        if dtype is not None:
            raise UsageError("--fp16 / --bf16 apply to PyTorch weights, not to an ONNX file")
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise UsageError("running an ONNX file needs onnxruntime: pip install 'aetnet[onnx]'") from None
    try:
        model, processor, task = load_checkpoint(model_dir, onnx=onnx_file, device=args.device)
        if task != RELATION_EXTRACTION:
            predictor = _document_predictor(DocumentPredictor, model, processor, task, dtype, args)
    except (OSError, ValueError, RuntimeError, AssertionError) as error:
        # torch reports a CUDA device on a CPU-only build with an AssertionError.
        raise UsageError(f"cannot load the model from {args.model} on --device {args.device}: {error}") from None
    if task == "question-answering" and not args.question:
        raise UsageError("MODEL answers questions: give at least one --question")
    if task != "question-answering" and args.question:
        raise UsageError(f"--question needs a question answering model; MODEL does {task}")
    if task != RELATION_EXTRACTION:
        reject_relation_options(args, task)
        return predictor, None
    return relation_predictor(args, model, processor, dtype)


def _per_page(entries: dict | None, sources, option: str, what: str) -> dict | None:
    """`--words-json` / `--entities` entries by page: a single page's entry (key `None`) goes to the one page
    given; entries that match no page are reported."""
    if entries is None:
        return None
    if None in entries:
        if len(sources) != 1:
            raise UsageError(
                f"{option} holds one page's {what} but {len(sources)} pages were given; map page names to entries"
            )
        return {sources[0].name: entries[None]}
    from aetnet.pages import words_key_for

    unused = len(set(entries) - {words_key_for(entries, source) for source in sources})
    if unused:
        print(f"warning: {unused} of the {option} entries match no page", file=sys.stderr)
    return entries


def to_json(result: dict) -> str:
    """Indented JSON with each box (a list of numbers) on one line, so that a page reads one word per few lines."""
    text = json.dumps(result, indent=2, ensure_ascii=False)
    # JSON strings cannot hold a raw newline, so the pattern only ever matches real number lists.
    return re.sub(r"\[\n\s*([-+\d.eE,\s]+?)\n\s*\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"


def _summary(result: dict) -> str:
    if result["task"] == "sequence-classification":
        return f"{result['label']} ({result['score']:.2f})"
    if result["task"] == RELATION_EXTRACTION:
        return relation_summary(result)
    if result["task"] == "question-answering":
        return "; ".join(f"{a['question']!r} -> {a['text']!r} ({a['score']:.2f})" for a in result["answers"])
    counts = Counter(entity["label"] for entity in result["entities"])
    kinds = ", ".join(f"{label} {count}" for label, count in sorted(counts.items()))
    return f"{len(result['words'])} words, {len(result['entities'])} entities" + (f" ({kinds})" if kinds else "")


def predict_command(args) -> int:
    """`aetnet predict`: one JSON (and with `--draw` one PNG) per page in `--output-dir`."""
    if args.redact and not args.draw:
        raise UsageError("--redact only changes the picture that --draw writes; add --draw")
    words = _load_words_json(args.words_json)
    entities = load_entities_json(args.entities)
    predictor, entity_predictor = _load_predictor(args)
    if entities is not None:
        check_entities(entities, predictor.entity_labels, args.entities)

    from tqdm.auto import tqdm

    from aetnet.pages import collect_page_sources
    from aetnet.visualization.drawing import draw_prediction, redact_page
    from aetnet.visualization.relations import draw_relations

    sources, errors = collect_page_sources(args.paths)
    for path, message in errors:
        print(f"error: {path}: {message}", file=sys.stderr)
    words = _per_page(words, sources, "--words-json", "words")
    entities = _per_page(entities, sources, "--entities", "entities")
    output_dir = Path(args.output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create --output-dir {output_dir}: {error}") from None

    failed, written, used_names = len(errors), 0, set()
    if predictor.task == RELATION_EXTRACTION:
        outcomes = predictor.predict_sources(
            sources,
            entities=entities,
            entity_predictor=entity_predictor,
            pdf_dpi=args.pdf_dpi,
            words=words,
            return_images=args.draw,
        )
    else:
        outcomes = predictor.predict_sources(
            sources, questions=args.question or None, pdf_dpi=args.pdf_dpi, words=words, return_images=args.draw
        )
    with tqdm(total=len(sources), unit="page", disable=True if args.no_progress else None, file=sys.stderr) as bar:
        for source, outcome, image in outcomes:
            bar.update(1)
            where = source.path if source.index is None else f"{source.path} (page {source.index + 1})"
            if isinstance(outcome, Exception):
                failed += 1
                tqdm.write(f"error: {where}: {outcome}", file=sys.stderr)
                continue
            name = source.name
            if name in used_names:
                suffix = 2
                while f"{name}-{suffix}" in used_names:
                    suffix += 1
                tqdm.write(f"warning: {where}: another page is named {name}; writing {name}-{suffix}", file=sys.stderr)
                name = f"{name}-{suffix}"
            used_names.add(name)
            json_path = output_dir / f"{name}.json"
            json_path.write_text(to_json(outcome), encoding="utf-8")
            if args.draw:
                page = redact_page(image, outcome) if args.redact else image
                if outcome["task"] == RELATION_EXTRACTION:
                    picture = draw_relations(page, outcome["entities"], outcome["links"])
                else:
                    picture = draw_prediction(page, outcome)
                picture.save(output_dir / f"{name}.png")
            written += 1
            tqdm.write(f"{where}: {_summary(outcome)} -> {json_path}", file=sys.stdout)
    print(f"Wrote {written} page prediction(s) to {output_dir}; {failed} failed.")
    return EXIT_FAILED_PAGES if failed else EXIT_OK


__all__ = ["predict_command", "register_subcommand", "to_json"]
