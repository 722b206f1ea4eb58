#!/usr/bin/env bash
# The main job: fine-tune all-MiniLM-L6-v2 on STSb with CoSENTLoss, printing test Spearman before and after.
# Extra arguments go to `embedlab train`, e.g. `scripts/demo.sh --smoke-test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1
exec .venv/bin/embedlab train experiments/configs/stsb_cosent.yaml "$@"
