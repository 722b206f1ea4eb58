"""What a sweep spends outside training: per-trial overhead of in-process trials and 2-worker TorchTrainer trials.

    python bench/sweep_overhead.py                # all-MiniLM-L6-v2 on STSb: 10 in-process trials, 3 two-worker trials
    python bench/sweep_overhead.py --smoke-test   # 2 + 1 trials of 4 steps

Each trial trains `--steps` steps (batch 16) and evaluates once on 200 STSb dev pairs. For each sweep:
  train s / trial      the trainer's training seconds (steps only)
  in-trial overhead    Tune's time_total_s (trial function start to last report) minus training seconds:
                       data, model and evaluator loading, the evaluation, saving the model (and, for
                       TorchTrainer trials, starting the worker group and its checkpoints)
  per-trial overhead   (sweep wall seconds - all training seconds) / trials: the above plus the trial
                       actor's start and Tune's own bookkeeping
  outside training     1 - all training seconds / sweep wall seconds
"""

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from embedlab.config import load_config  # noqa: E402
from embedlab.ray_train import connect  # noqa: E402
from embedlab.sweep import prepare_sweep, run_sweep  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--config", default="experiments/sweeps/stsb_score_pairs.yaml")
parser.add_argument("--steps", type=int, default=30)
parser.add_argument("--trials", type=int, default=10, help="in-process trials")
parser.add_argument("--worker-trials", type=int, default=3, help="2-worker TorchTrainer trials")
parser.add_argument("--output", default="bench/results/sweep_overhead")
parser.add_argument("--smoke-test", action="store_true")
args = parser.parse_args()
if args.smoke_test:
    args.steps, args.trials, args.worker_trials = 4, 2, 1


def measure(label: str, num_trials: int, workers: int) -> dict:
    overrides = [
        f"training.max_steps={args.steps}",
        f"training.eval_steps={args.steps}",
        "training.save_steps=null",
        "evaluators.0.data.limit=200",
        "test_evaluators=[]",
        f"search.num_samples={num_trials}",
        "search.points_to_evaluate=[]",
        f"search.workers_per_trial={workers}",
        f"output_dir={args.output}/{label}",
    ]
    if workers > 1:
        overrides.append("search.cpus_per_trial=1")
    sweep = prepare_sweep(load_config(args.config, overrides))
    start = time.perf_counter()
    trials = run_sweep(sweep)["trials"]
    wall = time.perf_counter() - start
    train_seconds = [row["train_seconds"] for row in trials]
    in_trial = [row["trial_seconds"] - row["train_seconds"] for row in trials]
    return {
        "sweep": label,
        "trials": num_trials,
        "train_seconds_per_trial": sum(train_seconds) / num_trials,
        "in_trial_overhead_seconds": sum(in_trial) / num_trials,
        "per_trial_overhead_seconds": (wall - sum(train_seconds)) / num_trials,
        "outside_training_fraction": 1 - sum(train_seconds) / wall,
        "wall_seconds": wall,
    }


start = time.perf_counter()
connect(None)
ray_start_seconds = time.perf_counter() - start
rows = [measure("in_process", args.trials, 1), measure("two_workers", args.worker_trials, 2)]
print(f"\nRay cluster start: {ray_start_seconds:.1f} s; {args.steps} steps of batch 16 per trial")
print(f"{'sweep':12s} {'trials':>6s} {'train s/trial':>14s} {'in-trial overhead s':>20s} {'per-trial overhead s':>21s} {'outside training':>17s} {'wall s':>8s}")
for row in rows:
    print(
        f"{row['sweep']:12s} {row['trials']:6d} {row['train_seconds_per_trial']:14.1f} {row['in_trial_overhead_seconds']:20.1f} "
        f"{row['per_trial_overhead_seconds']:21.1f} {row['outside_training_fraction']:17.1%} {row['wall_seconds']:8.1f}"
    )
Path(args.output).mkdir(parents=True, exist_ok=True)
(Path(args.output) / "results.json").write_text(json.dumps({"ray_start_seconds": ray_start_seconds, "sweeps": rows}, indent=2))
