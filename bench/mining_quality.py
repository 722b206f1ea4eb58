"""Does mining pay? MultipleNegativesRankingLoss on mined triplets vs on the plain pairs, same steps.

The retrieval task of bench/mining_task.py: 1406 STSb train pairs (score >= 0.8) to train on; held out,
the STSb test pairs' queries retrieving their positives among ~19.9k STSb + SICK sentences
(InformationRetrievalEvaluator: NDCG@10, MRR@10). all-MiniLM-L6-v2, batch 32, learning rate 2e-5, 10%
warm-up, seed 0, the same number of steps for every run (one epoch of the pairs). Every mining setting of
the grid is trained and reported, including those that hurt (false negatives: the top-ranked candidates
of STSb sentences are often paraphrases). Negatives come from the task's mining corpus (no test
positive is ever a training negative); the corpus embeddings are computed once and cached, so each
further setting mines in seconds.

Run:  .venv/bin/python bench/mining_quality.py [--settings plain,top1,...] [--smoke-test]
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASK = ROOT / "bench" / "results" / "mining_task"
sys.path.insert(0, str(ROOT / "bench"))

# name -> mining settings (None: the plain pairs). A small grid over what a sweep would search.
SETTINGS = {
    "plain": None,
    "top1": {"num_negatives": 1},  # the hardest candidate: the most likely false negative
    "skip5-max0.8": {"num_negatives": 1, "range_min": 5, "max_score": 0.8},
    "skip10-rel0.05-random": {"num_negatives": 1, "range_min": 10, "range_max": 50, "relative_margin": 0.05, "sampling_strategy": "random"},
    "skip20-rel0.1": {"num_negatives": 1, "range_min": 20, "range_max": 60, "relative_margin": 0.1},
}

parser = argparse.ArgumentParser()
parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated names of SETTINGS")
parser.add_argument("--smoke-test", action="store_true", help="4 steps on 64 pairs, a 500-text test corpus")
parser.add_argument("--cache", default="/tmp/embedlab-mining-quality-cache", help="the mining embeddings cache")
parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "mining_quality.json"))
args = parser.parse_args()

# 1. the task
if not (TASK / "train_pairs.jsonl").exists():
    subprocess.run([sys.executable, str(ROOT / "bench" / "mining_task.py"), "--output", str(TASK)], check=True)
import datasets  # noqa: E402
from mining_task import ir_evaluator  # noqa: E402

from embedlab.config import MiningConfig, TrainingConfig  # noqa: E402
from embedlab.formats import detect_format  # noqa: E402
from embedlab.losses import MultipleNegativesRankingLoss  # noqa: E402
from embedlab.mining import mine  # noqa: E402
from embedlab.model import EmbeddingModel  # noqa: E402
from embedlab.trainer import Trainer, set_seed  # noqa: E402

pairs = datasets.Dataset.from_json(str(TASK / "train_pairs.jsonl"))
evaluator = ir_evaluator(TASK, corpus_limit=500 if args.smoke_test else None)
if args.smoke_test:
    pairs = pairs.select(range(64))
steps = 4 if args.smoke_test else len(pairs) // 32


def scores(model) -> dict:
    start = time.perf_counter()
    metrics = evaluator(model)
    keys = [key for key in metrics if key.endswith(("cosine_ndcg@10", "cosine_mrr@10"))]
    return {**{key.split("_cosine_")[1]: metrics[key] for key in keys}, "eval_seconds": time.perf_counter() - start}


# 2. the untrained model
results = {"task": json.loads((TASK / "sizes.json").read_text()), "steps": steps, "batch_size": 32, "runs": {}}
results["untrained"] = scores(EmbeddingModel("sentence-transformers/all-MiniLM-L6-v2", device="cpu"))
print("untrained", results["untrained"], flush=True)

# 3. one training run per setting
for name in args.settings.split(","):
    values = SETTINGS[name]
    start = time.perf_counter()
    if values is None:
        data = pairs
    else:
        settings = MiningConfig(corpus=str(TASK / "mining_corpus.txt"), cache_folder=args.cache, **values)
        data = mine(pairs, settings).dataset
    mining_seconds = time.perf_counter() - start
    detected = detect_format(data, format_key="anchor_positive_pairs" if values is None else "triplets")
    set_seed(0)
    model = EmbeddingModel("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    training = TrainingConfig(max_steps=steps, batch_size=32, learning_rate=2e-5, warmup_ratio=0.1, seed=0, save_steps=None, resume=False, show_progress_bar=False)
    start = time.perf_counter()
    Trainer(MultipleNegativesRankingLoss(model), data, detected, training, Path(f"/tmp/embedlab-mining-quality/{name}")).train()
    run = {"settings": values, "rows": len(data), "mining_seconds": mining_seconds, "train_seconds": time.perf_counter() - start, **scores(model)}
    run["ndcg_gain"] = run["ndcg@10"] - results["untrained"]["ndcg@10"]
    results["runs"][name] = run
    print(name, json.dumps(run), flush=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2))  # after each run: a long benchmark keeps what it has

print(f"{'setting':24s} {'rows':>6s} {'NDCG@10':>8s} {'MRR@10':>8s} {'gain':>8s}")
for name, run in results["runs"].items():
    print(f"{name:24s} {run['rows']:6d} {run['ndcg@10']:8.4f} {run['mrr@10']:8.4f} {run['ndcg_gain']:+8.4f}")
