"""What the mixture sampler costs per step, against the training step it feeds.

The shipped two-data-set config (STSb score pairs with CoSENTLoss, SICK triplets with
MultipleNegativesRankingLoss, all-MiniLM-L6-v2, batch 16) in one process: the seconds the trainer spends
forming a mixed epoch's batches (`MixtureSampler.batches`, every data set's own sampler included), per
step, for each `training.mixture` mode, next to the seconds of a training step measured in the same run
(the trainer's own train_seconds over a few steps). The issue's goal: under 1 % of step time.

Run:  .venv/bin/python bench/mixture_sampler_overhead.py [--smoke-test]
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

from embedlab import run
from embedlab.config import MixtureConfig, load_config
from embedlab.trainer import Trainer, make_sampler

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "configs" / "mixture_stsb_sick.yaml"

parser = argparse.ArgumentParser()
parser.add_argument("--smoke-test", action="store_true", help="64 rows per data set, 2 training steps")
parser.add_argument("--steps", type=int, default=20, help="training steps timed for the step time")
args = parser.parse_args()
os.chdir(ROOT)  # the config's data paths are relative to the repository

with tempfile.TemporaryDirectory() as folder:
    config = load_config(CONFIG, [f"output_dir={folder}/run", "tracking=off", "training.show_progress_bar=false"], smoke_test=args.smoke_test)
    prepared = run.prepare(config, device="cpu")
    training = config.training

    modes = {"proportional": "proportional", "round_robin": "round_robin", "weights 1:2": MixtureConfig(weights={"stsb": 1, "sick": 2}), "temperature 2": MixtureConfig(temperature=2.0)}
    sampler_seconds = {}
    for label, mixture in modes.items():
        training.mixture = mixture
        epochs = 3
        start = time.perf_counter()
        sampler = make_sampler(training, prepared.loss, prepared.dataset, prepared.detected)
        steps = sum(len(sampler.batches(epoch)) for epoch in range(epochs))
        sampler_seconds[label] = (time.perf_counter() - start) / steps

    training.mixture = modes["weights 1:2"]
    steps = 2 if args.smoke_test else args.steps
    training.max_steps, training.eval_steps, training.save_steps = steps, None, None
    trainer = Trainer(prepared.loss, prepared.dataset, prepared.detected, training, Path(folder) / "run", prompts=prepared.prompts)
    trainer.train()
    step_seconds = trainer.train_seconds / steps

print(f"training step (weights 1:2, batch {training.batch_size}, {steps} steps): {step_seconds * 1000:.1f} ms")
for label, seconds in sampler_seconds.items():
    print(f"{label:15s} sampler {seconds * 1000:8.3f} ms per step = {100 * seconds / step_seconds:6.3f} % of a step")
