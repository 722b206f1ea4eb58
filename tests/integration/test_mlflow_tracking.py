"""MLflow tracking against a real `mlflow server` process (loopback port, SQLite backend, local artifact
root): a train run, a sweep's parent and nested trial runs, and a server that dies mid-run."""

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import REPO, cli_error_lines, sentence, write_config, write_jsonl
from embedlab import EmbeddingModel, run
from embedlab.cli import main
from embedlab.config import load_config

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_answering(url: str, process: subprocess.Popen, timeout_s: float, log: Path | None = None) -> None:
    """Returns once `url` answers; raises while `process` is alive but silent past the deadline, or has ended."""
    deadline = time.time() + timeout_s
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"nothing answers at {url}" + (f": {log.read_text()[-3000:]}" if log else "")) from None
            time.sleep(0.5)


class Server:
    """An `mlflow server` process; `artifacts`: where it stores artifacts (default: a folder beside its database)."""

    def __init__(self, folder, artifacts: str | None = None):
        self.port = _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{folder / 'server.db'}", "--artifacts-destination", artifacts or str(folder / "artifacts"),
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until_answering(f"{self.uri}/health", self.process, timeout_s=120)
        except RuntimeError:
            self.stop()
            raise

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture
def server(tmp_path):
    server = Server(tmp_path / "mlflow-server")
    yield server
    if server.process.poll() is None:
        server.stop()


@pytest.fixture
def data(tmp_path):
    rng = random.Random(0)
    rows = [{"sentence1": sentence(rng), "sentence2": sentence(rng), "score": rng.random()} for _ in range(64)]
    return write_jsonl(tmp_path / "train.jsonl", rows[:48]), write_jsonl(tmp_path / "dev.jsonl", rows[48:])


def _config(tmp_path, model_path, data, name, **sections):
    train, dev = data
    return write_config(
        tmp_path / f"{name}.yaml",
        model_path,
        train,
        tmp_path / name,
        training={"max_steps": 4, "eval_steps": 2, "save_steps": 2, "show_progress_bar": False},
        evaluators=[{"name": "dev", "data": str(dev)}],
        test_evaluators=[{"name": "test", "data": str(dev)}],
        **sections,
    )


def test_a_train_run_records_params_metrics_with_steps_and_a_loadable_model(server, tmp_path, tiny_model_path, data, capsys):
    # Credentials in the tracking URI (the server has no auth and ignores them) must reach no param, tag or artifact.
    secret_uri = server.uri.replace("http://", "http://alice:s3cret@")
    config = _config(tmp_path, tiny_model_path, data, "train", tracking={"uri": secret_uri, "experiment": "tiny"})
    assert main(["train", str(config)]) == 0

    client = MlflowClient(server.uri)
    (found,) = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    params, tags = found.data.params, found.data.tags
    assert params["loss.name"] == "CoSENTLoss" and params["loss_config.scale"] == "20.0" and params["data_format"] == "pair_score"
    assert params["training.learning_rate"] == "2e-05" and params["workers"] == "1" and params["version.torch"]
    assert tags["data_format"] == "pair_score" and tags["loss"] == "CoSENTLoss" and found.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(found.info.run_id, "dev_spearman_cosine")] == [2, 4]
    assert [m.step for m in client.get_metric_history(found.info.run_id, "train_loss")] == [2, 4]
    assert [m.step for m in client.get_metric_history(found.info.run_id, "test_spearman_cosine")] == [0, 4]  # before, after
    assert {"config.yaml", "model", "README.md"} <= {artifact.path for artifact in client.list_artifacts(found.info.run_id)}
    assert params["tracking.uri"] == server.uri.replace("http://", "http://***@")
    logged = Path(client.download_artifacts(found.info.run_id, "config.yaml", str(tmp_path / "logged")))
    assert yaml.safe_load(logged.read_text())["tracking"]["uri"] == params["tracking.uri"]
    stored = [*params.values(), *found.data.tags.values(), logged.read_text()]
    assert not [text for text in stored if "s3cret" in text] and "s3cret" not in capsys.readouterr().err

    downloaded = client.download_artifacts(found.info.run_id, "model", str(tmp_path / "downloaded"))
    texts = ["a man plays the guitar", "the dog runs in the park"]
    saved = EmbeddingModel(str(tmp_path / "train" / "model"), device="cpu").encode(texts)
    np.testing.assert_allclose(EmbeddingModel(downloaded, device="cpu").encode(texts), saved, atol=1e-6)

    # Running the same command again (it resumes the finished run) records into the same MLflow run.
    assert main(["train", str(config)]) == 0
    assert len(client.search_runs([found.info.experiment_id])) == 1


def test_a_sweep_makes_a_parent_run_with_one_nested_run_per_trial(server, tmp_path, tiny_model_path, data):
    config = _config(
        tmp_path, tiny_model_path, data, "sweep",
        tracking={"uri": server.uri, "register": "sweep-best"},
        search={"losses": "auto", "num_samples": 3, "cpus_per_trial": 1, "space": {"training.learning_rate": {"loguniform": [1e-5, 1e-3]}}},
    )  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "embedlab.cli", "sweep", str(config)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    client = MlflowClient(server.uri)
    experiment = client.get_experiment_by_name("sweep")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [found for found in runs if found.info.run_name == "sweep-sweep"]
    children = [found for found in runs if found.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 3 and len(runs) == 4
    for child in children:
        loss = child.data.tags["loss"]
        assert child.info.run_name.startswith(f"{loss}-") and child.data.tags["sweep"] == "sweep"
        assert child.data.params["loss.name"] == loss and "dev_spearman_cosine" in child.data.metrics
    assert parent.data.metrics["best_dev_spearman_cosine"] == max(child.data.metrics["dev_spearman_cosine"] for child in children)
    artifacts = {artifact.path for artifact in client.list_artifacts(parent.info.run_id)} | {
        artifact.path for artifact in client.list_artifacts(parent.info.run_id, "plots")
    }
    assert {"trials.csv", "plots/best_per_loss.png", "plots/metric_vs_learning_rate.png"} <= artifacts
    # The best trial's run is registered, once; the sweep and its trials list the data they read.
    (best,) = [child for child in children if child.info.run_name.endswith(f"-{parent.data.tags['best_trial']}")]
    assert len(client.search_model_versions("name = 'sweep-best'")) == 1
    assert client.get_model_version_by_alias("sweep-best", "champion").run_id == best.info.run_id
    assert all({item.dataset.name for item in run.inputs.dataset_inputs} == {"train", "dev", "test"} for run in runs)

    # The MLflow UI, rendered in headless Chromium: the training view, the trials compared with their metric and
    # artifacts, the champion version, a run's dataset inputs. The screenshots stay as build outputs in
    # bench/results/ (git ignores it), to look at after CI.
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed: the UI screenshot check needs it (apt-get install chromium)")
    screenshot = REPO / "bench" / "results" / "mlflow_ui_test" / "compare.png"
    screenshot.unlink(missing_ok=True)  # this run's, not an earlier one's
    command = [sys.executable, "bench/mlflow_ui_screenshot.py", "sweep", "--tracking-uri", server.uri, "--output", str(screenshot), "--model", "sweep-best", "--smoke-test"]
    shot = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert shot.returncode == 0, shot.stdout + shot.stderr[-2000:]
    assert "shows dev_spearman_cosine" in shot.stdout and screenshot.stat().st_size > 10_000
    for page in ("training view", "compare page", "registered model page", "run page"):
        assert f"{page}: ok" in shot.stdout, shot.stdout


def test_the_champion_is_served_by_mlflow_models_serve(server, tmp_path, tiny_model_path, data):
    config = _config(tmp_path, tiny_model_path, data, "served", tracking={"uri": server.uri, "experiment": "served", "register": "tiny-embedder"})
    assert main(["train", str(config)]) == 0
    client = MlflowClient(server.uri)
    (found,) = client.search_runs([client.get_experiment_by_name("served").experiment_id])
    version = client.get_model_version_by_alias("tiny-embedder", "champion")
    assert version.run_id == found.info.run_id and version.tags["loss"] == "CoSENTLoss" and version.tags["data_format"] == "pair_score"
    assert version.run_link == version.tags["run_link"] == f"{server.uri}/#/experiments/{found.info.experiment_id}/runs/{found.info.run_id}"
    digests = {item.dataset.name: item.dataset.digest for item in found.inputs.dataset_inputs}
    assert set(digests) == {"train", "dev", "test"} and digests["dev"] == digests["test"] != digests["train"]
    assert "system/cpu_utilization_percentage" in found.data.metrics

    port = _free_port()
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/tiny-embedder@champion", "--env-manager", "local", "--host", "127.0.0.1", "-p", str(port), "-w", "1"]
    log = tmp_path / "serve.log"
    with log.open("w") as output:
        # The scoring server runs `uvicorn` by name: the environment's own, as in an activated virtualenv.
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        env = {**os.environ, "MLFLOW_TRACKING_URI": server.uri, "PATH": path}
        serving = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_until_answering(f"http://127.0.0.1:{port}/ping", serving, timeout_s=180, log=log)
        texts = ["a man plays the guitar", "the dog runs in the park"]
        body = json.dumps({"inputs": texts, "params": {"normalize_embeddings": True, "truncate_dim": 16}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"})
        predictions = json.loads(urllib.request.urlopen(request, timeout=60).read())["predictions"]
    finally:
        serving.terminate()
        serving.wait(timeout=30)
    expected = EmbeddingModel(str(tmp_path / "served" / "model"), device="cpu").encode(texts, normalize_embeddings=True, truncate_dim=16)
    np.testing.assert_allclose(np.array(predictions), expected, atol=1e-5)


class StopServerAt:
    def __init__(self, server, step):
        self.server, self.step = server, step

    def on_step_end(self, trainer, step, loss_value):
        if step == self.step:
            self.server.stop()


def test_a_server_that_dies_mid_run_costs_no_model_and_no_metrics(server, tmp_path, tiny_model_path, data, capsys):
    config = load_config(_config(tmp_path, tiny_model_path, data, "outage", tracking={"uri": server.uri, "experiment": "outage"}))
    results = run.train(run.prepare(config, device="cpu"), callbacks=[StopServerAt(server, step=3)])

    assert (tmp_path / "outage" / "model" / "modules.json").exists() and results["step"] == 4
    warning = [line for line in capsys.readouterr().err.splitlines() if "MLflow tracking at" in line]
    assert len(warning) == 1 and "mlflow-fallback.db" in warning[0]
    fallback = MlflowClient(f"sqlite:///{tmp_path / 'outage' / 'mlflow-fallback.db'}")
    (found,) = fallback.search_runs([fallback.get_experiment_by_name("outage").experiment_id])
    # Everything: what reached the server before the outage (step 2), and what came after (step 4).
    assert [m.step for m in fallback.get_metric_history(found.info.run_id, "dev_spearman_cosine")] == [2, 4]
    assert found.data.params["loss.name"] == "CoSENTLoss" and found.info.status == "FINISHED"


def test_an_unreachable_server_stops_the_run_before_it_starts_unless_tracking_is_optional(tmp_path, tiny_model_path, data, capsys):
    dead = f"http://127.0.0.1:{_free_port()}"
    config = _config(tmp_path, tiny_model_path, data, "dead", tracking={"uri": dead})
    assert main(["train", str(config)]) == 2
    error = cli_error_lines(capsys.readouterr().err)
    assert len(error) == 1 and f"the MLflow tracking server at {dead} is unreachable ([Errno 111] Connection refused): start it" in error[0], error
    assert "tracking: optional" in error[0]
    assert not (tmp_path / "dead").exists()

    assert main(["train", str(config), "tracking.mode=optional"]) == 0
    assert "recording in sqlite:///" in capsys.readouterr().err
    local = MlflowClient(f"sqlite:///{tmp_path / 'dead' / 'mlflow.db'}")
    assert len(local.search_runs([local.get_experiment_by_name("dead").experiment_id])) == 1
