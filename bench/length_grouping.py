"""Length-grouped batches (`training.group_by_length`) against random batches, side by side in one run.

1. STSb, 1 epoch of CoSENTLoss (all-MiniLM-L6-v2, batch 16, learning rate 2e-5, 10% warm-up): embedlab
   with random batches, embedlab with length-grouped batches, and the sentence-transformers trainer
   (random batches): STSb test cosine Spearman and training throughput, with the ratios.
2. SICK triplets (premise, entailed, contradicted), 1 epoch of MultipleNegativesRankingLoss (no-duplicates
   batches, where length grouping changes the in-batch negatives): random vs grouped, SICK test Spearman.

Each run also reports the share of its tokens that are padding (each column padded to its batch's longest).

Run:  .venv/bin/python bench/length_grouping.py [--smoke-test] [--only stsb|sick] [--seeds 0 1]
"""

import argparse
import json
import platform as stdlib_platform
import time
from pathlib import Path

import torch

from embedlab.config import DataSource, TrainingConfig
from embedlab.data import load_with_format
from embedlab.evaluation import EmbeddingSimilarityEvaluator
from embedlab.losses import CoSENTLoss, MultipleNegativesRankingLoss
from embedlab.model import DEFAULT_MODEL, EmbeddingModel
from embedlab.trainer import Trainer, set_seed
from sick_data import sick_formats, sick_split
from st_reference import train_st_cosent

ROOT = Path(__file__).resolve().parents[1]
STSB = ROOT / "experiments" / "data" / "stsb"
COLUMNS = ["sentence1", "sentence2", "score"]

parser = argparse.ArgumentParser()
parser.add_argument("--smoke-test", action="store_true", help="64 rows per data set: checks the wiring")
parser.add_argument("--only", choices=["stsb", "sick"])
parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="a run per seed and batching (the sentence-transformers run takes the first)")
parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "length_grouping.json"))
args = parser.parse_args()
limit = 64 if args.smoke_test else None
results = {"torch_threads": torch.get_num_threads(), "machine": stdlib_platform.processor() or stdlib_platform.machine(), "runs": []}


def padding_share(trainer: Trainer, model) -> float:
    """Pad tokens / all tokens over the epoch's batches, each column padded to its batch's longest."""
    dataset, detected = trainer.datasets["train"], next(iter(trainer.collates.values()))
    padded = real = 0
    for column in detected.input_columns:
        counts = model.token_counts(dataset[column])
        for batch in trainer.sampler.batches(0):
            longest = max(counts[i] for i in batch)
            padded += longest * len(batch) - sum(counts[i] for i in batch)
            real += sum(counts[i] for i in batch)
    return padded / (padded + real)


def train_embedlab(task: str, loss_class, dataset, detected, evaluator, metric: str, grouped: bool, seed: int) -> dict:
    set_seed(seed)
    model = EmbeddingModel(DEFAULT_MODEL, device="cpu")
    training = TrainingConfig(
        epochs=1, batch_size=16, learning_rate=2e-5, warmup_ratio=0.1, seed=seed, save_steps=None, resume=False,
        show_progress_bar=False, group_by_length=grouped, max_steps=3 if args.smoke_test else None,
    )  # fmt: skip
    start = time.perf_counter()  # the row lengths are counted inside Trainer(): they are part of the cost
    trainer = Trainer(loss_class(model), dataset, detected, training, Path("/tmp/embedlab-bench-grouping") / f"{task}-{grouped}-{seed}")
    trainer.train()
    seconds = time.perf_counter() - start
    row = {
        "task": task, "trainer": "embedlab", "batches": "length-grouped" if grouped else "random", "seed": seed,
        "score": evaluator(model)[metric], "train_seconds": seconds, "rows_per_second": len(dataset) / seconds if not args.smoke_test else None,
        "padding_share": padding_share(trainer, model),
    }  # fmt: skip
    print(json.dumps(row), flush=True)
    return row


# 1. STSb, CoSENTLoss
if args.only in (None, "stsb"):
    train, train_format = load_with_format(DataSource(str(STSB / "train.tsv"), columns=COLUMNS, limit=limit))
    test, _ = load_with_format(DataSource(str(STSB / "test.tsv"), columns=COLUMNS, limit=limit))
    evaluator = EmbeddingSimilarityEvaluator(test["sentence1"], test["sentence2"], test["score"], name="sts-test")
    for seed in args.seeds:
        for grouped in (False, True):
            results["runs"].append(train_embedlab("stsb", CoSENTLoss, train, train_format, evaluator, "sts-test_spearman_cosine", grouped, seed))

    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator as STEvaluator

    st_model, seconds = train_st_cosent(train, args.seeds[0], 3 if args.smoke_test else None, "/tmp/st-bench-grouping")
    score = STEvaluator(test["sentence1"], test["sentence2"], test["score"], name="sts-test")(st_model)["sts-test_spearman_cosine"]
    row = {"task": "stsb", "trainer": "sentence-transformers", "batches": "random", "seed": args.seeds[0], "score": score, "train_seconds": seconds, "rows_per_second": len(train) / seconds}
    print(json.dumps(row), flush=True)
    results["runs"].append(row)

# 2. SICK triplets, MultipleNegativesRankingLoss
if args.only in (None, "sick"):
    triplets, triplets_format = sick_formats(sick_split("TRAIN", limit))["triplets"]
    test = sick_split("TEST", limit)
    evaluator = EmbeddingSimilarityEvaluator(test["sentence_A"], test["sentence_B"], [s / 5.0 for s in test["relatedness_score"]], name="sick-test", batch_size=64)
    for seed in args.seeds:
        for grouped in (False, True):
            results["runs"].append(train_embedlab("sick", MultipleNegativesRankingLoss, triplets, triplets_format, evaluator, "sick-test_spearman_cosine", grouped, seed))

# 3. report: per task, the mean over seeds of each batching, and the ratios
Path(args.output).parent.mkdir(parents=True, exist_ok=True)
Path(args.output).write_text(json.dumps(results, indent=2))
print("\n| task | trainer | batches | seeds | test Spearman | train s | rows/s | padding share |\n|---|---|---|---|---|---|---|---|")
means = {}
for key in dict.fromkeys((row["task"], row["trainer"], row["batches"]) for row in results["runs"]):
    rows = [row for row in results["runs"] if (row["task"], row["trainer"], row["batches"]) == key]
    mean = {field: sum(row[field] for row in rows) / len(rows) for field in ("score", "train_seconds")}
    mean["rows_per_second"] = None if args.smoke_test else sum(row["rows_per_second"] for row in rows) / len(rows)
    means[key] = mean
    padding = f"{sum(row['padding_share'] for row in rows) / len(rows):.2f}" if "padding_share" in rows[0] else ""
    print(f"| {key[0]} | {key[1]} | {key[2]} | {len(rows)} | {mean['score']:.4f} | {mean['train_seconds']:.0f} | {mean['rows_per_second'] or 0:.1f} | {padding} |")
for task in ("stsb", "sick"):
    grouped, random_batches = means.get((task, "embedlab", "length-grouped")), means.get((task, "embedlab", "random"))
    if grouped and random_batches:
        print(f"{task}: Spearman grouped - random {grouped['score'] - random_batches['score']:+.4f}; time random / grouped {random_batches['train_seconds'] / grouped['train_seconds']:.2f}")
reference = means.get(("stsb", "sentence-transformers", "random"))
if reference:
    grouped = means[("stsb", "embedlab", "length-grouped")]
    print(f"stsb: throughput embedlab grouped / sentence-transformers {reference['train_seconds'] / grouped['train_seconds']:.2f}; Spearman gap {grouped['score'] - reference['score']:+.4f}")
