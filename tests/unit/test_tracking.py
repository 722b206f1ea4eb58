"""MLflow tracking into the default local store: what a run records, no secrets in params or artifacts,
`embedlab compare`, and outages or failures that never cost a result nor leave a run RUNNING."""

from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import write_config
from embedlab import run, tracking
from embedlab.cli import main
from embedlab.config import Config, load_config
from embedlab.tracking import _param_value, flatten, local_store, redact


def test_flatten_redact_and_secret_keys():
    assert flatten({"a": {"b": 1, "c": [{"d": 2}]}, "e": [1, 2]}) == {"a.b": 1, "a.c.0.d": 2, "e": [1, 2]}
    assert redact("https://alice:s3cret@mlflow.example.com/api") == "https://***@mlflow.example.com/api"
    assert _param_value("tracking.uri", "http://bob:hunter2@host:5000") == "http://***@host:5000"
    assert _param_value("data.train.api_token", "abc") == "***"
    assert len(_param_value("x", "y" * 10_000)) == 6000


def test_a_run_without_a_tracking_uri_lands_in_the_output_folder_and_compare_lists_it(tmp_path, tiny_model_path, score_pairs_file, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for name, learning_rate in (("first", 1e-3), ("second", 1e-5)):
        config = write_config(
            tmp_path / f"{name}.yaml",
            tiny_model_path,
            score_pairs_file,
            tmp_path / name,
            training={"learning_rate": learning_rate},
            evaluators=[{"name": "dev", "data": str(score_pairs_file)}],
            tracking={"experiment": "shared", "uri": local_store(tmp_path)},
        )
        assert main(["train", str(config)]) == 0
    client = MlflowClient(local_store(tmp_path))
    runs = client.search_runs([client.get_experiment_by_name("shared").experiment_id])
    assert sorted(run.info.run_name for run in runs) == ["first", "second"]
    assert all(run.data.params["tracking.uri"].startswith("sqlite:///") for run in runs)
    assert (tmp_path / "first" / "model" / "README.md").read_text().count("CoSENTLoss") >= 2  # the model card

    capsys.readouterr()
    assert main(["compare", "shared", "--tracking-uri", local_store(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "dev_spearman_cosine" in lines[0] and len(lines) == 3
    values = [float(line.split()[-2]) for line in lines[1:]]
    assert values == sorted(values, reverse=True)

    assert main(["compare", "nope", "--tracking-uri", local_store(tmp_path)]) == 2
    assert "no MLflow experiment 'nope'" in capsys.readouterr().err

    # A run folder stands for its experiment and store as its config names them (here a store outside it).
    assert main(["compare", str(tmp_path / "first")]) == 0
    assert capsys.readouterr().out.strip().splitlines() == lines


# --- issue 12.4: tracking never costs a result, and never leaks ---------------------------------------
SECRETS = ("s3cret", "hunter2", "sk-live-123")
SERVER = "http://alice:s3cret@mlflow.example.com"


class BrokenStore:
    """An MLflow client whose every call fails, quoting its URL with the credentials (as MLflow's REST errors do)."""

    tracking_uri = SERVER

    def __getattr__(self, name):
        def fail(**kwargs):
            raise ConnectionError(f"API request to {SERVER}/api/2.0/mlflow/runs/{name} failed\nwith a traceback")

        return fail


def broken_tracker(fallback_folder):
    tracker = tracking.Tracker(SERVER, "run-on-the-server", "exp", fallback_folder)
    tracker.client = BrokenStore()
    return tracker


def record_a_run(tracker, tmp_path):
    tracker.log_params({"training.learning_rate": 2e-5, "tracking.uri": SERVER})
    tracker.log_tags({"loss": "CoSENTLoss"})
    for step in (2, 4, 6):
        tracker.log_metrics({"dev_spearman_cosine": 0.5, "train_loss": 1.0}, step)
    tracker.log_artifact(tmp_path / "does-not-exist.yaml")
    tracker.finish()


def warnings_about(err: str, word: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("embedlab: warning") and word in line]


@pytest.mark.parametrize(
    "name",
    ["api_key", "aws_secret_access_key", "hf_token", "password", "secret", "HF_TOKEN", "apiKey", "x-api-key", "AWSSecretAccessKey",
     "storage_options.key", "private_key", "access_key_id", "db_pwd", "credentials", "data.train.api_token", "basic_auth"],
)  # fmt: skip
def test_names_that_hold_credentials_are_secret(name):
    assert tracking.is_secret_key(name)


@pytest.mark.parametrize(
    "name",
    ["label_column", "mini_batch_num_tokens", "loss_config.mini_batch_num_tokens", "keyword", "monkey", "keys", "run_key",
     "embedlab_run_key", "pad_token", "pooling_mode_cls_token", "tokenizer", "author", "tracking.uri", "data.train.path",
     "teacher_model", "embedlab_fallback_of", "mlflow.parentRunId", "training.max_grad_norm"],
)  # fmt: skip
def test_ordinary_names_are_not(name):
    assert not tracking.is_secret_key(name)


def test_every_config_key_and_loss_parameter_is_readable_in_mlflow():
    """No false positive in the schema or in any catalogue loss's or evaluator's parameters."""
    import importlib
    import inspect
    import pkgutil

    import embedlab.evaluation
    import embedlab.losses

    names = set(tracking.flatten(Config.from_dict({"data": {"train": "x.csv"}}).to_dict()))
    for package in (embedlab.losses, embedlab.evaluation):
        for module in pkgutil.iter_modules(package.__path__):
            for item in vars(importlib.import_module(f"{package.__name__}.{module.name}")).values():
                if inspect.isclass(item) and item.__module__.startswith(package.__name__):
                    names |= set(inspect.signature(item.__init__).parameters)
    assert "mini_batch_num_tokens" in names and "training.learning_rate" in names
    assert [name for name in names if tracking.is_secret_key(name)] == []


def test_redact_masks_userinfo_and_secret_query_parameters():
    assert redact("https://alice:p@ss@host/x?token=abc&page=2") == "https://***@host/x?token=***&page=2"
    assert redact("s3://AKIA:s3cret@bucket/k?X-Amz-Signature=f00") == "s3://***@bucket/k?X-Amz-Signature=***"
    assert redact("/data/train.csv and http://host:5000/api") == "/data/train.csv and http://host:5000/api"


def test_redact_config_masks_secrets_at_any_depth_and_leaves_its_input_alone():
    raw = {
        "tracking": {"uri": "http://bob:hunter2@host:5000", "experiment": "e"},
        "loss": {"params": {"api_key": "sk-live-123", "mini_batch_num_tokens": 512, "guides": [{"hf_token": "t"}, "ftp://u:hunter2@h/x"]}},
        "credentials": {"user": "u", "password": "p"},
        "aws_secret_access_key": "s3cret",
        "hf_token": None,
        "label_column": "score",
        "columns": ["a", "b"],
    }  # fmt: skip
    before = yaml.safe_dump(raw)
    redacted = tracking.redact_config(raw)
    assert yaml.safe_dump(raw) == before  # a deep copy
    assert redacted == {
        "tracking": {"uri": "http://***@host:5000", "experiment": "e"},
        "loss": {"params": {"api_key": "***", "mini_batch_num_tokens": 512, "guides": [{"hf_token": "***"}, "ftp://***@h/x"]}},
        "credentials": "***",
        "aws_secret_access_key": "***",
        "hf_token": None,  # unset: nothing to hide
        "label_column": "score",
        "columns": ["a", "b"],
    }  # fmt: skip


def test_run_params_hide_credentials_wherever_they_are_but_not_token_budgets():
    config = Config.from_dict(
        {
            "data": {"train": "https://alice:s3cret@data.example.com/train.csv"},
            "loss": {"name": "CachedMultipleNegativesRankingLoss", "params": {"mini_batch_num_tokens": 512, "extra": [{"api_key": "sk-live-123"}, 1]}},
            "tracking": {"uri": "http://bob:hunter2@host:5000"},
        }
    )  # fmt: skip

    class Loss:
        def get_config_dict(self):
            return {"mini_batch_num_tokens": 512, "hf_token": "sk-live-123", "guide": "https://bob:hunter2@hub.example.com/guide"}

    params = {key: tracking._param_value(key, value) for key, value in tracking.run_params(config, Loss(), "pair").items()}
    assert not [key for key, value in params.items() if any(secret in value for secret in SECRETS)]
    assert params["loss.params.mini_batch_num_tokens"] == "512" and params["loss_config.mini_batch_num_tokens"] == "512"
    assert params["loss_config.hf_token"] == "***" and params["data.train.path"] == "https://***@data.example.com/train.csv"


def test_a_fallback_that_cannot_be_created_costs_nothing_and_warns_once(tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    tracker = broken_tracker(tmp_path / "a-file" / "out")  # no folder can be made under a file, even by root
    record_a_run(tracker, tmp_path)  # nothing raises
    tracker.log_metrics({"dev_spearman_cosine": 0.6}, 8)  # records after the end are dropped quietly too

    err = capsys.readouterr().err
    assert len(warnings_about(err, "fallback")) == 1, err
    assert "mlflow-fallback.db" in warnings_about(err, "fallback")[0]
    assert len([line for line in err.splitlines() if line.startswith("embedlab: warning")]) == 2, err  # and the note at the end
    assert not any(secret in err for secret in SECRETS)


def test_a_fallback_store_that_refuses_the_run_costs_nothing_and_warns_once(tmp_path, capsys, monkeypatch):
    from mlflow.tracking import MlflowClient

    def refuse(self, *args, **kwargs):
        raise RuntimeError("disk I/O error")

    tracker = broken_tracker(tmp_path / "out")
    monkeypatch.setattr(MlflowClient, "create_run", refuse)
    record_a_run(tracker, tmp_path)

    err = capsys.readouterr().err
    assert len(warnings_about(err, "fallback")) == 1 and "disk I/O error" in err, err
    assert not any(secret in err for secret in SECRETS)


def test_records_the_fallback_store_refuses_warn_once_and_the_rest_are_kept(tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    tracker = broken_tracker(tmp_path / "out")
    record_a_run(tracker, tmp_path)
    tracker.log_artifact(tmp_path / "missing-too.yaml")

    err = capsys.readouterr().err
    assert len(warnings_about(err, "failed too")) + len(warnings_about(err, "fallback store")) == 2, err  # the switch, then one loss
    assert not any(secret in err for secret in SECRETS)
    fallback = MlflowClient(local_store(tmp_path / "out", "mlflow-fallback.db"))
    (found,) = fallback.search_runs([fallback.get_experiment_by_name("exp").experiment_id])
    assert [m.step for m in fallback.get_metric_history(found.info.run_id, "dev_spearman_cosine")] == [2, 4, 6]
    assert found.info.status == "FINISHED" and found.data.params["tracking.uri"] == "http://***@mlflow.example.com"
    assert found.data.tags[tracking.FALLBACK_TAG] == "http://***@mlflow.example.com run run-on-the-server"


def test_finish_run_logs_redacted_copies_of_the_config_and_the_model_card(tmp_path):
    output_dir = tmp_path / "run"
    (output_dir / "model" / "1_Pooling").mkdir(parents=True)
    (output_dir / "model" / "1_Pooling" / "config.json").write_text("{}")
    (output_dir / "model" / "modules.json").write_text("[]")
    config = {"data": {"train": {"path": "https://alice:s3cret@data.example.com/train.csv"}}, "loss": {"params": {"api_key": "sk-live-123"}}}
    (output_dir / "config.yaml").write_text(yaml.safe_dump(config))
    card = '# run\n\n`https://alice:s3cret@data.example.com/train.csv`: pairs\n\n`CoSENTLoss` with `{"scale": 20.0, "hf_token": "sk-live-123"}`\n'
    (output_dir / "model" / "README.md").write_text(card)

    tracker = tracking.Tracker.open(local_store(tmp_path), "exp", "key", "run", {}, tmp_path)
    tracking.finish_run(tracker, output_dir, {"test_spearman_cosine": 0.7}, 4)

    client = MlflowClient(local_store(tmp_path))
    found = client.get_run(tracker.run_id)
    assert found.info.status == "FINISHED" and found.data.metrics["test_spearman_cosine"] == 0.7
    assert {item.path for item in client.list_artifacts(tracker.run_id)} == {"config.yaml", "model", "README.md"}
    assert {item.path for item in client.list_artifacts(tracker.run_id, "model")} == {"model/1_Pooling", "model/modules.json", "model/README.md"}
    downloaded = Path(client.download_artifacts(tracker.run_id, "", str(tmp_path / "downloaded")))
    texts = {path.relative_to(downloaded).as_posix(): path.read_text() for path in downloaded.rglob("*") if path.is_file()}
    assert set(texts) == {"config.yaml", "README.md", "model/README.md", "model/modules.json", "model/1_Pooling/config.json"}
    assert not [name for name, text in texts.items() if any(secret in text for secret in SECRETS)]
    assert yaml.safe_load(texts["config.yaml"]) == tracking.redact_config(config)
    assert '"scale": 20.0' in texts["README.md"] and "https://***@data.example.com/train.csv" in texts["model/README.md"]
    assert (output_dir / "config.yaml").read_text() == yaml.safe_dump(config)  # the output folder is the caller's business


def test_fail_run_marks_the_run_failed_with_its_error_and_never_raises(tmp_path, capsys):
    client = MlflowClient(local_store(tmp_path))
    failed = tracking.Tracker.open(local_store(tmp_path), "exp", "failed", "failed", {}, tmp_path)
    tracking.fail_run(failed, ValueError(f"cannot read {SERVER}/data.csv\nsecond line"))
    found = client.get_run(failed.run_id)
    assert found.info.status == "FAILED" and found.data.tags[tracking.ERROR_TAG] == "ValueError: cannot read http://***@mlflow.example.com/data.csv"

    interrupted = tracking.Tracker.open(local_store(tmp_path), "exp", "interrupted", "interrupted", {}, tmp_path)
    tracking.fail_run(interrupted, KeyboardInterrupt())
    assert client.get_run(interrupted.run_id).info.status == "KILLED"

    ray_error = RuntimeError("Training failed.\nTraceback (most recent call last):\n  File \"x.py\", line 1\nValueError: bad batch")
    assert tracking.error_line(ray_error) == "ValueError: bad batch"

    tracking.fail_run(None, ValueError("no tracking: nothing to do"))
    (tmp_path / "a-file").write_text("")
    tracking.fail_run(broken_tracker(tmp_path / "a-file" / "out"), ValueError("the store is down too"))  # does not raise
    capsys.readouterr()


def test_a_run_that_raises_is_failed_in_mlflow_not_left_running(tmp_path, tiny_model_path, score_pairs_file, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    class Boom:
        def on_step_end(self, trainer, step, loss_value):
            if step == 2:
                raise RuntimeError("out of memory at step 2")

    path = write_config(tmp_path / "c.yaml", tiny_model_path, score_pairs_file, tmp_path / "out", tracking={"experiment": "boom"})
    with pytest.raises(RuntimeError, match="out of memory"):
        run.train(run.prepare(load_config(path), device="cpu"), callbacks=[Boom()])
    client = MlflowClient(local_store(tmp_path / "out"))
    (found,) = client.search_runs([client.get_experiment_by_name("boom").experiment_id])
    assert found.info.status == "FAILED" and found.data.tags[tracking.ERROR_TAG] == "RuntimeError: out of memory at step 2"
    # Its config was logged when it started: MLflow's compare page fails beside a run without artifacts.
    assert [item.path for item in client.list_artifacts(found.info.run_id)] == ["config.yaml"]


def test_redaction_keeps_column_names_booleans_and_hosts():
    from embedlab.tracking import redact, redact_config

    raw = {"data": {"train": {"rename": {"key": "anchor"}}}, "model": {"use_auth_token": True, "token": "hf_abc"}}
    redacted = redact_config(raw)
    assert redacted["data"]["train"]["rename"] == {"key": "anchor"}  # a column named key is no credential
    assert redacted["model"] == {"use_auth_token": True, "token": "***"}  # a switch is no secret; the token is
    assert redact("https://host.example/search?email=a@b.com") == "https://host.example/search?email=a@b.com"
    assert redact("https://alice:pw@host.example/x") == "https://***@host.example/x"


def test_retrieval_metric_names_are_recorded_under_names_mlflow_accepts(tmp_path, capsys):
    # MLflow refuses `@` in a metric name, and with it every metric of the batch: no metric may be lost to it.
    tracker = tracking.Tracker.open(local_store(tmp_path), "exp", "key", "run", {}, tmp_path)
    tracker.log_tags(tracking.run_tags(Config.from_dict({"data": {"train": "x.csv"}}), "anchor_positive_pairs", "dev_cosine_ndcg@10"))
    tracker.log_metrics({"dev_cosine_ndcg@10": 0.5, "dev_cosine_accuracy@1": 0.25, "train_loss": 1.5}, step=3)
    found = MlflowClient(local_store(tmp_path)).get_run(tracker.run_id)
    assert found.data.metrics == {"dev_cosine_ndcg_10": 0.5, "dev_cosine_accuracy_1": 0.25, "train_loss": 1.5}
    assert found.data.tags[tracking.PRIMARY_METRIC_TAG] == "dev_cosine_ndcg_10"
    assert "fallback" not in capsys.readouterr().err


def test_a_store_that_fails_mid_run_leaves_the_fallback_the_config_logged_at_the_start(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"tracking": {"uri": SERVER}}))
    tracker = tracking.Tracker.open(local_store(tmp_path / "primary"), "exp", "key", "run", {}, tmp_path / "out")
    tracking.log_config_now(tracker, tmp_path / "config.yaml")
    tracker.client = BrokenStore()  # the store goes down mid-run: the journal is replayed into the fallback
    tracker.log_metrics({"dev_spearman_cosine": 0.5}, step=2)
    assert tracker.fell_back and tracker.lost == 0, capsys.readouterr().err
    fallback = MlflowClient(local_store(tmp_path / "out", "mlflow-fallback.db"))
    assert [item.path for item in fallback.list_artifacts(tracker.run_id)] == ["config.yaml"]
