"""Mixture vs single data sets: does training on STSb + SICK + TREC together beat training on any one?

The shipped config experiments/configs/mixture_stsb_sick_trec.yaml gives the data and losses: STSb score
pairs with CoSENTLoss, SICK (premise, entailed, contradicted) triplets with MultipleNegativesRankingLoss,
TREC questions + coarse class with BatchHardSoftMarginTripletLoss. Every run starts from all-MiniLM-L6-v2
and trains the same number of steps (batch 16, learning rate 2e-5, 10% warm-up, seed 0): each data set
alone, then all three under several `training.mixture` settings. Scored on the macro-average of STSb test
cosine Spearman, SICK test cosine Spearman (relatedness / 5) and TREC test same-class retrieval (cosine
NDCG@10, the primary metric of embedlab's default evaluator for sentences + class). Goal (issue 14): the
best mixture setting beats the best single-data-set run's macro-average.

Run:  .venv/bin/python bench/mixture_quality.py [--smoke-test] [--steps N]   (about 30 minutes on 2 CPU cores)
"""

import argparse
import dataclasses
import json
import platform as stdlib_platform
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from embedlab import run
from embedlab.config import MixtureConfig, load_config
from embedlab.losses import build_loss
from embedlab.model import EmbeddingModel
from embedlab.trainer import LossMixture, Trainer, set_seed

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "configs" / "mixture_stsb_sick_trec.yaml"
parser = argparse.ArgumentParser()
parser.add_argument("--smoke-test", action="store_true", help="64 rows per data set and 4 steps per run: checks the wiring")
# 300 steps: about 1.5 passes over SICK's triplets alone, under an epoch of STSb or TREC; the 7 runs and 8
# test evaluations fit in ~30 minutes on the development machine.
parser.add_argument("--steps", type=int, default=300, help="training steps of every run")
parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "mixture_quality.json"))
args = parser.parse_args()

# 1. data, losses and test evaluators from the shipped config (the smoke test cuts rows, batch and steps)
config = load_config(CONFIG, smoke_test=args.smoke_test)
steps = config.training.max_steps if args.smoke_test else args.steps
loaded = run.load_inputs(config)
datasets, formats, test_evaluators = loaded.dataset, loaded.detected, loaded.test_evaluators
SCORES = {"stsb": "sts-test_spearman_cosine", "sick": "sick-test_spearman_cosine", "trec": "trec-test_cosine_ndcg@10"}
EXTRA = {"trec_map@100": "trec-test_cosine_map@100"}  # reported, not averaged


def score(model) -> dict:
    metrics = run.evaluate_all(test_evaluators, model)
    row = {name: metrics[key] for name, key in {**SCORES, **EXTRA}.items()}
    row["macro"] = sum(metrics[key] for key in SCORES.values()) / len(SCORES)
    return row


def train(names: list[str], mixture) -> dict:
    """One run from the starting model on `names` (one data set, or a mixture of them) for `steps` steps."""
    set_seed(0)
    model = EmbeddingModel(config.model.name, device="cpu")
    losses = {}
    for name in names:
        spec = config.loss_for(name)
        losses[name] = build_loss(spec.name, model, spec.params, formats[name], spec.modifiers)
    training = dataclasses.replace(
        config.training, max_steps=steps, mixture=mixture, eval_steps=None, save_steps=None, resume=False, show_progress_bar=False
    )
    output = Path("/tmp/embedlab-bench-mixture-quality") / "-".join(names) / str(mixture).replace(" ", "")
    if len(names) == 1:
        trainer = Trainer(losses[names[0]], datasets[names[0]], formats[names[0]], training, output)
    else:
        # A LossMixture, not the plain dict: the Trainer at 7c11288 hands its `loss` argument as given to the
        # optimizer, which needs the parameters of a module.
        trainer = Trainer(LossMixture(losses), {n: datasets[n] for n in names}, {n: formats[n] for n in names}, training, output)
    # Each data set's share of the steps, read from the sampler's stream (the same one the trainer walks).
    shares, epoch = dict.fromkeys(names, 0), 0
    while sum(shares.values()) < steps:
        for name, _indices, _rows in trainer.worker_batches(epoch)[: steps - sum(shares.values())]:
            shares[name if len(names) > 1 else names[0]] += 1
        epoch += 1
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    return {"steps": trainer.global_step, "steps_by_data_set": shares, "train_seconds": trainer.train_seconds, "wall_seconds": wall, **score(model)}


# 2. the runs: each data set alone, then the mixtures (all at the same step count)
RUNS = {
    "stsb only": (["stsb"], "proportional"),
    "sick only": (["sick"], "proportional"),
    "trec only": (["trec"], "proportional"),
    "mixture proportional": (["stsb", "sick", "trec"], "proportional"),
    "mixture round_robin": (["stsb", "sick", "trec"], "round_robin"),
    "mixture temperature 2": (["stsb", "sick", "trec"], MixtureConfig(temperature=2.0)),
    "mixture weights 1:1:1": (["stsb", "sick", "trec"], MixtureConfig(weights={"stsb": 1.0, "sick": 1.0, "trec": 1.0})),
}
results = {
    "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    "machine": stdlib_platform.processor() or stdlib_platform.machine(),
    "torch_threads": torch.get_num_threads(),
    "steps": steps,
    "batch_size": config.training.batch_size,
    "rows": {name: len(rows) for name, rows in datasets.items()},
    "losses": {name: config.loss_for(name).name for name in datasets},
    "runs": {},
}
start = time.perf_counter()
results["runs"]["before (no training)"] = {"steps": 0, **score(EmbeddingModel(config.model.name, device="cpu"))}
print("before (no training)", json.dumps(results["runs"]["before (no training)"]), flush=True)
for label, (names, mixture) in RUNS.items():
    results["runs"][label] = train(names, mixture)
    print(label, json.dumps(results["runs"][label]), flush=True)
results["bench_seconds"] = time.perf_counter() - start

# 3. the goal and the report
singles = {label: row["macro"] for label, row in results["runs"].items() if label.endswith(" only")}
mixtures = {label: row["macro"] for label, row in results["runs"].items() if label.startswith("mixture")}
best_single, best_mixture = max(singles, key=singles.get), max(mixtures, key=mixtures.get)
results["best_single"], results["best_mixture"] = best_single, best_mixture
results["margin"] = mixtures[best_mixture] - singles[best_single]
results["goal_met"] = results["margin"] > 0
Path(args.output).parent.mkdir(parents=True, exist_ok=True)
Path(args.output).write_text(json.dumps(results, indent=2))
print(f"\n{steps} steps per run, batch {config.training.batch_size}; bench {results['bench_seconds'] / 60:.1f} minutes\n")
print("| run | steps stsb / sick / trec | STSb test Spearman | SICK test Spearman | TREC test NDCG@10 | **macro** | TREC MAP@100 | train s |")
print("|---|---|---|---|---|---|---|---|")
for label, row in results["runs"].items():
    shares = " / ".join(str(row.get("steps_by_data_set", {}).get(name, 0)) for name in ("stsb", "sick", "trec"))
    seconds = f"{row['train_seconds']:.0f}" if "train_seconds" in row else "-"
    print(f"| {label} | {shares} | {row['stsb']:.4f} | {row['sick']:.4f} | {row['trec']:.4f} | **{row['macro']:.4f}** | {row['trec_map@100']:.4f} | {seconds} |")
verdict = "met" if results["goal_met"] else "NOT met"
print(f"\nbest mixture ({best_mixture}) {mixtures[best_mixture]:.4f} vs best single ({best_single}) {singles[best_single]:.4f}: {results['margin']:+.4f}, goal {verdict}")
