"""The in-process trainer against Ray Train workers: same model, data, loss, global batch and steps.

    python bench/ray_train_vs_in_process.py                # all-MiniLM-L6-v2, STSb, CoSENT, 60 steps
    python bench/ray_train_vs_in_process.py --smoke-test   # tiny numbers, checks the wiring

Runs, one after another on this machine:
  in-process  `embedlab train` without --workers (torch uses every core)
  ray 1x2     1 Ray Train worker with 2 CPUs: the same cores, plus Ray's controller, reporting, checkpoints
  ray 2x1     2 workers with 1 CPU each and half the batch each (the same global batch), gradients all-reduced
Per-step time: the trainer's training seconds (the steps only: no start-up, evaluation or checkpoint)
divided by the steps. Overhead: wall seconds minus training seconds, i.e. start-up (data, model, Ray
workers and process group), shutdown, and the one final checkpoint (with the model) a Ray run reports.
"""

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from embedlab import run  # noqa: E402
from embedlab.config import load_config  # noqa: E402
from embedlab.ray_train import connect, train_on_ray  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--config", default="experiments/configs/stsb_cosent.yaml")
parser.add_argument("--steps", type=int, default=60)
parser.add_argument("--batch-size", type=int, default=16, help="global batch: split over the workers")
parser.add_argument("--output", default="bench/results/ray_train_vs_in_process")
parser.add_argument("--smoke-test", action="store_true")
args = parser.parse_args()
if args.smoke_test:
    args.steps, args.batch_size = 4, 8

RUNS = {"in-process": (None, None), "ray 1x2": (1, 2), "ray 2x1": (2, 1)}  # workers, CPUs per worker


def measure(label: str, workers: int | None, cpus_per_worker: int | None) -> dict:
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


start = time.perf_counter()
connect(None)  # one local Ray cluster for both Ray runs; its start-up is reported on its own
ray_start_seconds = time.perf_counter() - start
results = [measure(label, *RUNS[label]) for label in RUNS]
baseline = results[0]["seconds_per_step"]
print(f"\nRay cluster start (ray.init): {ray_start_seconds:.1f} s; {args.steps} timed steps, global batch {args.batch_size}")
print(f"{'run':12s} {'s/step':>8s} {'pairs/s':>8s} {'vs in-process':>14s} {'overhead s':>11s} {'wall s':>8s}")
for result in results:
    ratio = result["seconds_per_step"] / baseline
    print(
        f"{result['run']:12s} {result['seconds_per_step']:8.3f} {result['pairs_per_second']:8.1f} {ratio:14.3f} "
        f"{result['overhead_seconds']:11.1f} {result['wall_seconds']:8.1f}"
    )
Path(args.output).mkdir(parents=True, exist_ok=True)
(Path(args.output) / "results.json").write_text(json.dumps({"ray_start_seconds": ray_start_seconds, "runs": results}, indent=2))
