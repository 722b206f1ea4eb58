"""Real sweeps on a local Ray cluster, tiny model: ASHA on, the best trial picked by the metric, and a
sweep whose driver is killed resumes with every trial done once."""

import csv
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, sentence, write_config, write_jsonl

pytestmark = pytest.mark.integration


@pytest.fixture
def sweep_file(tmp_path, tiny_model_path):
    rng = random.Random(0)
    rows = [{"sentence1": sentence(rng), "sentence2": sentence(rng), "score": rng.random()} for _ in range(64)]
    train, dev = write_jsonl(tmp_path / "train.jsonl", rows[:48]), write_jsonl(tmp_path / "dev.jsonl", rows[48:])

    def make(num_samples: int, **search):
        return write_config(
            tmp_path / "sweep.yaml",
            tiny_model_path,
            train,
            tmp_path / "sweep",
            training={"max_steps": 8, "eval_steps": 2, "save_steps": 2, "batch_size": 8, "show_progress_bar": False},
            evaluators=[{"name": "dev", "data": str(dev)}],
            search={
                "losses": "auto",
                "space": {"training.learning_rate": {"loguniform": [1e-5, 1e-3]}},
                "num_samples": num_samples,
                "cpus_per_trial": 1,
                **search,
            },
        )

    return make


def _sweep(config, *flags, **kwargs):
    command = [sys.executable, "-m", "embedlab.cli", "sweep", str(config), *flags]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def _trials(tmp_path):
    with open(tmp_path / "sweep" / "trials.csv") as file:
        return list(csv.DictReader(file))


def test_a_small_sweep_with_asha_completes_and_picks_the_best_trial(tmp_path, sweep_file):
    process = _sweep(sweep_file(3, scheduler="asha", grace_period=1, points_to_evaluate=[{"loss": "CoSENTLoss", "CoSENTLoss.scale": 20.0}]))
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-3000:]
    trials = _trials(tmp_path)
    assert len(trials) == 3
    assert any(row["loss"] == "CoSENTLoss" and float(row["CoSENTLoss.scale"]) == 20.0 for row in trials)  # the given point ran
    best = max(trials, key=lambda row: float(row["dev_spearman_cosine"]))
    assert f"Best: {best['loss']} (trial {best['trial_id']}) dev_spearman_cosine = {float(best['dev_spearman_cosine']):.4f}" in output
    assert (tmp_path / "sweep" / "trials" / best["trial_id"] / "model" / "modules.json").exists()


def test_a_sweep_killed_mid_run_resumes_with_every_trial_done_once(tmp_path, sweep_file):
    config = sweep_file(3, max_concurrent=1)
    trials_dir = tmp_path / "sweep" / "trials"
    process = _sweep(config, start_new_session=True)  # its own process group: the kill takes its Ray cluster too
    deadline = time.time() + 600
    while not list(trials_dir.glob("*/results.json")) and time.time() < deadline and process.poll() is None:
        time.sleep(1)
    finished_first = list(trials_dir.glob("*/results.json"))
    assert finished_first, "no trial finished before the kill"
    time.sleep(3)  # Tune saves its experiment state every few seconds
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    first_mtime = finished_first[0].stat().st_mtime

    resumed = _sweep(config, "--resume")
    output, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, output[-3000:]
    trials = _trials(tmp_path)
    assert len(trials) == 3 and len({row["trial_id"] for row in trials}) == 3
    assert sorted(path.name for path in trials_dir.iterdir()) == sorted(row["trial_id"] for row in trials)
    assert finished_first[0].stat().st_mtime == first_mtime  # the finished trial was not run again
