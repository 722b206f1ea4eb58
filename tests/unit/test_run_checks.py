"""Every check before anything starts: a setting that would fail (or never end) in training is one line,
exit 2, before an output folder, MLflow run, test evaluation, Ray cluster or trial exists."""

import random
import re

import pytest

from conftest import sentence, write_config, write_jsonl
from embedlab.cli import main


@pytest.fixture
def classes_file(tmp_path):
    rng = random.Random(0)
    return write_jsonl(tmp_path / "classes.jsonl", [{"text": sentence(rng), "label": i % 3} for i in range(24)])


@pytest.fixture
def singleton_classes_file(tmp_path):
    rng = random.Random(0)
    return write_jsonl(tmp_path / "singletons.jsonl", [{"text": sentence(rng), "label": i} for i in range(24)])


CASES = {
    "group-by-label with an odd batch": (
        "classes", {"loss": {"name": "BatchAllTripletLoss"}, "training": {"batch_size": 5}}, [],
        "the group_by_label sampler needs an even batch size of at least 4, got 5",
    ),
    "group-by-label without two labels of two rows": (
        "singletons", {"loss": {"name": "BatchHardTripletLoss"}}, [],
        "the group_by_label sampler needs at least two labels with two rows each",
    ),
    "group-by-label on score labels": (
        "pairs", {"training": {"sampler": "group_by_label"}}, [],
        "the group_by_label sampler needs class labels; this data has float score labels",
    ),
    "batch larger than the data": ("pairs", {"training": {"batch_size": 64}}, [], r"training.batch_size 64 is larger than the data \(48 rows\): use a batch of at most 48"),
    "zero max_steps": ("pairs", {"training": {"max_steps": 0}}, [], "training.max_steps must be at least 1, got 0: leave it out to train for training.epochs"),
    "zero epochs": ("pairs", {"training": {"max_steps": None, "epochs": 0}}, [], "training.epochs must be at least 1, got 0"),
    "zero eval_steps": ("pairs", {"training": {"eval_steps": 0}}, [], "training.eval_steps must be at least 1, got 0"),
    "negative learning rate": ("pairs", {}, ["training.learning_rate=-1e-5"], r"training.learning_rate must be > 0, got -1e-05$"),
    "warm-up past the end": ("pairs", {}, ["training.warmup_ratio=2"], r"training.warmup_ratio must be within \[0, 1\] \(a share of the steps\), got 2.0$"),
    "negative clipping norm": ("pairs", {}, ["training.max_grad_norm=-1"], r"training.max_grad_norm must be >= 0 \(0 turns clipping off\), got -1.0$"),
    # 8 workers x 8 rows need 64 rows a step; there are 48 (before: workers with no batch, an endless loop)
    "a global batch larger than the data": (
        "pairs", {}, ["--workers", "8"], r"training.batch_size 8 x 8 workers = 64 is larger than the data \(48 rows\): use a batch of at most 6 per worker",
    ),
    "unknown mixed precision": ("pairs", {}, ["training.mixed_precision=bf61"], "training.mixed_precision"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_setting_that_cannot_train_fails_in_one_line_before_anything_exists(case, tmp_path, capsys, tiny_model_path, score_pairs_file, classes_file, singleton_classes_file):
    data_name, sections, arguments, message = CASES[case]
    data = {"pairs": score_pairs_file, "classes": classes_file, "singletons": singleton_classes_file}[data_name]
    output_dir = tmp_path / "out"
    config = write_config(tmp_path / "c.yaml", tiny_model_path, data, output_dir, **sections)
    code = main(["train", str(config), *arguments])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("embedlab: error: "), err
    assert re.search(message, err), err
    assert not output_dir.exists()  # no folder, so no MLflow store, no test evaluation, no checkpoint


def test_ray_is_not_started_for_a_mistake(tmp_path, capsys, tiny_model_path, score_pairs_file):
    import ray

    config = write_config(tmp_path / "c.yaml", tiny_model_path, score_pairs_file, tmp_path / "out", training={"batch_size": 64})
    assert main(["train", str(config), "--workers", "2"]) == 2
    assert not ray.is_initialized()


def test_an_unreachable_ray_address_fails_in_one_line_before_anything_is_written(tmp_path, capsys, tiny_model_path, score_pairs_file):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = write_config(tmp_path / "c.yaml", tiny_model_path, score_pairs_file, tmp_path / "out", distributed={"address": f"127.0.0.1:{port}"})
    assert main(["train", str(config), "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"cannot reach the Ray cluster at '127.0.0.1:{port}'" in err, err
    assert not (tmp_path / "out").exists()


def test_a_ray_job_refuses_a_relative_output_dir(monkeypatch):
    import json

    from embedlab.errors import EmbedlabError
    from embedlab.ray_train import check_job_output_dir

    check_job_output_dir("runs/x")  # not in a job: the working folder is the user's
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_abc.zip"}}))
    with pytest.raises(EmbedlabError, match="output_dir 'runs/x' is relative, and this Ray job runs in a temporary copy"):
        check_job_output_dir("runs/x")
    check_job_output_dir("/shared/runs/x")


def test_a_multi_node_cluster_needs_shared_storage_and_a_tracking_server(tmp_path, tiny_model_path, score_pairs_file):
    from embedlab.config import load_config
    from embedlab.errors import EmbedlabError
    from embedlab.ray_train import check_multi_node

    config = load_config(write_config(tmp_path / "c.yaml", tiny_model_path, score_pairs_file, tmp_path / "out"))
    local_store = f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
    check_multi_node(config, local_store, nodes=1)  # one node: its disk is every worker's
    with pytest.raises(EmbedlabError, match=r"this Ray cluster has 2 nodes, and checkpoints would go to .*/out/ray, a folder on this machine only: set distributed.storage_path"):
        check_multi_node(config, local_store, nodes=2)
    config.distributed.storage_path = "s3://bucket/runs"
    with pytest.raises(EmbedlabError, match=r"MLflow at sqlite:///.* is a store on this machine only: set tracking.uri"):
        check_multi_node(config, local_store, nodes=2)
    check_multi_node(config, "http://mlflow.internal:5000", nodes=2)
    check_multi_node(config, None, nodes=2)  # tracking off


def test_a_loss_module_beside_the_config_imports_without_pythonpath(tmp_path, tiny_model_path, score_pairs_file):
    import os
    import subprocess
    import sys

    from conftest import REPO

    (tmp_path / "beside_the_config.py").write_text((REPO / "tests" / "custom_losses.py").read_text())
    config = write_config(tmp_path / "c.yaml", tiny_model_path, score_pairs_file, tmp_path / "out", loss={"name": "beside_the_config.MeanSquaredCosineLoss"}, tracking="off")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-m", "embedlab.cli", "train", str(config)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-1500:]
    assert (tmp_path / "out" / "model" / "modules.json").exists()
