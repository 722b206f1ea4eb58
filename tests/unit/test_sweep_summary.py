"""A sweep's end without Ray: trials whose metric is NaN, missing, or that raised or were stopped early are
recorded as such (trials.csv, plots, MLflow) and never win; a sweep where no trial produced the metric ends in
one line. Also: what a trial reports keeps Tune's ASHA scheduler and Optuna searcher working on a NaN."""

import csv
import math
import random
from types import SimpleNamespace

import pytest

from conftest import sentence, write_config, write_jsonl
from embedlab import sweep as sweeps
from embedlab.cli import main
from embedlab.config import load_config
from embedlab.errors import EmbedlabError

METRIC = "dev_spearman_cosine"


@pytest.fixture
def sweep(tmp_path, tiny_model_path):
    rng = random.Random(0)
    rows = [{"sentence1": sentence(rng), "sentence2": sentence(rng), "score": rng.random()} for _ in range(32)]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    search = {"losses": ["CoSENTLoss", "AnglELoss", "CosineSimilarityLoss"], "space": {"training.learning_rate": {"loguniform": [1e-5, 1e-3]}}}
    path = write_config(
        tmp_path / "sweep.yaml",
        tiny_model_path,
        data,
        tmp_path / "sweep",
        evaluators=[{"name": "dev", "data": str(data)}],
        tracking={"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
        search=search,
    )
    return sweeps.prepare_sweep(load_config(path))


def _reported(trial_id, loss, value, step=8, iteration=4, finished=True, lr=1e-4, mode="max"):
    """A trial's last result as Tune keeps it: what the trial reported through for_tune, plus Tune's own keys."""
    config = {"loss": loss, "training.learning_rate": lr}
    metrics = {"loss": 0.5, "learning_rate": 0.0, "trial_id": trial_id, "loss_name": loss, "step": step}
    if value is not None:
        metrics[METRIC] = value
    if finished:
        metrics[sweeps.FINISHED] = True
    result = {**sweeps.for_tune(metrics, METRIC, mode), "training_iteration": iteration, "time_total_s": 3.0, "config": config}
    return SimpleNamespace(metrics=result, config=config, error=None, path=None)


def _errored(tmp_path, trial_id, loss, reported_before=False):
    """A trial that raised: Tune's last result is its auto-filled one (trial id, config) unless it reported."""
    folder = tmp_path / "sweep" / "tune" / f"train_trial_{trial_id}"
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(f'{{"loss": "{loss}", "training.learning_rate": 0.001}}')
    (folder / "error.txt").write_text("Traceback (most recent call last):\nValueError: the loss exploded")
    metrics = {"trial_id": trial_id}
    if reported_before:
        metrics = _reported(trial_id, loss, 0.95, step=2, iteration=1, finished=False).metrics
    error = RuntimeError(f"Traceback (most recent call last):\n  File 'x.py', line 1\nValueError: the loss exploded in {trial_id}")
    return SimpleNamespace(metrics=metrics, config=None, error=error, path=str(folder))


def _trials_csv(sweep):
    with open(sweep.output_dir / "trials.csv") as file:
        return {row["trial_id"]: row for row in csv.DictReader(file)}


def test_nan_missing_errored_and_stopped_trials_are_recorded_and_never_win(tmp_path, sweep):
    results = [
        _reported("ok1", "CoSENTLoss", 0.5),
        _reported("ok2", "AnglELoss", 0.7, lr=3e-4),
        _reported("nan1", "CoSENTLoss", math.nan, lr=1e3),  # diverged, ran to its end (FIFO)
        _reported("stop1", "CosineSimilarityLoss", 0.9, step=2, iteration=1, finished=False),  # ASHA stopped it: no model
        _reported("stopnan", "AnglELoss", math.nan, step=2, iteration=1, finished=False),
        _reported("miss1", "CoSENTLoss", None),  # reported without the metric
        _errored(tmp_path, "err1", "AnglELoss"),  # raised before its first report
        _errored(tmp_path, "err2", "CoSENTLoss", reported_before=True),  # raised after reporting 0.95
        SimpleNamespace(metrics={"trial_id": "quiet"}, config={"loss": "CoSENTLoss"}, error=None, path=None),  # returned without reporting
    ]
    summary = sweeps.summarize(sweep, results)

    assert summary["best"]["trial_id"] == "ok2" and summary["best_model"].endswith("trials/ok2/model")
    assert {loss: row["trial_id"] for loss, row in summary["best_per_loss"].items()} == {"AnglELoss": "ok2", "CoSENTLoss": "ok1", "CosineSimilarityLoss": "stop1"}
    statuses = {row["trial_id"]: row["status"] for row in summary["trials"]}
    assert statuses == {"ok1": "ok", "ok2": "ok", "nan1": "nan", "stop1": "stopped", "stopnan": "stopped", "miss1": "missing", "err1": "error", "err2": "error", "quiet": "missing"}
    assert [row["trial_id"] for row in summary["trials"][:3]] == ["ok2", "ok1", "stop1"]  # finished first, by the metric

    table = _trials_csv(sweep)
    assert table["ok2"]["status"] == "ok" and float(table["ok2"][METRIC]) == 0.7
    assert table["nan1"][METRIC] == "nan" and table["stopnan"][METRIC] == "nan"  # never for_tune's -inf stand-in
    assert table["miss1"][METRIC] == "" and table["err1"][METRIC] == "" and table["err2"][METRIC] == ""
    assert table["stop1"]["step"] == "2" and table["stop1"]["training_iteration"] == "1"
    assert table["err1"]["loss"] == "AnglELoss" and float(table["err1"]["training.learning_rate"]) == 1e-3  # from params.json
    assert table["err1"]["error"] == "ValueError: the loss exploded in err1" and table["err1"]["error_file"].endswith("train_trial_err1/error.txt")
    assert "-inf" not in (sweep.output_dir / "trials.csv").read_text()

    plots = sweeps.write_plots(sweep, summary)
    assert [path.name for path in plots] == ["best_per_loss.png", "metric_vs_learning_rate.png"] and all(path.stat().st_size for path in plots)


def test_print_summary_names_the_failed_trials(sweep, capsys):
    summary = sweeps.summarize(sweep, [_reported("ok1", "CoSENTLoss", 0.5), _reported("nan1", "AnglELoss", math.nan)])
    sweeps.print_summary(sweep, summary)
    output = capsys.readouterr().out
    assert "2 trials (1 ok, 1 nan)" in output and f"{METRIC} is NaN" in output
    assert f"Best: CoSENTLoss (trial ok1) {METRIC} = 0.5000" in output


def test_when_no_trial_produced_the_metric_the_sweep_ends_in_one_line(tmp_path, sweep, monkeypatch, capsys):
    results = [_reported("nan1", "CoSENTLoss", math.nan), _errored(tmp_path, "err1", "AnglELoss"), _reported("miss1", "CoSENTLoss", None)]
    summary = sweeps.summarize(sweep, results)
    assert summary["best"] is None and summary["best_model"] is None
    assert sweeps.write_plots(sweep, summary) == []  # nothing to plot: no error either

    # Through the command: run_sweep's end (finish_sweep) on those trials, without Ray.
    monkeypatch.setattr(sweeps, "run_sweep", lambda sweep, resume, address: sweeps.finish_sweep(sweep, results, None))
    assert main(["sweep", str(sweep.output_dir.parent / "sweep.yaml")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1, error
    assert f"no trial produced {METRIC} (of 3 trials: 1 nan, 1 missing, 1 error)" in error[0]
    assert str(sweep.output_dir / "trials.csv") in error[0] and "error.txt" in error[0] and "ValueError: the loss exploded in err1" in error[0]
    assert (sweep.output_dir / "trials.csv").exists()


def test_mlflow_records_each_trial_status_failed_runs_and_nan_metrics(tmp_path, sweep):
    from embedlab import tracking

    parent = sweeps.open_sweep_run(sweep)

    def trial_run(trial_id, loss, status=None, nan=False):
        """What a trial's run.train leaves: a nested run keyed by trial and run fingerprint, FINISHED if training
        ended, RUNNING if its process was killed."""
        run = tracking.Tracker.open(parent.uri, parent.experiment, f"{parent.key}/{trial_id}@0123abcd", f"{loss}-{trial_id}", {}, tmp_path / trial_id, parent_run_id=parent.run_id)
        run.log_metrics({METRIC: math.nan if nan else 0.5}, step=2)
        if status:
            run.finish(status)
        return run.run_id

    ids = {
        "ok1": trial_run("ok1", "CoSENTLoss", "FINISHED"),
        "nan1": trial_run("nan1", "CoSENTLoss", "FINISHED", nan=True),
        "stop1": trial_run("stop1", "AnglELoss"),
        "err2": trial_run("err2", "CoSENTLoss"),
    }
    ok_end = parent.client.get_run(ids["ok1"]).info.end_time
    results = [
        _reported("ok1", "CoSENTLoss", 0.5),
        _reported("nan1", "CoSENTLoss", math.nan),
        _reported("stop1", "AnglELoss", 0.4, step=2, iteration=1, finished=False),
        _errored(tmp_path, "err2", "CoSENTLoss", reported_before=True),
        _errored(tmp_path, "err1", "AnglELoss"),  # failed before it opened its run
    ]
    sweeps.finish_sweep(sweep, results, parent)

    client = parent.client
    runs = {trial: client.get_run(run_id) for trial, run_id in ids.items()}
    children = client.search_runs([client.get_experiment_by_name(parent.experiment).experiment_id], f"tags.mlflow.parentRunId = '{parent.run_id}'")
    by_key = {run.data.tags[tracking.KEY_TAG].rsplit("/", 1)[-1].split("@")[0]: run for run in children}
    assert set(by_key) == {"ok1", "nan1", "stop1", "err1", "err2"}
    assert runs["ok1"].info.status == "FINISHED" and runs["ok1"].info.end_time == ok_end  # a finished trial's run is left as it was
    assert runs["ok1"].data.tags[sweeps.STATUS_TAG] == "ok"
    assert runs["nan1"].data.tags[sweeps.STATUS_TAG] == "nan" and runs["nan1"].data.tags[sweeps.METRIC_NAN_TAG] == METRIC
    assert math.isnan(runs["nan1"].data.metrics[METRIC])  # NaN as NaN
    assert runs["stop1"].info.status == "KILLED" and runs["stop1"].data.tags[sweeps.STATUS_TAG] == "stopped"
    for trial in ("err1", "err2"):
        run = by_key[trial]
        assert run.info.status == "FAILED" and run.data.tags[sweeps.STATUS_TAG] == "error"
        assert run.data.tags[tracking.ERROR_TAG] == f"ValueError: the loss exploded in {trial}"
    top = client.get_run(parent.run_id)
    assert top.info.status == "FINISHED" and top.data.metrics[f"best_{METRIC}"] == 0.5 and top.data.tags["best_trial"] == "ok1"
    assert top.data.tags["trial_statuses"] == "1 ok, 1 stopped, 1 nan, 2 error"


def test_the_parent_run_fails_when_no_trial_produced_the_metric(tmp_path, sweep):
    parent = sweeps.open_sweep_run(sweep)
    with pytest.raises(EmbedlabError, match="no trial produced"):
        sweeps.finish_sweep(sweep, [_errored(tmp_path, "err1", "AnglELoss")], parent)
    assert parent.client.get_run(parent.run_id).info.status == "FAILED"


@pytest.mark.parametrize("mode, worst", [("max", -math.inf), ("min", math.inf)])
def test_a_nan_or_missing_metric_is_reported_to_tune_as_the_worst_value(mode, worst):
    assert sweeps.for_tune({METRIC: 0.25, "step": 2}, METRIC, mode) == {METRIC: 0.25, "step": 2, sweeps.METRIC_STATUS: "ok"}
    assert sweeps.for_tune({METRIC: math.nan}, METRIC, mode) == {METRIC: worst, sweeps.METRIC_STATUS: "nan"}
    assert sweeps.for_tune({"loss": 1.0}, METRIC, mode) == {"loss": 1.0, METRIC: worst, sweeps.METRIC_STATUS: "missing"}


def test_asha_stops_and_optuna_records_a_nan_trial_without_crashing(sweep):
    """Tune's own scheduler and searcher, fed what a NaN trial reports (no Ray cluster needed)."""
    pytest.importorskip("ray")
    from optuna.trial import TrialState
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(space=sweeps.DefineByRunSpace(sweep.losses, [], dict(sweep.search.space)), metric=METRIC, mode="max")
    scheduler = ASHAScheduler(metric=METRIC, mode="max", time_attr="training_iteration", grace_period=1, reduction_factor=2)
    good, diverged = SimpleNamespace(trial_id="good"), SimpleNamespace(trial_id="diverged")
    decisions = {}
    for trial, value in ((good, 0.3), (diverged, math.nan)):
        searcher.suggest(trial.trial_id)
        scheduler.on_trial_add(None, trial)
        result = {**sweeps.for_tune({METRIC: value}, METRIC, "max"), "training_iteration": 1}
        decisions[trial.trial_id] = scheduler.on_trial_result(None, trial, result)
        searcher.on_trial_result(trial.trial_id, result)
        searcher.on_trial_complete(trial.trial_id, result)
    assert decisions == {"good": TrialScheduler.CONTINUE, "diverged": TrialScheduler.STOP}
    optuna_trials = searcher._ot_study.get_trials()
    assert [trial.state for trial in optuna_trials] == [TrialState.COMPLETE, TrialState.COMPLETE]  # not left RUNNING
    assert [trial.value for trial in optuna_trials] == [0.3, -math.inf]


def test_the_sweeps_run_reaches_its_trials_once_open_and_a_failed_opening_fails_them_in_one_line(sweep, monkeypatch):
    """The sweep opens its MLflow run in a thread (SweepRunOpening) while Tune starts; a trial waits for its
    location under the sweep run's channel in Ray's key-value store (a dict here)."""
    from ray.experimental import internal_kv

    store = {}
    monkeypatch.setattr(internal_kv, "_internal_kv_put", lambda key, value, namespace: store.__setitem__((namespace, key), value))
    monkeypatch.setattr(internal_kv, "_internal_kv_get", lambda key, namespace: store.get((namespace, key)))
    monkeypatch.setattr(internal_kv, "_internal_kv_del", lambda key, namespace: store.pop((namespace, key), None))

    assert sweeps.SweepRunOpening.check("sweep-run-0") is None  # not opened yet: a trial goes on loading
    opening = sweeps.SweepRunOpening(sweep)
    parent = sweeps.SweepRunOpening.wait(opening.channel)
    assert parent["run_id"] == opening.result().run_id and parent["key"] == f"{sweep.output_dir}#sweep" and parent["sweep"] == sweep.name
    opening.close()
    opening.result().finish()
    assert store == {}

    def unreachable(sweep):
        raise ConnectionError("MLflow server went away\ntraceback lines")

    monkeypatch.setattr(sweeps, "open_sweep_run", unreachable)
    failed = sweeps.SweepRunOpening(sweep)
    with pytest.raises(EmbedlabError, match=r"^the sweep's MLflow run could not be opened: MLflow server went away$"):
        sweeps.SweepRunOpening.wait(failed.channel)
    with pytest.raises(EmbedlabError, match="could not be opened"):
        sweeps.SweepRunOpening.check(failed.channel)  # what a trial asks before it loads anything
    with pytest.raises(ConnectionError):
        failed.result()  # the sweep's own error, raised by run_sweep after its trials
    assert failed.opened() is None
    monkeypatch.setattr(sweeps.SweepRunOpening, "WAIT_S", 0.2)
    with pytest.raises(EmbedlabError, match="was not opened within"):
        sweeps.SweepRunOpening.wait("a channel nobody opens")
