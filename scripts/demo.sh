#!/usr/bin/env bash
# The main job on the embedded default: fine-tune a tiny AETNet from scratch on synthetic forms (no download, no
# ../shared), evaluate entity-level F1, write per-word predictions and save a reloadable checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
python examples/run_funsd.py --output_dir "${1:-outputs/funsd-synthetic}" "${@:2}"
