"""The in-process trainer against Ray Train workers: same model, data, loss, global batch and steps.

    python bench/ray_train_vs_in_process.py                # all-MiniLM-L6-v2, STSb, CoSENT, 60 steps, 3 rounds
    python bench/ray_train_vs_in_process.py --smoke-test   # tiny numbers, checks the wiring

Each round runs, one after the other on this machine:
  in-process  `embedlab train` without --workers (torch uses every core), with no Ray cluster running
  ray 1x2     1 Ray Train worker with 2 CPUs: the same cores, plus Ray's daemons, controller, reporting
              and checkpoint; the local Ray cluster is started for it and stopped after it
and the 1x2 / in-process per-step ratio is taken within the round. Rounds alternate because a shared
small machine drifts by several percent over minutes: one pair measured minutes apart mostly measures
the drift. After the rounds, once:
  ray 2x1     2 workers with 1 CPU each and half the batch each (the same global batch), gradients all-reduced
Per-step time: the trainer's training seconds (the steps only: no start-up, evaluation or checkpoint)
divided by the steps. Overhead: wall seconds minus training seconds, i.e. start-up (data, model, Ray
workers and process group), shutdown, and the one final checkpoint (with the model) a Ray run reports.
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import ray  # noqa: E402

from embedlab import run  # noqa: E402
from embedlab.config import load_config  # noqa: E402
from embedlab.ray_train import connect, train_on_ray  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--config", default="experiments/configs/stsb_cosent.yaml")
parser.add_argument("--steps", type=int, default=60)
parser.add_argument("--rounds", type=int, default=3, help="in-process / ray 1x2 pairs; the ratio reported is their median")
parser.add_argument("--batch-size", type=int, default=16, help="global batch: split over the workers")
parser.add_argument("--output", default="bench/results/ray_train_vs_in_process")
parser.add_argument("--smoke-test", action="store_true")
args = parser.parse_args()
if args.smoke_test:
    args.steps, args.rounds, args.batch_size = 4, 1, 8


def measure(label: str, workers: int | None = None, cpus_per_worker: int | None = None) -> dict:
    overrides = [
        f"training.max_steps={args.steps}",
        "training.eval_steps=null",  # one evaluation, at the end: no evaluators, only the training metrics
        "training.save_steps=null",
        f"training.batch_size={args.batch_size // (workers or 1)}",
        "training.show_progress_bar=false",
        "evaluators=[]",
        "test_evaluators=[]",
        f"output_dir={args.output}/{label.replace(' ', '_')}",
        "training.resume=false",
    ]
    if workers:
        overrides += [f"distributed.workers={workers}", f"distributed.cpus_per_worker={cpus_per_worker}"]
    if args.smoke_test:
        overrides.append("data.train.limit=64")
    config = load_config(args.config, overrides)
    start = time.perf_counter()
    prepared = run.prepare(config, device="cpu")
    train_on_ray(prepared) if workers else run.train(prepared)
    wall = time.perf_counter() - start
    train_seconds = json.loads((Path(config.output_dir) / "results.json").read_text())["metrics"]["train_seconds"]
    return {
        "run": label,
        "seconds_per_step": train_seconds / args.steps,
        "pairs_per_second": args.batch_size * args.steps / train_seconds,
        "overhead_seconds": wall - train_seconds,
        "wall_seconds": wall,
    }


def start_ray() -> float:
    start = time.perf_counter()
    connect(None)
    return time.perf_counter() - start


rounds = []
for _ in range(args.rounds):
    in_process = measure("in-process")
    ray_start_seconds = start_ray()
    one_worker = measure("ray 1x2", 1, 2)
    ray.shutdown()
    rounds.append({"in-process": in_process, "ray 1x2": one_worker, "ray_start_seconds": ray_start_seconds})
start_ray()
two_workers = measure("ray 2x1", 2, 1)
ray.shutdown()

ratios = [entry["ray 1x2"]["seconds_per_step"] / entry["in-process"]["seconds_per_step"] for entry in rounds]
print(f"\n{args.steps} timed steps, global batch {args.batch_size}, {args.rounds} round(s)")
print(f"{'round':6s} {'run':12s} {'s/step':>8s} {'pairs/s':>8s} {'ratio':>7s} {'overhead s':>11s} {'wall s':>8s} {'ray.init s':>11s}")
for number, (entry, ratio) in enumerate(zip(rounds, ratios, strict=True), start=1):
    for label in ("in-process", "ray 1x2"):
        result = entry[label]
        shown_ratio = f"{ratio:7.3f}" if label == "ray 1x2" else f"{'':7s}"
        init = f"{entry['ray_start_seconds']:11.1f}" if label == "ray 1x2" else ""
        print(
            f"{number:<6d} {label:12s} {result['seconds_per_step']:8.3f} {result['pairs_per_second']:8.1f} {shown_ratio} "
            f"{result['overhead_seconds']:11.1f} {result['wall_seconds']:8.1f} {init}"
        )
one_worker_median = statistics.median(entry["ray 1x2"]["seconds_per_step"] for entry in rounds)
print(f"ray 1x2 / in-process per-step ratio: median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
print(
    f"ray 2x1: {two_workers['seconds_per_step']:.3f} s/step, {two_workers['seconds_per_step'] / one_worker_median:.3f}x the "
    f"median ray 1x2 step, overhead {two_workers['overhead_seconds']:.1f} s"
)
Path(args.output).mkdir(parents=True, exist_ok=True)
summary = {"rounds": rounds, "ratios": ratios, "median_ratio": statistics.median(ratios), "ray 2x1": two_workers}
(Path(args.output) / "results.json").write_text(json.dumps(summary, indent=2))
