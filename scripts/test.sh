#!/usr/bin/env bash
# The test suite (CPU, offline, tiny configs), after the same set-up as the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
python -m pytest -q "$@"
