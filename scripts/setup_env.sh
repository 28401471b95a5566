#!/usr/bin/env bash
# Idempotent set-up of a fresh machine: Tesseract (Debian), a virtual environment in .venv with the CPU build of
# torch 2.13.0 installed first (a bare `torch` requirement would pull a multi-GB CUDA build), then aetnet with its
# example, OCR, PDF and test extras. Source it: `source scripts/setup_env.sh`.
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
stamp="$venv/.aetnet-installed"
if [ ! -f "$stamp" ] || [ "$repo_root/pyproject.toml" -nt "$stamp" ]; then
    "$venv/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
    "$venv/bin/python" -m pip install -q torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
    "$venv/bin/python" -m pip install -q -e "$repo_root[dev]" 2>&1 | grep -v "^WARNING: Location" || true
    "$venv/bin/python" -c "import torch, transformers, aetnet" && touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
