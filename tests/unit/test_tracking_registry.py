"""Issue 17: the logged model is an MLflow pyfunc model, runs register it, log their data as dataset inputs
and record system metrics; bad registry input stops a run before it starts. Local SQLite stores only (the
server and `mlflow models serve` are in tests/integration/test_mlflow_tracking.py)."""

import http.server
import json
import random
import threading
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from conftest import cli_error_lines, sentence, write_config, write_jsonl
from embedlab import EmbeddingModel, tracking
from embedlab.cli import main
from embedlab.config import DataSource
from embedlab.data import load_data
from embedlab.errors import EmbedlabError
from embedlab.mlflow_model import write_flavour
from embedlab.tracking import local_store

TEXTS = ["a man plays the guitar", "the dog runs in the park", "x"]


@pytest.fixture
def pairs(tmp_path):
    rng = random.Random(0)
    rows = [{"sentence1": sentence(rng), "sentence2": sentence(rng), "score": round(rng.random(), 3)} for _ in range(48)]
    return write_jsonl(tmp_path / "pairs.jsonl", rows[:40]), write_jsonl(tmp_path / "dev.jsonl", rows[40:]), rows


def _config(tmp_path, model, train, dev, name, **tracking_section):
    return write_config(
        tmp_path / f"{name}.yaml", model, train, tmp_path / name,
        evaluators=[{"name": "dev", "data": str(dev)}], test_evaluators=[{"name": "test", "data": str(dev)}],
        tracking={"uri": local_store(tmp_path), "experiment": "reg", **tracking_section},
    )  # fmt: skip


def test_a_run_registers_a_servable_pyfunc_model_with_its_data_and_system_metrics(tmp_path, tiny_model_path, pairs, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")  # a run of seconds gets samples
    train, dev, rows = pairs
    assert main(["train", str(_config(tmp_path, tiny_model_path, train, dev, "first", register="tiny"))]) == 0
    client = MlflowClient(local_store(tmp_path))
    experiment = client.get_experiment_by_name("reg")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI's training view, not GenAI
    (first,) = client.search_runs([experiment.experiment_id])

    # Lineage: train data by file name, evaluation data by evaluator name, each with all its rows counted.
    inputs = {item.dataset.name: item for item in first.inputs.dataset_inputs}
    assert set(inputs) == {"pairs", "dev", "test"}
    assert {item.tags[0].value for item in inputs.values()} == {"train", "eval", "test"}
    assert json.loads(inputs["pairs"].dataset.profile)["num_rows"] == 40 and json.loads(inputs["dev"].dataset.profile)["num_rows"] == 8
    assert json.loads(inputs["pairs"].dataset.source) == {"uri": str(train.resolve())} and inputs["pairs"].dataset.source_type == "local"
    assert "system/cpu_utilization_percentage" in first.data.metrics and "system/system_memory_usage_megabytes" in first.data.metrics

    # The registry: version 1 of `tiny`, alias champion, with what the run was.
    version = client.get_model_version_by_alias("tiny", "champion")
    assert str(version.version) == "1" and version.run_id == first.info.run_id
    assert version.tags["data_format"] == "pair_score" and version.tags["loss"] == "CoSENTLoss"
    assert float(version.tags["dev_spearman_cosine"]) == first.data.metrics["dev_spearman_cosine"] and version.tags["metric"] == "dev_spearman_cosine"

    # The pyfunc flavour gives EmbeddingModel's embeddings, with encode's params.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", local_store(tmp_path))
    served = mlflow.pyfunc.load_model("models:/tiny@champion")
    local = EmbeddingModel(str(tmp_path / "first" / "model"), device="cpu")
    assert served.metadata.signature.outputs.to_dict()[0]["tensor-spec"] == {"dtype": "float32", "shape": (-1, local.embedding_dimension)}
    np.testing.assert_allclose(served.predict(TEXTS), local.encode(TEXTS), atol=1e-5)
    params = {"normalize_embeddings": True, "truncate_dim": 8}
    np.testing.assert_allclose(served.predict(TEXTS, params=params), local.encode(TEXTS, **params), atol=1e-5)

    # The same command again reuses its run and version; a changed data file is a new run, version and digest.
    assert main(["train", str(_config(tmp_path, tiny_model_path, train, dev, "first", register="tiny"))]) == 0
    assert [str(item.version) for item in client.search_model_versions("name = 'tiny'")] == ["1"]
    write_jsonl(train, rows[:39] + [{**rows[39], "score": 0.5}])  # the last row only: not a sample
    assert main(["train", str(_config(tmp_path, tiny_model_path, train, dev, "second", register="tiny"))]) == 0
    second = client.get_model_version_by_alias("tiny", "champion")
    assert str(second.version) == "2" and second.run_id != first.info.run_id
    changed = {item.dataset.name: item.dataset for item in client.get_run(second.run_id).inputs.dataset_inputs}
    assert changed["pairs"].digest != inputs["pairs"].dataset.digest and changed["dev"].digest == inputs["dev"].dataset.digest


def test_system_metrics_can_be_turned_off(tmp_path, tiny_model_path, pairs, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    train, dev, _ = pairs
    assert main(["train", str(_config(tmp_path, tiny_model_path, train, dev, "quiet", system_metrics=False))]) == 0
    client = MlflowClient(local_store(tmp_path))
    (found,) = client.search_runs([client.get_experiment_by_name("reg").experiment_id])
    assert "dev_spearman_cosine" in found.data.metrics and not [name for name in found.data.metrics if name.startswith("system/")]


class NoRegistry(http.server.BaseHTTPRequestHandler):
    """A tracking server without a model registry: experiments answer, registered-models do not."""

    def do_GET(self):
        found = "experiments/search" in self.path
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"experiments": []}' if found else b'{"error_code": "ENDPOINT_NOT_FOUND", "message": "no registry"}')

    do_POST = do_GET

    def log_message(self, *args):
        pass


def test_bad_registry_input_stops_the_run_before_it_starts_in_one_line(tmp_path, tiny_model_path, pairs, capsys):
    train, dev, _ = pairs
    config = _config(tmp_path, tiny_model_path, train, dev, "off", register="tiny", mode="off")
    assert main(["train", str(config)]) == 2
    (line,) = cli_error_lines(capsys.readouterr().err)
    assert "tracking.register 'tiny' needs MLflow tracking, and tracking is off" in line and not (tmp_path / "off").exists()

    assert main(["train", str(config), "tracking.mode=required", "tracking.register=a/b"]) == 2
    (line,) = cli_error_lines(capsys.readouterr().err)
    assert "tracking.register must be a registered model name without '/' or ':', got 'a/b'" in line

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NoRegistry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://alice:s3cret@127.0.0.1:{server.server_port}"
        assert main(["train", str(config), "tracking.mode=required", f"tracking.uri={uri}"]) == 2
    finally:
        server.shutdown()
    (line,) = cli_error_lines(capsys.readouterr().err)
    assert f"the MLflow store at http://***@127.0.0.1:{server.server_port} has no model registry" in line and "s3cret" not in line
    assert not (tmp_path / "off").exists()


def test_a_sweep_registers_its_best_trial_once(tmp_path, tiny_model_path):
    """register_best_trial on a parent run with two finished trials: the named trial's run becomes a version,
    a resumed or rerun sweep naming it again adds none, and a run with no model is refused in one warning."""
    store = local_store(tmp_path)
    parent = tracking.Tracker.open(store, "sweep", "/sweeps/s#sweep", "sweep-s", {}, tmp_path)
    parent.key = "/sweeps/s#sweep"
    (tmp_path / "flavour").mkdir()
    runs = {}
    for trial in ("t1", "t2", "t3"):
        child = tracking.Tracker.open(store, "sweep", f"{parent.key}/{trial}@abc", trial, {"loss": "CoSENTLoss"}, tmp_path, parent_run_id=parent.run_id)
        if trial != "t3":  # t3 finished without a model
            child.log_artifact(tiny_model_path, "model")
            for file in write_flavour(tiny_model_path, tmp_path / "flavour" / trial):
                child.log_artifact(file, "model")
        child.finish()
        runs[trial] = child.run_id
    client = MlflowClient(store)
    tracking.register_best_trial(parent, "best", "t2")
    tracking.register_best_trial(parent, "best", "t2")  # --resume
    assert [(str(item.version), item.run_id) for item in client.search_model_versions("name = 'best'")] == [("1", runs["t2"])]
    tracking.register_best_trial(parent, "best", "t1")
    assert client.get_model_version_by_alias("best", "champion").run_id == runs["t1"]
    tracking.register_best_trial(parent, None, "t2")  # no tracking.register: nothing
    assert client.get_model_version_by_alias("best", "champion").run_id == runs["t1"]


def test_a_run_with_no_model_is_not_registered(tmp_path):
    store = local_store(tmp_path)
    empty = tracking.Tracker.open(store, "exp", "k", "empty", {}, tmp_path)
    with pytest.raises(EmbedlabError, match="has no logged model to register as 'm'"):
        tracking.register_run(MlflowClient(store), empty.run_id, "m")


def test_the_digest_reads_every_row(tmp_path):
    rows = [{"text": f"sentence {index}", "label": index % 3} for index in range(20_000)]  # more rows than a sample
    first = load_data(DataSource(path=str(write_jsonl(tmp_path / "a.jsonl", rows))))
    same = load_data(DataSource(path=str(write_jsonl(tmp_path / "b.jsonl", rows))))
    last_changed = load_data(DataSource(path=str(write_jsonl(tmp_path / "c.jsonl", rows[:-1] + [{"text": "other", "label": 0}]))))
    assert tracking.rows_digest(first) == tracking.rows_digest(same) != tracking.rows_digest(last_changed)
    entity = tracking.dataset_entity(DataSource(path=str(tmp_path / "a.jsonl")), first)
    assert entity.name == "a" and json.loads(entity.profile)["num_rows"] == 20_000
    assert [column["type"] for column in json.loads(entity.schema)["mlflow_colspec"]] == ["string", "long"]


def test_the_pyfunc_model_takes_a_prompt_name_and_checks_its_input(tmp_path, tiny_model_path):
    model = EmbeddingModel(str(tiny_model_path), device="cpu")
    model.prompts = {"query": "query: "}
    model.save(tmp_path / "model")
    for file in write_flavour(tmp_path / "model", tmp_path / "flavour"):
        file.rename(tmp_path / "model" / file.name)
    loaded = mlflow.pyfunc.load_model(str(tmp_path / "model"))  # from the folder: no pickle, embedlab's loader
    expected = model.encode(TEXTS, prompt_name="query")
    np.testing.assert_allclose(loaded.predict(TEXTS, params={"prompt_name": "query"}), expected, atol=1e-5)
    assert not np.allclose(loaded.predict(TEXTS), expected, atol=1e-5)
    with pytest.raises(Exception, match="truncate_dim must be within 1..32"):
        loaded.predict(TEXTS, params={"truncate_dim": 64})
    assert not list((tmp_path / "model").rglob("*.pkl")) and (tmp_path / "model" / "model.safetensors").exists()


def test_a_trial_that_failed_before_its_run_gets_its_redacted_error_file(tmp_path):
    store = local_store(tmp_path)
    client = MlflowClient(store)
    run = client.create_run(client.create_experiment("sweep"))
    error = tmp_path / "error.txt"
    error.write_text("Traceback (most recent call last):\nConnectionError: https://alice:s3cret@data.example.com/train.csv\n")
    tracking.log_error_file(client, run.info.run_id, str(error))
    tracking.log_error_file(client, run.info.run_id, str(tmp_path / "missing.txt"))  # nothing to log, no error
    logged = Path(client.download_artifacts(run.info.run_id, "error.txt", str(tmp_path / "downloaded"))).read_text()
    assert "https://***@data.example.com/train.csv" in logged and "s3cret" not in logged
