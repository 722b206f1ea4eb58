"""MLflow tracking into the default local store: what a run records, no secrets in params, `embedlab compare`."""

from mlflow.tracking import MlflowClient

from conftest import write_config
from embedlab.cli import main
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
