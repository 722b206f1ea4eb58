#!/usr/bin/env bash
# GPU check: 200 steps of MultipleNegativesRankingLoss with all-MiniLM-L6-v2 on one GPU: in-process under
# bf16 and under fp16 (with its gradient scaler), then on one Ray Train GPU worker (NCCL process group)
# under bf16; prints throughput for each and the fp16 run's final loss scale.
# Run: bash bench/gpu_check.sh     (on a CUDA machine, after scripts/setup.sh; about 2 minutes)
#      bash bench/gpu_check.sh --smoke-test    (20 steps)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
STEPS=200
[[ "${1:-}" == "--smoke-test" ]] && STEPS=20
export HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible to torch'; print('torch', torch.__version__, 'bf16', torch.cuda.is_bf16_supported())"

# STSb pairs scoring >= 0.8 as anchor-positive pairs, batch 64 (63 in-batch negatives per anchor).
COMMON=(experiments/configs/stsb_pairs_mnrl_matryoshka.yaml "loss.modifiers=[]" "training.max_steps=$STEPS"
        training.batch_size=64 training.eval_steps=null training.save_steps=null
        training.show_progress_bar=false "evaluators=[]" "test_evaluators=[]")

report() {  # the trainer's own throughput: training steps only, no start-up or evaluation
  "$PYTHON" -c "import json, sys; m = json.load(open(sys.argv[1]))['metrics']; print(f'$1: {m[\"train_samples_per_second\"]:.0f} pairs/s, {$STEPS / m[\"train_seconds\"]:.1f} steps/s ($STEPS steps of 64 pairs), final loss {m[\"loss\"]:.4f}')" "$2/results.json"
}

"$PYTHON" -m embedlab.cli train "${COMMON[@]}" training.mixed_precision=bf16 output_dir=bench/results/gpu_check/in_process training.resume=false
report "in-process, bf16" bench/results/gpu_check/in_process
# fp16 with a checkpoint at the end: the gradient scaler's state must be in it, with a finite scale.
"$PYTHON" -m embedlab.cli train "${COMMON[@]}" training.mixed_precision=fp16 "training.save_steps=$STEPS" output_dir=bench/results/gpu_check/in_process_fp16 training.resume=false
report "in-process, fp16" bench/results/gpu_check/in_process_fp16
"$PYTHON" -c "import sys, torch; s = torch.load(sys.argv[1], weights_only=True)['grad_scaler']; assert s and s['scale'] > 0, s; print(f'fp16 loss scale after $STEPS steps: {s[\"scale\"]:g}')" "bench/results/gpu_check/in_process_fp16/checkpoints/checkpoint-$STEPS/training_state.pt"
"$PYTHON" -m embedlab.cli train "${COMMON[@]}" training.mixed_precision=bf16 output_dir=bench/results/gpu_check/ray_1gpu training.resume=false --workers 1 --gpu
report "Ray Train, 1 GPU worker, bf16" bench/results/gpu_check/ray_1gpu
