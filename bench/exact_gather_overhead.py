"""Exact cross-worker gathering vs the gathering it replaced: per-step time of 2 workers x 1 CPU.

Issue 13 made distributed training exact at any batch size (global batches split into shards, shard-size
weights, variable-size gathers with offsets from the gathered sizes). This measures what that costs in
the common case, evenly divisible data, where the old code was already right: the same training (2 gloo
processes, one torch thread each, MultipleNegativesRankingLoss with gather_across_devices on STSb pairs
scoring >= 0.8, all-MiniLM-L6-v2, batch 16 per worker) with the code of commit BASELINE and with the
working tree, in alternating rounds (this shared machine drifts by 10 % over minutes), reporting the
median per-round ratio of seconds per training step (the trainer's own train_seconds: no start-up).
The process group is set up by torch.distributed directly, as Ray Train does, without Ray's start-up.

Run:  .venv/bin/python bench/exact_gather_overhead.py [--smoke-test]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "dfe6532"  # the last commit before issue 13's exact gathering

parser = argparse.ArgumentParser()
parser.add_argument("--smoke-test", action="store_true", help="4 steps, one round")
parser.add_argument("--steps", type=int, default=40)
parser.add_argument("--rounds", type=int, default=3)
parser.add_argument("--worker", nargs=4, metavar=("RANK", "PORT", "STEPS", "RESULT"), help=argparse.SUPPRESS)
args = parser.parse_args()


def train_one_worker(rank: int, port: int, steps: int, result_file: str) -> None:
    """One of the two workers: the implementation is whichever embedlab PYTHONPATH puts first."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), HF_HUB_OFFLINE="1")
    dist.init_process_group("gloo", rank=rank, world_size=2)
    from embedlab.config import ConversionConfig, DataSource, TrainingConfig
    from embedlab.data import load_with_format
    from embedlab.losses import MultipleNegativesRankingLoss
    from embedlab.model import EmbeddingModel
    from embedlab.trainer import Trainer

    source = DataSource(str(ROOT / "experiments/data/stsb/train.tsv"), columns=["sentence1", "sentence2", "score"], convert=ConversionConfig(to="anchor_positive_pairs", threshold=0.8))
    dataset, detected = load_with_format(source)
    dataset = dataset.select(range(len(dataset) // 32 * 32))  # evenly divisible: every step 16 + 16 rows
    model = EmbeddingModel("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    args = TrainingConfig(batch_size=16, max_steps=steps, save_steps=None, show_progress_bar=False, sampler="random")
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(MultipleNegativesRankingLoss(model, gather_across_devices=True), dataset, detected, args, folder, rank=rank, world_size=2)
        trainer.train()
    if rank == 0:
        Path(result_file).write_text(json.dumps({"seconds_per_step": trainer.train_seconds / steps}))
    dist.destroy_process_group()


def run_round(code: Path, steps: int) -> float:
    """Seconds per step of 2 workers running the embedlab in `code`."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(code / "platform"), "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as folder:
        result = Path(folder) / "result.json"
        workers = [subprocess.Popen([sys.executable, __file__, "--worker", str(rank), str(port), str(steps), str(result)], env=env) for rank in range(2)]
        if any(worker.wait() for worker in workers):
            sys.exit(f"a worker running {code} failed")
        return json.loads(result.read_text())["seconds_per_step"]


if args.worker:
    rank, port, steps, result_file = args.worker
    train_one_worker(int(rank), int(port), int(steps), result_file)
    sys.exit(0)

steps, rounds = (4, 1) if args.smoke_test else (args.steps, args.rounds)
with tempfile.TemporaryDirectory() as folder:
    baseline = Path(folder) / "baseline"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(baseline), BASELINE], check=True, capture_output=True)
    try:
        ratios = []
        for round_index in range(rounds):
            old = run_round(baseline, steps)
            new = run_round(ROOT, steps)
            ratios.append(new / old)
            print(f"round {round_index + 1}: {BASELINE} {old:.3f} s/step, exact gathering {new:.3f} s/step, ratio {new / old:.3f}", flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline)], capture_output=True)
print(f"median ratio exact / {BASELINE}: {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f}; target <= 1.03)")
