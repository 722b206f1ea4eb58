"""Sweeps: Ray Tune + Optuna search which loss and which hyperparameters win on a data set.

A sweep config is a train config plus a `search` block (`SearchConfig`). `prepare_sweep()` checks it all
against the data before Ray starts: the losses suit the data's format, every searched parameter exists,
every range is a range. The search space is define-by-run: each trial first picks a loss among those the
format allows, then that loss's own parameters (declared next to the loss as `search_space`), then the
common ones (learning rate, batch size, ...), sampled by Optuna's TPE, seeded. On a mixture of data sets
(data.train as a mapping) a trial picks a loss, and its parameters, for each searched data set
(parameters `<data set>.loss`, `<data set>.<loss>.<parameter>`); mixture weights or a temperature are
common parameters (`training.mixture.temperature`, `training.mixture.weights.<data set>`).

A trial with one worker runs the in-process trainer inside its Tune trial (no worker start-up per trial);
with more, the trial process is rank 0 of a process group whose other ranks are actors it keeps from one
trial to the next (embedlab.trial_group). Trials report at every evaluation, so ASHA can stop weak ones.
Each trial trains in `<output_dir>/trials/<trial_id>`; an interrupted sweep resumes (`--resume`) without
rerunning finished trials, and an unfinished trial resumes from its own last checkpoint. Tune reuses trial
processes, where a trial finds the data, evaluators and base model an earlier trial loaded
(embedlab.trial_cache); a trial saves its model only when it ranks among the `search.keep_models` best so
far (BestModels), and the sweep keeps those of its best trials (`prune_models`). `search.gpus_per_trial`
may be a fraction: trials share a GPU (`check_gpus`).

A trial can fail: it raises (Tune records the error and the sweep goes on), its metric is NaN (a diverged
loss) or it never reports the metric. Each trial's outcome is its `status` in `trials.csv` and in its MLflow
run (see `trial_row`); only trials that finished with a number compete for the best model, and a sweep in
which none did ends with one line saying so.
"""

import contextlib
import copy
import csv
import dataclasses
import difflib
import fcntl
import inspect
import json
import math
import numbers
import os
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

from embedlab import run, tracking, trial
from embedlab.config import SINGLE_DATA_SET, Config, LossModifierConfig, SearchConfig, dump_yaml, load_yaml
from embedlab.data import load_with_format
from embedlab.errors import EmbedlabError, warn
from embedlab.formats import losses_for
from embedlab.identity import NOT_IDENTITY, under_any
from embedlab.losses import CATALOGUE, MODIFIERS, check_format, check_param_types, get_loss_class
from embedlab.trainer import TRAINING_METRICS

RANGE_KINDS = ("loguniform", "uniform", "int")
NO_MODIFIER = "none"
TRIAL_METRICS = ("trial_id", "loss_name", "step", "training_iteration")  # reported next to the evaluator metrics
METRIC_STATUS = "metric_status"  # in every report: ok | nan | missing, what the sweep's metric really was (see for_tune)
FINISHED = "trial_finished"  # in a trial's last report only: a trial whose last report lacks it was stopped early
# A trial's status, the first that applies: error (it raised), missing (it never reported), stopped (the scheduler
# stopped it before its end; its metric is its last report's, possibly nan), nan / missing (it finished with a NaN
# metric / without the metric), ok. Its MLflow run ends as:
RUN_STATUS = {"ok": "FINISHED", "stopped": "KILLED", "nan": "FINISHED", "missing": "FINISHED", "error": "FAILED"}
STATUS_TAG, METRIC_NAN_TAG = "embedlab_trial_status", "embedlab_metric_nan"  # on each trial's MLflow run


# --- checking a sweep config ----------------------------------------------------------------------
@dataclass
class Sweep:
    """A checked sweep: the base config, the search, and what the data allows."""

    config: Config
    search: SearchConfig
    format_key: str  # a mixture's: `stsb: pair_score, sick: triplets`
    # data set ("train" for a run of one) -> loss name -> {"params": fixed params, "space": parameter -> range};
    # a mixture's data sets that search.losses leaves out train with the config's loss
    losses: dict[str, dict[str, dict]]
    metric: str
    mode: str
    tracking_uri: str | None  # MLflow, checked before Ray starts; None: tracking off

    @property
    def output_dir(self) -> Path:
        return Path(self.config.output_dir).resolve()

    @property
    def name(self) -> str:
        return self.output_dir.name

    def prefix(self, data_set: str) -> str:
        """What a data set's loss parameters start with: nothing for one data set, `<data set>.` in a mixture."""
        return f"{data_set}." if self.config.is_mixture else ""

    def searched_losses(self) -> str:
        """`CoSENTLoss, AnglELoss`, or a mixture's `stsb: CoSENTLoss | AnglELoss; sick: MultipleNegativesRankingLoss`."""
        if not self.config.is_mixture:
            return ", ".join(self.losses[SINGLE_DATA_SET])
        return "; ".join(f"{name}: {' | '.join(losses)}" for name, losses in self.losses.items())


def prepare_sweep(config: Config) -> Sweep:
    """Every check a sweep needs, before Ray starts; raises EmbedlabError with one line."""
    search = config.search
    if search is None:
        raise EmbedlabError("this config has no `search` block: `embedlab train` trains it, `embedlab sweep` needs a sweep config")
    if search.num_samples < 1:
        raise EmbedlabError(f"search.num_samples must be at least 1, got {search.num_samples}")
    if search.max_concurrent < 1 or search.workers_per_trial < 1 or search.keep_models < 1:
        raise EmbedlabError("search.max_concurrent, search.workers_per_trial and search.keep_models must be at least 1")
    check_gpus(search)
    for index, option in enumerate(search.modifiers):  # trials build them; a wrong type would fail every trial
        if option is not None and option.name in MODIFIERS:
            check_param_types(MODIFIERS[option.name], option.params, where=f"search.modifiers.{index}.params")
    formats = {name: load_with_format(source, where=f"data.train.{name}" if config.is_mixture else "data.train")[1] for name, source in config.train_sources().items()}
    if config.is_mixture:
        sections = [name for name in formats if name in {f.name for f in dataclasses.fields(Config)}]
        if sections:
            raise EmbedlabError(f"data set name(s) {', '.join(sections)} in a sweep read as config sections in parameter names: rename them under data.train")
    losses = _resolve_losses(search, formats, config.is_mixture)
    # The model and evaluators load here once too, with each searched data set's first candidate loss, so
    # their errors come now.
    first_losses = {name: config.loss_for(name) for name in formats}
    for name, choices in losses.items():
        loss_name, entry = next(iter(choices.items()))
        first_losses[name] = dataclasses.replace(first_losses[name], name=loss_name, params=entry["params"])
    loss = first_losses if config.is_mixture else first_losses[SINGLE_DATA_SET]
    # Checked as a trial runs: with its ranks, whose global batch is theirs together (run_trial).
    distributed = dataclasses.replace(config.distributed, workers=search.workers_per_trial) if search.workers_per_trial > 1 else config.distributed
    prepared = run.prepare(dataclasses.replace(config, search=None, loss=loss, distributed=distributed), device="cpu")
    for key, spec in search.space.items():
        _check_range(f"search.space.{key}", spec)
        _check_config_key(config, key, _example_value(spec))
    if not prepared.evaluators:
        raise EmbedlabError("a sweep compares trials by an evaluator: add one under `evaluators`")
    scored_by = prepared.evaluators[0]
    metric = search.metric or scored_by.primary_metric
    if search.metric is not None:
        _check_metric(search.metric, prepared)
    # A training metric (the loss) is minimized; an evaluator's goes its evaluator's way.
    mode = search.mode or ("min" if metric in TRAINING_METRICS else "max" if scored_by.greater_is_better else "min")
    format_key = ", ".join(f"{name}: {detected.format.key}" for name, detected in formats.items()) if config.is_mixture else formats[SINGLE_DATA_SET].format.key
    sweep = Sweep(config, search, format_key, losses, metric, mode, tracking.resolve_uri(config))
    names = set(parameter_names(sweep))
    for index, point in enumerate(search.points_to_evaluate):
        unknown = [key for key in point if key not in names]
        if unknown:
            raise EmbedlabError(f"search.points_to_evaluate.{index}: {unknown} not in the search space: its names are {', '.join(sorted(names))}")
        for data_set, choices in losses.items():
            key = f"{sweep.prefix(data_set)}loss"
            if key in point and point[key] not in choices:
                raise EmbedlabError(f"search.points_to_evaluate.{index}: {key} '{point[key]}' is not searched: {', '.join(choices)}")
    return sweep


def _check_metric(metric: str, prepared) -> None:
    """search.metric must be one the trials report: an evaluator's (or a training metric such as `loss`). Only
    an evaluation tells an evaluator's metric names, so a metric that is no evaluator's primary one costs one
    evaluation of the base model here, instead of every trial failing after it trained."""
    if metric in TRAINING_METRICS or metric in {evaluator.primary_metric for evaluator in prepared.evaluators}:
        return
    print(f"search.metric '{metric}' is no evaluator's primary metric: evaluating the base model once to check it")
    reported = []
    for evaluator in prepared.evaluators:
        reported += evaluator(prepared.model)
        if metric in reported:
            return
    close = difflib.get_close_matches(metric, reported, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise EmbedlabError(f"search.metric '{metric}' is not a metric of the evaluators: {hint}they report {', '.join(reported)}")


def _required_params(loss_class: type) -> list[str]:
    """Constructor parameters with no default that the data cannot fill (e.g. a GIST guide model)."""
    parameters = list(inspect.signature(loss_class.__init__).parameters.values())[2:]
    filled_from_data = {"embedding_dimension", "num_labels"}
    return [p.name for p in parameters if p.default is inspect.Parameter.empty and p.name not in filled_from_data]


def _resolve_losses(search: SearchConfig, formats: dict, mixture: bool) -> dict[str, dict[str, dict]]:
    """The searched losses of each data set (see Sweep.losses). search.losses is `auto`, a list, or on a
    mixture a mapping of data sets to either; a list for every data set of a mixture gives each the listed
    losses that suit it."""
    if isinstance(search.losses, dict):
        if not mixture:
            raise EmbedlabError("search.losses by data set needs several data sets (data.train as a mapping): give `auto` or a list of losses")
        unknown = [name for name in search.losses if name not in formats]
        if unknown:
            raise EmbedlabError(f"search.losses names data set(s) {', '.join(unknown)} that data.train does not have: its data sets are {', '.join(formats)}")
        return {name: _data_set_losses(search.losses[name], formats[name], f"search.losses.{name}", only_suitable=False) for name in formats if name in search.losses}
    if not mixture:
        return {SINGLE_DATA_SET: _data_set_losses(search.losses, formats[SINGLE_DATA_SET], "search.losses", only_suitable=False)}
    return {name: _data_set_losses(search.losses, detected, f"search.losses (data set '{name}')", only_suitable=True) for name, detected in formats.items()}


def _data_set_losses(spec, detected, where: str, only_suitable: bool) -> dict[str, dict]:
    """loss name -> {"params", "space"} for one data set; `only_suitable`: leave out listed losses that do
    not suit it (a list shared by the data sets of a mixture), else they are an error."""
    if spec == "auto":
        names = [name for name in losses_for(detected.format.key) if not _required_params(CATALOGUE[name])]
        if not names:
            raise EmbedlabError(f"{where}: no catalogue loss suits this data ({detected.describe()}) without extra parameters: list losses in search.losses")
        return {name: {"params": {}, "space": dict(getattr(CATALOGUE[name], "search_space", None) or {})} for name in names}
    if not spec:
        raise EmbedlabError(f"{where} must be `auto` or a list of losses")
    losses = {}
    for entry in spec:
        loss_class = get_loss_class(entry.name)
        try:
            check_format(loss_class, detected)
        except EmbedlabError as error:
            if only_suitable:
                continue
            raise EmbedlabError(f"{where}: {error}") from None
        accepted = list(inspect.signature(loss_class.__init__).parameters)[2:]
        space = entry.space if entry.space is not None else dict(getattr(loss_class, "search_space", None) or {})
        for name, range_spec in [*space.items(), *((name, None) for name in entry.params)]:
            if name not in accepted:
                raise EmbedlabError(f"{where}: {entry.name} has no parameter '{name}': its parameters are {', '.join(accepted)}")
            if range_spec is not None:
                _check_range(f"{where}.{entry.name}.space.{name}", range_spec)
                for value in _sampled_examples(range_spec):  # a trial would fail on it after Ray started
                    check_param_types(loss_class, {name: value}, where=f"{where}.{entry.name}.space")
        check_param_types(loss_class, entry.params, where=f"{where}.{entry.name}.params")
        missing = [name for name in _required_params(loss_class) if name not in entry.params and name not in space]
        if missing:
            raise EmbedlabError(f"{where}: {entry.name} needs {', '.join(missing)} in its params")
        losses[entry.name] = {"params": dict(entry.params), "space": dict(space)}
    if not losses:
        suitable = ", ".join(losses_for(detected.format.key)[:6])
        raise EmbedlabError(f"{where}: none of the listed losses suits this data ({detected.describe()}): add one of {suitable}, or give the data set its own list")
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


def _sampled_examples(spec: dict) -> list:
    """Values of the kind Tune samples from the range: each choice, a float for (log)uniform, an int for int."""
    ((kind, values),) = spec.items()
    if kind == "choice":
        return list(values)
    return [int(values[0]) if kind == "int" else float(values[0])]


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
    for depth, part in enumerate(parents):
        if part in node and node[part] is not None and not isinstance(node[part], dict):
            # e.g. training.mixture.weights.<name> while training.mixture is `proportional`
            above = ".".join(parents[: depth + 1])
            raise EmbedlabError(f"{where or key}: {above} is {node[part]!r} in the config, not a mapping: give it one there to search a key inside it")
        if not isinstance(node.get(part), dict):
            raise EmbedlabError(f"{where or key}: '{part}' is not a config section")
        node = node[part]
    node[last] = value


def check_gpus(search: SearchConfig, cluster: dict | None = None) -> None:
    """search.gpus_per_trial: 0, 1 or (one worker per trial) a fraction; with `cluster` (Ray's cluster
    resources), also that a trial's GPUs are there, so no trial waits forever for them."""
    gpus = search.gpus_per_trial
    if not 0 <= gpus <= 1:
        raise EmbedlabError(f"search.gpus_per_trial is per worker: 0, 1 or a fraction such as 0.25 (trials share a GPU), got {gpus:g}")
    if 0 < gpus < 1 and search.workers_per_trial > 1:
        raise EmbedlabError(
            f"search.gpus_per_trial {gpus:g} with workers_per_trial {search.workers_per_trial}: a trial of several workers needs a whole "
            "GPU per worker (NCCL cannot put two workers on one GPU); use a fraction with workers_per_trial: 1"
        )
    if cluster is None or gpus == 0:
        return
    available, needed = cluster.get("GPU", 0), gpus * search.workers_per_trial
    if not available:
        raise EmbedlabError(f"search.gpus_per_trial is {gpus:g} but the Ray cluster has no GPU: set it to 0 to train on CPUs")
    if available < needed:
        raise EmbedlabError(
            f"search.gpus_per_trial {gpus:g} x {search.workers_per_trial} workers needs {needed:g} GPUs per trial; the Ray cluster has "
            f"{available:g}: use workers_per_trial {int(available // gpus)} or fewer"
        )


# --- the define-by-run space ----------------------------------------------------------------------
def parameter_names(sweep: Sweep) -> list[str]:
    names = []
    for data_set, choices in sweep.losses.items():
        prefix = sweep.prefix(data_set)
        names += [f"{prefix}loss"] + [f"{prefix}{loss}.{param}" for loss, entry in choices.items() for param in entry["space"]]
    if sweep.search.modifiers:
        names.append("modifier")
    return names + list(sweep.search.space)


class DefineByRunSpace:
    """Optuna's define-by-run space: a loss first, then that loss's own parameters (for each searched data set
    of a mixture, its parameters prefixed with the data set's name), then the common ones.

    A class (not a closure) so Tune can pickle it with the searcher's state, for `--resume`."""

    def __init__(self, losses: dict[str, dict[str, dict]], modifier_names: list[str], common: dict[str, dict], mixture: bool = False):
        self.losses, self.modifier_names, self.common, self.mixture = losses, modifier_names, common, mixture

    def __call__(self, trial) -> None:
        for data_set, choices in self.losses.items():
            prefix = f"{data_set}." if self.mixture else ""
            loss = trial.suggest_categorical(f"{prefix}loss", list(choices))
            for param, spec in choices[loss]["space"].items():
                _suggest(trial, f"{prefix}{loss}.{param}", spec)
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
def plain_modifiers(search: SearchConfig) -> list[dict | None]:
    """search.modifiers as plain values, as trials receive them (unpickling them imports nothing: embedlab.trial)."""
    return [None if option is None else dataclasses.asdict(option) for option in search.modifiers]


def trial_config(base: dict, params: dict, loss_params: dict, modifiers: list[dict | None], output_dir: str) -> Config:
    """The train config of one trial: the base config with the trial's choices filled in. `loss_params`: data
    set -> loss name -> its fixed parameters (Sweep.losses' "params"); `modifiers`: `plain_modifiers`."""
    raw = copy.deepcopy(base)
    raw["search"] = None
    built = Config.from_dict(raw)
    options = [None if option is None else LossModifierConfig(**option) for option in modifiers]
    chosen = [option for option in options if modifier_label(option) == params.get("modifier")]
    losses, loss_keys = {}, set()  # data set -> its loss section; the params that went into them
    for data_set in built.train_sources():
        prefix = f"{data_set}." if built.is_mixture else ""
        loss = dataclasses.asdict(built.loss_for(data_set))
        if data_set in loss_params:
            name = params[f"{prefix}loss"]
            loss.update(name=name, params=dict(loss_params[data_set].get(name, {})))
            loss_keys.add(f"{prefix}loss")
            for key, value in params.items():
                if key.startswith(f"{prefix}{name}."):
                    loss["params"][key.removeprefix(f"{prefix}{name}.")] = value
                    loss_keys.add(key)
        if "modifier" in params:  # the modifier option applies to every data set's loss
            loss["modifiers"] = [dataclasses.asdict(chosen[0])] if chosen and chosen[0] is not None else []
        losses[data_set] = loss
    raw["loss"] = losses if built.is_mixture else losses[SINGLE_DATA_SET]
    for key, value in params.items():
        if key not in loss_keys and key != "modifier":
            set_dotted(raw, key, value)
    raw["output_dir"] = output_dir
    raw["training"]["show_progress_bar"] = False
    return Config.from_dict(raw)


def for_tune(metrics: dict, metric: str, mode: str) -> dict:
    """What a trial reports to Tune: its metrics, with the sweep's metric always a number that can be compared.

    Tune ends the whole sweep on a result without the metric (its strict metric check), Optuna refuses NaN as a
    trial value (Ray's OptunaSearch logs the refusal and leaves the Optuna trial unfinished) and ASHA never stops
    a NaN trial (NaN < cutoff is false) while its percentile cutoffs skip NaN. So a NaN (or infinite) or missing
    metric is reported as the worst value there is, -inf for mode max (+inf for min): ASHA stops the trial at its
    next rung, TPE records it as the worst trial (and learns to avoid its region), and `metric_status` says what
    the metric really was; the summary reads it back, so trials.csv and the best-trial choice never see the
    stand-in. The trial's own MLflow run records the true values (NaN as NaN)."""
    value = metrics.get(metric)
    status = "missing" if not is_number(value) else ("ok" if math.isfinite(value) else "nan")
    reported = {**metrics, METRIC_STATUS: status}
    if status != "ok":
        reported[metric] = -math.inf if mode == "max" else math.inf
    return reported


def is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)  # numpy's scalars too


class TuneReport:
    """Reports every evaluation but the last to Tune; the trial reports the last one with its test metrics."""

    def __init__(self, extra: dict, metric: str, mode: str):
        self.extra, self.metric, self.mode = extra, metric, mode

    def on_evaluate(self, trainer, step: int, metrics: dict) -> None:
        from ray import tune

        if step < trainer.total_steps:
            tune.report(for_tune({**metrics, **self.extra, "step": step}, self.metric, self.mode))


def run_trial(
    params: dict,
    base: dict,
    loss_params: dict,
    modifiers: list,
    workers: int,
    gpus: float,
    cpus_per_worker: int,
    keep_models: int,
    parent_channel: str | None,
    metric: str,
    mode: str,
) -> None:
    """A Tune trial (its function is embedlab.trial.train_trial): one training run with the trial's loss and
    hyperparameters.

    Its data, evaluators and base model come from the trial's process when an earlier trial there loaded
    the same (embedlab.trial_cache), and a trial of several workers trains on the ranks an earlier trial
    started (embedlab.trial_group); its model is saved only when it ranks among the `keep_models` best so
    far (BestModels). Its MLflow run is nested in the sweep's, which it receives through `parent_channel`
    once the sweep opened it (see SweepRunOpening). A finished trial leaves `trial_result.json`: if the sweep
    is resumed before Tune recorded the trial as finished, the trial reports that result again instead of
    training again."""
    from ray import tune

    from embedlab import trial_cache, trial_group

    trial_id = tune.get_context().get_trial_id()
    output_dir = Path(base["output_dir"]) / "trials" / trial_id
    finished = output_dir / "trial_result.json"
    if finished.exists():
        tune.report(for_tune({**json.loads(finished.read_text()), FINISHED: True}, metric, mode))
        return
    if parent_channel is not None:
        SweepRunOpening.check(parent_channel)  # a sweep whose run failed to open: no trial loads anything
    config = trial_config(base, params, loss_params, modifiers, str(output_dir))
    if workers > 1:
        # The run identity, checks and MLflow params see the trial's ranks (its global batch is theirs together).
        config.distributed = dataclasses.replace(config.distributed, workers=workers, use_gpu=gpus > 0, cpus_per_worker=cpus_per_worker)
        prepared = trial_group.prepare(config)
    else:
        prepared = trial_cache.prepare(config)
    extra = {"trial_id": trial_id, "loss_name": loss_label(params)}  # "loss" is the training loss's value
    callbacks = [TuneReport(extra, metric, mode), BestModels(Path(base["output_dir"]), trial_id, metric, mode, keep_models)]
    tracked = {}
    if parent_channel is not None:
        parent = SweepRunOpening.wait(parent_channel)
        # The trial's run is found again by its key on --resume.
        tracked = {"tracking_parent": parent, "run_name": f"{loss_label(params)}-{trial_id}", "run_key": f"{parent['key']}/{trial_id}"}
    if workers > 1:
        results = trial_group.train(prepared, callbacks, **tracked)
    else:
        results = run.train(prepared, callbacks, evaluate_before=False, **tracked)
    final = {**results["final"], **results["after"], **extra, "step": results["step"], FINISHED: True}
    finished.write_text(json.dumps(final))  # true values: NaN as NaN
    tune.report(for_tune(final, metric, mode))


SCORES_FILE = "trial_scores.json"  # in the sweep's folder: each trial that reached its end -> its metric (null: none)


class BestModels:
    """A trial's model is saved only when fewer than `count` (search.keep_models) trials that finished before
    it scored better: a Trainer callback answering `keep_model` with the final metrics. Trials in several
    processes agree through a locked file in the sweep's folder. At its end the sweep keeps the models of its
    `count` best trials only (`prune_models`)."""

    def __init__(self, sweep_dir: Path, trial_id: str, metric: str, mode: str, count: int):
        self.sweep_dir, self.trial_id, self.metric, self.mode, self.count = sweep_dir, trial_id, metric, mode, count

    def keep_model(self, trainer, metrics: dict) -> bool:
        value = float(metrics[self.metric]) if _finite(metrics.get(self.metric)) else None
        scores_file = self.sweep_dir / SCORES_FILE
        with open(self.sweep_dir / f"{SCORES_FILE}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            scores = json.loads(scores_file.read_text()) if scores_file.exists() else {}
            scores[self.trial_id] = value
            scores_file.write_text(json.dumps(scores))
        if value is None:
            return False
        sign = 1 if self.mode == "max" else -1
        better = sum(1 for trial, score in scores.items() if trial != self.trial_id and score is not None and sign * score > sign * value)
        return better < self.count


def prune_models(sweep: Sweep, summary: dict) -> None:
    """Deletes the models of the trials that are not among the `search.keep_models` best finished ones (a
    model saved while its trial was among the best so far; the trial's MLflow run keeps its copy)."""
    kept = [row["trial_id"] for row in summary["trials"] if row["status"] == "ok"][: sweep.search.keep_models]
    for model in (sweep.output_dir / "trials").glob("*/model"):
        if model.parent.name not in kept:
            shutil.rmtree(model)


def with_absolute_paths(config: Config) -> tuple[Config, list[str]]:
    """Trials run in their own folders: local paths made absolute. Returns the config and those paths: a
    trial reads its data and model by them, so on a cluster of several nodes every node must see them
    (check_nodes)."""
    config = copy.deepcopy(config)
    local = []

    def absolute(path):
        if isinstance(path, str) and Path(path).exists():
            local.append(str(Path(path).resolve()))
            return local[-1]
        return path

    for source in [*config.train_sources().values()] + [entry.data for entry in config.evaluators + config.test_evaluators]:
        source.path = absolute(source.path)
        source.teacher_model = absolute(source.teacher_model)
    config.model.name = absolute(config.model.name)
    for loss in config.loss.values() if isinstance(config.loss, dict) else [config.loss]:
        if "guide" in loss.params:
            loss.params["guide"] = absolute(loss.params["guide"])
    config.output_dir = str(Path(config.output_dir).resolve())
    return config, list(dict.fromkeys(local))


def check_nodes(sweep: Sweep, paths: list[str], nodes: int) -> None:
    """On a cluster of several nodes a trial (and each of its ranks) runs on any node: it reads the data and
    model by their paths here and writes into the sweep's folder, and records into MLflow. Before any trial
    starts, a task on every other node looks for those paths and for a file written into the sweep's folder
    now; what a node does not see, or a tracking store on this machine only, is refused in one line."""
    from embedlab.ray_train import check_tracking_for_nodes

    check_tracking_for_nodes(sweep.tracking_uri, nodes)
    folder = sweep.output_dir.resolve()
    made = [parent for parent in [folder, *folder.parents] if not parent.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".node-probe-{uuid.uuid4().hex}"
    probe.write_text("")
    try:
        unseen = trial.unseen_on_other_nodes([*paths, str(probe)])
    finally:
        probe.unlink()
        for created in made:  # the folders made for the probe go again, if nothing else wrote into them
            with contextlib.suppress(OSError):
                created.rmdir()
    for node, missing in unseen.items():
        what = f"the sweep's folder {folder}" if str(probe) in missing else ", ".join(missing)
        raise EmbedlabError(
            f"this Ray cluster has {nodes} nodes, and node {node} does not see {what}: a sweep's trials run on any node, "
            "reading the data and model and writing into the sweep's folder, so put them on storage every node mounts"
        )


# --- the sweep --------------------------------------------------------------------------------------
def run_sweep(sweep: Sweep, resume: bool = False, address: str | None = None) -> dict:
    """Runs (or resumes) the sweep; returns `summarize()`'s summary, also recorded in the sweep's MLflow run.
    `address`: the Ray cluster to join (default: the config's `distributed.address`, else RAY_ADDRESS, else a
    new local cluster); raises EmbedlabError when no trial finished with the metric."""
    import ray
    from ray import tune

    from embedlab.ray_train import connect, count_nodes

    search = sweep.search
    check_output_dir(sweep, resume)
    address = address if address is not None else sweep.config.distributed.address
    connect(address)
    check_gpus(search, ray.cluster_resources())
    cpus_per_worker = search.cpus_per_trial or max(1, int(ray.cluster_resources().get("CPU", 1)) // (search.max_concurrent * search.workers_per_trial))
    base, local_paths = with_absolute_paths(dataclasses.replace(sweep.config, search=None))
    nodes = count_nodes()
    if nodes > 1:
        check_nodes(sweep, local_paths, nodes)
    write_resolved(sweep)  # checked: the sweep starts
    opening = SweepRunOpening(sweep) if sweep.tracking_uri is not None else None
    try:
        trainable = _trainable(sweep, base.to_dict(), cpus_per_worker, opening and opening.channel)
        storage = str(sweep.output_dir)
        experiment = sweep.output_dir / "tune"
        if resume:
            if not tune.Tuner.can_restore(str(experiment)):
                raise EmbedlabError(f"nothing to resume in {experiment}: run the sweep without --resume first")
            tuner = tune.Tuner.restore(str(experiment), trainable=trainable, resume_unfinished=True, resume_errored=True)
        else:
            # A trial that raises is one failed trial, not a failed sweep: Tune records its error (ResultGrid.errors,
            # <trial>/error.txt) and goes on (fail_fast off). No retries: a trial's error (a loss that crashes on this
            # data, out of memory) comes back on a rerun; `--resume` reruns errored trials when the cause is fixed.
            run_config = tune.RunConfig(name="tune", storage_path=storage, verbose=1, failure_config=tune.FailureConfig(max_failures=0, fail_fast=False))
            tuner = tune.Tuner(trainable, tune_config=_tune_config(sweep), run_config=run_config)
        return finish_sweep(sweep, tuner.fit(), opening and opening.result())
    except BaseException as error:  # an interrupted or crashed sweep is not left RUNNING in MLflow
        if opening is not None:
            tracking.fail_run(opening.opened(), error)
        raise
    finally:
        if opening is not None:
            opening.close()  # fit() has ended every trial


def _trainable(sweep: Sweep, base: dict, cpus_per_worker: int, parent_channel: str | None):
    """Tune's trainable: embedlab.trial.train_trial with the sweep's settings, and each trial's resources."""
    from ray import tune

    search = sweep.search
    trainable = tune.with_parameters(
        trial.train_trial,
        base=base,
        loss_params={data_set: {name: entry["params"] for name, entry in choices.items()} for data_set, choices in sweep.losses.items()},
        modifiers=plain_modifiers(search),
        workers=search.workers_per_trial,
        gpus=search.gpus_per_trial,
        cpus_per_worker=cpus_per_worker,
        keep_models=search.keep_models,
        parent_channel=parent_channel,
        metric=sweep.metric,
        mode=sweep.mode,
    )
    if search.workers_per_trial == 1:
        return tune.with_resources(trainable, {"CPU": cpus_per_worker, "GPU": search.gpus_per_trial})
    # One bundle per rank: the trial process (rank 0) takes the first, its TrialWorker actors the others.
    bundle = {"CPU": cpus_per_worker, **({"GPU": search.gpus_per_trial} if search.gpus_per_trial else {})}
    # A trial process Tune does not keep is given up to 10 minutes to end by itself. Rank 0 ends at
    # once when Tune stops its trial (embedlab.trial_group), but should it be stuck in a collective,
    # killing the process after a few seconds ends its ranks (actors it owns) and frees their bundles;
    # the sweep itself closes a stopped trial's MLflow run, so the trial has nothing left to clean up.
    os.environ.setdefault("TUNE_FORCE_TRIAL_CLEANUP_S", "5")
    return tune.with_resources(trainable, tune.PlacementGroupFactory([bundle] * search.workers_per_trial))


class SweepRunOpening:
    """The sweep's MLflow run, opened in a thread while Tune starts the first trial process (a new local
    store creates its tables for seconds, as long as that process takes to import its libraries). The
    trials wait for it only when they open their own runs, after loading their inputs: the opened run's
    location reaches them through Ray's key-value store (every node of the cluster reads it), under a key
    of this sweep run's own, `channel`."""

    NAMESPACE = "embedlab"
    WAIT_S = 600  # the opening takes seconds; a trial that waits this long fails instead of hanging

    def __init__(self, sweep: Sweep):
        self.channel = f"sweep-run-{uuid.uuid4().hex}"
        opener = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sweep-run")
        self._future = opener.submit(self._open, sweep)
        opener.shutdown(wait=False)  # the thread ends with the opening

    def _open(self, sweep: Sweep) -> tracking.Tracker:
        from ray.experimental import internal_kv

        try:
            parent = open_sweep_run(sweep)
            published = parent.location() | {"key": parent.key, "sweep": sweep.name}
        except BaseException as error:
            internal_kv._internal_kv_put(self.channel, json.dumps({"error": tracking.first_line(error)}), namespace=self.NAMESPACE)
            raise
        internal_kv._internal_kv_put(self.channel, json.dumps(published), namespace=self.NAMESPACE)
        return parent

    def result(self) -> tracking.Tracker:
        """The opened run; the opening's own error if it failed."""
        return self._future.result()

    def opened(self) -> tracking.Tracker | None:
        """The opened run, or None if the opening failed."""
        return None if self._future.exception() else self._future.result()

    def close(self) -> None:
        from ray.experimental import internal_kv

        self._future.exception()  # the opening has ended: nothing publishes after this
        internal_kv._internal_kv_del(self.channel, namespace=self.NAMESPACE)

    @classmethod
    def wait(cls, channel: str) -> dict:
        """In a trial: the sweep run's location (`Tracker.location()`, its key and the sweep's name)."""
        waited = time.monotonic()
        while (parent := cls.check(channel)) is None:
            if time.monotonic() - waited > cls.WAIT_S:
                raise EmbedlabError(f"the sweep's MLflow run was not opened within {cls.WAIT_S} s: see the sweep's log for why")
            time.sleep(0.05)
        return parent

    @classmethod
    def check(cls, channel: str) -> dict | None:
        """In a trial: the sweep run's location once opened, else None; raises if the opening failed."""
        # Ray's own cluster-wide key-value store (Tune registers its trainables there too).
        from ray.experimental import internal_kv

        value = internal_kv._internal_kv_get(channel, namespace=cls.NAMESPACE)
        parent = None if value is None else json.loads(value)
        if parent is not None and "error" in parent:
            raise EmbedlabError(f"the sweep's MLflow run could not be opened: {parent['error']}")
        return parent


def finish_sweep(sweep: Sweep, results, parent) -> dict:
    """Summarizes the trials (trials.csv), records them in MLflow; one line (EmbedlabError) when none finished
    with the metric."""
    summary = summarize(sweep, results)
    prune_models(sweep, summary)
    if parent is not None:
        log_sweep_summary(parent, sweep, summary)
    if summary["best"] is None:
        raise EmbedlabError(no_best_message(sweep, summary))
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
        space=DefineByRunSpace(sweep.losses, [modifier_label(option) for option in modifiers], dict(search.space), sweep.config.is_mixture),
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
        # A trial finds what earlier trials loaded in its process (embedlab.trial_cache, embedlab.trial_group).
        reuse_actors=True,
    )


def open_sweep_run(sweep: Sweep):
    """The sweep's parent MLflow run (reopened on --resume); None when tracking is off."""
    if sweep.tracking_uri is None:
        return None
    tags = {"sweep": sweep.name, "data_format": sweep.format_key, tracking.PRIMARY_METRIC_TAG: tracking.metric_key(sweep.metric)}
    experiment = sweep.config.tracking.experiment or sweep.name
    key = f"{sweep.output_dir}#sweep"
    parent = tracking.Tracker.open(sweep.tracking_uri, experiment, key, f"sweep-{sweep.name}", tags, sweep.output_dir)
    if not parent.reused:
        search = {f"search.{name}": value for name, value in tracking.flatten(dataclasses.asdict(sweep.search)).items()}
        parent.log_params({**search, "searched_losses": sweep.searched_losses(), "model_name": sweep.config.model.name, "data_format": sweep.format_key})
        parent.log_inputs(tracking.data_inputs(sweep.config))
        tracking.log_config_now(parent, sweep.output_dir / "sweep.yaml")
    parent.system_metrics = sweep.config.tracking.system_metrics
    parent.start_system_metrics()  # the whole machine while the trials run
    return parent


def log_sweep_summary(parent, sweep: Sweep, summary: dict) -> None:
    """The parent run gets trials.csv, two plots, the best trial's metric and each trial's outcome; each
    trial's run gets its status (errored trials' runs end FAILED). The parent ends FAILED when no trial
    finished with the metric."""
    best = summary["best"]
    record_trial_runs(parent, sweep, summary["trials"])
    parent.log_tags({"trial_statuses": _counts(summary["trials"])})
    if best is not None:
        parent.log_metrics({f"best_{sweep.metric}": best[sweep.metric]}, step=len(summary["trials"]))
        parent.log_tags({"best_trial": best["trial_id"], "best_loss": best["loss"], "best_model": summary["best_model"]})
    parent.log_artifact(sweep.output_dir / "trials.csv")
    for plot in write_plots(sweep, summary):
        parent.log_artifact(plot, "plots")
    tracking.end_stopped_children(parent)  # trials ASHA stopped never finished their own runs
    parent.finish("FINISHED" if best is not None else "FAILED")
    if best is not None:
        tracking.register_best_trial(parent, sweep.config.tracking.register, best["trial_id"])


def record_trial_runs(parent, sweep: Sweep, rows: list[dict]) -> None:
    """Tags each trial's nested run(s) with its status (and, for a NaN metric, which metric); ends the runs of
    stopped trials KILLED and of errored ones FAILED, with the error's line (the trial marks its own run so when
    it can; a killed trial process cannot). A trial that failed before it opened a run gets one, FAILED, so the
    MLflow UI lists every trial."""
    try:
        client = parent.client
        experiment_id = client.get_experiment_by_name(parent.experiment).experiment_id
        prefix = f"{parent.key}/"
        children, token = {}, None  # trial id -> its runs (keys are <sweep key>/<trial id>@<run fingerprint>)
        while True:
            page = client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}'", max_results=1000, page_token=token)
            for run in page:
                key = run.data.tags.get(tracking.KEY_TAG, "")
                if key.startswith(prefix):
                    children.setdefault(key.removeprefix(prefix).split("@", 1)[0], []).append(run)
            token = page.token
            if not token:
                break
        for row in rows:
            tags = {STATUS_TAG: row["status"]}
            if isinstance(row.get(sweep.metric), float) and math.isnan(row[sweep.metric]):
                tags[METRIC_NAN_TAG] = sweep.metric
            runs = children.get(row["trial_id"], [])
            if not runs:
                if row["status"] != "error":
                    continue  # tracking off in the trial, or its records went to a fallback store
                run_tags = {tracking.KEY_TAG: f"{prefix}{row['trial_id']}", "mlflow.parentRunId": parent.run_id, "sweep": sweep.name}
                runs = [client.create_run(experiment_id, tags=run_tags, run_name=f"{row['loss']}-{row['trial_id']}")]
                tracking.log_error_file(client, runs[0].info.run_id, row.get("error_file"))
            for run in runs:
                for name, value in tags.items():
                    client.set_tag(run.info.run_id, name, value)
                if row.get("error") and tracking.ERROR_TAG not in run.data.tags:
                    client.set_tag(run.info.run_id, tracking.ERROR_TAG, row["error"][:5000])
                wanted = RUN_STATUS[row["status"]]
                if run.info.status != wanted and (run.info.status == "RUNNING" or wanted == "FAILED"):
                    client.set_terminated(run.info.run_id, status=wanted)
    except Exception as error:  # bookkeeping only: the trials' own records are already there
        warn(f"could not record the trials' statuses in MLflow: {tracking.first_line(error)}")


def write_plots(sweep: Sweep, summary: dict) -> list[Path]:
    """The best trial per loss, and the metric against the learning rate: trials with a number only (a NaN,
    missing or errored trial has no point to plot)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    folder = sweep.output_dir / "plots"
    folder.mkdir(exist_ok=True)
    paths = []
    scored = [row for row in summary["trials"] if _finite(row.get(sweep.metric))]
    losses = [loss for loss, row in summary["best_per_loss"].items() if _finite(row.get(sweep.metric))]
    if losses:
        figure, axes = plt.subplots(figsize=(7, 0.5 + 0.5 * len(losses)))
        axes.barh(losses, [summary["best_per_loss"][loss][sweep.metric] for loss in losses], color="tab:blue")
        axes.set_xlabel(sweep.metric)
        axes.set_title(f"{sweep.name}: best trial per loss")
        figure.tight_layout()
        paths.append(folder / "best_per_loss.png")
        figure.savefig(paths[-1], dpi=120)
        plt.close(figure)
    rate = "training.learning_rate"
    if any(_finite(row.get(rate)) for row in scored):
        figure, axes = plt.subplots(figsize=(7, 4))
        for loss in dict.fromkeys(row["loss"] for row in scored):
            rows = [row for row in scored if row["loss"] == loss and _finite(row.get(rate))]
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
    """Every trial (Tune's results: `.metrics`, `.config`, `.error`, `.path`) as a row with its status; the best
    trial overall and per loss; writes trials.csv. Only trials that finished with a number compete: `best` is
    None when there is none. Best per loss: its best finished trial, else its best trial stopped early."""
    rows = [trial_row(sweep, result) for result in results]
    sign = 1 if sweep.mode == "max" else -1
    finished = sorted((row for row in rows if row["status"] == "ok"), key=lambda row: sign * row[sweep.metric], reverse=True)
    stopped = sorted((row for row in rows if row["status"] == "stopped" and _finite(row[sweep.metric])), key=lambda row: sign * row[sweep.metric], reverse=True)
    ranked = finished + stopped + [row for row in rows if row not in finished and row not in stopped]
    best_per_loss = {}
    for row in finished + stopped:
        best_per_loss.setdefault(row["loss"], row)
    fields = list(dict.fromkeys(key for row in ranked for key in row))
    sweep.output_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep.output_dir / "trials.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        writer.writerows(ranked)
    best = finished[0] if finished else None
    best_model = str(sweep.output_dir / "trials" / best["trial_id"] / "model") if best else None
    return {"trials": ranked, "best": best, "best_per_loss": best_per_loss, "best_model": best_model}


def trial_row(sweep: Sweep, result) -> dict:
    """One trial's row: id, loss, status (see RUN_STATUS), step, its parameters and scores. The sweep's metric is
    the last reported value, `nan` for a NaN, None (empty in trials.csv) when missing or when the trial raised."""
    metrics = dict(result.metrics or {})
    config = result.config or metrics.get("config") or _trial_params(result.path)
    error = getattr(result, "error", None)
    reported = metrics.get(sweep.metric)
    if metrics.get(METRIC_STATUS) == "missing" or not is_number(reported):
        value = None
    elif metrics.get(METRIC_STATUS) == "nan" or not math.isfinite(reported):
        value = math.nan  # the true value behind for_tune's stand-in
    else:
        value = float(reported)
    if error is not None:
        status, value = "error", None
    elif "training_iteration" not in metrics and value is None:
        status = "missing"  # it never reported
    elif not metrics.get(FINISHED):
        status = "stopped"
    else:
        status = "ok" if value is not None and math.isfinite(value) else ("missing" if value is None else "nan")
    trial_id = metrics.get("trial_id") or (Path(result.path).name if result.path else "?")
    row = {
        "trial_id": trial_id,
        "loss": metrics.get("loss_name") or loss_label(config),
        "status": status,
        "step": metrics.get("step"),
        "training_iteration": metrics.get("training_iteration"),
        "trial_seconds": metrics.get("time_total_s"),  # trial function start to its last report
        **_params(config),
        **_scores(metrics),
        sweep.metric: value,
    }
    if error is not None:
        row["error"] = tracking.redact_text(_error_line(error))
        if result.path:
            row["error_file"] = str(Path(result.path) / "error.txt")
    return row


def loss_label(params: dict) -> str:
    """A trial's searched losses, its row's `loss`: `CoSENTLoss`, or a mixture's `stsb: CoSENTLoss, sick:
    MultipleNegativesRankingLoss` (the data sets the sweep searches a loss for)."""
    if "loss" in params:
        return params["loss"]
    return ", ".join(f"{key.removesuffix('.loss')}: {value}" for key, value in params.items() if key.endswith(".loss")) or "?"


def _trial_params(path) -> dict:
    """The trial's parameters from Tune's params.json, for a trial that failed before its first report."""
    try:
        return json.loads((Path(path) / "params.json").read_text())
    except (OSError, TypeError, ValueError):
        return {}


def _error_line(error: BaseException) -> str:
    """The line that names a trial's error: the last line of its traceback."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _finite(value) -> bool:
    return is_number(value) and math.isfinite(value)


def _counts(rows: list[dict]) -> str:
    """e.g. '3 ok, 1 stopped, 1 error'."""
    counts = {status: sum(row["status"] == status for row in rows) for status in RUN_STATUS}
    return ", ".join(f"{count} {status}" for status, count in counts.items() if count)


def no_best_message(sweep: Sweep, summary: dict) -> str:
    rows = summary["trials"]
    errors = [row for row in rows if row["status"] == "error"]
    where = f"each trial's status and error are in {sweep.output_dir / 'trials.csv'}"
    if errors:
        first = errors[0]
        where += f"; tracebacks in {sweep.output_dir / 'tune'}/<trial>/error.txt (first: trial {first['trial_id']}: {first['error']})"
    return f"no trial produced {sweep.metric} (of {len(rows)} trials: {_counts(rows)}): {where}"


def _params(config: dict) -> dict:
    return {key: value for key, value in config.items() if key != "loss"}


def _scores(metrics: dict) -> dict:
    return {
        key: value
        for key, value in metrics.items()
        if isinstance(value, float) and not math.isnan(value) and key not in TRIAL_METRICS and key != "loss" and not key.startswith(("time_", "timestamp"))
    }


def print_summary(sweep: Sweep, summary: dict) -> None:
    best, rows = summary["best"], summary["trials"]
    print(f"\nSweep '{sweep.name}': {len(rows)} trials ({_counts(rows)}) on {sweep.format_key} data, by {sweep.metric} ({sweep.mode})")
    print(f"{'loss':45s} {'trial':12s} {sweep.metric:>30s}  params")
    for loss, row in summary["best_per_loss"].items():
        searched = (f"{loss}.", *(sweep.prefix(data_set) for data_set in sweep.losses if sweep.config.is_mixture), "training.", "model.", "modifier")
        params = {key: _short(value) for key, value in row.items() if key.startswith(searched)}
        stopped = f" (stopped at step {row['step']})" if row["status"] == "stopped" else ""
        print(f"{loss:45s} {row['trial_id']:12s} {row[sweep.metric]:30.4f}  {params}{stopped}")
    for row in rows:
        if row["status"] in ("nan", "missing", "error"):
            what = {"nan": f"{sweep.metric} is NaN (diverged?)", "missing": f"never reported {sweep.metric}", "error": row.get("error", "")}[row["status"]]
            print(f"{row['loss']:45s} {row['trial_id']:12s} {row['status']:>30s}  {what}")
    if best is not None:
        print(f"\nBest: {best['loss']} (trial {best['trial_id']}) {sweep.metric} = {best[sweep.metric]:.4f}")
        print(f"Best model (sentence-transformers format): {summary['best_model']}")
    print(f"All trials: {sweep.output_dir / 'trials.csv'}")


def _short(value):
    return float(f"{value:.4g}") if isinstance(value, float) else value


def write_resolved(sweep: Sweep) -> None:
    """`<output_dir>/sweep.yaml`: the resolved config (redacted), as the sweep runs it."""
    sweep.output_dir.mkdir(parents=True, exist_ok=True)
    (sweep.output_dir / "sweep.yaml").write_text(_resolved_yaml(sweep))


# What a resumed sweep may change: where and how it runs, never what its trials compute or where they are
# recorded (a training run's identity leaves out the same keys: embedlab.identity).
RESUME_MAY_CHANGE = (
    *(key for key in NOT_IDENTITY if key not in ("output_dir", "tracking", "search")),
    "tracking.mode", "tracking.system_metrics", "search.max_concurrent", "search.cpus_per_trial",
)


def check_output_dir(sweep: Sweep, resume: bool) -> None:
    """A sweep's folder holds one sweep: its trials, Tune's state and one MLflow run (found by the folder) are
    that sweep's. So a folder where trials ran is continued only by --resume, and --resume only with the
    config the sweep started with (sweep.yaml), but for RESUME_MAY_CHANGE."""
    folder = sweep.output_dir
    if not resume:
        trials = folder / "trials"
        if trials.is_dir() and any(trials.iterdir()):
            raise EmbedlabError(f"{folder} already holds a sweep: --resume continues it (with the same config); for a new sweep give another output_dir, or delete that folder")
        return
    written = folder / "sweep.yaml"
    if not written.exists():
        return  # run_sweep says there is nothing to resume
    try:
        before = tracking.flatten(load_yaml(written.read_text()) or {})
    except yaml.YAMLError:
        raise EmbedlabError(f"{written} is not the config the sweep started with (not valid YAML): restore it, or start a new sweep in another output_dir") from None
    now = tracking.flatten(load_yaml(_resolved_yaml(sweep)) or {})
    keys = [key for key in dict.fromkeys([*before, *now]) if not under_any(key, RESUME_MAY_CHANGE)]
    changed = [f"{key} ({before.get(key)!r} -> {now.get(key)!r})" for key in keys if before.get(key) != now.get(key)]
    if changed:
        raise EmbedlabError(
            f"--resume continues the sweep in {folder} with the config it started with, and this one differs in {', '.join(changed)}: "
            "undo the change, or run the changed sweep in another output_dir"
        )


def _resolved_yaml(sweep: Sweep) -> str:
    return dump_yaml(tracking.redact_config(sweep.config.to_dict()))
