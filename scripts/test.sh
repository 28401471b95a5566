#!/usr/bin/env bash
# The test suite (CPU, offline, tiny configs), after the same set-up as the demo. Arguments go to pytest.
# `bash scripts/test.sh --newest`: the same suite in .venv-newest, on the newest releases of the pinned packages
# (except torch), to learn before a user does whether an upstream release breaks aetnet.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--newest" ]; then
    shift
    export AETNET_NEWEST=1 AETNET_VENV="${AETNET_VENV:-$PWD/.venv-newest}"
fi
source scripts/setup_env.sh
if [ -n "${AETNET_NEWEST:-}" ]; then
    python -m pip list --format freeze 2>/dev/null | grep -i -E "^(torch|transformers|accelerate|datasets|huggingface.hub|tokenizers|peft|onnx|onnxruntime|evaluate)==" >&2
fi
python -m pytest -q "$@"
