#!/usr/bin/env bash
# GPU check: 200 steps of MultipleNegativesRankingLoss with all-MiniLM-L6-v2 on one GPU: in-process under
# bf16 and under fp16 (with its gradient scaler), then on one Ray Train GPU worker (NCCL process group)
# under bf16; then in-process bf16 with each batching: padded random batches, length-grouped padded batches,
# random batches packed (training.pack_sequences); prints throughput for each and the fp16 run's final loss
# scale, and checks that packed embeddings match padded ones on the GPU under bf16 autocast; last, a sweep
# of 8 trials with four trials sharing the GPU (search.gpus_per_trial: 0.25), in trials/hour.
# Run: bash bench/gpu_check.sh     (on a CUDA machine, after scripts/setup.sh; about 6 minutes)
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

# Batching, bf16 (the first run above is the default for MNRL: length-grouped and packed).
for batching in "padded-random:false:false" "padded-grouped:true:false" "packed-random:false:true"; do
  IFS=: read -r name grouped packed <<< "$batching"
  "$PYTHON" -m embedlab.cli train "${COMMON[@]}" training.mixed_precision=bf16 "training.group_by_length=$grouped" \
    "training.pack_sequences=$packed" "output_dir=bench/results/gpu_check/$name" training.resume=false
  report "in-process, bf16, $name" "bench/results/gpu_check/$name"
done
# Packing on the GPU: the same embeddings as the padded forward (bf16 rounding aside), dropout off.
"$PYTHON" - <<'PY'
import torch
from embedlab.model import EmbeddingModel
model = EmbeddingModel("sentence-transformers/all-MiniLM-L6-v2", device="cuda").eval()
texts = [["A man is playing a guitar on a stage in front of a large crowd.", "Hi", "A dog runs."], ["Music.", "Someone says hello to a friend.", "An animal is running in a big green field."]]
columns = [{key: value.cuda() for key, value in model.tokenize(column).items()} for column in texts]
with torch.autocast("cuda", dtype=torch.bfloat16):
    padded = model.embed([dict(features) for features in columns])
    model.pack_sequences = True
    packed = model.embed([dict(features) for features in columns])
difference = max((a.float() - b.float()).abs().max().item() for a, b in zip(padded, packed))
print(f"packed vs padded embeddings on the GPU, bf16: largest difference {difference:.2e}")
assert difference < 5e-2, difference
PY

# Fractional GPUs: 8 trials of the STSb sweep, four at a time on the one GPU (search.gpus_per_trial: 0.25,
# 4 CPUs each on a 16-core machine); trials/hour from the sweep's wall time, Ray's start included.
SWEEP=bench/results/gpu_check/sweep_quarter_gpu
rm -rf "$SWEEP"
start=$(date +%s)
"$PYTHON" -m embedlab.cli sweep experiments/sweeps/stsb_score_pairs.yaml search.gpus_per_trial=0.25 search.max_concurrent=4 \
  search.num_samples=8 "training.max_steps=$STEPS" "training.eval_steps=$STEPS" training.save_steps=null \
  training.mixed_precision=bf16 "test_evaluators=[]" "output_dir=$SWEEP"
"$PYTHON" -c "import csv, sys; rows = list(csv.DictReader(open(sys.argv[1]))); seconds = int(sys.argv[2]); print(f'sweep, 4 trials per GPU: {len(rows)} trials ({sum(row[\"status\"] == \"ok\" for row in rows)} ok) of $STEPS steps in {seconds} s, {len(rows) * 3600 / seconds:.0f} trials/hour')" "$SWEEP/trials.csv" "$(( $(date +%s) - start ))"
