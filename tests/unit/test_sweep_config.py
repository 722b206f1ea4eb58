"""Sweep configs are checked before Ray starts, and the define-by-run space only offers suitable losses."""

import random
import re
import socket
import time

import optuna
import pytest

from conftest import REPO, sentence, write_config, write_jsonl
from embedlab import sweep as sweeps
from embedlab.cli import main
from embedlab.config import load_config
from embedlab.errors import EmbedlabError
from embedlab.formats import losses_for
from embedlab.sweep import DefineByRunSpace, parameter_names, prepare_sweep, trial_config


@pytest.fixture
def data(tmp_path):
    rng = random.Random(0)
    scores = write_jsonl(tmp_path / "scores.jsonl", [{"sentence1": sentence(rng), "sentence2": sentence(rng), "score": rng.random()} for _ in range(32)])
    triplets = write_jsonl(tmp_path / "triplets.jsonl", [{"anchor": sentence(rng), "positive": sentence(rng), "negative": sentence(rng)} for _ in range(32)])
    return {"scores": scores, "triplets": triplets}


def _sweep_file(tmp_path, model_path, train, dev, search):
    return write_config(tmp_path / "sweep.yaml", model_path, train, tmp_path / "sweep", evaluators=[{"name": "dev", "data": str(dev)}], search=search)


@pytest.mark.parametrize("train", ["scores", "triplets"])
def test_the_define_by_run_space_only_offers_losses_that_suit_the_format(tmp_path, tiny_model_path, data, train):
    path = _sweep_file(tmp_path, tiny_model_path, data[train], data["scores"], {"losses": "auto", "space": {"training.learning_rate": {"loguniform": [1e-5, 1e-3]}}})
    sweep = prepare_sweep(load_config(path))
    suitable = set(losses_for(sweep.format_key))
    losses = sweep.losses["train"]  # a run of one data set: its name is "train"
    assert set(losses) <= suitable and len(losses) >= 2
    space = DefineByRunSpace(sweep.losses, [], sweep.search.space)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    offered = set()
    for _ in range(60):
        trial = study.ask()
        space(trial)
        offered.add(trial.params["loss"])
        # Only the chosen loss's own parameters are sampled (a conditional space).
        assert all(not name.startswith(tuple(f"{other}." for other in losses if other != trial.params["loss"])) for name in trial.params)
        study.tell(trial, random.random())
    assert offered == set(losses)


def test_a_trial_config_fills_in_the_loss_its_parameters_and_the_common_keys(tmp_path, tiny_model_path, data):
    path = _sweep_file(tmp_path, tiny_model_path, data["triplets"], data["scores"], {"losses": ["MultipleNegativesRankingLoss", "TripletLoss"], "modifiers": [None, {"name": "MatryoshkaLoss", "params": {"matryoshka_dims": [32, 16]}}]})
    sweep = prepare_sweep(load_config(path))
    assert parameter_names(sweep) == ["loss", "MultipleNegativesRankingLoss.scale", "TripletLoss.triplet_margin", "modifier"]
    base = sweep.config.to_dict()
    params = {"loss": "TripletLoss", "TripletLoss.triplet_margin": 2.5, "modifier": "MatryoshkaLoss", "training.learning_rate": 3e-4}
    config = trial_config(base, params, {"train": {}}, sweeps.plain_modifiers(sweep.search), str(tmp_path / "t1"))
    assert config.loss.name == "TripletLoss" and config.loss.params == {"triplet_margin": 2.5}
    assert [modifier.name for modifier in config.loss.modifiers] == ["MatryoshkaLoss"]
    assert config.training.learning_rate == 3e-4 and config.output_dir == str(tmp_path / "t1") and config.search is None


def test_what_tune_ships_to_a_trial_is_plain_values(tmp_path, tiny_model_path, data, monkeypatch):
    """Tune unpickles a trial's settings before embedlab.trial runs: objects of embedlab's classes there would
    import embedlab.config and with it torch, before a trial of several workers has started its other ranks."""
    from ray import tune

    search = {"losses": ["MultipleNegativesRankingLoss", "TripletLoss"], "modifiers": [None, {"name": "MatryoshkaLoss", "params": {"matryoshka_dims": [32, 16]}}], "workers_per_trial": 2}
    sweep = prepare_sweep(load_config(_sweep_file(tmp_path, tiny_model_path, data["triplets"], data["scores"], search)))
    shipped = {}
    monkeypatch.setattr(tune, "with_parameters", lambda function, **settings: shipped.update(settings) or function)
    monkeypatch.setattr(tune, "with_resources", lambda trainable, resources: trainable)
    sweeps._trainable(sweep, sweep.config.to_dict(), cpus_per_worker=1, parent_channel="sweep-run-1")

    def plain(value) -> bool:
        if isinstance(value, dict):
            return all(isinstance(key, str) and plain(item) for key, item in value.items())
        if isinstance(value, (list, tuple)):
            return all(plain(item) for item in value)
        return value is None or isinstance(value, (str, int, float, bool))

    assert shipped["modifiers"] == [None, {"name": "MatryoshkaLoss", "params": {"matryoshka_dims": [32, 16]}}]
    assert [name for name, value in shipped.items() if not plain(value)] == []


@pytest.mark.parametrize(
    "search, message",
    [
        ({"losses": ["MultipleNegativesRankingLoss"]}, "search.losses: MultipleNegativesRankingLoss does not suit this data"),
        ({"losses": [{"name": "CoSENTLoss", "space": {"margin": {"uniform": [0.1, 1.0]}}}]}, "CoSENTLoss has no parameter 'margin': its parameters are scale"),
        ({"space": {"training.learning_rate": {"loguniform": [1e-3, 1e-5]}}}, "the range [0.001, 1e-05] is empty or inverted"),
        ({"space": {"training.warmup_ratio": {"uniform": [0.1, 0.1]}}}, "is empty or inverted"),
        ({"space": {"training.batch_size": {"choice": []}}}, "choice needs a non-empty list"),
        ({"space": {"training.learnig_rate": {"loguniform": [1e-5, 1e-3]}}}, "did you mean 'learning_rate'"),
        ({"num_samples": 0}, "search.num_samples must be at least 1, got 0"),
        ({"scheduler": "hyperband"}, "'search.scheduler' must be one of fifo, asha, got 'hyperband'"),  # config.py checks the Literal
        ({"points_to_evaluate": [{"training.epochs": 2}]}, "not in the search space"),
        ({"gpus_per_trial": 1.5}, "search.gpus_per_trial is per worker: 0, 1 or a fraction such as 0.25 (trials share a GPU), got 1.5"),
        ({"gpus_per_trial": 0.5, "workers_per_trial": 2}, "a trial of several workers needs a whole GPU per worker"),
        ({"keep_models": 0}, "search.keep_models must be at least 1"),
        ({"workers_per_trial": 5}, "training.batch_size 8 x 5 workers = 40 is larger than the data (32 rows)"),
        ({"metric": "dev_spearman_cosin"}, "search.metric 'dev_spearman_cosin' is not a metric of the evaluators: did you mean 'dev_spearman_cosine'?"),
        ({"losses": [{"name": "CoSENTLoss", "params": {"scale": "x"}}]}, "search.losses.CoSENTLoss.params: scale must be a number, got 'x'"),
        ({"losses": [{"name": "CoSENTLoss", "space": {"scale": {"choice": [10, "abc"]}}}]}, "search.losses.CoSENTLoss.space: scale must be a number, got 'abc'"),
        ({"modifiers": [None, {"name": "MatryoshkaLoss", "params": {"matryoshka_dims": [16, "x"]}}]}, "search.modifiers.1.params: matryoshka_dims must be a list of whole numbers"),
    ],
)
def test_bad_search_blocks_fail_in_one_line_before_ray_starts(tmp_path, tiny_model_path, data, capsys, search, message):
    ray = pytest.importorskip("ray")
    path = _sweep_file(tmp_path, tiny_model_path, data["scores"], data["scores"], search)
    assert main(["sweep", str(path)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0], error
    assert not ray.is_initialized() and not (tmp_path / "sweep").exists()


@pytest.mark.parametrize(("metric", "mode"), [("dev_pearson_cosine", "max"), ("dev_spearman_cosine", "max"), ("loss", "min"), ("second_pearson_cosine", "max")])
def test_any_metric_the_trials_report_can_score_a_sweep_in_its_direction(tmp_path, tiny_model_path, data, metric, mode):
    path = _sweep_file(tmp_path, tiny_model_path, data["scores"], data["scores"], {"metric": metric})
    two = f"evaluators=[{{name: dev, data: {data['scores']}}}, {{name: second, data: {data['scores']}}}]"  # the second's metrics count too
    sweep = prepare_sweep(load_config(path, [two]))
    assert (sweep.metric, sweep.mode) == (metric, mode)


def test_sweep_runs_on_the_ray_cluster_given_by_address_or_config(tmp_path, tiny_model_path, data, monkeypatch):
    addresses = []

    def run_sweep(sweep, resume, address):
        addresses.append(address)
        raise EmbedlabError("stopped before Ray")

    monkeypatch.setattr(sweeps, "run_sweep", run_sweep)
    path = _sweep_file(tmp_path, tiny_model_path, data["scores"], data["scores"], {"losses": "auto"})
    assert main(["sweep", str(path), "--address", "10.1.2.3:6379"]) == 2
    assert main(["sweep", str(path), "distributed.address=10.9.9.9:6379"]) == 2
    assert main(["sweep", str(path), "distributed.address=10.9.9.9:6379", "--address", "ray://head:10001"]) == 2  # the flag wins
    assert main(["sweep", str(path)]) == 2
    assert addresses == ["10.1.2.3:6379", "10.9.9.9:6379", "ray://head:10001", None]


def test_an_unreachable_ray_address_fails_in_one_line_before_any_trial(tmp_path, tiny_model_path, data, capsys):
    ray = pytest.importorskip("ray")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = _sweep_file(tmp_path, tiny_model_path, data["scores"], data["scores"], {"losses": "auto"})
    start = time.monotonic()
    assert main(["sweep", str(path), "--address", f"127.0.0.1:{port}"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and f"cannot reach the Ray cluster at '127.0.0.1:{port}'" in error[0], error
    assert time.monotonic() - start < 60  # ray.init alone retries such an address for minutes
    assert not ray.is_initialized() and not (tmp_path / "sweep" / "tune").exists()


def test_train_refuses_a_sweep_config(tmp_path, tiny_model_path, data, capsys):
    path = _sweep_file(tmp_path, tiny_model_path, data["scores"], data["scores"], {"losses": "auto"})
    assert main(["train", str(path)]) == 2
    assert "is a sweep config" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted((REPO / "experiments" / "sweeps").glob("*.yaml")), ids=lambda path: path.stem)
def test_every_shipped_sweep_passes_its_checks_on_its_data(path, tiny_model_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the sweeps' data paths are relative to the repository
    sweep = prepare_sweep(load_config(path, [f"model.name={tiny_model_path}"]))
    formats = dict(part.split(": ") for part in sweep.format_key.split(", ")) if sweep.config.is_mixture else {"train": sweep.format_key}
    assert sweep.losses and all(losses and set(losses) <= set(losses_for(formats[name])) for name, losses in sweep.losses.items())
    assert sweep.metric.startswith(sweep.config.evaluators[0].name)


@pytest.mark.parametrize(
    "search, cluster, message",
    [
        ({"gpus_per_trial": 0.25}, {"CPU": 2.0}, "search.gpus_per_trial is 0.25 but the Ray cluster has no GPU: set it to 0 to train on CPUs"),
        ({"gpus_per_trial": 1, "workers_per_trial": 2}, {"CPU": 8.0, "GPU": 1.0}, "needs 2 GPUs per trial; the Ray cluster has 1: use workers_per_trial 1 or fewer"),
        ({"gpus_per_trial": 0.25}, {"CPU": 8.0, "GPU": 1.0}, None),  # four trials share the GPU
        ({"gpus_per_trial": 1, "workers_per_trial": 2}, {"CPU": 8.0, "GPU": 2.0}, None),
        ({}, {"CPU": 2.0}, None),
    ],
)
def test_gpus_per_trial_is_checked_against_the_cluster_before_any_trial(tmp_path, tiny_model_path, data, monkeypatch, search, cluster, message):
    import ray

    from embedlab import ray_train

    sweep = prepare_sweep(load_config(_sweep_file(tmp_path, tiny_model_path, data["scores"], data["scores"], {"losses": "auto", **search})))
    monkeypatch.setattr(ray_train, "connect", lambda address: None)  # a cluster of one node with these resources
    monkeypatch.setattr(ray_train, "count_nodes", lambda: 1)
    monkeypatch.setattr(ray, "cluster_resources", lambda: cluster)
    monkeypatch.setattr(sweeps, "SweepRunOpening", lambda sweep: pytest.fail("the sweep started"))
    if message is None:
        with pytest.raises(BaseException, match="the sweep started"):
            sweeps.run_sweep(sweep)
        return
    with pytest.raises(EmbedlabError) as raised:
        sweeps.run_sweep(sweep)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert not (tmp_path / "sweep").exists()


def test_a_sweeps_folder_holds_one_sweep_and_resume_continues_it_only_with_its_config(tmp_path, tiny_model_path, data, capsys):
    """Its trials, Tune's state and its MLflow run (found by the folder) belong to one sweep: a rerun without
    --resume would add a second sweep's trials to them, and a changed --resume would continue under another config."""
    ray = pytest.importorskip("ray")
    path = _sweep_file(tmp_path, tiny_model_path, data["scores"], data["scores"], {})
    sweep = prepare_sweep(load_config(path))
    sweeps.write_resolved(sweep)  # what a first run leaves: sweep.yaml, and a folder per trial that started
    (sweep.output_dir / "trials" / "a1b2c3d4").mkdir(parents=True)
    assert main(["sweep", str(path)]) == 2
    assert f"{sweep.output_dir} already holds a sweep: --resume continues it" in capsys.readouterr().err
    assert main(["sweep", str(path), "--resume", "training.seed=7"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and re.search(r"differs in training\.seed \(\d+ -> 7\): undo the change", error[0]), error
    assert not ray.is_initialized()
    assert (sweep.output_dir / "sweep.yaml").read_text() == sweeps._resolved_yaml(sweep)  # the refused run rewrote nothing
    # Where and how it runs may change: another cluster, fewer trials at once, optional tracking.
    moved = ["distributed.address=10.0.0.9:6379", "search.max_concurrent=2", "tracking.mode=optional"]
    sweeps.check_output_dir(prepare_sweep(load_config(path, moved)), resume=True)
    # A folder where no trial started (a sweep refused before its trials) takes a new sweep.
    (sweep.output_dir / "trials" / "a1b2c3d4").rmdir()
    sweeps.check_output_dir(prepare_sweep(load_config(path, ["training.seed=7"])), resume=False)
