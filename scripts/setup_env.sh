#!/usr/bin/env bash
# Idempotent set-up of a fresh machine: Tesseract (Debian), a virtual environment in .venv with the CPU build of
# torch 2.13.0 installed first (a bare `torch` requirement would pull a multi-GB CUDA build), then aetnet with its
# example, OCR, PDF, ONNX and test extras, all at the versions of constraints.txt. Source it:
# `source scripts/setup_env.sh`.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${AETNET_VENV:-$repo_root/.venv}"

if ! command -v tesseract >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        (apt-get install -y -q tesseract-ocr >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q tesseract-ocr >/dev/null; })
    else
        echo "tesseract-ocr is missing: install it with 'sudo apt-get install -y tesseract-ocr'" >&2
        exit 1
    fi
fi

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
# constraints.txt pins every package to the set the test suite passed on, so that an upstream release cannot break
# a fresh set-up. AETNET_NEWEST=1 then upgrades transformers to its newest release within the declared range (the
# check that the next release still passes); use it with its own AETNET_VENV.
constraints="$repo_root/constraints.txt"
stamp="$venv/.aetnet-installed${AETNET_NEWEST:+-newest}"
if [ ! -f "$stamp" ] || [ "$repo_root/pyproject.toml" -nt "$stamp" ] || [ "$constraints" -nt "$stamp" ]; then
    pip_install() { "$venv/bin/python" -m pip install -q "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
    pip_install --upgrade pip
    pip_install torch==2.13.0 -c "$constraints"
    pip_install -e "$repo_root[dev]" -c "$constraints"
    if [ -n "${AETNET_NEWEST:-}" ]; then
        pip_install --upgrade "transformers>=5.24,<6"
    fi
    "$venv/bin/python" -c "import torch, transformers, aetnet" && touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
