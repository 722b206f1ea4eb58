"""Sweeps: Ray Tune + Optuna search which loss and which hyperparameters win on a data set.

A sweep config is a train config plus a `search` block (`SearchConfig`). `prepare_sweep()` checks it all
against the data before Ray starts: the losses suit the data's format, every searched parameter exists,
every range is a range. The search space is define-by-run: each trial first picks a loss among those the
format allows, then that loss's own parameters (declared next to the loss as `search_space`), then the
common ones (learning rate, batch size, ...), sampled by Optuna's TPE, seeded.

A trial with one worker runs the in-process trainer inside its Tune trial (no worker start-up per trial);
with more it launches a Ray Train `TorchTrainer` whose reports reach Tune through `TuneReportCallback`.
Trials report at every evaluation, so ASHA can stop weak ones. Each trial trains in
`<output_dir>/trials/<trial_id>`; an interrupted sweep resumes (`--resume`) without rerunning finished trials,
and an unfinished trial resumes from its own last checkpoint.
"""

import copy
import csv
import dataclasses
import inspect
import json
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from embedlab import run, tracking
from embedlab.config import Config, LossModifierConfig, SearchConfig
from embedlab.data import load_with_format
from embedlab.errors import EmbedlabError
from embedlab.formats import losses_for
from embedlab.losses import CATALOGUE, MODIFIERS, check_format, get_loss_class

RANGE_KINDS = ("loguniform", "uniform", "int")
NO_MODIFIER = "none"
TRIAL_METRICS = ("trial_id", "loss_name", "step", "training_iteration")  # reported next to the evaluator metrics


# --- checking a sweep config ----------------------------------------------------------------------
@dataclass
class Sweep:
    """A checked sweep: the base config, the search, and what the data allows."""

    config: Config
    search: SearchConfig
    format_key: str
    losses: dict[str, dict]  # loss name -> {"params": fixed params, "space": parameter -> range}
    metric: str
    mode: str
    tracking_uri: str | None  # MLflow, checked before Ray starts; None: tracking off

    @property
    def output_dir(self) -> Path:
        return Path(self.config.output_dir).resolve()

    @property
    def name(self) -> str:
        return self.output_dir.name


def prepare_sweep(config: Config) -> Sweep:
    """Every check a sweep needs, before Ray starts; raises EmbedlabError with one line."""
    search = config.search
    if search is None:
        raise EmbedlabError("this config has no `search` block: `embedlab train` trains it, `embedlab sweep` needs a sweep config")
    if search.num_samples < 1:
        raise EmbedlabError(f"search.num_samples must be at least 1, got {search.num_samples}")
    if search.max_concurrent < 1 or search.workers_per_trial < 1:
        raise EmbedlabError("search.max_concurrent and search.workers_per_trial must be at least 1")
    if search.scheduler not in ("fifo", "asha"):
        raise EmbedlabError(f"search.scheduler '{search.scheduler}' is unknown: choose fifo or asha")
    _, detected = load_with_format(config.data.train)
    losses = _resolve_losses(search, detected)
    # The model and evaluators load here once too, with the first candidate loss, so their errors come now.
    first_loss = next(iter(losses))
    prepared = run.prepare(
        dataclasses.replace(config, search=None, loss=dataclasses.replace(config.loss, name=first_loss, params=losses[first_loss]["params"])),
        device="cpu",
    )
    for option in search.modifiers:
        if option is not None and option.name not in MODIFIERS:
            raise EmbedlabError(f"search.modifiers: unknown loss modifier '{option.name}': choose from {', '.join(MODIFIERS)}")
    for key, spec in search.space.items():
        _check_range(f"search.space.{key}", spec)
        _check_config_key(config, key, _example_value(spec))
    if not prepared.evaluators:
        raise EmbedlabError("a sweep compares trials by an evaluator: add one under `evaluators`")
    scored_by = prepared.evaluators[0]
    metric = search.metric or scored_by.primary_metric
    mode = search.mode or ("max" if scored_by.greater_is_better else "min")
    if mode not in ("max", "min"):
        raise EmbedlabError(f"search.mode must be max or min, got '{mode}'")
    sweep = Sweep(config, search, detected.format.key, losses, metric, mode, tracking.resolve_uri(config))
    names = set(parameter_names(sweep))
    for index, point in enumerate(search.points_to_evaluate):
        unknown = [key for key in point if key not in names]
        if unknown:
            raise EmbedlabError(f"search.points_to_evaluate.{index}: {unknown} not in the search space: its names are {', '.join(sorted(names))}")
        if "loss" in point and point["loss"] not in losses:
            raise EmbedlabError(f"search.points_to_evaluate.{index}: loss '{point['loss']}' is not searched: {', '.join(losses)}")
    return sweep


def _required_params(loss_class: type) -> list[str]:
    """Constructor parameters with no default that the data cannot fill (e.g. a GIST guide model)."""
    parameters = list(inspect.signature(loss_class.__init__).parameters.values())[2:]
    filled_from_data = {"embedding_dimension", "num_labels"}
    return [p.name for p in parameters if p.default is inspect.Parameter.empty and p.name not in filled_from_data]


def _resolve_losses(search: SearchConfig, detected) -> dict[str, dict]:
    if search.losses == "auto":
        names = [name for name in losses_for(detected.format.key) if not _required_params(CATALOGUE[name])]
        if not names:
            raise EmbedlabError(f"no catalogue loss suits this data ({detected.describe()}) without extra parameters: list losses in search.losses")
        return {name: {"params": {}, "space": dict(getattr(CATALOGUE[name], "search_space", None) or {})} for name in names}
    if isinstance(search.losses, str) or not search.losses:
        raise EmbedlabError("search.losses must be `auto` or a list of losses")
    losses = {}
    for entry in search.losses:
        loss_class = get_loss_class(entry.name)
        try:
            check_format(loss_class, detected)
        except EmbedlabError as error:
            raise EmbedlabError(f"search.losses: {error}") from None
        accepted = list(inspect.signature(loss_class.__init__).parameters)[2:]
        space = entry.space if entry.space is not None else dict(getattr(loss_class, "search_space", None) or {})
        for name, spec in [*space.items(), *((name, None) for name in entry.params)]:
            if name not in accepted:
                raise EmbedlabError(f"search.losses: {entry.name} has no parameter '{name}': its parameters are {', '.join(accepted)}")
            if spec is not None:
                _check_range(f"search.losses.{entry.name}.space.{name}", spec)
        missing = [name for name in _required_params(loss_class) if name not in entry.params and name not in space]
        if missing:
            raise EmbedlabError(f"search.losses: {entry.name} needs {', '.join(missing)} in its params")
        losses[entry.name] = {"params": dict(entry.params), "space": dict(space)}
    return losses


def _check_range(where: str, spec) -> None:
    """One of {loguniform|uniform|int: [low, high]} with low < high, or {choice: [at least one value]}."""
    if not isinstance(spec, dict) or len(spec) != 1:
        raise EmbedlabError(f"{where}: give one of {', '.join(RANGE_KINDS)}: [low, high] or choice: [values], got {spec!r}")
    ((kind, values),) = spec.items()
    if kind == "choice":
        if not isinstance(values, list) or not values:
            raise EmbedlabError(f"{where}: choice needs a non-empty list of values, got {values!r}")
        return
    if kind not in RANGE_KINDS:
        raise EmbedlabError(f"{where}: unknown range kind '{kind}': choose {', '.join(RANGE_KINDS)} or choice")
    if not (isinstance(values, list) and len(values) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
        raise EmbedlabError(f"{where}: {kind} needs [low, high], got {values!r}")
    low, high = values
    if not low < high:
        raise EmbedlabError(f"{where}: the range [{low}, {high}] is empty or inverted: low must be below high")
    if kind == "loguniform" and low <= 0:
        raise EmbedlabError(f"{where}: loguniform needs low > 0, got {low}")


def _example_value(spec: dict):
    """A value the range holds: its low end, or its first choice."""
    ((_, values),) = spec.items()
    return values[0]


def _check_config_key(config: Config, key: str, value) -> None:
    raw = config.to_dict()
    raw["search"] = None
    set_dotted(raw, key, value, where=f"search.space: '{key}'")
    try:
        Config.from_dict(raw)
    except EmbedlabError as error:
        raise EmbedlabError(f"search.space: '{key}' is not a config key that takes {value!r}: {error}") from None


def set_dotted(raw: dict, key: str, value, where: str = "") -> None:
    node = raw
    *parents, last = key.split(".")
    for part in parents:
        if not isinstance(node.get(part), dict):
            raise EmbedlabError(f"{where or key}: '{part}' is not a config section")
        node = node[part]
    node[last] = value


# --- the define-by-run space ----------------------------------------------------------------------
def parameter_names(sweep: Sweep) -> list[str]:
    names = ["loss"] + [f"{loss}.{param}" for loss, entry in sweep.losses.items() for param in entry["space"]]
    if sweep.search.modifiers:
        names.append("modifier")
    return names + list(sweep.search.space)


class DefineByRunSpace:
    """Optuna's define-by-run space: a loss first, then that loss's own parameters, then the common ones.

    A class (not a closure) so Tune can pickle it with the searcher's state, for `--resume`."""

    def __init__(self, losses: dict[str, dict], modifier_names: list[str], common: dict[str, dict]):
        self.losses, self.modifier_names, self.common = losses, modifier_names, common

    def __call__(self, trial) -> None:
        loss = trial.suggest_categorical("loss", list(self.losses))
        for param, spec in self.losses[loss]["space"].items():
            _suggest(trial, f"{loss}.{param}", spec)
        if self.modifier_names:
            trial.suggest_categorical("modifier", self.modifier_names)
        for key, spec in self.common.items():
            _suggest(trial, key, spec)


def _suggest(trial, name: str, spec: dict):
    ((kind, values),) = spec.items()
    if kind == "choice":
        return trial.suggest_categorical(name, values)
    if kind == "int":
        return trial.suggest_int(name, int(values[0]), int(values[1]))
    return trial.suggest_float(name, float(values[0]), float(values[1]), log=kind == "loguniform")


def modifier_label(option: LossModifierConfig | None) -> str:
    return NO_MODIFIER if option is None else option.name


# --- one trial --------------------------------------------------------------------------------------
def trial_config(base: dict, params: dict, loss_params: dict, modifiers: list, output_dir: str) -> Config:
    """The train config of one trial: the base config with the trial's choices filled in."""
    raw = copy.deepcopy(base)
    raw["search"] = None
    loss = params["loss"]
    raw["loss"]["name"] = loss
    raw["loss"]["params"] = dict(loss_params.get(loss, {}))
    for key, value in params.items():
        if key.startswith(f"{loss}."):
            raw["loss"]["params"][key.removeprefix(f"{loss}.")] = value
        elif key == "modifier":
            chosen = [option for option in modifiers if modifier_label(option) == value]
            raw["loss"]["modifiers"] = [dataclasses.asdict(chosen[0])] if chosen and chosen[0] is not None else []
        elif key != "loss" and "." in key and key.split(".", 1)[0] not in CATALOGUE:
            set_dotted(raw, key, value)
    raw["output_dir"] = output_dir
    raw["training"]["show_progress_bar"] = False
    return Config.from_dict(raw)


class TuneReport:
    """Reports every evaluation but the last to Tune; the trial reports the last one with its test metrics."""

    def __init__(self, extra: dict):
        self.extra = extra

    def on_evaluate(self, trainer, step: int, metrics: dict) -> None:
        from ray import tune

        if step < trainer.total_steps:
            tune.report({**metrics, **self.extra, "step": step})


def train_trial(
    params: dict, base: dict, loss_params: dict, modifiers: list, workers: int, use_gpu: bool, cpus_per_worker: int, parent: dict | None
) -> None:
    """Tune's trial function: one training run with the trial's loss and hyperparameters.

    A finished trial leaves `trial_result.json`: if the sweep is resumed before Tune recorded the trial
    as finished, the trial reports that result again instead of training again."""
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    output_dir = Path(base["output_dir"]) / "trials" / trial_id
    finished = output_dir / "trial_result.json"
    if finished.exists():
        tune.report(json.loads(finished.read_text()))
        return
    config = trial_config(base, params, loss_params, modifiers, str(output_dir))
    extra = {"trial_id": trial_id, "loss_name": params["loss"]}  # "loss" is the training loss's value
    # The trial's MLflow run is nested in the sweep's and found again by its key on --resume.
    tracked = {"tracking_parent": parent, "run_name": f"{params['loss']}-{trial_id}", "run_key": f"{parent['key']}/{trial_id}"} if parent else {}
    if workers > 1:
        from ray.tune.integration.ray_train import TuneReportCallback

        from embedlab.ray_train import train_on_ray

        config.distributed = dataclasses.replace(config.distributed, workers=workers, use_gpu=use_gpu, cpus_per_worker=cpus_per_worker, check_resources=False)
        results = train_on_ray(run.prepare(config, device="cpu"), evaluate_before=False, callbacks=[TuneReportCallback()], **tracked)
    else:
        results = run.train(run.prepare(config), callbacks=[TuneReport(extra)], evaluate_before=False, **tracked)
    final = {**results["final"], **results["after"], **extra, "step": results["step"]}
    finished.write_text(json.dumps(final))
    tune.report(final)


# --- the sweep --------------------------------------------------------------------------------------
def run_sweep(sweep: Sweep, resume: bool = False, address: str | None = None) -> dict:
    """Runs (or resumes) the sweep; returns `summarize()`'s summary, also recorded in the sweep's MLflow run."""
    import ray
    from ray import tune

    from embedlab.ray_train import connect, with_absolute_paths

    search = sweep.search
    connect(address)
    cpus_per_worker = search.cpus_per_trial or max(1, int(ray.cluster_resources().get("CPU", 1)) // (search.max_concurrent * search.workers_per_trial))
    base = with_absolute_paths(dataclasses.replace(sweep.config, search=None)).to_dict()
    loss_params = {name: entry["params"] for name, entry in sweep.losses.items()}
    modifiers = list(search.modifiers)
    parent = open_sweep_run(sweep)
    trainable = tune.with_parameters(
        train_trial,
        base=base,
        loss_params=loss_params,
        modifiers=modifiers,
        workers=search.workers_per_trial,
        use_gpu=search.use_gpu,
        cpus_per_worker=cpus_per_worker,
        parent=parent.location() | {"key": parent.key, "sweep": sweep.name} if parent else None,
    )
    if search.workers_per_trial > 1:
        # The trial only drives a TorchTrainer whose workers hold the CPUs; Tune needs some resource in a
        # trial's bundle, so it reserves a token 1 MiB of memory and no CPU.
        trainable = tune.with_resources(trainable, {"CPU": 0, "memory": 2**20})
    else:
        trainable = tune.with_resources(trainable, {"CPU": cpus_per_worker, "GPU": int(search.use_gpu)})
    storage = str(sweep.output_dir)
    experiment = sweep.output_dir / "tune"
    if resume:
        if not tune.Tuner.can_restore(str(experiment)):
            raise EmbedlabError(f"nothing to resume in {experiment}: run the sweep without --resume first")
        tuner = tune.Tuner.restore(str(experiment), trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(trainable, tune_config=_tune_config(sweep), run_config=tune.RunConfig(name="tune", storage_path=storage, verbose=1))
    summary = summarize(sweep, tuner.fit())
    if parent is not None:
        log_sweep_summary(parent, sweep, summary)
    return summary


def _tune_config(sweep: Sweep):
    from optuna.samplers import TPESampler
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    search = sweep.search
    modifiers = list(search.modifiers)
    searcher = OptunaSearch(
        space=DefineByRunSpace(sweep.losses, [modifier_label(option) for option in modifiers], dict(search.space)),
        metric=sweep.metric,
        mode=sweep.mode,
        sampler=TPESampler(seed=search.seed),
        points_to_evaluate=[dict(point) for point in search.points_to_evaluate] or None,
    )
    scheduler = (
        ASHAScheduler(time_attr="training_iteration", grace_period=search.grace_period, reduction_factor=search.reduction_factor)
        if search.scheduler == "asha"
        else FIFOScheduler()
    )
    return tune.TuneConfig(
        metric=sweep.metric,
        mode=sweep.mode,
        search_alg=ConcurrencyLimiter(searcher, max_concurrent=search.max_concurrent),
        scheduler=scheduler,
        num_samples=search.num_samples,
    )


def open_sweep_run(sweep: Sweep):
    """The sweep's parent MLflow run (reopened on --resume); None when tracking is off."""
    if sweep.tracking_uri is None:
        return None
    tags = {"sweep": sweep.name, "data_format": sweep.format_key, tracking.PRIMARY_METRIC_TAG: sweep.metric}
    experiment = sweep.config.tracking.experiment or sweep.name
    key = f"{sweep.output_dir}#sweep"
    parent = tracking.Tracker.open(sweep.tracking_uri, experiment, key, f"sweep-{sweep.name}", tags, sweep.output_dir)
    if not parent.reused:
        search = {f"search.{name}": value for name, value in tracking.flatten(dataclasses.asdict(sweep.search)).items()}
        parent.log_params({**search, "searched_losses": ", ".join(sweep.losses), "model_name": sweep.config.model.name, "data_format": sweep.format_key})
    return parent


def log_sweep_summary(parent, sweep: Sweep, summary: dict) -> None:
    """The parent run gets trials.csv, two plots, and the best trial's metric."""
    parent.log_metrics({f"best_{sweep.metric}": summary["best"][sweep.metric]}, step=len(summary["trials"]))
    parent.log_tags({"best_trial": summary["best"]["trial_id"], "best_loss": summary["best"]["loss"], "best_model": summary["best_model"]})
    parent.log_artifact(sweep.output_dir / "trials.csv")
    for plot in write_plots(sweep, summary):
        parent.log_artifact(plot, "plots")
    parent.finish()
    tracking.end_stopped_children(parent)  # trials ASHA stopped never finished their own runs


def write_plots(sweep: Sweep, summary: dict) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    folder = sweep.output_dir / "plots"
    folder.mkdir(exist_ok=True)
    paths = []
    losses = list(summary["best_per_loss"])
    figure, axes = plt.subplots(figsize=(7, 0.5 + 0.5 * len(losses)))
    axes.barh(losses, [summary["best_per_loss"][loss][sweep.metric] for loss in losses], color="tab:blue")
    axes.set_xlabel(sweep.metric)
    axes.set_title(f"{sweep.name}: best trial per loss")
    figure.tight_layout()
    paths.append(folder / "best_per_loss.png")
    figure.savefig(paths[-1], dpi=120)
    plt.close(figure)
    rate = "training.learning_rate"
    if any(rate in row for row in summary["trials"]):
        figure, axes = plt.subplots(figsize=(7, 4))
        for loss in losses:
            rows = [row for row in summary["trials"] if row["loss"] == loss and rate in row]
            axes.scatter([row[rate] for row in rows], [row[sweep.metric] for row in rows], label=loss)
        axes.set_xscale("log")
        axes.set_xlabel("learning rate")
        axes.set_ylabel(sweep.metric)
        axes.legend(fontsize=8)
        axes.set_title(f"{sweep.name}: {sweep.metric} against learning rate")
        figure.tight_layout()
        paths.append(folder / "metric_vs_learning_rate.png")
        figure.savefig(paths[-1], dpi=120)
        plt.close(figure)
    return paths


def summarize(sweep: Sweep, results) -> dict:
    """Every trial's last result, the best overall and the best per loss; writes trials.csv."""
    rows = []
    for result in results:
        metrics = result.metrics or {}
        if sweep.metric not in metrics:
            continue  # a trial that failed before its first evaluation
        rows.append(
            {
                "trial_id": metrics["trial_id"],
                "loss": metrics["loss_name"],
                "step": metrics.get("step"),
                "trial_seconds": metrics.get("time_total_s"),  # trial function start to its last report
                **_params(result.config),
                **_scores(metrics),
            }
        )
    if not rows:
        raise EmbedlabError(f"no trial reported {sweep.metric}: see the trial errors above")
    sign = 1 if sweep.mode == "max" else -1
    ranked = sorted(rows, key=lambda row: sign * row[sweep.metric], reverse=True)
    best_per_loss = {}
    for row in ranked:
        best_per_loss.setdefault(row["loss"], row)
    fields = list(dict.fromkeys(key for row in rows for key in row))
    with open(sweep.output_dir / "trials.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        writer.writerows(ranked)
    best = ranked[0]
    return {"trials": ranked, "best": best, "best_per_loss": best_per_loss, "best_model": str(sweep.output_dir / "trials" / best["trial_id"] / "model")}


def _params(config: dict) -> dict:
    return {key: value for key, value in config.items() if key != "loss"}


def _scores(metrics: dict) -> dict:
    return {
        key: value
        for key, value in metrics.items()
        if isinstance(value, float) and not math.isnan(value) and key not in TRIAL_METRICS and key != "loss" and not key.startswith(("time_", "timestamp"))
    }


def print_summary(sweep: Sweep, summary: dict) -> None:
    best = summary["best"]
    print(f"\nSweep '{sweep.name}': {len(summary['trials'])} trials on {sweep.format_key} data, by {sweep.metric} ({sweep.mode})")
    print(f"{'loss':45s} {'trial':12s} {sweep.metric:>30s}  params")
    for loss, row in summary["best_per_loss"].items():
        params = {key: _short(value) for key, value in row.items() if key.startswith((f"{loss}.", "training.", "model.", "modifier"))}
        print(f"{loss:45s} {row['trial_id']:12s} {row[sweep.metric]:30.4f}  {params}")
    print(f"\nBest: {best['loss']} (trial {best['trial_id']}) {sweep.metric} = {best[sweep.metric]:.4f}")
    print(f"Best model (sentence-transformers format): {summary['best_model']}")
    print(f"All trials: {sweep.output_dir / 'trials.csv'}")


def _short(value):
    return float(f"{value:.4g}") if isinstance(value, float) else value


def write_resolved(sweep: Sweep) -> None:
    sweep.output_dir.mkdir(parents=True, exist_ok=True)
    (sweep.output_dir / "sweep.yaml").write_text(yaml.safe_dump(sweep.config.to_dict(), sort_keys=False))

