"""Every loss that suits a SICK-derived format, fine-tuned one epoch each: SICK test cosine Spearman per loss.

SICK (experiments/data/sick/SICK.txt, TRAIN split) serves five formats:
  pair_score             (sentence_A, sentence_B) + relatedness / 5
  pair_class             (sentence_A, sentence_B) + entailment label
  pair_binary            ENTAILMENT pairs as 1, CONTRADICTION pairs as 0 (NEUTRAL left out)
  anchor_positive_pairs  the ENTAILMENT pairs (conversion pair_binary -> anchor_positive_pairs)
  triplets               (premise, entailed, contradicted) (conversion pair_class -> triplets)
Each run starts from all-MiniLM-L6-v2 with batch 16, learning rate 2e-5, 10% warm-up, seed 0, and is
scored on SICK TEST relatedness (cosine Spearman), the same evaluation for every loss.

Run:  .venv/bin/python bench/sick_losses.py [--smoke-test] [--only LOSS ...]
"""

import argparse
import json
import time
from pathlib import Path

from embedlab.config import TrainingConfig
from embedlab.evaluation import EmbeddingSimilarityEvaluator
from embedlab.formats import losses_for
from embedlab.losses import build_loss
from embedlab.model import DEFAULT_MODEL, EmbeddingModel
from embedlab.trainer import Trainer, set_seed
from sick_data import sick_formats, sick_split

ROOT = Path(__file__).resolve().parents[1]
parser = argparse.ArgumentParser()
parser.add_argument("--smoke-test", action="store_true", help="64 rows and 2 steps per loss: checks the wiring")
parser.add_argument("--only", nargs="*", help="run only these losses")
parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "sick_losses.json"))
args = parser.parse_args()

# 1. data
train, test = sick_split("TRAIN", 64 if args.smoke_test else None), sick_split("TEST", 64 if args.smoke_test else None)
formats = sick_formats(train)
evaluator = EmbeddingSimilarityEvaluator(test["sentence_A"], test["sentence_B"], [s / 5.0 for s in test["relatedness_score"]], name="sick-test", batch_size=64)

# 2. one run per (format, loss)
# Losses that need more than the data: the guide of GIST is the starting model itself (the only strong
# embedder offline); the others take their defaults.
extra_params = {"GISTEmbedLoss": {"guide": DEFAULT_MODEL}, "CachedGISTEmbedLoss": {"guide": DEFAULT_MODEL}}
baseline = evaluator(EmbeddingModel(DEFAULT_MODEL))["sick-test_spearman_cosine"]
print(f"before fine-tuning: {baseline:.4f}", flush=True)
results = []
for format_key, (dataset, detected) in formats.items():
    for loss_name in losses_for(format_key):
        if args.only and loss_name not in args.only:
            continue
        set_seed(0)
        model = EmbeddingModel(DEFAULT_MODEL)
        loss = build_loss(loss_name, model, extra_params.get(loss_name, {}), detected)
        training = TrainingConfig(
            batch_size=16, learning_rate=2e-5, warmup_ratio=0.1, seed=0, save_steps=None, resume=False,
            show_progress_bar=False, max_steps=2 if args.smoke_test else None,
        )
        output = Path("/tmp/embedlab-bench-sick") / f"{format_key}-{loss_name}"
        start = time.perf_counter()
        Trainer(loss, dataset, detected, training, output).train()
        seconds = time.perf_counter() - start
        spearman = evaluator(model)["sick-test_spearman_cosine"]
        results.append({"format": format_key, "loss": loss_name, "train_rows": len(dataset), "spearman": spearman, "seconds": seconds})
        print(f"{format_key:22s} {loss_name:45s} rows {len(dataset):5d}  spearman {spearman:.4f}  {seconds:5.0f} s", flush=True)

# 3. report
Path(args.output).parent.mkdir(parents=True, exist_ok=True)
Path(args.output).write_text(json.dumps({"before": baseline, "runs": results}, indent=2))
print(f"\nSICK test cosine Spearman before fine-tuning: {baseline:.4f}\n")
print("| format | loss | train rows | SICK test Spearman | train s |\n|---|---|---|---|---|")
for row in results:
    print(f"| {row['format']} | {row['loss']} | {row['train_rows']} | {row['spearman']:.4f} | {row['seconds']:.0f} |")
