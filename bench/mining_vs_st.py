"""embedlab mining vs sentence-transformers' `mine_hard_negatives`: time and peak memory, side by side.

The same task (bench/mining_task.py: 1406 STSb train pairs, a corpus of ~19.5k STSb + SICK sentences),
the same model (all-MiniLM-L6-v2, CPU), the same settings (3 top negatives, batch 32). Each measurement
runs in its own process, so its peak resident memory (model included) is its own: sentence-transformers,
embedlab with an empty cache (cold), embedlab again on that cache (warm), in alternating rounds.

Run:  .venv/bin/python bench/mining_vs_st.py [--rounds 2] [--smoke-test]
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASK = ROOT / "bench" / "results" / "mining_task"
SETTINGS = {"num_negatives": 3, "batch_size": 32}


def load_task(limit: int | None):
    import datasets

    pairs = datasets.Dataset.from_json(str(TASK / "train_pairs.jsonl"))
    corpus = [line for line in (TASK / "mining_corpus.txt").read_text().splitlines() if line.strip()]
    if limit:
        pairs, corpus = pairs.select(range(limit)), corpus[: limit * 4]
    return pairs, corpus


def measure(side: str, cache: str, limit: int | None) -> dict:
    """One side, in this process: seconds for model load + mining, and rows mined."""
    import transformers.models.bert.modeling_bert  # noqa: F401  (imported on first model load otherwise)

    pairs, corpus = load_task(limit)
    # Imports before the clock (each side's take seconds); the model load is timed on both sides, as
    # embedlab's `mine` loads its model itself.
    if side == "st":
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.util import mine_hard_negatives

        from embedlab.model import DEFAULT_MODEL, resolve_model_path

        start = time.perf_counter()
        model = SentenceTransformer(str(resolve_model_path(DEFAULT_MODEL)), device="cpu")  # the offline copy
        mined = mine_hard_negatives(pairs, model, corpus=corpus, sampling_strategy="top", verbose=False, **SETTINGS)
    else:
        from embedlab.config import MiningConfig
        from embedlab.mining import mine

        corpus_file = Path(cache) / "corpus.txt"
        corpus_file.write_text("\n".join(corpus) + "\n")
        start = time.perf_counter()
        mined = mine(pairs, MiningConfig(corpus=str(corpus_file), cache_folder=cache, **SETTINGS)).dataset
    return {"seconds": time.perf_counter() - start, "rows": len(mined)}


def run_child(side: str, cache: str, limit: int | None) -> dict:
    """One side in a fresh process: its time and its own peak resident memory."""
    command = [sys.executable, __file__, "--child", side, "--cache", cache] + (["--limit", str(limit)] if limit else [])
    finished = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(finished.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", choices=["st", "embedlab"])
    parser.add_argument("--cache")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--smoke-test", action="store_true", help="64 pairs and 256 corpus texts")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "mining_vs_st.json"))
    args = parser.parse_args()
    if args.child:
        result = measure(args.child, args.cache, args.limit)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
        print(json.dumps(result))
        sys.exit(0)
    if not (TASK / "train_pairs.jsonl").exists():
        subprocess.run([sys.executable, str(ROOT / "bench" / "mining_task.py"), "--output", str(TASK)], check=True)
    limit = 64 if args.smoke_test else args.limit
    rounds = []
    for index in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="embedlab-mining-bench-") as cache:
            measured = {"st": run_child("st", cache, limit), "embedlab_cold": run_child("embedlab", cache, limit), "embedlab_warm": run_child("embedlab", cache, limit)}
        measured["throughput_ratio"] = measured["st"]["seconds"] / measured["embedlab_cold"]["seconds"]
        measured["memory_ratio"] = measured["embedlab_cold"]["peak_rss_mb"] / measured["st"]["peak_rss_mb"]
        measured["warm_speedup"] = measured["embedlab_cold"]["seconds"] / measured["embedlab_warm"]["seconds"]
        print(f"round {index + 1}: " + json.dumps(measured), flush=True)
        rounds.append(measured)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"settings": SETTINGS, "rounds": rounds}, indent=2))
