"""Peak memory of one training step, CachedMultipleNegativesRankingLoss (mini-batch 32) against
MultipleNegativesRankingLoss, as the batch grows from 32 to 512 (all-MiniLM-L6-v2, STSb pairs scoring
>= 0.8 as anchor-positive pairs).

Each measurement runs in a fresh process (the peak resident set size only ever grows), doing one
forward + backward. On a GPU it reports torch.cuda.max_memory_allocated instead.

Run:  .venv/bin/python bench/cached_mnrl_memory.py [--smoke-test]
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
parser = argparse.ArgumentParser()
parser.add_argument("--smoke-test", action="store_true", help="batches 8 and 16 with mini-batch 4")
parser.add_argument("--worker", nargs=2, metavar=("LOSS", "BATCH"), help="internal: measure one step")
parser.add_argument("--mini-batch-size", type=int, default=32)
parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "cached_mnrl_memory.json"))
args = parser.parse_args()


def one_step(loss_name: str, batch_size: int, mini_batch_size: int) -> dict:
    import torch

    from embedlab.config import ConversionConfig, DataSource
    from embedlab.data import Collator, load_with_format
    from embedlab.losses import CachedMultipleNegativesRankingLoss, MultipleNegativesRankingLoss
    from embedlab.model import EmbeddingModel

    source = DataSource(
        str(ROOT / "experiments/data/stsb/train.tsv"),
        columns=["sentence1", "sentence2", "score"],
        convert=ConversionConfig(to="anchor_positive_pairs", threshold=0.8),
    )
    dataset, detected = load_with_format(source)
    model = EmbeddingModel("sentence-transformers/all-MiniLM-L6-v2")
    if loss_name == "cached":
        loss = CachedMultipleNegativesRankingLoss(model, mini_batch_size=mini_batch_size)
    else:
        loss = MultipleNegativesRankingLoss(model)
    features, _ = Collator(model.tokenize, detected, dataset)(dataset[:batch_size])
    features = [{key: value.to(model.device) for key, value in batch.items()} for batch in features]
    baseline_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    loss(features, None).backward()
    seconds = time.perf_counter() - start
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"loss": loss_name, "batch_size": batch_size, "seconds": seconds, "peak_rss_mb": peak_rss_mb, "step_rss_mb": peak_rss_mb - baseline_rss_mb}
    if torch.cuda.is_available():
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


if args.worker:
    print(json.dumps(one_step(args.worker[0], int(args.worker[1]), args.mini_batch_size)))
    sys.exit(0)

batch_sizes = [8, 16] if args.smoke_test else [32, 64, 128, 256, 512]
mini_batch_size = 4 if args.smoke_test else args.mini_batch_size
rows = []
for batch_size in batch_sizes:
    for loss_name in ("cached", "uncached"):
        command = [sys.executable, __file__, "--worker", loss_name, str(batch_size), "--mini-batch-size", str(mini_batch_size)]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
        print(rows[-1], flush=True)

Path(args.output).parent.mkdir(parents=True, exist_ok=True)
Path(args.output).write_text(json.dumps(rows, indent=2))
print(f"\nOne training step, mini-batch {mini_batch_size}; memory the step added over the loaded model (peak RSS):\n")
print("| batch | cached MB | uncached MB | cached s | uncached s |\n|---|---|---|---|---|")
for batch_size in batch_sizes:
    cached, uncached = (next(r for r in rows if r["batch_size"] == batch_size and r["loss"] == name) for name in ("cached", "uncached"))
    print(f"| {batch_size} | {cached['step_rss_mb']:.0f} | {uncached['step_rss_mb']:.0f} | {cached['seconds']:.1f} | {uncached['seconds']:.1f} |")
