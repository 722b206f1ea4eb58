"""MLflow tracking: one run per `embedlab train`, a parent run per sweep with one nested run per trial.

Where: `tracking.uri` in the config, else MLFLOW_TRACKING_URI, else a local store in the output folder
(`sqlite:///<output_dir>/mlflow.db`, artifacts in `<output_dir>/mlartifacts`) that
`mlflow ui --backend-store-uri sqlite:///<output_dir>/mlflow.db` opens.

What: params (the flattened resolved config, the loss's get_config_dict, data format, model, workers,
library versions), tags (data format, loss, sweep), metrics at every evaluation with the global step,
the train and evaluation data as dataset inputs (source, row count, a digest over every row), system
metrics (`tracking.system_metrics`, on by default) and artifacts (resolved config, model card, and the
model folder as an MLflow pyfunc model: embedlab.mlflow_model). Runs are found again by a key tag, so a
rerun, a restarted worker or a resumed sweep logs into its existing run instead of making a duplicate.
Experiments are marked as model-training ones, so the MLflow UI opens them in its training view.

Registry: `tracking.register: NAME` makes the run's model (a sweep's: the best trial's) a version of
registered model NAME, tagged with the metric, data format, loss and run, and moves the alias `champion`
to it. A run is registered once: a rerun or a resumed sweep finds its version and only moves the alias.

Outages: an unreachable server at start stops the run before it starts (one line), unless
`tracking.mode: optional`, which warns and records locally. A failure mid-run never stops training:
the run's records so far, and everything after, go to `<output_dir>/mlflow-fallback.db`, with a warning
that says where. If that fallback fails too (a read-only folder, a full disk), one more warning says so
and later records are dropped quietly, with a count at the end: tracking never costs a result.

Failures: a run that raises is marked FAILED (KILLED when interrupted or stopped by Tune), never left
RUNNING: callers wrap training in `except BaseException as error: fail_run(tracker, error); raise`.

Credentials never reach MLflow or stderr: params, tags, warnings and the logged copies of `config.yaml`
and the model card go through `redact_config` / `redact` / `redact_text`. The rule (`is_secret_key`):
a name is split into words at `.`, `_`, `-` and camelCase; it is secret when a word is password,
passwd, pwd, passphrase, secret(s), token, credential(s), auth, authorization, cookie, signature, sig
or a fused apikey / accesskey / secretkey / privatekey / authkey, or when the word `key` stands alone
(`key`, `storage_options.key`) or follows a credential word (`api_key`, `access_key`,
`aws_secret_access_key`, `private_key`, `ssh_key`, ...). Longer or plural words do not count, nor `key`
after an ordinary word, so `mini_batch_num_tokens`, `keyword`, `run_key` and `embedlab_run_key` stay
readable, and so do tokenizer special tokens (`pad_token`, `cls_token`). A false positive only hides
a value; a null or empty secret stays as it is (nothing to hide, and it shows it was unset).
In any string, `user:password@` in a URI becomes `***@` and a secret-named query parameter `***`.
"""

import copy
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path

from embedlab.config import Config, dump_yaml, load_yaml
from embedlab.errors import EmbedlabError, warn

KEY_TAG = "embedlab_run_key"  # finds a run again: the output folder (train) or sweep folder + trial id
PRIMARY_METRIC_TAG = "embedlab_primary_metric"
FALLBACK_TAG = "embedlab_fallback_of"  # on a fallback run: the store and run it stands in for
ERROR_TAG = "embedlab_error"  # on a FAILED / KILLED run: why
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")  # else the UI guesses GenAI and hides the runs
CHAMPION = "champion"  # the alias a registered run's version gets
ROWS_PER_DIGEST_BATCH = 4096
FALLBACK_DB = "mlflow-fallback.db"
LIBRARIES = ("embedlab", "torch", "transformers", "ray", "mlflow", "optuna", "datasets")
MASK = "***"
# The secret-name rule, in words (see the module docstring).
SECRET_WORDS = frozenset(
    {"password", "passwords", "passwd", "pwd", "passphrase", "secret", "secrets", "token", "credential", "credentials", "creds",
     "auth", "authorization", "cookie", "signature", "sig", "apikey", "accesskey", "secretkey", "privatekey", "authkey"}
)  # fmt: skip
KEY_QUALIFIERS = frozenset(
    {"api", "access", "secret", "private", "client", "encryption", "signing", "ssh", "master", "account", "auth",
     "service", "subscription", "license", "hmac", "session", "sas", "storage", "gpg", "pgp", "rsa", "x"}
)  # fmt: skip
TOKENIZER_TOKENS = frozenset({"pad", "cls", "sep", "unk", "bos", "eos", "mask"})  # `pad_token` is a tokenizer's, not a credential
NAME_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
URI_USERINFO = re.compile(r"(://)[^/\s\"'<>?#]*@")  # greedy to the last @ before the path: a password may hold an @
QUERY_PARAM = re.compile(r"([?&;])([^=&;#\s\"'<>]+)=([^&;#\s\"'<>]*)")
TEXT_PAIR = re.compile(r"""(["'])([^"'\n]{1,200})\1(\s*:\s*)("(?:[^"\\\n]|\\.)*"|'[^'\n]*'|[^,}\]\n]+)""")  # "name": value, as JSON writes it
YAML_PAIR = re.compile(r"^(\s*(?:-\s+)?)([\w.-]+)(\s*:[ \t]+)(\S.*)$", re.MULTILINE)  # name: value, as YAML writes it
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
    if tracking.register is not None:
        check_model_name(tracking.register)
    if tracking.mode == "off":
        if tracking.register is not None:
            raise EmbedlabError(
                f"tracking.register '{tracking.register}' needs MLflow tracking, and tracking is off: drop `tracking: off` or tracking.register"
            )
        return None
    uri = tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or local_store(Path(config.output_dir))
    if not uri.startswith(("http://", "https://")):
        if tracking.register is not None and not uri.startswith("sqlite:"):  # a local SQLite store is made later, with its registry
            check_registry(uri)
        return uri
    try:
        _client(uri).search_experiments(max_results=1)
    except Exception as error:  # requests' and MLflow's own errors: all mean "not reachable"
        if tracking.mode == "required":
            raise EmbedlabError(
                f"the MLflow tracking server at {redact(uri)} is unreachable ({_unreachable_reason(error)}): start it, fix "
                "tracking.uri / MLFLOW_TRACKING_URI, or set `tracking: optional` to record locally"
            ) from None
        local = local_store(Path(config.output_dir))
        warn(f"the MLflow tracking server at {redact(uri)} is unreachable ({_unreachable_reason(error)}); recording in {local}")
        return local
    if tracking.register is not None:
        check_registry(uri)
    return uri


def check_model_name(name: str) -> None:
    if not name.strip() or "/" in name or ":" in name:
        raise EmbedlabError(f"tracking.register must be a registered model name without '/' or ':', got '{name}'")


def check_registry(uri: str) -> None:
    """An MLflow store that cannot register models fails now, not after training."""
    try:
        _client(uri).search_registered_models(max_results=1)
    except Exception as error:
        raise EmbedlabError(
            f"tracking.register: the MLflow store at {redact(uri)} has no model registry ({first_line(error)}): use a server "
            "with a database backend (mlflow server --backend-store-uri sqlite:///mlflow.db) or drop tracking.register"
        ) from None


def experiment_id(client, name: str, artifact_folder: Path) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if EXPERIMENT_KIND[0] not in experiment.tags:  # made by an earlier embedlab; a user's own choice stays
            client.set_experiment_tag(experiment.experiment_id, *EXPERIMENT_KIND)
        return experiment.experiment_id
    # A local store keeps artifacts next to it; a server decides itself where they go.
    location = Path(artifact_folder).resolve().as_uri() if client.tracking_uri.startswith("sqlite") else None
    return client.create_experiment(name, artifact_location=location, tags=dict([EXPERIMENT_KIND]))


class Tracker:
    """One MLflow run. Every record goes through `_call`, which keeps a journal: if the store fails, a run
    in the local fallback store receives the journal and everything after it."""

    def __init__(self, uri: str, run_id: str, experiment: str, fallback_folder: Path):
        self.uri, self.run_id, self.experiment = uri, run_id, experiment
        self.client = _client(uri)
        self.fallback_folder = Path(fallback_folder)
        self.journal: list[tuple[str, dict]] = []  # every record until the fallback, to replay there
        self.fell_back = False
        self.gone = False  # the store and the fallback both failed: records are dropped quietly
        self.lost = 0  # records no store kept
        self.warned = False  # at most one warning about lost records
        self.key, self.reused = None, False  # set by open()
        self.last_steps: dict[str, int] = {}  # metric -> the last step recorded, for a reused run
        self.system_metrics = False  # whether the process that trains records them (start_system_metrics)
        self.register: str | None = None  # the registered model this run's model becomes a version of
        self.monitor = None  # MLflow's system metrics thread, while it runs
        self._scratch: tempfile.TemporaryDirectory | None = None  # see scratch()

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
            run_tags = {name: _tag_value(name, value) for name, value in run_tags.items()}
            run_id = client.create_run(experiment_key, tags=run_tags, run_name=run_name).info.run_id
        tracker = cls(uri, run_id, experiment, folder)
        tracker.key, tracker.reused = key, bool(found)
        return tracker

    def scratch(self) -> Path:
        """A folder for the redacted copies logged during the run. It lives as long as the tracker: if the
        store fails later, the journal replayed into the fallback store still finds the files."""
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="embedlab-redacted-")
        return Path(self._scratch.name)

    def location(self) -> dict:
        """What a worker or trial needs to log into this run."""
        return {
            "uri": self.uri, "run_id": self.run_id, "experiment": self.experiment, "folder": str(self.fallback_folder),
            "reused": self.reused, "system_metrics": self.system_metrics,
        }  # fmt: skip

    @classmethod
    def at(cls, location: dict) -> "Tracker":
        tracker = cls(location["uri"], location["run_id"], location["experiment"], Path(location["folder"]))
        tracker.reused, tracker.system_metrics = location.get("reused", False), location.get("system_metrics", False)
        return tracker

    # --- records --------------------------------------------------------------------------------
    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(key, _param_value(key, value)) for key, value in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self._call("log_batch", params=items[start : start + 100])

    def log_tags(self, tags: dict) -> None:
        from mlflow.entities import RunTag

        self._call("log_batch", tags=[RunTag(key, _tag_value(key, value)) for key, value in tags.items()])

    def log_metrics(self, metrics: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(metric_key(key), float(value), now, step) for key, value in metrics.items() if isinstance(value, (int, float)) and not isinstance(value, bool)]
        if self.reused:  # a resumed run recomputes the steps after its last checkpoint: record each step once
            items = [item for item in items if step > self._last_step(item.key)]
        for item in items:
            self.last_steps[item.key] = step
        if items:
            self._call("log_batch", metrics=items)

    def _last_step(self, key: str) -> int:
        if key not in self.last_steps:
            try:
                self.last_steps[key] = max((metric.step for metric in self.client.get_metric_history(self.run_id, key)), default=-1)
            except Exception:  # the store is down: record the step (the fallback store starts empty anyway)
                self.last_steps[key] = -1
        return self.last_steps[key]

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        method = "log_artifacts" if Path(path).is_dir() else "log_artifact"
        key = "local_dir" if method == "log_artifacts" else "local_path"
        self._call(method, **{key: str(path), "artifact_path": artifact_path})

    def log_inputs(self, inputs: list) -> None:
        self._call("log_inputs", datasets=inputs)

    def start_system_metrics(self) -> None:
        """MLflow's system metrics (system/cpu_utilization_percentage, system/gpu_0_utilization_percentage, ...)
        of this machine, every MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL seconds (10), until the run ends.
        Best effort: a store that fails stops them, never training."""
        if not self.system_metrics or self.monitor is not None or self.fell_back or self.gone:
            return
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        _quiet_logger("mlflow.system_metrics.system_metrics_monitor")
        try:
            self.monitor = SystemMetricsMonitor(self.run_id, resume_logging=self.reused, tracking_uri=self.uri)
            self.monitor.start()
        except Exception as error:  # psutil missing, a store that fails: the run goes on without them
            self.monitor = None
            warn(f"system metrics are not recorded: {first_line(error)}")

    def stop_system_metrics(self) -> None:
        if self.monitor is not None:
            monitor, self.monitor = self.monitor, None
            monitor.finish()  # before the run ends, which would stop it earlier
            # MLflow drops the samples since its last record; a run shorter than one interval would have none.
            try:
                monitor.collect_metrics()
                monitor.publish_metrics(monitor.aggregate_metrics())
                monitor.mlflow_logger.flush()
            except Exception:  # the store is down: the fallback warned, or will
                pass

    def finish(self, status: str = "FINISHED") -> None:
        self.stop_system_metrics()
        self._call("set_terminated", status=status)
        if self.lost:  # the one note at the end; the warning itself came when the first record was lost
            warn(f"{self.lost} MLflow record(s) of this run were not kept (see the warning above); the trained model and results are unaffected")

    # --- outages: nothing here raises ----------------------------------------------------------
    def _call(self, method: str, **kwargs) -> None:
        if self.gone:
            self.lost += 1
            return
        if not self.fell_back:
            self.journal.append((method, kwargs))
        try:
            getattr(self.client, method)(run_id=self.run_id, **kwargs)
        except Exception as error:  # any store failure: never stop training for it
            if self.fell_back:
                self._lose(f"the MLflow fallback store {self.uri} failed too ({first_line(error)}): {method} not recorded")
            else:
                self._fall_back(error)

    def _fall_back(self, error: Exception) -> None:
        failed_uri, failed_run = self.uri, self.run_id
        uri = f"sqlite:///{self.fallback_folder}/{FALLBACK_DB}"
        try:
            uri = local_store(self.fallback_folder, FALLBACK_DB)
            self.fallback_folder.mkdir(parents=True, exist_ok=True)  # e.g. a Ray worker on another node
            client = _client(uri)
            experiment_key = experiment_id(client, self.experiment, self.fallback_folder / "mlartifacts-fallback")
            run_id = client.create_run(experiment_key, tags={FALLBACK_TAG: f"{redact(failed_uri)} run {failed_run}"}).info.run_id
        except Exception as fallback_error:  # a read-only or missing folder, a full disk, a broken store
            self.gone, self.journal = True, []
            self._lose(
                f"MLflow tracking at {redact(failed_uri)} failed ({first_line(error)}) and so did the local fallback store "
                f"{uri} ({first_line(fallback_error)}); training goes on, and this run's records from now on are not kept"
            )
            return
        self.uri, self.client, self.run_id, self.fell_back = uri, client, run_id, True
        warn(
            f"MLflow tracking at {redact(failed_uri)} failed ({first_line(error)}); training goes on and the run's records "
            f"are in {self.uri} (run {self.run_id}): mlflow ui --backend-store-uri {self.uri}"
        )
        journal, self.journal = self.journal, []
        for method, kwargs in journal:
            try:
                getattr(self.client, method)(run_id=self.run_id, **kwargs)
            except Exception as replay_error:
                self._lose(f"the MLflow fallback store {self.uri} failed ({first_line(replay_error)}): {method} not recorded")

    def _lose(self, message: str) -> None:
        """Counts a record no store kept; only the first one is worth a warning."""
        self.lost += 1
        if not self.warned:
            self.warned = True
            warn(f"{message} (later losses are counted, not repeated)")


class TrackingCallback:
    """Trainer callback: every evaluation's metrics, with the global step (rank 0 only), and the system
    metrics of the process that trains (a Ray worker's machine, not the driver's), from now to the end."""

    NAMES = {"loss": "train_loss"}  # the training loss, apart from any evaluator's

    def __init__(self, tracker: Tracker):
        self.tracker = tracker
        tracker.start_system_metrics()

    def on_evaluate(self, trainer, step: int, metrics: dict) -> None:
        self.tracker.log_metrics({self.NAMES.get(key, key): value for key, value in metrics.items()}, step)

    def on_train_end(self, trainer, metrics: dict) -> None:
        self.tracker.stop_system_metrics()


class _Redacting(logging.Filter):
    """MLflow's own warnings quote the URL they called, credentials included."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), ()
        return True


def _quiet_logger(name: str) -> None:
    """Warnings only (no "Started monitoring system metrics."), with credentials masked."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.WARNING)
    if not any(isinstance(item, _Redacting) for item in logger.filters):
        logger.addFilter(_Redacting())


# --- what a run records ---------------------------------------------------------------------------
def run_params(config: Config, loss, format_key: str) -> dict:
    params = flatten(redact_config(config.to_dict()))  # before flattening: lists that flatten keeps whole are redacted too
    params.pop("search", None)
    config_dict = redact_config(getattr(loss, "get_config_dict", dict)())
    params.update({f"loss_config.{key}": value for key, value in config_dict.items()})
    params.update({"data_format": format_key, "model_name": config.model.name, "workers": config.distributed.workers or 1})
    params.update({f"version.{name}": _version(name) for name in LIBRARIES})
    return params


def metric_key(name: str) -> str:
    """A metric's name as MLflow records it. MLflow refuses any character but letters, digits and `_-. :/`
    (and with it the whole batch of metrics), so the retrieval metrics' `@k` (cosine_ndcg@10) becomes `_k`
    (cosine_ndcg_10), as the Hugging Face trainer's MLflow callback writes them."""
    return re.sub(r"[^0-9A-Za-z_\-. :/]", "_", name)


def run_tags(config: Config, format_key: str, primary_metric: str | None, sweep: str | None = None) -> dict:
    tags = {"data_format": format_key, "loss": config.loss_names()}
    if primary_metric:
        tags[PRIMARY_METRIC_TAG] = metric_key(primary_metric)
    if sweep:
        tags["sweep"] = sweep
    return tags


def data_inputs(config: Config) -> list:
    """The train, evaluation and test data as MLflow dataset inputs (context tag train / eval / test), each
    with its rows as the run reads them (after `columns`, `rename`, `limit`)."""
    from mlflow.entities import DatasetInput, InputTag

    from embedlab.data import load_data

    sources = [("train", name if config.is_mixture else None, source) for name, source in config.train_sources().items()]
    sources += [("eval", entry.name, entry.data) for entry in config.evaluators] + [("test", entry.name, entry.data) for entry in config.test_evaluators]
    inputs, seen = [], set()
    for context, name, source in sources:
        dataset = dataset_entity(source, load_data(source), name)
        # MLflow keeps one input per (name, digest) and run: the same file as dev and test data has both names.
        if (dataset.name, dataset.digest) not in seen:
            seen.add((dataset.name, dataset.digest))
            inputs.append(DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)]))
    return inputs


def dataset_entity(source, dataset, name: str | None = None):
    """An MLflow dataset: name (an evaluator's, else the file's), source (a local path, or a hub data set with
    its subset and split), schema, row count, and a digest over every row, so two versions of one file are two
    datasets in the UI."""
    from mlflow.entities import Dataset

    path = Path(source.path).expanduser()
    if path.exists():
        source_type, where = "local", {"uri": redact(str(path.resolve()))}
        name = name or (path.stem if path.is_file() else path.name)
    else:
        source_type, where = "hugging_face", {"path": redact(source.path), "config_name": source.subset, "split": source.split}
        name = name or redact(source.path)
    profile = {"num_rows": len(dataset), "num_elements": len(dataset) * len(dataset.column_names)}
    return Dataset(name, rows_digest(dataset), source_type, json.dumps(where), _schema(dataset), json.dumps(profile))


def rows_digest(dataset) -> str:
    """A digest of the column names and every row's values (MLflow's own digests read a sample of rows)."""
    digest = hashlib.sha256(json.dumps(dataset.column_names).encode())
    for batch in dataset.with_format("arrow").iter(batch_size=ROWS_PER_DIGEST_BATCH):
        digest.update(json.dumps(batch.to_pylist(), ensure_ascii=False, default=str).encode())
    return digest.hexdigest()[:16]


def _schema(dataset) -> str:
    """The columns as MLflow's column schema (the UI's schema table): strings, numbers, lists of numbers."""
    import datasets
    from mlflow.types.schema import Array, ColSpec, DataType, Schema

    def kind(feature):
        if isinstance(feature, datasets.Value):
            dtype = feature.dtype
            if dtype in ("string", "large_string"):
                return DataType.string
            if dtype == "bool":
                return DataType.boolean
            return DataType.double if dtype.startswith("float") else DataType.long if "int" in dtype else DataType.string
        inner = getattr(feature, "feature", None)  # a List / Sequence of values
        return Array(kind(inner)) if inner is not None else DataType.string

    schema = Schema([ColSpec(kind(feature), name) for name, feature in dataset.features.items()])
    return json.dumps({"mlflow_colspec": schema.to_dict()})


# --- the model registry -----------------------------------------------------------------------------
def register_run(client, run_id: str, name: str) -> str:
    """Registers the run's logged model as a version of `name` (once: a run already registered keeps its
    version) and moves the alias `champion` to it; returns the version."""
    run = client.get_run(run_id)
    if "model/MLmodel" not in {artifact.path for artifact in client.list_artifacts(run_id, "model")}:
        raise EmbedlabError(f"MLflow run {run.info.run_name} ({run_id}) has no logged model to register as '{name}'")
    try:
        client.get_registered_model(name)
    except Exception:  # not there yet
        client.create_registered_model(name, tags={"embedlab": "true"})
    found = client.search_model_versions(f"name = '{_quoted(name)}' and run_id = '{run_id}'")
    if found:
        version = found[0]
    else:
        metric = run.data.tags.get(PRIMARY_METRIC_TAG)
        tags = {"data_format": run.data.tags.get("data_format"), "loss": run.data.tags.get("loss"), "run_id": run_id, "run": run.info.run_name}
        if metric in run.data.metrics:
            tags |= {"metric": metric, metric: run.data.metrics[metric]}
        link = f"{redact(client.tracking_uri)}/#/experiments/{run.info.experiment_id}/runs/{run_id}" if client.tracking_uri.startswith("http") else None
        tags = {key: _tag_value(key, value) for key, value in {**tags, "run_link": link}.items() if value is not None}
        version = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id, tags=tags, run_link=link)
    client.set_registered_model_alias(name, CHAMPION, version.version)
    print(f"Registered model '{name}' version {version.version} (alias {CHAMPION}): models:/{name}@{CHAMPION}")
    return version.version


def register_best_trial(parent: Tracker, name: str | None, trial_id: str) -> None:
    """A sweep's end: the best trial's run (a nested run of `parent`) is registered as `name`. Never raises:
    the sweep's results stand whatever the registry says."""
    if name is None:
        return
    try:
        if parent.fell_back or parent.gone:
            raise EmbedlabError(f"the sweep's records are not in {redact(parent.uri)}")
        client = parent.client
        experiment = client.get_experiment_by_name(parent.experiment).experiment_id
        children = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}' and attributes.status = 'FINISHED'")
        runs = [run for run in children if run.data.tags.get(KEY_TAG, "").startswith(f"{parent.key}/{trial_id}@")]
        if not runs:
            raise EmbedlabError(f"trial {trial_id} has no finished MLflow run with a model")
        register_run(client, max(runs, key=lambda run: run.info.start_time).info.run_id, name)
    except Exception as error:
        warn(f"the best trial {trial_id} is not registered as '{name}': {first_line(error)}")


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


def is_secret_key(name) -> bool:
    """Whether a config key, param or tag name looks like it holds a credential (the rule is in the module docstring)."""
    for segment in str(name).split("."):
        words = [word.lower() for word in NAME_WORD.findall(segment)]
        for index, word in enumerate(words):
            before = words[index - 1] if index else None
            if word == "token" and before in TOKENIZER_TOKENS:
                continue
            if word in SECRET_WORDS or (word == "key" and (len(words) == 1 or before in KEY_QUALIFIERS)):
                return True
    return False


def redact(value: str) -> str:
    """user:password@ in URIs becomes ***@; a secret-named query parameter (?token=...) becomes ***."""
    text = URI_USERINFO.sub(r"\1***@", value)
    return QUERY_PARAM.sub(lambda found: f"{found[1]}{found[2]}={MASK}" if is_secret_key(found[2]) and found[3] else found[0], text)


def redact_config(raw: dict) -> dict:
    """A deep copy of a config (or any YAML-like data) safe to write out: the value of every secret-named key,
    at any depth and inside lists, becomes "***" (a null or empty one stays), and every string is `redact`ed."""
    return _redacted(raw)


def _redacted(value, names_are_columns: bool = False):
    """`names_are_columns`: the keys of a `rename` mapping are data columns (a column named `key` is no secret)."""
    if isinstance(value, dict):
        return {
            key: MASK
            if not names_are_columns and is_secret_key(key) and value[key] not in (None, "") and not isinstance(value[key], bool)
            else _redacted(value[key], names_are_columns=key == "rename")
            for key in value
        }
    if isinstance(value, (list, tuple)):
        return [_redacted(item) for item in value]
    if isinstance(value, str):
        return redact(value)
    return copy.deepcopy(value)


def redact_text(text: str) -> str:
    """Free text (a model card, a YAML or JSON file): URIs and query strings as `redact`, and the value of
    every secret-named `"name": value` (JSON) or `name: value` (YAML) pair."""

    def pair(found: re.Match) -> str:
        value = found[4].strip()
        if not is_secret_key(found[2]) or value in ("null", "None", "~", '""', "''"):
            return found[0]
        return f'{found[1]}{found[2]}{found[1]}{found[3]}"{MASK}"'

    def line(found: re.Match) -> str:
        value = found[4].strip()
        if not is_secret_key(found[2]) or value in ("null", "None", "~", '""', "''"):
            return found[0]
        return f"{found[1]}{found[2]}{found[3]}'{MASK}'"

    return redact(YAML_PAIR.sub(line, TEXT_PAIR.sub(pair, text)))


def _param_value(key: str, value) -> str:
    if is_secret_key(key) and value not in (None, ""):
        return MASK
    text = redact(str(value))
    return text[: MAX_PARAM_LENGTH - 3] + "..." if len(text) > MAX_PARAM_LENGTH else text


def _tag_value(key: str, value) -> str:
    return MASK if is_secret_key(key) and value not in (None, "") else redact(str(value))


def _quoted(text: str) -> str:
    return text.replace("'", "\\'")


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _unreachable_reason(error: BaseException) -> str:
    """What a failed connection says in the end (`[Errno 111] Connection refused`), which requests' message
    buries after the pool, URL and retry count; else the error's first line."""
    reason = re.search(r"\[Errno -?\d+\] [^'\")\]]+", str(error))
    return reason[0].strip() if reason else first_line(error)


def first_line(error: BaseException) -> str:
    """The error's first line, with credentials in URIs masked (store errors quote the URL they called)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return redact(lines[0] if lines else type(error).__name__)[:300]


def error_line(error: BaseException) -> str:
    """The line that names an error: the last line of a traceback it quotes (a Ray worker's), else its type and first line."""
    text = str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return redact(lines[-1] if "Traceback" in text else f"{type(error).__name__}: {lines[0]}")[:500]


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
    tracker.system_metrics = config.tracking.system_metrics
    tracker.register = None if parent else config.tracking.register  # a sweep registers its best trial, not each one
    if not tracker.reused:  # MLflow refuses a param logged twice with another value; the run key holds the data's digest
        tracker.log_params(run_params(config, loss, format_key))
        tracker.log_inputs(data_inputs(config))
        log_config_now(tracker, output_dir / "config.yaml")
    return tracker


def log_config_now(tracker: Tracker, path: Path) -> None:
    """The run's redacted config as an artifact from its start: a run stopped or failed before its end has
    one too, and MLflow 3.17's compare page fails its Artifacts section ("Something went wrong with this
    section") when one of the compared runs has no artifact at all (README: Tracking in MLflow)."""
    copy = _redacted_copy(path, tracker.scratch(), _redact_yaml)
    if copy is not None:
        tracker.log_artifact(copy)


def finish_run(tracker: Tracker | None, output_dir: Path, test_metrics: dict, step: int) -> None:
    """Test metrics, the resolved config, the model folder (with its pyfunc flavour) and its card, then
    FINISHED, then the registry (tracking.register). The config and the card are logged as redacted copies,
    whatever the files in the output folder hold."""
    if tracker is None:
        return
    output_dir = Path(output_dir)
    model = output_dir / "model"
    tracker.log_metrics(test_metrics, step)
    # The copies live until the run is finished; a record replayed into a fallback store after that finds them gone.
    with tempfile.TemporaryDirectory(prefix="embedlab-redacted-") as scratch:
        config = _redacted_copy(output_dir / "config.yaml", Path(scratch), _redact_yaml)
        card = _redacted_copy(model / "README.md", Path(scratch), redact_text)
        if config is not None:
            tracker.log_artifact(config)
        if model.is_dir():
            for entry in sorted(model.iterdir()):  # the model folder, its card replaced by the redacted copy
                if entry.name != "README.md":
                    tracker.log_artifact(entry, f"model/{entry.name}" if entry.is_dir() else "model")
            for file in _flavour_files(model, Path(scratch) / "flavour", tracker.run_id):
                tracker.log_artifact(file, "model")
        if card is not None:
            tracker.log_artifact(card, "model")
            tracker.log_artifact(card)
        tracker.finish()
    if tracker.register is not None:
        if tracker.fell_back or tracker.gone:
            warn(f"the model is not registered as '{tracker.register}': this run's records are not in the tracking store")
            return
        try:
            register_run(tracker.client, tracker.run_id, tracker.register)
        except Exception as error:  # the trained model stands; registering again is `tracking.register` on a rerun
            warn(f"the model is not registered as '{tracker.register}': {first_line(error)}")


def _flavour_files(model: Path, folder: Path, run_id: str) -> list[Path]:
    """The pyfunc flavour's files for the model folder; none (with a warning) if they cannot be written."""
    from embedlab.mlflow_model import write_flavour

    try:
        return write_flavour(model, folder, run_id)
    except Exception as error:
        warn(f"the logged model is not an MLflow pyfunc model: its MLmodel could not be written ({first_line(error)})")
        return []


def fail_run(tracker: Tracker | None, error: BaseException) -> None:
    """Marks the run FAILED, with the error's line in the tag `embedlab_error`; KILLED for an interrupt
    (KeyboardInterrupt) or a trial Tune stopped (SystemExit). Never raises, so callers can write
    `except BaseException as error: fail_run(tracker, error); raise`."""
    if tracker is None:
        return
    try:
        stopped = isinstance(error, (KeyboardInterrupt, SystemExit))
        tracker.log_tags({ERROR_TAG: f"stopped ({type(error).__name__})" if stopped else error_line(error)})
        tracker.finish("KILLED" if stopped else "FAILED")
    except Exception as problem:  # the run's own error matters more than its bookkeeping
        warn(f"could not mark the MLflow run {tracker.run_id} as failed: {first_line(problem)}")


def log_error_file(client, run_id: str, path: str | None) -> None:
    """For a trial that failed before it opened its run: Tune's error.txt, redacted, as that run's artifact
    (its traceback in the UI, and an artifact for MLflow's compare page, see log_config_now)."""
    if path and Path(path).is_file():
        with tempfile.TemporaryDirectory(prefix="embedlab-redacted-") as scratch:
            copy = _redacted_copy(Path(path), Path(scratch), redact_text)
            if copy is not None:
                client.log_artifact(run_id, str(copy))


def _redacted_copy(source: Path, folder: Path, redactor) -> Path | None:
    """`folder/<source's name>` holding the redacted text of `source`; None (with a warning) if that cannot be made."""
    if not source.is_file():
        return None
    try:
        target = folder / source.name
        target.write_text(redactor(source.read_text()))
        return target
    except Exception as error:
        warn(f"{source} is not recorded in MLflow: could not write a redacted copy ({first_line(error)})")
        return None


def _redact_yaml(text: str) -> str:
    import yaml

    try:
        raw = load_yaml(text)
    except yaml.YAMLError:
        return redact_text(text)
    if not isinstance(raw, dict):
        return redact_text(text)
    return dump_yaml(redact_config(raw))


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
def _folder_tracking(folder: Path) -> tuple[str | None, str]:
    """A run or sweep folder's MLflow store as its config names it (None if not, or if its credentials were
    masked when the config was written) and its experiment (default: the folder's name, as for the run)."""
    written = next((folder / name for name in ("config.yaml", "sweep.yaml") if (folder / name).is_file()), None)
    try:
        raw = (load_yaml(written.read_text()) or {}) if written else {}
    except Exception:  # not a config embedlab wrote: the folder's name and the local store still serve
        raw = {}
    settings = raw.get("tracking") if isinstance(raw, dict) else None
    settings = settings if isinstance(settings, dict) else {}  # `tracking: optional` names neither
    uri = settings.get("uri")
    return (uri if isinstance(uri, str) and MASK not in uri else None), settings.get("experiment") or folder.resolve().name


def compare_runs(experiment: str, uri: str | None = None) -> tuple[list[dict], str]:
    """The runs of an experiment, best first by the primary metric the runs were tagged with. `experiment` may
    be a run or sweep folder: its config names the experiment and store (else its local mlflow.db)."""
    folder = Path(experiment)
    if folder.is_dir():
        configured_uri, experiment = _folder_tracking(folder)
        if uri is None and (folder / "mlflow.db").exists():  # the folder's local store, or a server's fallback
            uri = local_store(folder)
        uri = uri or configured_uri
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
