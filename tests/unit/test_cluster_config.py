from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def test_cluster_yaml_passes_the_ray_cluster_launcher_schema():
    pytest.importorskip("jsonschema")
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # fills the launcher's defaults, checks the schema; launches nothing
    assert config["available_node_types"]["gpu_worker"]["resources"]["GPU"] == 1
    assert "-c constraints.txt" in " ".join(config["setup_commands"])
    assert (REPO / "cluster.yaml").read_text().splitlines()[0].startswith("#")
    import jsonschema

    with pytest.raises(jsonschema.ValidationError):  # the check has teeth: a misspelt key fails it
        validate_config(prepare_config({**config, "max_worker": 2}))


def test_cluster_yaml_holds_no_credentials():
    text = (REPO / "cluster.yaml").read_text().lower()
    for secret in ("aws_access_key", "aws_secret", "secret_access_key", "password", "token:"):
        assert secret not in text


def test_cluster_yaml_sets_shared_storage_and_a_tracking_server_for_every_node():
    from embedlab.ray_train import STORAGE_ENV

    setup = "\n".join(yaml.safe_load((REPO / "cluster.yaml").read_text())["setup_commands"])
    assert f"export {STORAGE_ENV}=s3://<your-bucket>/" in setup and "export MLFLOW_TRACKING_URI=http://<your-mlflow-server>:" in setup
