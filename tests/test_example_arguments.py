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
The window options of the five example scripts: declared once (`utils_aetnet_data.WindowArguments`), parsed by every
script, and each script's command line unchanged by it (the option names, defaults and help texts that README,
BENCHMARKS and `benchmarks/compare.py` commands rely on).
"""

from __future__ import annotations

import dataclasses

import pytest
from conftest import load_example
from transformers import HfArgumentParser


STRIDE_HELP = "Tokens shared by consecutive windows{} (default: max_seq_length // 4, <= 128)."
PAD_HELP = "Pad every {} to max_seq_length (default: pad each batch dynamically)."
WINDOW_HELP = "Window length in tokens."

# Per script: each window option it has, with its help text; an option left out is one the script does not have.
EXPECTED = {
    "run_funsd": {
        "max_seq_length": WINDOW_HELP,
        "doc_stride": STRIDE_HELP.format(""),
        "pad_to_max_length": PAD_HELP.format("window"),
    },
    "run_cord": {
        "max_seq_length": WINDOW_HELP,
        "doc_stride": STRIDE_HELP.format(" of a receipt"),
        "pad_to_max_length": PAD_HELP.format("window"),
    },
    "run_docvqa": {
        "max_seq_length": "Window length in tokens (question included).",
        "doc_stride": STRIDE_HELP.format(" of a page"),
        "pad_to_max_length": PAD_HELP.format("window"),
    },
    "run_rvlcdip": {
        "max_seq_length": "Tokens per page; the words beyond are dropped (counted in a warning).",
        "pad_to_max_length": PAD_HELP.format("page"),
    },
    "run_funsd_re": {"max_seq_length": WINDOW_HELP},
    "run_sroie": {
        "max_seq_length": WINDOW_HELP,
        "doc_stride": STRIDE_HELP.format(" of a receipt"),
        "pad_to_max_length": PAD_HELP.format("window"),
    },
}
DEFAULTS = {"max_seq_length": 512, "doc_stride": None, "pad_to_max_length": False}


class _Parsed(Exception):
    """Stops a script's `main` once its parser is built, before any data or model is loaded."""


def script_parser(name: str, monkeypatch) -> HfArgumentParser:
    """The `HfArgumentParser` the script's `main` builds."""
    module = load_example(name)
    built = []

    def capture(parser):
        built.append(parser)
        raise _Parsed

    monkeypatch.setattr(module, "parse_arguments", capture)
    with pytest.raises(_Parsed):
        module.main()
    return built[0]


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_every_script_parses_the_shared_window_options_unchanged(script, monkeypatch):
    parser = script_parser(script, monkeypatch)
    window_classes = [
        dtype for dtype in parser.dataclass_types if {f.name for f in dataclasses.fields(dtype)} <= set(DEFAULTS)
    ]
    assert [dtype.__name__ for dtype in window_classes] == ["WindowArguments"]
    # No other dataclass of the script declares a window option again.
    for dtype in parser.dataclass_types:
        if dtype not in window_classes:
            assert not {f.name for f in dataclasses.fields(dtype)} & set(DEFAULTS), dtype
    options = {action.dest: action for action in parser._actions if action.dest in DEFAULTS}
    assert {name: action.help for name, action in options.items()} == EXPECTED[script]
    assert {name: action.default for name, action in options.items()} == {
        name: DEFAULTS[name] for name in EXPECTED[script]
    }
    assert all(action.option_strings[0] == f"--{name}" for name, action in options.items())


def test_window_options_parse_into_their_own_dataclass(monkeypatch):
    parser = script_parser("run_cord", monkeypatch)
    parsed = parser.parse_args_into_dataclasses(
        ["--dataset_dir", "cord", "--output_dir", "out", "--max_seq_length=16", "--doc_stride=4", "--pad_to_max_length"]
    )
    (window_args,) = [arguments for arguments in parsed if type(arguments).__name__ == "WindowArguments"]
    assert (window_args.max_seq_length, window_args.doc_stride, window_args.pad_to_max_length) == (16, 4, True)


def test_script_window_arguments():
    from utils_aetnet_data import WindowArguments, script_window_arguments

    # Keeping every option and its help is the shared class itself.
    assert script_window_arguments() is WindowArguments
    assert script_window_arguments(help_texts={"max_seq_length": WINDOW_HELP}) is WindowArguments
    variant = script_window_arguments(
        options=("pad_to_max_length", "max_seq_length"), help_texts={"max_seq_length": "Tokens per page."}
    )
    fields = {f.name: f for f in dataclasses.fields(variant)}
    assert list(fields) == ["max_seq_length", "pad_to_max_length"]  # the shared order, whatever the order asked
    assert fields["max_seq_length"].metadata["help"] == "Tokens per page."
    assert fields["pad_to_max_length"].metadata["help"] == PAD_HELP.format("window")
    assert variant() == variant(max_seq_length=512, pad_to_max_length=False)
    # The shared class is left as it was.
    assert dataclasses.fields(WindowArguments)[0].metadata["help"] == WINDOW_HELP
    with pytest.raises(ValueError, match=r"\['stride'\] are not WindowArguments fields"):
        script_window_arguments(options=("stride",))
    with pytest.raises(ValueError, match=r"\['max_length'\]"):
        script_window_arguments(help_texts={"max_length": "?"})
