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
Whether `--push_to_hub` can work, checked by `utils_aetnet.parse_arguments` when an example script parses its
arguments: a run without a token or a reachable Hub stops with one line before any data or model is loaded, rather
than with the traceback `Trainer.__init__` would raise after the data are prepared.
"""

from __future__ import annotations

import sys

import transformers


def hub_access_problem(training_args: transformers.TrainingArguments, timeout: float = 10.0) -> str | None:
    """Why `--push_to_hub` would fail, in one sentence, or `None` when it can work (or is not asked): the Hub is
    switched off (`HF_HUB_OFFLINE`), there is no token, or the Hub endpoint does not answer within `timeout`
    seconds."""
    if not training_args.push_to_hub:
        return None
    from huggingface_hub import constants, get_token
    from huggingface_hub.utils import get_session

    if constants.HF_HUB_OFFLINE:
        return (
            "--push_to_hub needs the Hugging Face Hub, but HF_HUB_OFFLINE is set: unset it, or drop --push_to_hub "
            "and upload the saved folder later (`hf upload`)."
        )
    if training_args.hub_token is None and get_token() is None:
        return "--push_to_hub needs a Hub token: run `hf auth login`, set HF_TOKEN, or pass --hub_token."
    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception as error:  # httpx and requests raise different types; any failure means no Hub
        return (
            f"--push_to_hub cannot reach the Hugging Face Hub at {constants.ENDPOINT} "
            f"({type(error).__name__}: {error}); check the network, or drop --push_to_hub and upload later."
        )
    return None


def check_hub_access(training_args: transformers.TrainingArguments) -> None:
    """Exit (status 1) with one `error: ...` line on stderr when `--push_to_hub` is asked but cannot work, instead of
    the traceback `Trainer.__init__` would raise after the data are prepared (see [`hub_access_problem`])."""
    problem = hub_access_problem(training_args)
    if problem is not None:
        sys.exit(f"error: {problem}")


__all__ = ["check_hub_access", "hub_access_problem"]
