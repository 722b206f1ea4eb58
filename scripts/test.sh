#!/usr/bin/env bash
# The test suite (unit + integration; `-m slow` runs only the long runs, `-m ''` everything). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
