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

    aetnet predict MODEL PATH... [--output-dir DIR] [--draw] [--words-json FILE] [--question TEXT]... [--onnx FILE]
    aetnet export MODEL --onnx OUT [--baseline]
    aetnet info MODEL [--json]

`predict` runs a trained checkpoint (saved with its processor) on images, folders and PDFs and writes one JSON per
page, plus a picture per page with `--draw`; with `--onnx` (or an `.onnx` MODEL next to its checkpoint's config and
processor) ONNX Runtime runs the forward pass, with the same pre- and post-processing. A page that cannot be read is
reported on stderr and the others go on; the exit code is 1 when any page failed and 2 for usage errors (bad options,
a model that cannot be loaded). `export` writes the checkpoint's inference graph to an ONNX file.

torch and transformers are imported inside the commands, so `aetnet --help` answers at once, and nothing here imports
the training stack.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from collections import Counter
from pathlib import Path


EXIT_OK, EXIT_FAILED_PAGES, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A problem with the command line itself: reported without a traceback, exit code 2."""


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
        "--words-json",
        metavar="FILE",
        help='words and boxes instead of OCR: {"words": [...], "boxes": [[x0, y0, x1, y1], ...], '
        '"boxes_normalized": false} for a single page, or an object mapping page names, file names or paths to such '
        "entries",
    )
    predict.add_argument(
        "--question", action="append", default=[], help="question for a QA model (repeat for several)"
    )
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
            return _predict(args)
        if args.command == "export":
            return _export(args)
        return _info(args)
    except UsageError as error:
        print(f"aetnet {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE


# --------------------------------------------------------------------------------------------------- predict


def _load_words_json(path: str | None) -> dict | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise UsageError(f"cannot read --words-json {path}: {error}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--words-json {path} must hold a JSON object, got {type(data).__name__}")
    if "words" in data:
        return {None: data}
    bad = [key for key, entry in data.items() if not isinstance(entry, dict)]
    if bad:
        raise UsageError(f"--words-json {path}: entry {bad[0]!r} must be an object with `words` and `boxes`")
    return data


def _load_predictor(args):
    from transformers.utils import logging as transformers_logging

    from aetnet.inference import DocumentPredictor

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
        predictor = DocumentPredictor.from_pretrained(
            model_dir,
            onnx=onnx_file,
            device=args.device,
            dtype=dtype,
            batch_size=args.batch_size,
            max_length=args.max_length,
            stride=args.stride,
            ocr_lang=args.ocr_lang,
            tesseract_config=args.tesseract_config,
        )
    except (OSError, ValueError, RuntimeError, AssertionError) as error:
        # torch reports a CUDA device on a CPU-only build with an AssertionError.
        raise UsageError(f"cannot load the model from {args.model} on --device {args.device}: {error}") from None
    if predictor.task == "question-answering" and not args.question:
        raise UsageError("MODEL answers questions: give at least one --question")
    if predictor.task != "question-answering" and args.question:
        raise UsageError(f"--question needs a question answering model; MODEL does {predictor.task}")
    return predictor


def to_json(result: dict) -> str:
    """Indented JSON with each box (a list of numbers) on one line, so that a page reads one word per few lines."""
    text = json.dumps(result, indent=2, ensure_ascii=False)
    # JSON strings cannot hold a raw newline, so the pattern only ever matches real number lists.
    return re.sub(r"\[\n\s*([-+\d.eE,\s]+?)\n\s*\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"


def _summary(result: dict) -> str:
    if result["task"] == "sequence-classification":
        return f"{result['label']} ({result['score']:.2f})"
    if result["task"] == "question-answering":
        return "; ".join(f"{a['question']!r} -> {a['text']!r} ({a['score']:.2f})" for a in result["answers"])
    counts = Counter(entity["label"] for entity in result["entities"])
    kinds = ", ".join(f"{label} {count}" for label, count in sorted(counts.items()))
    return f"{len(result['words'])} words, {len(result['entities'])} entities" + (f" ({kinds})" if kinds else "")


def _predict(args) -> int:
    words = _load_words_json(args.words_json)
    predictor = _load_predictor(args)

    from tqdm.auto import tqdm

    from aetnet.inference import collect_page_sources
    from aetnet.visualization import draw_prediction

    sources, errors = collect_page_sources(args.paths)
    for path, message in errors:
        print(f"error: {path}: {message}", file=sys.stderr)
    if words is not None and None in words:
        if len(sources) != 1:
            raise UsageError(
                f"--words-json holds one page's words but {len(sources)} pages were given; map page names to entries"
            )
        words = {sources[0].name: words[None]}
    elif words is not None:
        from aetnet.inference import words_key_for

        unused = len(set(words) - {words_key_for(words, source) for source in sources})
        if unused:
            print(f"warning: {unused} of the --words-json entries match no page", file=sys.stderr)
    output_dir = Path(args.output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create --output-dir {output_dir}: {error}") from None

    failed, written, used_names = len(errors), 0, set()
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
                draw_prediction(image, outcome).save(output_dir / f"{name}.png")
            written += 1
            tqdm.write(f"{where}: {_summary(outcome)} -> {json_path}", file=sys.stdout)
    print(f"Wrote {written} page prediction(s) to {output_dir}; {failed} failed.")
    return EXIT_FAILED_PAGES if failed else EXIT_OK


# ---------------------------------------------------------------------------------------------------- export


def _export(args) -> int:
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    if not Path(args.model).is_dir():
        raise UsageError(f"MODEL {args.model} is not a folder (a checkpoint saved with save_pretrained)")
    missing = [name for name in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"exporting to ONNX needs {', '.join(missing)}: pip install 'aetnet[onnx]'")

    from aetnet.onnx_export import export_onnx

    try:
        result = export_onnx(
            args.model, args.onnx, baseline=args.baseline, opset_version=args.opset, check=not args.no_check
        )
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot export {args.model}: {error}") from None
    what = "LayoutLMv3 baseline (to_layoutlmv3)" if result.baseline else "AETNet"
    check = "" if result.max_abs_diff is None else f"; ONNX Runtime vs PyTorch max |diff| {result.max_abs_diff:.1e}"
    print(f"Wrote {result.path} ({what}, {result.task}{check})")
    return EXIT_OK


# ------------------------------------------------------------------------------------------------------ info


def _component_counts(model) -> tuple[dict[str, int], set[str]]:
    """Parameters per top-level component of the base model (heads apart) and the components used only in training."""
    prefix = model.base_model_prefix
    counts = Counter()
    for name, parameter in model.named_parameters():
        parts = name.split(".")
        component = parts[1] if parts[0] == prefix and len(parts) > 1 else f"head: {parts[0]}"
        counts[component] += parameter.numel()
    training_only = set()
    config = model.config
    if getattr(config, "model_type", None) == "aetnet":
        # Projections, temperature and momentum copies serve the alignment losses only; the aligners themselves are
        # read at inference unless their features are not injected.
        training_only = {c for c in counts if c.endswith("_m") or c in ("vision_proj", "text_proj", "temp")}
        if config.fusion_injection == "none":
            training_only |= {"vision_model", "text_model"}
    return dict(counts), training_only


def _info(args) -> int:
    import torch
    from transformers import AutoConfig, AutoModel

    from aetnet.inference import TASKS, is_bio, task_of

    try:
        config = AutoConfig.from_pretrained(args.model)
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read a config from {args.model}: {error}") from None
    try:
        task = task_of(config)
    except ValueError:
        task = None
    # Built on the meta device: counting parameters needs shapes, not weights.
    with torch.device("meta"):
        model = (TASKS[task] if task else AutoModel).from_config(config)
    counts, training_only = _component_counts(model)
    labels = [config.id2label[i] for i in range(config.num_labels)] if task else []
    summary = {
        "model": args.model,
        "architecture": (config.architectures or [type(model).__name__])[0],
        "model_type": config.model_type,
        "task": task,
        "labels": labels,
        "bio": is_bio(labels) if labels else None,
        "parameters": counts,
        "total_parameters": sum(counts.values()),
        "inference_parameters": sum(n for c, n in counts.items() if c not in training_only),
        "config": _config_summary(config),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return EXIT_OK
    print(f"Model:         {summary['model']} ({summary['architecture']}, model_type {summary['model_type']})")
    print(f"Task:          {task or 'unknown (no task head in config.architectures)'}")
    if labels:
        bio = " (BIO)" if summary["bio"] else ""
        print(f"Labels ({len(labels)}){bio}: {', '.join(labels)}")
    for key, value in summary["config"].items():
        print(f"{key + ':':<14} {value}")
    print("Parameters:")
    for component, count in counts.items():
        note = "  (training only)" if component in training_only else ""
        print(f"  {component:<28} {count:>14,}{note}")
    print(f"  {'total':<28} {summary['total_parameters']:>14,}")
    print(f"  {'used at inference':<28} {summary['inference_parameters']:>14,}")
    return EXIT_OK


def _config_summary(config) -> dict[str, str]:
    def encoder(sub) -> str:
        text = f"{sub.model_type}: hidden {sub.hidden_size}, {sub.num_hidden_layers} layers"
        text += f", {sub.num_attention_heads} heads"
        if getattr(sub, "vocab_size", None):
            text += f", vocab {sub.vocab_size}"
        if getattr(sub, "input_size", None) or getattr(sub, "image_size", None):
            text += f", image {getattr(sub, 'input_size', None) or sub.image_size} px / patch {sub.patch_size}"
        return text

    if getattr(config, "model_type", None) != "aetnet":
        return {"Encoder": encoder(config)}
    return {
        "Fusion": encoder(config.layout_config) + f", {config.layout_config.max_position_embeddings - 2} positions",
        "Vision": encoder(config.vision_config),
        "Text": encoder(config.text_config),
        "Alignment": f"{' '.join(config.alignment_objectives)}; injection {config.fusion_injection}, "
        f"embed_dim {config.embed_dim}, queue {config.queue_size}",
    }


__all__ = ["build_parser", "main", "to_json"]


if __name__ == "__main__":
    sys.exit(main())
