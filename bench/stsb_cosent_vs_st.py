"""embedlab vs the sentence-transformers trainer: 1 epoch of CoSENTLoss on STSb, side by side in one run.

Same model (all-MiniLM-L6-v2), data (STSb train), batch 16, learning rate 2e-5, 10% linear warm-up,
seed 0. Reports STSb test cosine Spearman before and after for both, and training throughput
(pairs per second, evaluation excluded) with the ratio embedlab / reference.

Run:  .venv/bin/python bench/stsb_cosent_vs_st.py [--smoke-test]
"""

import argparse
import json
import platform as stdlib_platform
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
STSB = ROOT / "experiments" / "data" / "stsb"
COLUMNS = ["sentence1", "sentence2", "score"]

parser = argparse.ArgumentParser()
parser.add_argument("--smoke-test", action="store_true", help="64 training pairs: checks the script runs")
parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "stsb_cosent_vs_st.json"))
args = parser.parse_args()
limit = 64 if args.smoke_test else None

# 1. data, through embedlab's loader for both sides (same rows, same order)
from embedlab.config import DataSource, TrainingConfig  # noqa: E402
from embedlab.data import load_with_format  # noqa: E402

train_data, train_format = load_with_format(DataSource(str(STSB / "train.tsv"), columns=COLUMNS, limit=limit))
test_data, _ = load_with_format(DataSource(str(STSB / "test.tsv"), columns=COLUMNS, limit=limit))
results = {"train_pairs": len(train_data), "torch_threads": torch.get_num_threads(), "machine": stdlib_platform.processor() or stdlib_platform.machine()}

# 2. embedlab
from embedlab.evaluation import EmbeddingSimilarityEvaluator  # noqa: E402
from embedlab.losses import CoSENTLoss  # noqa: E402
from embedlab.model import EmbeddingModel  # noqa: E402
from embedlab.trainer import Trainer, set_seed  # noqa: E402

test_evaluator = EmbeddingSimilarityEvaluator(test_data["sentence1"], test_data["sentence2"], test_data["score"], name="sts-test")
set_seed(0)
model = EmbeddingModel("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
before = test_evaluator(model)["sts-test_spearman_cosine"]
training = TrainingConfig(epochs=1, batch_size=16, learning_rate=2e-5, warmup_ratio=0.1, seed=0, save_steps=None, resume=False, show_progress_bar=False)
output = Path("/tmp/embedlab-bench-stsb")
trainer = Trainer(CoSENTLoss(model), train_data, train_format, training, output)
start = time.perf_counter()
trainer.train()
embedlab_seconds = time.perf_counter() - start  # includes the final (empty) evaluation and the model save
after = test_evaluator(model)["sts-test_spearman_cosine"]
results["embedlab"] = {"before": before, "after": after, "train_seconds": embedlab_seconds, "pairs_per_second": len(train_data) / embedlab_seconds}
print("embedlab", results["embedlab"], flush=True)

# 3. sentence-transformers, the reference
from sentence_transformers import (  # noqa: E402
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from sentence_transformers import losses as st_losses  # noqa: E402
from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator as STEvaluator  # noqa: E402

from embedlab.model import resolve_model_path  # noqa: E402

st_evaluator = STEvaluator(test_data["sentence1"], test_data["sentence2"], test_data["score"], name="sts-test")
st_model = SentenceTransformer(str(resolve_model_path("sentence-transformers/all-MiniLM-L6-v2")), device="cpu")
st_before = st_evaluator(st_model)["sts-test_spearman_cosine"]
st_args = SentenceTransformerTrainingArguments(
    output_dir="/tmp/st-bench-stsb",
    num_train_epochs=1,
    per_device_train_batch_size=16,
    learning_rate=2e-5,
    warmup_ratio=0.1,
    seed=0,
    save_strategy="no",
    report_to="none",
    logging_steps=100,
    disable_tqdm=True,
    use_cpu=True,
)
st_trainer = SentenceTransformerTrainer(model=st_model, args=st_args, train_dataset=train_data, loss=st_losses.CoSENTLoss(st_model))
start = time.perf_counter()
st_trainer.train()
st_seconds = time.perf_counter() - start
st_after = st_evaluator(st_model)["sts-test_spearman_cosine"]
results["sentence_transformers"] = {"before": st_before, "after": st_after, "train_seconds": st_seconds, "pairs_per_second": len(train_data) / st_seconds}
results["throughput_ratio"] = results["embedlab"]["pairs_per_second"] / results["sentence_transformers"]["pairs_per_second"]
results["spearman_gap"] = after - st_after

# 4. report
Path(args.output).parent.mkdir(parents=True, exist_ok=True)
Path(args.output).write_text(json.dumps(results, indent=2))
print(json.dumps(results, indent=2))
print("\n| trainer | test Spearman before | after | train s | pairs/s |\n|---|---|---|---|---|")
for name in ("embedlab", "sentence_transformers"):
    row = results[name]
    print(f"| {name} | {row['before']:.4f} | {row['after']:.4f} | {row['train_seconds']:.0f} | {row['pairs_per_second']:.1f} |")
print(f"\nthroughput ratio embedlab / sentence-transformers: {results['throughput_ratio']:.2f}; Spearman gap: {results['spearman_gap']:+.4f}")
