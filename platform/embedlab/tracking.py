"""MLflow tracking: one run per `embedlab train`, a parent run per sweep with one nested run per trial.

Where: `tracking.uri` in the config, else MLFLOW_TRACKING_URI, else a local store in the output folder
(`sqlite:///<output_dir>/mlflow.db`, artifacts in `<output_dir>/mlartifacts`) that
`mlflow ui --backend-store-uri sqlite:///<output_dir>/mlflow.db` opens.

What: params (the flattened resolved config, the loss's get_config_dict, data format, model, workers,
library versions), tags (data format, loss, sweep), metrics at every evaluation with the global step,
and artifacts (resolved config, model folder, model card). Runs are found again by a key tag, so a
rerun, a restarted worker or a resumed sweep logs into its existing run instead of making a duplicate.

Outages: an unreachable server at start stops the run before it starts (one line), unless
`tracking.mode: optional`, which warns and records locally. A failure mid-run never stops training:
the run's records so far, and everything after, go to `<output_dir>/mlflow-fallback.db`, with a warning
that says where.
"""

import importlib.metadata
import os
import re
import sys
import time
from pathlib import Path

from embedlab.config import Config
from embedlab.errors import EmbedlabError

KEY_TAG = "embedlab_run_key"  # finds a run again: the output folder (train) or sweep folder + trial id
PRIMARY_METRIC_TAG = "embedlab_primary_metric"
LIBRARIES = ("embedlab", "torch", "transformers", "ray", "mlflow", "optuna", "datasets")
SECRET_KEY = re.compile(r"(password|passwd|secret|token|api_key|apikey|access_key|credential)", re.IGNORECASE)
URI_USERINFO = re.compile(r"(://)[^/@\s]+@")
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value


def _client(uri: str):
    # A dead server must not stall training for minutes of retries: a few quick ones, then the fallback.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def local_store(folder: Path, name: str = "mlflow.db") -> str:
    return f"sqlite:///{Path(folder).resolve() / name}"


def resolve_uri(config: Config, parent: dict | None = None) -> str | None:
    """The tracking URI a run uses, checked now; None when tracking is off. A run nested in `parent`
    (a sweep's trial) records where its parent does."""
    if parent is not None:
        return parent["uri"]
    tracking = config.tracking
    if tracking.mode == "off":
        return None
    if tracking.mode not in ("required", "optional"):
        raise EmbedlabError(f"tracking.mode must be required, optional or off, got '{tracking.mode}'")
    uri = tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or local_store(Path(config.output_dir))
    if not uri.startswith(("http://", "https://")):
        return uri
    try:
        _client(uri).search_experiments(max_results=1)
    except Exception as error:  # requests' and MLflow's own errors: all mean "not reachable"
        if tracking.mode == "required":
            raise EmbedlabError(
                f"the MLflow tracking server at {redact(uri)} is unreachable ({first_line(error)}): start it, fix "
                "tracking.uri / MLFLOW_TRACKING_URI, or set `tracking: optional` to record locally"
            ) from None
        local = local_store(Path(config.output_dir))
        warn(f"the MLflow tracking server at {redact(uri)} is unreachable ({first_line(error)}); recording in {local}")
        return local
    return uri


def experiment_id(client, name: str, artifact_folder: Path) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    # A local store keeps artifacts next to it; a server decides itself where they go.
    location = Path(artifact_folder).resolve().as_uri() if client.tracking_uri.startswith("sqlite") else None
    return client.create_experiment(name, artifact_location=location)


class Tracker:
    """One MLflow run. Every record goes through `_call`, which keeps a journal: if the store fails, a run
    in the local fallback store receives the journal and everything after it."""

    def __init__(self, uri: str, run_id: str, experiment: str, fallback_folder: Path):
        self.uri, self.run_id, self.experiment = uri, run_id, experiment
        self.client = _client(uri)
        self.fallback_folder = Path(fallback_folder)
        self.journal: list[tuple[str, dict]] = []
        self.fell_back = False
        self.key, self.reused = None, False  # set by open()

    @classmethod
    def open(cls, uri: str, experiment: str, key: str, run_name: str, tags: dict, folder: Path, parent_run_id: str | None = None, reuse: bool = True) -> "Tracker":
        """The run with this key tag if there is one (and `reuse`), else a new one."""
        client = _client(uri)
        experiment_key = experiment_id(client, experiment, Path(folder) / "mlartifacts")
        found = client.search_runs([experiment_key], filter_string=f"tags.{KEY_TAG} = '{_quoted(key)}'", max_results=1) if reuse else []
        if found:
            run_id = found[0].info.run_id
            client.update_run(run_id, status="RUNNING")
        else:
            run_tags = {KEY_TAG: key, **tags, **({"mlflow.parentRunId": parent_run_id} if parent_run_id else {})}
            run_id = client.create_run(experiment_key, tags=run_tags, run_name=run_name).info.run_id
        tracker = cls(uri, run_id, experiment, folder)
        tracker.key, tracker.reused = key, bool(found)
        return tracker

    def location(self) -> dict:
        """What a worker or trial needs to log into this run."""
        return {"uri": self.uri, "run_id": self.run_id, "experiment": self.experiment, "folder": str(self.fallback_folder)}

    @classmethod
    def at(cls, location: dict) -> "Tracker":
        return cls(location["uri"], location["run_id"], location["experiment"], Path(location["folder"]))

    # --- records --------------------------------------------------------------------------------
    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(key, _param_value(key, value)) for key, value in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self._call("log_batch", params=items[start : start + 100])

    def log_tags(self, tags: dict) -> None:
        from mlflow.entities import RunTag

        self._call("log_batch", tags=[RunTag(key, str(value)) for key, value in tags.items()])

    def log_metrics(self, metrics: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(key, float(value), now, step) for key, value in metrics.items() if isinstance(value, (int, float)) and not isinstance(value, bool)]
        if items:
            self._call("log_batch", metrics=items)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        method = "log_artifacts" if Path(path).is_dir() else "log_artifact"
        key = "local_dir" if method == "log_artifacts" else "local_path"
        self._call(method, **{key: str(path), "artifact_path": artifact_path})

    def finish(self, status: str = "FINISHED") -> None:
        self._call("set_terminated", status=status)

    # --- outages --------------------------------------------------------------------------------
    def _call(self, method: str, **kwargs) -> None:
        self.journal.append((method, kwargs))
        try:
            getattr(self.client, method)(run_id=self.run_id, **kwargs)
        except Exception as error:  # any store failure: never stop training for it
            if self.fell_back:
                warn(f"MLflow fallback store {self.uri} failed too ({first_line(error)}): {method} not recorded")
                return
            self._fall_back(error)

    def _fall_back(self, error: Exception) -> None:
        failed_uri, failed_run = self.uri, self.run_id
        self.uri = local_store(self.fallback_folder, "mlflow-fallback.db")
        self.client = _client(self.uri)
        experiment_key = experiment_id(self.client, self.experiment, self.fallback_folder / "mlartifacts-fallback")
        self.run_id = self.client.create_run(experiment_key, tags={"embedlab_fallback_of": f"{redact(failed_uri)} run {failed_run}"}).info.run_id
        self.fell_back = True
        warn(
            f"MLflow tracking at {redact(failed_uri)} failed ({first_line(error)}); training goes on and the run's records "
            f"are in {self.uri} (run {self.run_id}): mlflow ui --backend-store-uri {self.uri}"
        )
        for method, kwargs in self.journal:
            self._call_without_journal(method, kwargs)

    def _call_without_journal(self, method: str, kwargs: dict) -> None:
        try:
            getattr(self.client, method)(run_id=self.run_id, **kwargs)
        except Exception as error:
            warn(f"MLflow fallback store {self.uri} failed ({first_line(error)}): {method} not recorded")


class TrackingCallback:
    """Trainer callback: every evaluation's metrics, with the global step (rank 0 only)."""

    NAMES = {"loss": "train_loss"}  # the training loss, apart from any evaluator's

    def __init__(self, tracker: Tracker):
        self.tracker = tracker

    def on_evaluate(self, trainer, step: int, metrics: dict) -> None:
        self.tracker.log_metrics({self.NAMES.get(key, key): value for key, value in metrics.items()}, step)


# --- what a run records ---------------------------------------------------------------------------
def run_params(config: Config, loss, format_key: str) -> dict:
    params = flatten(config.to_dict())
    params.pop("search", None)
    config_dict = getattr(loss, "get_config_dict", dict)()
    params.update({f"loss_config.{key}": value for key, value in config_dict.items()})
    params.update({"data_format": format_key, "model_name": config.model.name, "workers": config.distributed.workers or 1})
    params.update({f"version.{name}": _version(name) for name in LIBRARIES})
    return params


def run_tags(config: Config, format_key: str, primary_metric: str | None, sweep: str | None = None) -> dict:
    tags = {"data_format": format_key, "loss": config.loss.name}
    if primary_metric:
        tags[PRIMARY_METRIC_TAG] = primary_metric
    if sweep:
        tags["sweep"] = sweep
    return tags


def flatten(raw, prefix: str = "") -> dict:
    if isinstance(raw, dict):
        flat = {}
        for key, value in raw.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    if isinstance(raw, list) and raw and all(isinstance(item, dict) for item in raw):
        flat = {}
        for index, item in enumerate(raw):
            flat.update(flatten(item, f"{prefix}{index}."))
        return flat
    return {prefix.rstrip("."): raw}


def redact(value: str) -> str:
    """user:password@ in URIs becomes ***@."""
    return URI_USERINFO.sub(r"\1***@", value)


def _param_value(key: str, value) -> str:
    if SECRET_KEY.search(key):
        return "***"
    text = redact(str(value))
    return text[: MAX_PARAM_LENGTH - 3] + "..." if len(text) > MAX_PARAM_LENGTH else text


def _quoted(text: str) -> str:
    return text.replace("'", "\\'")


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:300]


def warn(message: str) -> None:
    print(f"embedlab: warning: {message}", file=sys.stderr)


# --- a training run's life --------------------------------------------------------------------------
def start_run(config: Config, loss, format_key: str, primary_metric: str | None, uri: str | None, parent: dict | None = None, run_name: str | None = None, key: str | None = None) -> Tracker | None:
    """Opens (or reopens) the run of this output folder and records what it is; None when tracking is off."""
    if uri is None:
        return None
    output_dir = Path(config.output_dir).resolve()
    experiment = parent["experiment"] if parent else (config.tracking.experiment or output_dir.name)
    tracker = Tracker.open(
        uri,
        experiment,
        key or str(output_dir),
        run_name or output_dir.name,
        run_tags(config, format_key, primary_metric, sweep=parent and parent.get("sweep")),
        output_dir,
        parent_run_id=parent and parent["run_id"],
        reuse=config.training.resume,
    )
    if not tracker.reused:  # MLflow refuses a param logged twice with another value
        tracker.log_params(run_params(config, loss, format_key))
    return tracker


def finish_run(tracker: Tracker | None, output_dir: Path, test_metrics: dict, step: int) -> None:
    """Test metrics, the resolved config, the model folder and its card, then FINISHED."""
    if tracker is None:
        return
    tracker.log_metrics(test_metrics, step)
    tracker.log_artifact(output_dir / "config.yaml")
    tracker.log_artifact(output_dir / "model", "model")
    tracker.log_artifact(output_dir / "model" / "README.md")
    tracker.finish()


def end_stopped_children(parent: Tracker) -> None:
    """Marks the parent's child runs still RUNNING (their trial was stopped early) as KILLED."""
    try:
        experiment = parent.client.get_experiment_by_name(parent.experiment)
        children = parent.client.search_runs([experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}' and attributes.status = 'RUNNING'")
        for child in children:
            parent.client.set_terminated(child.info.run_id, status="KILLED")
    except Exception as error:  # bookkeeping only: the records are already there
        warn(f"could not mark stopped trials' MLflow runs as KILLED: {first_line(error)}")


# --- comparing runs ---------------------------------------------------------------------------------
def compare_runs(experiment: str, uri: str | None = None) -> tuple[list[dict], str]:
    """The runs of an experiment, best first by the primary metric the runs were tagged with."""
    folder = Path(experiment)
    if uri is None and (folder / "mlflow.db").exists():  # a run or sweep folder with its local store
        uri, experiment = local_store(folder), folder.resolve().name
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri is None:
        raise EmbedlabError(f"no MLflow store for '{experiment}': give a run or sweep folder, --tracking-uri, or set MLFLOW_TRACKING_URI")
    client = _client(uri)
    try:
        found = client.get_experiment_by_name(experiment)
    except Exception as error:
        raise EmbedlabError(f"cannot read the MLflow store at {redact(uri)}: {first_line(error)}") from None
    if found is None:
        names = ", ".join(item.name for item in client.search_experiments(max_results=20))
        raise EmbedlabError(f"no MLflow experiment '{experiment}' at {redact(uri)}: experiments there are {names or 'none'}")
    runs = client.search_runs([found.experiment_id], max_results=5000)
    metrics = [run.data.tags.get(PRIMARY_METRIC_TAG) for run in runs]
    metric = next((name for name in metrics if name), None)
    if metric is None:
        raise EmbedlabError(f"the runs of '{experiment}' have no evaluator metric to compare")
    rows = [
        {
            "name": run.info.run_name,
            "loss": run.data.tags.get("loss", "-") if "sweep" not in run.info.run_name else "(sweep)",
            "params": run.data.params,
            "metric": run.data.metrics.get(metric, run.data.metrics.get(f"best_{metric}")),
            "status": run.info.status,
        }
        for run in runs
    ]
    rows.sort(key=lambda row: (row["metric"] is None, -(row["metric"] or 0.0)))  # every evaluator's primary metric: greater is better
    return rows, metric
