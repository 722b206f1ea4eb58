"""Sequence packing (`training.pack_sequences`) against padded batches and the sentence-transformers trainer.

STSb, 1 epoch of CoSENTLoss (all-MiniLM-L6-v2, batch 16, learning rate 2e-5, 10% warm-up, random
batches), side by side in one run, per seed: embedlab with padded batches, embedlab with packed
sequences (the same batches; texts share rows), and the sentence-transformers trainer. Reports STSb
test cosine Spearman, training throughput and the share of the forward pass's tokens that are padding.
Packing changes no batch and no loss, only dropout's draws (its masks fall on another layout), so the
Spearman differences are seed noise: compare them with the seed-to-seed spread.

Run:  .venv/bin/python bench/sequence_packing.py [--smoke-test] [--seeds 0 1 2]
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
from embedlab.losses import CoSENTLoss
from embedlab.model import DEFAULT_MODEL, EmbeddingModel, pack_lengths
from embedlab.trainer import Trainer, set_seed
from st_reference import train_st_cosent

ROOT = Path(__file__).resolve().parents[1]
STSB = ROOT / "experiments" / "data" / "stsb"
COLUMNS = ["sentence1", "sentence2", "score"]

parser = argparse.ArgumentParser()
parser.add_argument("--smoke-test", action="store_true", help="64 rows and 3 steps per run: checks the wiring")
parser.add_argument("--seeds", type=int, nargs="+", default=[0])
parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "sequence_packing.json"))
args = parser.parse_args()
limit = 64 if args.smoke_test else None
steps = 3 if args.smoke_test else None
results = {"torch_threads": torch.get_num_threads(), "machine": stdlib_platform.processor() or stdlib_platform.machine(), "runs": []}

# 1. data: the same rows for every run
train, train_format = load_with_format(DataSource(str(STSB / "train.tsv"), columns=COLUMNS, limit=limit))
test, _ = load_with_format(DataSource(str(STSB / "test.tsv"), columns=COLUMNS, limit=limit))
evaluator = EmbeddingSimilarityEvaluator(test["sentence1"], test["sentence2"], test["score"], name="sts-test")


def padding_share(trainer: Trainer, model, packed: bool) -> float:
    """Pad tokens / all tokens the forward passes of epoch 0 run: each column padded to its batch's
    longest text, or (packed) the rows of all columns' texts, as Transformer.forward_packed packs them."""
    counts = {column: model.token_counts(train[column]) for column in train_format.input_columns}
    padded = real = 0
    for batch in trainer.sampler.batches(0):
        lengths = {column: [counts[column][i] for i in batch] for column in counts}
        real += sum(sum(column) for column in lengths.values())
        if packed:
            every_text = [length for column in lengths.values() for length in column]
            padded += min(pack_lengths(every_text, capacity)[1] * capacity for capacity in (max(every_text), 2 * max(every_text)))
        else:
            padded += sum(max(column) * len(column) for column in lengths.values())
    return (padded - real) / padded


# 2. embedlab, padded and packed
def train_embedlab(packed: bool, seed: int) -> dict:
    set_seed(seed)
    model = EmbeddingModel(DEFAULT_MODEL, device="cpu")
    training = TrainingConfig(
        epochs=1, batch_size=16, learning_rate=2e-5, warmup_ratio=0.1, seed=seed, save_steps=None, resume=False,
        show_progress_bar=False, group_by_length=False, pack_sequences=packed, max_steps=steps,
    )  # fmt: skip
    trainer = Trainer(CoSENTLoss(model), train, train_format, training, Path("/tmp/embedlab-bench-packing") / f"{packed}-{seed}")
    start = time.perf_counter()
    trainer.train()  # wall time, as for the reference: the loop's own costs count too
    seconds = time.perf_counter() - start
    return {
        "trainer": "embedlab", "batches": "packed" if packed else "padded", "seed": seed,
        "score": evaluator(model)["sts-test_spearman_cosine"], "train_seconds": seconds,
        "padding_share": padding_share(trainer, model, packed),
    }  # fmt: skip


# 3. sentence-transformers, the reference
def train_reference(seed: int) -> dict:
    st_model, seconds = train_st_cosent(train, seed, steps, "/tmp/st-bench-packing")
    return {"trainer": "sentence-transformers", "batches": "padded", "seed": seed, "score": evaluator(st_model)["sts-test_spearman_cosine"], "train_seconds": seconds}


# Per seed, the three side by side, so a slower stretch of a shared machine hits all three alike.
for seed in args.seeds:
    for row in (train_embedlab(False, seed), train_embedlab(True, seed), train_reference(seed)):
        row["rows_per_second"] = len(train) / row["train_seconds"]
        print(json.dumps(row), flush=True)
        results["runs"].append(row)

# 4. report: the mean over seeds of each, and the ratios
Path(args.output).parent.mkdir(parents=True, exist_ok=True)
Path(args.output).write_text(json.dumps(results, indent=2))
print("\n| trainer | batches | Spearman per seed | mean | train s | rows/s | padding share |\n|---|---|---|---|---|---|---|")
means = {}
for key in dict.fromkeys((row["trainer"], row["batches"]) for row in results["runs"]):
    rows = [row for row in results["runs"] if (row["trainer"], row["batches"]) == key]
    means[key] = {field: sum(row[field] for row in rows) / len(rows) for field in ("score", "train_seconds", "rows_per_second")}
    padding = f"{sum(row['padding_share'] for row in rows) / len(rows):.2f}" if "padding_share" in rows[0] else ""
    scores = " / ".join(f"{row['score']:.4f}" for row in rows)
    print(f"| {key[0]} | {key[1]} | {scores} | {means[key]['score']:.4f} | {means[key]['train_seconds']:.0f} | {means[key]['rows_per_second']:.1f} | {padding} |")
packed, padded, reference = means[("embedlab", "packed")], means[("embedlab", "padded")], means[("sentence-transformers", "padded")]
print(f"throughput packed / sentence-transformers {packed['rows_per_second'] / reference['rows_per_second']:.2f}, padded / sentence-transformers {padded['rows_per_second'] / reference['rows_per_second']:.2f}")
print(f"Spearman packed - sentence-transformers {packed['score'] - reference['score']:+.4f}, packed - padded {packed['score'] - padded['score']:+.4f}")
