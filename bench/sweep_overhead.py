"""What a sweep spends outside training: per-trial overhead of in-process trials and trials of 2 workers.

    python bench/sweep_overhead.py                    # all-MiniLM-L6-v2 on STSb: 10 in-process trials, 3 two-worker trials
    python bench/sweep_overhead.py --compare 7c11288  # the same with that commit's code too, side by side in one run
    python bench/sweep_overhead.py --smoke-test       # 2 + 1 trials of 4 steps

Each trial trains `--steps` steps (batch 16) and evaluates once on 200 STSb dev pairs. Each sweep runs in a
process of its own with a Ray cluster of its own (its start is not counted); with `--compare`, the other
commit's code (checked out into a temporary git worktree) and this checkout's take turns: in-process sweeps
first, then two-worker sweeps. For each sweep:
  train s / trial      the trainer's training seconds (steps only)
  in-trial overhead    Tune's time_total_s (trial function start to last report) minus training seconds:
                       data, model and evaluator loading, the evaluation, saving the model (and, for
                       2-worker trials, starting their workers: every trial on code that ran a TorchTrainer
                       per trial, once per trial process since embedlab.trial_group)
  per-trial overhead   (sweep wall seconds - all training seconds) / trials: the above plus the trial
                       actor's start and Tune's own bookkeeping
  outside training     1 - all training seconds / sweep wall seconds
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KINDS = {"in_process": 1, "two_workers": 2}  # sweep -> workers per trial

parser = argparse.ArgumentParser()
parser.add_argument("--config", default="experiments/sweeps/stsb_score_pairs.yaml")
parser.add_argument("--steps", type=int, default=30)
parser.add_argument("--trials", type=int, default=10, help="in-process trials")
parser.add_argument("--worker-trials", type=int, default=3, help="2-worker trials")
parser.add_argument("--output", default="bench/results/sweep_overhead")
parser.add_argument("--compare", metavar="COMMIT", help="also measure this commit's code, in turns with this checkout's")
parser.add_argument("--smoke-test", action="store_true")
parser.add_argument("--one", choices=list(KINDS), help=argparse.SUPPRESS)  # a child process: this one sweep, its row in <output>/row.json
args = parser.parse_args()
if args.smoke_test:
    args.steps, args.trials, args.worker_trials = 4, 2, 1


def measure(kind: str, output: str) -> dict:
    """One sweep in this process, with the embedlab on PYTHONPATH."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from embedlab.config import load_config
    from embedlab.ray_train import connect
    from embedlab.sweep import prepare_sweep, run_sweep

    shutil.rmtree(output, ignore_errors=True)  # an earlier run's sweep: a folder holds one sweep
    workers = KINDS[kind]
    num_trials = args.trials if workers == 1 else args.worker_trials
    overrides = [
        f"training.max_steps={args.steps}",
        f"training.eval_steps={args.steps}",
        "training.save_steps=null",
        "evaluators.0.data.limit=200",
        "test_evaluators=[]",
        f"search.num_samples={num_trials}",
        "search.points_to_evaluate=[]",
        f"search.workers_per_trial={workers}",
        f"output_dir={output}",
    ]
    if workers > 1:
        overrides.append("search.cpus_per_trial=1")
    sweep = prepare_sweep(load_config(args.config, overrides))
    start = time.perf_counter()
    connect(None)
    ray_start_seconds = time.perf_counter() - start
    start = time.perf_counter()
    trials = run_sweep(sweep)["trials"]
    wall = time.perf_counter() - start
    train_seconds = [row["train_seconds"] for row in trials]
    in_trial = [row["trial_seconds"] - row["train_seconds"] for row in trials]
    return {
        "sweep": kind,
        "trials": num_trials,
        "train_seconds_per_trial": sum(train_seconds) / num_trials,
        "in_trial_overhead_seconds": sum(in_trial) / num_trials,
        "per_trial_overhead_seconds": (wall - sum(train_seconds)) / num_trials,
        "outside_training_fraction": 1 - sum(train_seconds) / wall,
        "wall_seconds": wall,
        "ray_start_seconds": ray_start_seconds,
    }


def in_child(code: Path, kind: str, output: Path) -> dict:
    """`measure` in a fresh process (and Ray cluster) that imports embedlab from `code`, run from there."""
    flags = [f"--{name.replace('_', '-')}={getattr(args, name)}" for name in ("config", "steps", "trials", "worker_trials")]
    env = {**os.environ, "PYTHONPATH": str(code / "platform")}
    command = [sys.executable, str(Path(__file__).resolve()), "--one", kind, f"--output={output}", *flags]
    subprocess.run(command, cwd=code, env=env, check=True)
    return json.loads((output / "row.json").read_text())


if args.one:
    row = measure(args.one, args.output)
    (Path(args.output) / "row.json").write_text(json.dumps(row))
    sys.exit()

output = Path(args.output).resolve()
codes = {"this checkout": REPO}
with tempfile.TemporaryDirectory(prefix="sweep-overhead-") as scratch:
    if args.compare:
        commit = subprocess.run(["git", "rev-parse", "--short", args.compare], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        subprocess.run(["git", "worktree", "add", "--detach", f"{scratch}/code", commit], cwd=REPO, capture_output=True, check=True)
        codes = {commit: Path(scratch) / "code", **codes}
    try:
        rows = [
            {"code": label, **in_child(code, kind, output / label.replace(" ", "_") / kind)}
            for kind in KINDS
            for label, code in codes.items()
        ]
    finally:
        if args.compare:
            subprocess.run(["git", "worktree", "remove", "--force", f"{scratch}/code"], cwd=REPO, check=True)

starts = ", ".join(f"{row['ray_start_seconds']:.1f}" for row in rows)
print(f"\n{args.steps} steps of batch 16 per trial; Ray cluster starts (not counted): {starts} s")
print(f"{'code':14s} {'sweep':12s} {'trials':>6s} {'train s/trial':>14s} {'in-trial overhead s':>20s} {'per-trial overhead s':>21s} {'outside training':>17s} {'wall s':>8s}")
for row in rows:
    print(
        f"{row['code']:14s} {row['sweep']:12s} {row['trials']:6d} {row['train_seconds_per_trial']:14.1f} {row['in_trial_overhead_seconds']:20.1f} "
        f"{row['per_trial_overhead_seconds']:21.1f} {row['outside_training_fraction']:17.1%} {row['wall_seconds']:8.1f}"
    )
output.mkdir(parents=True, exist_ok=True)
(output / "results.json").write_text(json.dumps({"steps": args.steps, "sweeps": rows}, indent=2))
