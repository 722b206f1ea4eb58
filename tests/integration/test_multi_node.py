"""A Ray cluster of two nodes on this machine (Ray's own `cluster_utils.Cluster`, one CPU each), so two
Ray Train workers land on different nodes: a run with driver-local storage or tracking is refused up
front, and a run with shared storage and a tracking server trains, with its model in the storage."""

import random

import pytest

from conftest import cli_error_lines, sentence, write_config, write_jsonl
from embedlab.cli import main
from test_mlflow_tracking import Server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def two_nodes():
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


def test_two_workers_on_two_nodes_train_into_shared_storage_and_a_tracking_server(two_nodes, tmp_path, tiny_model_path, pairs):
    from mlflow.tracking import MlflowClient

    server = Server(tmp_path / "mlflow-server")
    try:
        shared = tmp_path / "shared"  # the folder every node mounts
        config = _config(tmp_path, tiny_model_path, pairs, tracking={"uri": server.uri})
        assert main(["train", str(config), "--workers", "2", f"distributed.address={two_nodes}", f"distributed.storage_path={shared}"]) == 0
        (run_folder,) = shared.iterdir()
        assert run_folder.name.startswith("run-")  # the output folder's name and the run's fingerprint
        assert any((checkpoint / "model" / "modules.json").exists() for checkpoint in run_folder.glob("checkpoint-*"))
        client = MlflowClient(tracking_uri=server.uri)
        (found,) = client.search_runs([client.get_experiment_by_name("run").experiment_id])
        assert found.info.status == "FINISHED" and [metric.step for metric in client.get_metric_history(found.info.run_id, "train_loss")] == [2, 4]
        assert "model" in {artifact.path for artifact in client.list_artifacts(found.info.run_id)}
    finally:
        server.stop()
