"""embedlab's mixture vs sentence-transformers' multi-dataset trainer, round robin, side by side in one run.

The shipped config experiments/configs/mixture_stsb_sick_trec.yaml gives the data and losses: STSb score
pairs with CoSENTLoss, SICK (premise, entailed, contradicted) triplets with MultipleNegativesRankingLoss,
TREC questions + coarse class with BatchHardSoftMarginTripletLoss. Both trainers start from
all-MiniLM-L6-v2 and take the same rows (embedlab's loader for both), batch 16, learning rate 2e-5, 10%
linear warm-up, seed 0, the same number of steps, round robin (`training.mixture: round_robin`,
`multi_dataset_batch_sampler=ROUND_ROBIN`), each data set batched by the sampler its loss needs (random,
no duplicates, group by label: embedlab picks them itself, sentence-transformers through a
`batch_sampler` callable). Every trained model is scored by the same evaluators: STSb test and SICK test
cosine Spearman, TREC test same-class retrieval (cosine NDCG@10). Goal (issue 14): each metric within
0.005 of the reference; training throughput ratio embedlab / reference >= 1.0.

The two trainers shuffle with different random streams, so they see the same rows in different batches,
and draw different dropout masks. Two controls tell the trainers' arithmetic apart from that noise:
sentence-transformers fed embedlab's own batch stream (a custom multi-dataset batch sampler), and that
pair again with dropout off in both models (a copy of the model folder with the dropout rates at 0), where
the same batches and the same arithmetic must give the same model up to float rounding. An untimed
warm-up run first, so no timed run pays the process's first-step costs.

Run:  .venv/bin/python bench/mixture_vs_st.py [--smoke-test]   (about 15 minutes on 2 CPU cores)
"""

import argparse
import dataclasses
import json
import platform as stdlib_platform
import shutil
import time
from datetime import UTC, datetime
from itertools import accumulate
from pathlib import Path

import datasets
import torch

from embedlab import run
from embedlab.config import load_config
from embedlab.losses import build_loss
from embedlab.model import EmbeddingModel, resolve_model_path
from embedlab.trainer import LossMixture, Trainer, set_seed

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "configs" / "mixture_stsb_sick_trec.yaml"
parser = argparse.ArgumentParser()
parser.add_argument("--smoke-test", action="store_true", help="64 rows per data set and 3 turns: checks the wiring")
parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="the first seed runs every control; each further seed one more embedlab / reference pair (their own batches)")
parser.add_argument("--pairs-only", action="store_true", help="no control runs: only the embedlab / reference pair of each seed")
parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "mixture_vs_st.json"))
args = parser.parse_args()

# 1. data, losses and evaluators from the shipped config. sentence-transformers' round robin stops when
# the smallest data set runs out: SICK gives ~80 batches of 16 triplets. STSb and TREC are cut to about
# as many rows, so 70 turns (210 steps) take nearly every row of each data set, the same rows on both
# sides, and neither trainer runs out before the last step.
TURNS = 3 if args.smoke_test else 70
LIMITS = {"stsb": 1120, "trec": 1280}  # STSb: exactly 70 batches; TREC: group-by-label leaves odd rows out
if args.smoke_test:  # batches of 8; SICK's 320 rows give ~90 triplets, enough for 3 turns
    LIMITS = {"stsb": 64, "sick": 320, "trec": 64}
config = load_config(CONFIG, smoke_test=args.smoke_test)
for name, rows in LIMITS.items():
    config.train_sources()[name].limit = rows
loaded = run.load_inputs(config)
data, formats, test_evaluators = loaded.dataset, loaded.detected, loaded.test_evaluators
NAMES = list(data)  # config order: stsb, sick, trec (both trainers take turns in this order)
steps = TURNS * len(NAMES)
batch_size, learning_rate = config.training.batch_size, config.training.learning_rate
seed = args.seeds[0]  # the runs' seed: set per pair in step 4
SCORES = {"stsb": "sts-test_spearman_cosine", "sick": "sick-test_spearman_cosine", "trec": "trec-test_cosine_ndcg@10", "trec_map@100": "trec-test_cosine_map@100"}
OUT = Path("/tmp/embedlab-bench-mixture-vs-st")
shutil.rmtree(OUT, ignore_errors=True)


def score(model) -> dict:
    metrics = run.evaluate_all(test_evaluators, model)
    return {name: metrics[key] for name, key in SCORES.items()}


results = {
    "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    "machine": stdlib_platform.processor() or stdlib_platform.machine(),
    "torch_threads": torch.get_num_threads(),
    "rows": {name: len(rows) for name, rows in data.items()},
    "losses": {name: config.loss_for(name).name for name in NAMES},
    "steps": steps,
    "batch_size": batch_size,
}
results["before"] = score(EmbeddingModel(config.model.name, device="cpu"))
print("before", results["before"], flush=True)

# 2. embedlab, round robin. The model folder: the shipped one, or a copy without dropout.
MODEL = resolve_model_path(config.model.name)
NO_DROPOUT = OUT / "model-without-dropout"
shutil.copytree(MODEL, NO_DROPOUT)
model_config = json.loads((NO_DROPOUT / "config.json").read_text())
model_config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
(NO_DROPOUT / "config.json").write_text(json.dumps(model_config, indent=2))


def embedlab_trainer(model_path, max_steps: int, folder: str):
    set_seed(seed)
    model = EmbeddingModel(str(model_path), device="cpu")
    losses = LossMixture({name: build_loss(config.loss_for(name).name, model, config.loss_for(name).params, formats[name]) for name in NAMES})
    # group_by_length off: the reference has no length grouping, and the same batches need the same sampler.
    training = dataclasses.replace(
        config.training, max_steps=max_steps, seed=seed, mixture="round_robin", group_by_length=False,
        eval_steps=None, save_steps=None, resume=False, show_progress_bar=False,
    )
    return Trainer(losses, data, formats, training, OUT / folder)


def train_embedlab(model_path, folder: str) -> dict:
    trainer = embedlab_trainer(model_path, steps, folder)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start  # as the reference's: the whole train() call, its model save included
    return {"steps": trainer.global_step, "train_seconds": seconds, "samples_per_second": samples / seconds, **score(trainer.model)}


stream = embedlab_trainer(MODEL, steps, "stream").sampler.batches(0)[:steps]  # (data set, rows): replayed below
assert len(stream) == steps, f"embedlab's round robin gives {len(stream)} steps in an epoch, fewer than {steps}"
samples = sum(len(rows) for _, rows in stream)
embedlab_trainer(MODEL, len(NAMES) * 2, "warm-up").train()  # untimed: first-step costs (allocator, kernels)

# 3. sentence-transformers, the reference
from sentence_transformers import (  # noqa: E402
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from sentence_transformers import losses as st_losses  # noqa: E402
from sentence_transformers.base.sampler import (  # noqa: E402
    DefaultBatchSampler,
    GroupByLabelBatchSampler,
    MultiDatasetBatchSamplers,
    MultiDatasetDefaultBatchSampler,
    NoDuplicatesBatchSampler,
)
from torch.utils.data import RandomSampler  # noqa: E402

# The same rows as datasets.Dataset; TREC's class names become ids (sentence-transformers' collator
# makes a tensor of the labels; the batch triplet losses only compare them).
classes = {label: index for index, label in enumerate(sorted(set(data["trec"]["label"])))}
st_rows = {name: data[name].to_dict() for name in NAMES}
st_rows["trec"]["label"] = [classes[label] for label in st_rows["trec"]["label"]]
# What embedlab picks from each loss's declared sampler: random for CoSENT, no duplicates for MNRL, label
# pairs for the batch triplet loss. sentence-transformers takes one batch_sampler for all data sets; a
# callable may choose per data set.
ST_SAMPLERS = {"stsb": None, "sick": NoDuplicatesBatchSampler, "trec": GroupByLabelBatchSampler}
by_columns = {tuple(st_rows[name]): name for name in NAMES}


def st_batch_sampler(dataset, batch_size, drop_last, valid_label_columns=None, generator=None, seed=0):
    sampler = ST_SAMPLERS[by_columns[tuple(dataset.column_names)]]
    if sampler is None:  # as sentence-transformers' BatchSamplers.BATCH_SAMPLER
        return DefaultBatchSampler(RandomSampler(dataset, generator=generator), batch_size=batch_size, drop_last=drop_last, valid_label_columns=valid_label_columns, generator=generator, seed=seed)
    return sampler(dataset, batch_size=batch_size, drop_last=drop_last, valid_label_columns=valid_label_columns, generator=generator, seed=seed)


class EmbedlabStream(MultiDatasetDefaultBatchSampler):
    """embedlab's round-robin batches, replayed: for the run that tells the trainers from the shuffles."""

    def __iter__(self):
        offsets = dict(zip(NAMES, [0, *accumulate(len(part) for part in self.dataset.datasets)], strict=False))
        for name, rows in stream:
            yield [offsets[name] + row for row in rows]

    def __len__(self) -> int:
        return len(stream)


def train_st(model_path, multi_dataset_batch_sampler, folder: str) -> dict:
    st_model = SentenceTransformer(str(model_path), device="cpu")
    st_args = SentenceTransformerTrainingArguments(
        output_dir=str(OUT / folder),
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_ratio=config.training.warmup_ratio,
        seed=seed,
        batch_sampler=st_batch_sampler,
        multi_dataset_batch_sampler=multi_dataset_batch_sampler,
        save_strategy="no",
        report_to="none",
        logging_steps=10**6,
        disable_tqdm=True,
        use_cpu=True,
    )
    st_loss = {
        "stsb": st_losses.CoSENTLoss(st_model),
        "sick": st_losses.MultipleNegativesRankingLoss(st_model),
        "trec": st_losses.BatchHardSoftMarginTripletLoss(st_model),
    }
    # A fresh DatasetDict per run: the trainer sets a transform on each data set (its dataset_name column).
    st_data = datasets.DatasetDict({name: datasets.Dataset.from_dict(st_rows[name]) for name in NAMES})
    st_trainer = SentenceTransformerTrainer(model=st_model, args=st_args, train_dataset=st_data, loss=st_loss)
    start = time.perf_counter()
    st_trainer.train()
    seconds = time.perf_counter() - start
    st_model.save(str(OUT / folder / "model"))  # scored by embedlab's evaluators, as the embedlab model
    trained = EmbeddingModel(str(OUT / folder / "model"), device="cpu")
    return {"steps": st_trainer.state.global_step, "train_seconds": seconds, "samples_per_second": samples / seconds, **score(trained)}


# 4. the runs, each timed and scored; the pair without dropout last (embedlab after the reference there)
RUNS = {
    "embedlab": lambda: train_embedlab(MODEL, "embedlab"),
    "sentence_transformers": lambda: train_st(MODEL, MultiDatasetBatchSamplers.ROUND_ROBIN, "st"),
    "sentence_transformers_embedlab_batches": lambda: train_st(MODEL, EmbedlabStream, "st-same-batches"),
    "sentence_transformers_embedlab_batches_no_dropout": lambda: train_st(NO_DROPOUT, EmbedlabStream, "st-same-batches-no-dropout"),
    "embedlab_no_dropout": lambda: train_embedlab(NO_DROPOUT, "embedlab-no-dropout"),
}
if args.pairs_only:
    RUNS = {key: run_pair for key, run_pair in RUNS.items() if key in ("embedlab", "sentence_transformers")}
for key, train in RUNS.items():
    results[key] = train()
    print(key, results[key], flush=True)
# Further seeds: another pair each, own batches and dropout, to see the gaps beyond one seed's noise.
results["seeds"] = {args.seeds[0]: {key: results[key] for key in ("embedlab", "sentence_transformers")}}
for seed in args.seeds[1:]:
    results["seeds"][seed] = {"embedlab": train_embedlab(MODEL, f"embedlab-{seed}"), "sentence_transformers": train_st(MODEL, MultiDatasetBatchSamplers.ROUND_ROBIN, f"st-{seed}")}
    print(seed, results["seeds"][seed], flush=True)

# 5. the goals and the report
METRICS = ("stsb", "sick", "trec")  # the goal's; MAP@100 is reported beside them
PAIRS = {  # embedlab run - reference run
    "gaps": ("embedlab", "sentence_transformers"),
    "gaps_same_batches": ("embedlab", "sentence_transformers_embedlab_batches"),
    "gaps_same_batches_no_dropout": ("embedlab_no_dropout", "sentence_transformers_embedlab_batches_no_dropout"),
    "reference_own_vs_embedlab_batches": ("sentence_transformers", "sentence_transformers_embedlab_batches"),
}
PAIRS = {key: (ours, reference) for key, (ours, reference) in PAIRS.items() if ours in RUNS and reference in RUNS}
for key, (ours, reference) in PAIRS.items():
    results[key] = {name: results[ours][name] - results[reference][name] for name in SCORES}
results["throughput_ratio"] = results["sentence_transformers"]["train_seconds"] / results["embedlab"]["train_seconds"]
if not args.pairs_only:
    results["throughput_ratio_same_batches"] = results["sentence_transformers_embedlab_batches"]["train_seconds"] / results["embedlab"]["train_seconds"]
    results["throughput_ratio_no_dropout"] = results["sentence_transformers_embedlab_batches_no_dropout"]["train_seconds"] / results["embedlab_no_dropout"]["train_seconds"]
per_seed = results["seeds"].values()
results["gaps_per_seed"] = {seed: {name: pair["embedlab"][name] - pair["sentence_transformers"][name] for name in SCORES} for seed, pair in results["seeds"].items()}
results["mean_gaps"] = {name: sum(gaps[name] for gaps in results["gaps_per_seed"].values()) / len(per_seed) for name in SCORES}
results["mean_throughput_ratio"] = sum(pair["sentence_transformers"]["train_seconds"] / pair["embedlab"]["train_seconds"] for pair in per_seed) / len(per_seed)
results["metrics_within_0.005"] = all(abs(results["mean_gaps"][name]) <= 0.005 for name in METRICS)
Path(args.output).parent.mkdir(parents=True, exist_ok=True)
Path(args.output).write_text(json.dumps(results, indent=2))
print(json.dumps(results, indent=2))
print(f"\nround robin, {TURNS} turns x {len(NAMES)} data sets = {steps} steps of {batch_size}; rows {results['rows']}\n")
print("| trainer | STSb test Spearman | SICK test Spearman | TREC test NDCG@10 | TREC MAP@100 | train s | samples/s |")
print("|---|---|---|---|---|---|---|")
before = results["before"]
print(f"| before training | {before['stsb']:.4f} | {before['sick']:.4f} | {before['trec']:.4f} | {before['trec_map@100']:.4f} | - | - |")
for key in RUNS:
    row = results[key]
    assert row["steps"] == steps, f"{key} trained {row['steps']} steps, not {steps}"
    print(f"| {key} | {row['stsb']:.4f} | {row['sick']:.4f} | {row['trec']:.4f} | {row['trec_map@100']:.4f} | {row['train_seconds']:.0f} | {row['samples_per_second']:.1f} |")
print()
for key in PAIRS:
    print(f"{key}: " + ", ".join(f"{name} {gap:+.4f}" for name, gap in results[key].items()))
for seed, gaps in results["gaps_per_seed"].items():
    ratio = results["seeds"][seed]["sentence_transformers"]["train_seconds"] / results["seeds"][seed]["embedlab"]["train_seconds"]
    print(f"seed {seed}: " + ", ".join(f"{name} {gap:+.4f}" for name, gap in gaps.items()) + f"; throughput ratio {ratio:.2f}")
print("mean over seeds: " + ", ".join(f"{name} {gap:+.4f}" for name, gap in results["mean_gaps"].items()) + f"; throughput ratio {results['mean_throughput_ratio']:.2f}")
print(f"each metric's mean gap within 0.005 of the reference: {results['metrics_within_0.005']}")
if not args.pairs_only:
    print(f"throughput ratio embedlab / reference: {results['throughput_ratio']:.2f} (own batches), {results['throughput_ratio_same_batches']:.2f} (same batches), {results['throughput_ratio_no_dropout']:.2f} (same batches, no dropout)")
