"""The in-process trainer against Ray Train workers: same model, data, loss, global batch and steps.

    python bench/ray_train_vs_in_process.py                # all-MiniLM-L6-v2, STSb, CoSENT, 40 steps, 3 rounds
    python bench/ray_train_vs_in_process.py --smoke-test   # tiny numbers, checks the wiring

Each round runs, one after the other on this machine:
  in-process 2t  `embedlab train` without --workers, torch on 2 threads, with no Ray cluster running
  ray 1x2        1 Ray Train worker with 2 CPUs (2 torch threads): the same cores, shared with Ray's
                 daemons and Train's helper actors (controller, synchronization, preemption watcher ...)
  in-process 1t  as above on 1 torch thread
  ray 1x1        1 worker with 1 CPU (1 torch thread): a core is left for Ray's own processes, as on a
                 machine with spare cores, so the ratio is Ray Train's cost inside the worker
The local Ray cluster is started for the Ray runs and stopped after them, and each ratio is taken
within its round: rounds alternate because a shared small machine drifts by several percent over
minutes, and one pair measured minutes apart mostly measures the drift. After the rounds, once:
  ray 2x1        2 workers with 1 CPU each and half the batch each (the same global batch), gradients all-reduced
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
import torch  # noqa: E402

from embedlab import run  # noqa: E402
from embedlab.config import load_config  # noqa: E402
from embedlab.ray_train import connect, train_on_ray  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--config", default="experiments/configs/stsb_cosent.yaml")
parser.add_argument("--steps", type=int, default=40)
parser.add_argument("--rounds", type=int, default=3, help="in-process / ray 1x2 pairs; the ratio reported is their median")
parser.add_argument("--batch-size", type=int, default=16, help="global batch: split over the workers")
parser.add_argument("--output", default="bench/results/ray_train_vs_in_process")
parser.add_argument("--smoke-test", action="store_true")
args = parser.parse_args()
if args.smoke_test:
    args.steps, args.rounds, args.batch_size = 4, 1, 8


def measure(label: str, workers: int | None = None, cpus_per_worker: int | None = None, threads: int = 2) -> dict:
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
    torch.set_num_threads(threads)  # in-process runs; a Ray worker takes its CPUs' count from Ray
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


PAIRS = (("in-process 2t", "ray 1x2"), ("in-process 1t", "ray 1x1"))  # (baseline, Ray run) per round


def measure_round() -> dict:
    results = {"in-process 2t": measure("in-process 2t", threads=2)}
    ray_start_seconds = start_ray()
    results["ray 1x2"] = measure("ray 1x2", 1, 2)
    ray.shutdown()
    results["in-process 1t"] = measure("in-process 1t", threads=1)
    start_ray()
    results["ray 1x1"] = measure("ray 1x1", 1, 1)
    ray.shutdown()
    return {**results, "ray_start_seconds": ray_start_seconds}


rounds = [measure_round() for _ in range(args.rounds)]
start_ray()
two_workers = measure("ray 2x1", 2, 1)
ray.shutdown()

ratios = {ray_run: [entry[ray_run]["seconds_per_step"] / entry[baseline]["seconds_per_step"] for entry in rounds] for baseline, ray_run in PAIRS}
print(f"\n{args.steps} timed steps, global batch {args.batch_size}, {args.rounds} round(s); ray.init: {[round(entry['ray_start_seconds'], 1) for entry in rounds]} s")
print(f"{'round':6s} {'run':14s} {'s/step':>8s} {'pairs/s':>8s} {'ratio':>7s} {'overhead s':>11s} {'wall s':>8s}")
for number, entry in enumerate(rounds, start=1):
    for baseline, ray_run in PAIRS:
        for label in (baseline, ray_run):
            result = entry[label]
            ratio = f"{result['seconds_per_step'] / entry[baseline]['seconds_per_step']:7.3f}" if label == ray_run else f"{'':7s}"
            print(
                f"{number:<6d} {label:14s} {result['seconds_per_step']:8.3f} {result['pairs_per_second']:8.1f} {ratio} "
                f"{result['overhead_seconds']:11.1f} {result['wall_seconds']:8.1f}"
            )
for baseline, ray_run in PAIRS:
    values = ratios[ray_run]
    print(f"{ray_run} / {baseline} per-step ratio: median {statistics.median(values):.3f} (min {min(values):.3f}, max {max(values):.3f})")
one_worker_median = statistics.median(entry["ray 1x2"]["seconds_per_step"] for entry in rounds)
print(
    f"ray 2x1: {two_workers['seconds_per_step']:.3f} s/step, {two_workers['seconds_per_step'] / one_worker_median:.3f}x the "
    f"median ray 1x2 step, overhead {two_workers['overhead_seconds']:.1f} s"
)
Path(args.output).mkdir(parents=True, exist_ok=True)
summary = {"rounds": rounds, "ratios": ratios, "median_ratios": {run: statistics.median(values) for run, values in ratios.items()}, "ray 2x1": two_workers}
(Path(args.output) / "results.json").write_text(json.dumps(summary, indent=2))
