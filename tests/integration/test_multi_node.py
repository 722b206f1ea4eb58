"""A Ray cluster of two nodes on this machine (Ray's own `cluster_utils.Cluster`, one CPU each), so two
Ray Train workers land on different nodes: a run with driver-local storage or tracking is refused up
front, and a run with its storage on an S3 object store (moto's server on localhost) and an MLflow
tracking server (artifacts in the same bucket) trains through a killed worker, resuming from the bucket."""

import json
import logging
import os
import random
import re
import socket
import subprocess
import sys

import pytest

from conftest import REPO, cli_error_lines, sentence, trial_process_log, write_config, write_jsonl
from embedlab import EmbeddingModel
from embedlab.cli import main
from test_mlflow_tracking import Server

pytestmark = pytest.mark.integration

BUCKET = "embedlab"


@pytest.fixture(scope="module")
def object_store():
    """An S3 server on localhost with one bucket. Its endpoint and test credentials are in the environment
    before the cluster starts, so every node's workers, the driver and the MLflow server use it (pyarrow,
    which Ray Train's storage uses, and boto3 read AWS_ENDPOINT_URL)."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    settings = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    yield client
    server.stop()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def two_nodes(object_store):
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster.address
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture
def pairs(tmp_path):
    rng = random.Random(0)
    return write_jsonl(tmp_path / "pairs.jsonl", [{"anchor": sentence(rng), "positive": sentence(rng)} for _ in range(40)])


def _config(tmp_path, tiny_model_path, pairs, **sections):
    return write_config(
        tmp_path / "c.yaml", tiny_model_path, pairs, tmp_path / "run",
        loss={"name": "MultipleNegativesRankingLoss", "params": {"gather_across_devices": True}},
        training={"batch_size": 4, "max_steps": 4, "save_steps": 2}, **sections,
    )  # fmt: skip


def test_driver_local_storage_or_tracking_is_refused_before_any_worker_starts(two_nodes, tmp_path, tiny_model_path, pairs, capsys):
    config = _config(tmp_path, tiny_model_path, pairs)
    assert main(["train", str(config), "--workers", "2", f"distributed.address={two_nodes}"]) == 2
    err = cli_error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "this Ray cluster has 2 nodes, and checkpoints would go to" in err[0], err
    assert main(["train", str(config), "--workers", "2", f"distributed.address={two_nodes}", f"distributed.storage_path={tmp_path / 'shared'}"]) == 2
    err = cli_error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "is a store on this machine only: set tracking.uri" in err[0], err
    assert not (tmp_path / "run").exists() and not (tmp_path / "shared").exists()


def test_two_workers_on_two_nodes_train_into_an_object_store_through_a_killed_worker(two_nodes, object_store, tmp_path, tiny_model_path, pairs):
    """Rank 1 (on the second node) is killed at its 3rd step; the group restarts from the step-2 checkpoint in
    the bucket and ends at step 4. The model is in the bucket (checkpoints and MLflow artifacts) and loads."""
    from mlflow.tracking import MlflowClient

    server = Server(tmp_path / "mlflow-server", artifacts=f"s3://{BUCKET}/mlflow")
    try:
        marker, calls = tmp_path / "crashed", tmp_path / "calls.txt"
        config = write_config(
            tmp_path / "c.yaml", tiny_model_path, pairs, tmp_path / "run",
            loss={"name": "custom_losses.CrashOnceLoss", "params": {"crash_at": 3, "marker": str(marker), "calls_file": str(calls)}},
            training={"batch_size": 4, "max_steps": 4, "save_steps": 2}, tracking={"uri": server.uri},
            distributed={"workers": 2, "max_failures": 1, "address": two_nodes, "storage_path": f"s3://{BUCKET}/ray"},
        )  # fmt: skip
        assert main(["train", str(config)]) == 0
        assert marker.exists()  # the worker was killed ...
        # ... and rank 0 began steps 1-3 (3 broke off with its peer), then trained 3-4 from the step-2 checkpoint
        # (from scratch it would be 3 + 4).
        assert calls.read_text().split().count("0") == 3 + 2

        keys = [item["Key"] for item in object_store.list_objects_v2(Bucket=BUCKET)["Contents"]]
        (run_folder,) = {key.split("/")[1] for key in keys if key.startswith("ray/") and "/checkpoint-" in key}
        assert run_folder.startswith("run-")  # the output folder's name and the run's fingerprint
        assert f"ray/{run_folder}/checkpoint-0000004/model/model.safetensors" in keys
        assert any(key.startswith("mlflow/") and key.endswith("model/model.safetensors") for key in keys)

        client = MlflowClient(tracking_uri=server.uri)
        (found,) = client.search_runs([client.get_experiment_by_name("run").experiment_id])
        assert found.info.status == "FINISHED" and [metric.step for metric in client.get_metric_history(found.info.run_id, "train_loss")] == [2, 4]
        downloaded = client.download_artifacts(found.info.run_id, "model", str(tmp_path / "downloaded"))
        texts = ["a dog runs", "the cat sits"]
        expected = EmbeddingModel(str(tmp_path / "run" / "model"), device="cpu").encode(texts)
        assert abs(EmbeddingModel(downloaded, device="cpu").encode(texts) - expected).max() < 1e-6
    finally:
        server.stop()


def test_a_sweep_on_two_nodes_is_refused_before_any_trial_when_a_node_would_miss_its_paths_or_tracking(two_nodes, tmp_path, tiny_model_path, pairs, monkeypatch):
    """A trial runs on any node. A tracking store on this machine only is refused, as for training. Then a task
    on the other node looks for the sweep's data, model and folder: both nodes share this machine's disk, so a
    path that only the driver's machine has is stood for by one that exists nowhere, added to what the sweep's
    trials read. Each refusal is one line, and no trial starts."""
    from embedlab import sweep as sweeps
    from embedlab.config import load_config
    from embedlab.errors import EmbedlabError

    def sweep_file(name, **sections):
        return write_config(
            tmp_path / f"{name}.yaml", tiny_model_path, pairs, tmp_path / "sweep", loss={"name": "MultipleNegativesRankingLoss"},
            evaluators=[{"name": "dev", "data": str(pairs)}], training={"batch_size": 4, "max_steps": 2},
            search={"losses": ["MultipleNegativesRankingLoss"], "space": {"training.learning_rate": {"loguniform": [1e-5, 1e-3]}}, "num_samples": 1},
            **sections,
        )  # fmt: skip

    with pytest.raises(EmbedlabError) as refused:
        sweeps.run_sweep(sweeps.prepare_sweep(load_config(sweep_file("tracked"))), address=two_nodes)
    assert "this Ray cluster has 2 nodes, and MLflow at sqlite:" in str(refused.value) and "\n" not in str(refused.value)

    with_absolute_paths = sweeps.with_absolute_paths

    def with_a_path_only_here(config):
        config, paths = with_absolute_paths(config)
        return config, [*paths, str(tmp_path / "only-on-the-driver.jsonl")]

    monkeypatch.setattr(sweeps, "with_absolute_paths", with_a_path_only_here)
    with pytest.raises(EmbedlabError) as refused:
        sweeps.run_sweep(sweeps.prepare_sweep(load_config(sweep_file("untracked", tracking="off"))), address=two_nodes)
    message = str(refused.value)
    assert re.search(r"this Ray cluster has 2 nodes, and node [\d.]+ does not see \S+only-on-the-driver.jsonl: a sweep's trials run on any node", message), message
    assert str(pairs) not in message and "\n" not in message  # the data itself is seen there
    assert not (tmp_path / "sweep").exists()


def test_a_sweeps_two_worker_trials_span_both_nodes_and_keep_their_ranks(two_nodes, tmp_path, tiny_model_path, pairs):
    """Each node has one CPU, so a trial's two bundles (1 CPU per rank) lie on different nodes: rank 1 joins
    rank 0's process group over the network, reads the trial's inputs and writes its checkpoints in the trial's
    folder (here this machine's disk, standing for storage both nodes mount). The second trial trains on the
    rank the first started."""
    rng = random.Random(1)
    dev = write_jsonl(tmp_path / "dev.jsonl", [{"sentence1": sentence(rng), "sentence2": sentence(rng), "score": rng.random()} for _ in range(16)])
    config = write_config(
        tmp_path / "sweep.yaml", tiny_model_path, pairs, tmp_path / "sweep",
        loss={"name": "MultipleNegativesRankingLoss"}, evaluators=[{"name": "dev", "data": str(dev)}],
        training={"batch_size": 4, "max_steps": 4, "eval_steps": 2, "save_steps": 2}, tracking="off",
        search={"losses": ["MultipleNegativesRankingLoss"], "space": {"training.learning_rate": {"loguniform": [1e-5, 1e-3]}},
                "num_samples": 2, "workers_per_trial": 2, "cpus_per_trial": 1},
    )  # fmt: skip
    command = [sys.executable, "-m", "embedlab.cli", "sweep", str(config), "--address", two_nodes]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    output = trial_process_log(result.stdout + result.stderr)
    assert len(re.findall(r"Trial workers: ranks 1-1 \(pids \[\d+\]\) started", output)) == 1
    assert len(re.findall(r"Trial workers: ranks 1-1 \(pids \[\d+\]\) kept from an earlier trial", output)) == 1
    trials = list((tmp_path / "sweep" / "trials").iterdir())
    assert len(trials) == 2
    for trial in trials:
        assert json.loads((trial / "results.json").read_text())["step"] == 4
        checkpoint = trial / "checkpoints" / "checkpoint-4"
        assert {"rng_state_rank0.pt", "rng_state_rank1.pt", "weights.safetensors"} <= {path.name for path in checkpoint.iterdir()}
