"""Real sweeps on a local Ray cluster, tiny model: ASHA stops a trial whose metric went NaN, the best trial is
picked by the metric among the finished ones (and only its model kept), trials share what they load, and a sweep
whose driver is killed resumes with every trial done once."""

import csv
import math
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, sentence, trial_process_log, write_config, write_jsonl

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
            tracking={"uri": f"sqlite:///{tmp_path / 'sweep' / 'mlflow.db'}"},  # not a server MLFLOW_TRACKING_URI may name
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


def test_asha_stops_a_diverged_trial_an_erroring_one_fails_alone_and_the_best_is_picked_among_the_finished(tmp_path, sweep_file):
    # One trial at a time, so the order is fixed: the first point is a sane trial, which reports at every
    # evaluation (steps 2, 4, 6, 8: training_iteration 1-4); the second point's learning rate makes its loss and
    # metric NaN from its first evaluation on. It reports the NaN as the worst value, so ASHA (grace period 1)
    # stops it at its first rung, where the first trial's result already is. The third point raises before
    # training (warmup_ratio 5 is refused); the sweep goes on. The fourth trial is TPE's.
    space = {"training.learning_rate": {"loguniform": [1e-5, 1e-3]}, "training.warmup_ratio": {"uniform": [0.0, 0.2]}}
    points = [
        {"loss": "CoSENTLoss", "CoSENTLoss.scale": 20.0, "training.learning_rate": 1e-4, "training.warmup_ratio": 0.1},
        {"loss": "CoSENTLoss", "training.learning_rate": 1e6, "training.warmup_ratio": 0.1},
        {"loss": "CoSENTLoss", "training.learning_rate": 1e-4, "training.warmup_ratio": 5.0},  # out of range: Optuna only warns
    ]
    config = sweep_file(4, space=space, scheduler="asha", grace_period=1, reduction_factor=2, max_concurrent=1, points_to_evaluate=points)
    process = _sweep(config)
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-3000:]
    trials = _trials(tmp_path)
    assert len(trials) == 4
    first, diverged, errored = ([row for row in trials if float(row["training.warmup_ratio"]) == point["training.warmup_ratio"] and float(row["training.learning_rate"]) == point["training.learning_rate"]] for point in points)
    assert len(first) == 1 and first[0]["status"] == "ok" and first[0]["step"] == "8" and first[0]["training_iteration"] == "4"
    assert float(first[0]["CoSENTLoss.scale"]) == 20.0  # the given point ran as given

    # ASHA stopped the diverged trial early; trials.csv says so and keeps its NaN (not the -inf Tune was told).
    assert len(diverged) == 1 and diverged[0]["status"] == "stopped" and diverged[0]["dev_spearman_cosine"] == "nan"
    assert int(diverged[0]["step"]) < 8 and int(diverged[0]["training_iteration"]) < int(first[0]["training_iteration"])
    assert not (tmp_path / "sweep" / "trials" / diverged[0]["trial_id"] / "model").exists()
    assert all(int(row["step"]) < 8 for row in trials if row["status"] == "stopped")

    # The erroring trial is one failed trial, recorded with its error; Tune went on with the next one.
    assert len(errored) == 1 and errored[0]["status"] == "error" and errored[0]["dev_spearman_cosine"] == ""
    assert "warmup_ratio must be within [0, 1] (a share of the steps), got 5.0" in errored[0]["error"] and os.path.exists(errored[0]["error_file"])

    finished = [row for row in trials if row["status"] == "ok"]
    best = max(finished, key=lambda row: float(row["dev_spearman_cosine"]))
    assert f"Best: {best['loss']} (trial {best['trial_id']}) dev_spearman_cosine = {float(best['dev_spearman_cosine']):.4f}" in output
    assert (tmp_path / "sweep" / "trials" / best["trial_id"] / "model" / "modules.json").exists()
    # Only the best trial's model is kept (search.keep_models: 1), and Tune ran the next trial in the same
    # process, which took its data, evaluators and base model from there (embedlab.trial_cache).
    assert [path.parent.name for path in (tmp_path / "sweep" / "trials").glob("*/model")] == [best["trial_id"]]
    assert "Trial inputs: data and evaluators kept from an earlier trial, base model kept from an earlier trial" in output
    assert (tmp_path / "sweep" / "plots" / "metric_vs_learning_rate.png").exists()

    # MLflow: the stopped trial's run is KILLED and tagged, its NaN metric recorded as NaN.
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'sweep' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("sweep").experiment_id])
    runs = {run.data.tags["embedlab_run_key"].rsplit("/", 1)[-1].split("@")[0]: run for run in runs}  # key: <sweep>/<trial>@<fingerprint>
    stopped_run = runs[diverged[0]["trial_id"]]
    assert stopped_run.info.status == "KILLED" and stopped_run.data.tags["embedlab_trial_status"] == "stopped"
    assert stopped_run.data.tags["embedlab_metric_nan"] == "dev_spearman_cosine" and math.isnan(stopped_run.data.metrics["dev_spearman_cosine"])
    assert runs[best["trial_id"]].info.status == "FINISHED" and runs[best["trial_id"]].data.tags["embedlab_trial_status"] == "ok"
    failed_run = runs[errored[0]["trial_id"]]  # it failed before opening a run: the sweep made it one
    assert failed_run.info.status == "FAILED" and "warmup_ratio must be within [0, 1]" in failed_run.data.tags["embedlab_error"]


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


def test_trials_of_two_workers_keep_their_ranks_even_through_an_asha_stop(tmp_path, sweep_file):
    """Each trial has 2 ranks x 1 CPU: the whole 2-CPU cluster. ASHA stops the diverged second trial at its
    first rung; its ranks end together and the third trial trains to the end on them: every trial after the
    first trains on the rank the first started (embedlab.trial_group)."""
    points = [
        {"loss": "CoSENTLoss", "training.learning_rate": 1e-4},
        {"loss": "CoSENTLoss", "training.learning_rate": 1e6},  # NaN from its first evaluation: stopped
        {"loss": "CoSENTLoss", "training.learning_rate": 2e-4},
    ]
    config = sweep_file(3, scheduler="asha", grace_period=1, reduction_factor=2, max_concurrent=1, points_to_evaluate=points, workers_per_trial=2)
    process = _sweep(config, "training.max_steps=4")
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-3000:]
    first, diverged, third = (next(row for row in _trials(tmp_path) if float(row["training.learning_rate"]) == point["training.learning_rate"]) for point in points)
    assert first["status"] == "ok" and diverged["status"] == "stopped" and int(diverged["step"]) < 4
    assert third["status"] == "ok" and third["step"] == "4"
    trial_process = trial_process_log(output)
    assert len(re.findall(r"Trial workers: ranks 1-1 \(pids \[\d+\]\) started", trial_process)) == 1
    assert len(re.findall(r"Trial workers: ranks 1-1 \(pids \[\d+\]\) kept from an earlier trial", trial_process)) == 2
