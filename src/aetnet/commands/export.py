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
`aetnet export`: write a checkpoint's inference graph to an ONNX file with
[`~aetnet.inference.onnx_export.export_onnx`] and check it against PyTorch with ONNX Runtime.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from aetnet.commands import EXIT_OK, UsageError


def register_subcommand(subparsers) -> None:
    """Add `aetnet export` and its options to the `aetnet` sub-parsers."""
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint's inference graph to ONNX",
        description="Write MODEL's eval-mode forward pass (inputs input_ids, bbox, attention_mask, pixel_values; "
        "dynamic batch and length; outputs logits, or start_logits and end_logits) to an ONNX file, and check it "
        "against PyTorch with ONNX Runtime. Needs pip install 'aetnet[onnx]'.",
    )
    parser.add_argument("model", metavar="MODEL", help="checkpoint folder")
    parser.add_argument("--onnx", metavar="OUT", required=True, help="the .onnx file to write")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="export the stock LayoutLMv3 model of to_layoutlmv3() (the same LayoutLMv3 and head weights, without "
        "the aligners) instead of the full AETNet model",
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs PyTorch check")
    parser.set_defaults(func=export_command)


def export_command(args) -> int:
    """`aetnet export`: the ONNX file `--onnx` of MODEL, or of its stock LayoutLMv3 model with `--baseline`."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    if not Path(args.model).is_dir():
        raise UsageError(f"MODEL {args.model} is not a folder (a checkpoint saved with save_pretrained)")
    missing = [name for name in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"exporting to ONNX needs {', '.join(missing)}: pip install 'aetnet[onnx]'")

    from aetnet.inference.onnx_export import export_onnx

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


__all__ = ["export_command", "register_subcommand"]
