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
The `aetnet` sub-commands, one module each (`predict`, `export`, `info`). Each module registers its own sub-parser
and options (`register_subcommand(subparsers)`, which also sets the function that runs it) and implements the
command; `aetnet.commands.aetnet_cli` only assembles the parser and calls the chosen command. A command takes the
parsed arguments and returns the exit code, and raises [`UsageError`] for a problem with the command line itself.

torch and transformers are imported inside the commands, so that `aetnet --help` answers at once, and nothing here
imports the training stack.
"""

EXIT_OK, EXIT_FAILED_PAGES, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A problem with the command line itself: reported without a traceback, exit code 2."""


def read_json_option(path: str, option: str):
    """The JSON content of the file an option names; a `UsageError` naming `option` if it cannot be read."""
    import json

    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise UsageError(f"cannot read {option} {path}: {error}") from None


__all__ = ["EXIT_FAILED_PAGES", "EXIT_OK", "EXIT_USAGE", "UsageError", "read_json_option"]
