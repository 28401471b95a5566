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

This module only assembles the parser and runs the chosen sub-command: each sub-command lives in its own module of
`aetnet.commands`, which registers its sub-parser and options (`register_subcommand`) and implements it.
"""

from __future__ import annotations

import argparse
import sys

from aetnet.commands import EXIT_USAGE, UsageError, export, info, predict


# The sub-commands in the order `aetnet --help` lists them; each module registers its own sub-parser and options.
_SUBCOMMANDS = (predict, export, info)


def build_parser() -> argparse.ArgumentParser:
    """The `aetnet` parser: one sub-parser per sub-command, each registered by its module's `register_subcommand`,
    which also sets the function that runs it (`args.func`)."""
    parser = argparse.ArgumentParser(prog="aetnet", description="Use trained AETNet document models.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in _SUBCOMMANDS:
        command.register_subcommand(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `aetnet` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as error:
        print(f"aetnet {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE


__all__ = ["build_parser", "main"]


if __name__ == "__main__":
    sys.exit(main())
