"""A real sweep over a mixture of data sets on a local Ray cluster: each trial trains the losses and the
mixture its row names."""

import csv
import random
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, sentence, write_config, write_jsonl

pytestmark = pytest.mark.integration


def test_a_mixture_sweep_trains_each_trial_with_its_losses_and_mixture(tmp_path, tiny_model_path):
    rng = random.Random(0)
    scores = write_jsonl(tmp_path / "scores.jsonl", [{"sentence1": sentence(rng), "sentence2": sentence(rng), "score": rng.random()} for _ in range(40)])
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"anchor": f"q{i} {sentence(rng)}", "positive": f"p{i} {sentence(rng)}"} for i in range(40)])
    search = {
        "losses": {"pairs": ["MultipleNegativesRankingLoss", "CachedMultipleNegativesRankingLoss"]},
        "space": {"training.mixture.temperature": {"uniform": [1.0, 5.0]}},
        "num_samples": 3,
        "cpus_per_trial": 1,
        "points_to_evaluate": [{"pairs.loss": "CachedMultipleNegativesRankingLoss", "training.mixture.temperature": 4.5}],
    }
    path = write_config(
        tmp_path / "sweep.yaml", tiny_model_path, scores, tmp_path / "sweep",
        data={"train": {"scores": str(scores), "pairs": str(pairs)}},
        training={"max_steps": 6, "eval_steps": 3, "save_steps": 3, "batch_size": 4, "mixture": {"temperature": 2.0}},
        evaluators=[{"name": "dev", "data": str(scores)}], search=search, tracking="off",
    )  # fmt: skip
    raw = yaml.safe_load(path.read_text())
    raw["loss"] = {"scores": {"name": "CoSENTLoss"}, "pairs": {"name": "MultipleNegativesRankingLoss"}}
    path.write_text(yaml.safe_dump(raw))

    process = subprocess.run([sys.executable, "-m", "embedlab.cli", "sweep", str(path)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert process.returncode == 0, (process.stdout + process.stderr)[-3000:]
    with open(tmp_path / "sweep" / "trials.csv") as file:
        trials = list(csv.DictReader(file))
    assert len(trials) == 3 and all(row["status"] == "ok" for row in trials)
    given = [row for row in trials if float(row["training.mixture.temperature"]) == 4.5]
    assert len(given) == 1 and given[0]["loss"] == "pairs: CachedMultipleNegativesRankingLoss"
    for row in trials:  # the row is the trial it names: its config holds the row's losses and temperature
        config = yaml.safe_load((tmp_path / "sweep" / "trials" / row["trial_id"] / "config.yaml").read_text())
        assert config["loss"]["scores"]["name"] == "CoSENTLoss" and row["loss"] == f"pairs: {config['loss']['pairs']['name']}"
        assert row["pairs.loss"] == config["loss"]["pairs"]["name"]
        assert config["training"]["mixture"]["temperature"] == pytest.approx(float(row["training.mixture.temperature"]))
    assert "on pairs: anchor_positive_pairs, scores: pair_score data" in process.stdout
