#!/usr/bin/env bash
# Idempotent set-up of a fresh machine: Tesseract (Debian), a virtual environment in .venv with torch 2.13.0 installed
# first, then aetnet with its example, OCR, PDF, ONNX and test extras, all at the versions of constraints.txt. Source
# it: `source scripts/setup_env.sh`.
#
# Which torch: a bare `torch` requirement takes the CUDA build from PyPI (a 527 MB wheel plus several GB of CUDA
# libraries), which a CPU-only machine does not need. So:
#   - AETNET_TORCH_INDEX set: torch comes from there (a folder of wheels, or a package index URL);
#   - else, with an NVIDIA GPU (nvidia-smi lists one): the default build from the configured indexes;
#   - else, when PyTorch's CPU index answers: the CPU build from it (about 190 MB);
#   - else: whatever the configured indexes give (a local CPU wheel where pip is configured with one; on plain PyPI
#     the CUDA build), with a warning first.
# Before downloading, it prints what pip is about to fetch (a dry run), then shows pip's own progress.
# AETNET_NEWEST=1: instead of the pins, the newest releases of every dependency except torch (use with its own
# AETNET_VENV; `bash scripts/test.sh --newest` does both).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${AETNET_VENV:-$repo_root/.venv}"
torch_pin="torch==2.13.0"
cpu_index="https://download.pytorch.org/whl/cpu"
say() { echo "[aetnet set-up] $*" >&2; }

if ! command -v tesseract >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        say "installing tesseract-ocr (apt-get)"
        (apt-get install -y -q tesseract-ocr >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q tesseract-ocr >/dev/null; })
    else
        echo "tesseract-ocr is missing: install it with 'sudo apt-get install -y tesseract-ocr'" >&2
        exit 1
    fi
fi

torch_source_args() {
    # The pip options that pick the torch build (see the header); prints one option per line.
    if [ -n "${AETNET_TORCH_INDEX:-}" ]; then
        if [ -d "$AETNET_TORCH_INDEX" ]; then printf '%s\n' --find-links "$AETNET_TORCH_INDEX"
        else printf '%s\n' --index-url "$AETNET_TORCH_INDEX" --extra-index-url https://pypi.org/simple; fi
    elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        say "an NVIDIA GPU is present: the default (CUDA) build of torch"
    elif "$venv/bin/python" -c "import urllib.request; urllib.request.urlopen('$cpu_index/torch/', timeout=10)" 2>/dev/null; then
        printf '%s\n' --index-url "$cpu_index" --extra-index-url https://pypi.org/simple
    else
        say "PyTorch's CPU index ($cpu_index) is unreachable:"
        say "torch comes from pip's configured indexes. On plain PyPI that is the CUDA build (a 527 MB wheel"
        say "plus several GB of CUDA libraries); set AETNET_TORCH_INDEX to a folder of CPU wheels or a CPU index"
        say "to avoid it."
    fi
}

install_torch() {
    if "$venv/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '${torch_pin#torch==}')" 2>/dev/null; then
        return
    fi
    mapfile -t source_args < <(torch_source_args)
    [ -n "${AETNET_NEWEST:-}" ] || source_args+=(-c "$constraints")
    say "about to install (pip dry run):"
    "$venv/bin/python" -m pip install --dry-run --quiet --report - "${source_args[@]}" "$torch_pin" 2>/dev/null |
        "$venv/bin/python" -c "import json, sys
for item in json.load(sys.stdin)['install']:
    print('   ', item['metadata']['name'], item['metadata']['version'], item['download_info']['url'], file=sys.stderr)" ||
        say "(the dry run failed; pip will say why below)"
    "$venv/bin/python" -m pip install --progress-bar on "${source_args[@]}" "$torch_pin" 2>&1 |
        grep -v -E "^(WARNING: Location|Requirement already satisfied)" >&2 || true
}

if [ ! -x "$venv/bin/python" ]; then
    say "creating the virtual environment $venv"
    python3 -m venv "$venv"
fi
constraints="$repo_root/constraints.txt"
stamp="$venv/.aetnet-installed${AETNET_NEWEST:+-newest}"
if [ ! -f "$stamp" ] || [ "$repo_root/pyproject.toml" -nt "$stamp" ] || [ "$constraints" -nt "$stamp" ]; then
    pip_quiet() { "$venv/bin/python" -m pip install -q "$@" 2>&1 | grep -v "^WARNING: Location" >&2 || true; }
    pip_quiet --upgrade pip
    install_torch
    if [ -n "${AETNET_NEWEST:-}" ]; then
        # The newest release of every dependency (torch stays: its newest PyPI build is CUDA-only).
        say "installing aetnet with the newest releases of its dependencies (torch kept at ${torch_pin#torch==})"
        pip_quiet --upgrade --upgrade-strategy eager -e "$repo_root[dev]" "$torch_pin"
    else
        say "installing aetnet and its dependencies at the versions of constraints.txt"
        pip_quiet -e "$repo_root[dev]" -c "$constraints"
    fi
    "$venv/bin/python" -c "import torch, transformers, aetnet" && touch "$stamp"
    say "done; in a new shell, 'source ${venv#"$PWD"/}/bin/activate' makes 'aetnet' and 'python' those of this set-up"
fi
export PATH="$venv/bin:$PATH"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
