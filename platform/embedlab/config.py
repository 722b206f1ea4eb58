"""Typed configs loaded from YAML (safe loading), with `key=value` overrides from the command line.

Every section is a dataclass; a key that no field has is an error listing the valid keys, so typos
fail before anything runs.
"""

import copy
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from embedlab.errors import EmbedlabError
from embedlab.model import DEFAULT_MODEL


@dataclass
class ConversionConfig:
    to: str  # triplets | anchor_positive_pairs
    threshold: float | None = None  # score pairs -> anchor-positive pairs: keep scores at or above this
    positive_label: str | int | None = None  # pairs + class -> triplets: e.g. ENTAILMENT
    negative_label: str | int | None = None  # pairs + class -> triplets: e.g. CONTRADICTION
    seed: int = 0


@dataclass
class DataSource:
    path: str  # a CSV / TSV / JSONL / Parquet file, a saved `datasets` folder, or a hub data set name
    columns: list[str] | None = None  # keep only these, in this order (inputs first, then the label)
    rename: dict[str, str] = field(default_factory=dict)  # old name -> new name, applied after `columns`
    label_column: str | None = None  # default: the column named label, labels, score or scores
    format: str | None = None  # override the detected format where the structure allows
    split: str = "train"  # for hub data sets
    subset: str | None = None  # for hub data sets with several configurations
    limit: int | None = None  # keep the first N rows
    convert: ConversionConfig | None = None  # an explicit, logged conversion to another format
    teacher_model: str | None = None  # distillation: label each row with this model's embedding of the first input


@dataclass
class ModelConfig:
    name: str = DEFAULT_MODEL
    max_seq_length: int | None = None  # default: the model's own
    pooling: str | None = None  # replace the model's pooling: mean, cls, max, mean_sqrt_len_tokens, weightedmean, lasttoken
    trust_remote_code: bool = False  # running code shipped with a model is opt-in


@dataclass
class LossModifierConfig:
    name: str  # MatryoshkaLoss, AdaptiveLayerLoss or Matryoshka2dLoss
    params: dict = field(default_factory=dict)


@dataclass
class LossConfig:
    name: str = "CoSENTLoss"  # a catalogue name, or a dotted path to a user's loss class
    params: dict = field(default_factory=dict)
    modifiers: list[LossModifierConfig] = field(default_factory=list)  # wrapped around the loss, in order


@dataclass
class TrainingConfig:
    epochs: int = 1
    max_steps: int | None = None  # overrides epochs when set
    batch_size: int = 16
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1  # of all steps; the sentence-transformers examples use 10%
    weight_decay: float = 0.0  # as the Hugging Face trainer; never applied to biases and LayerNorm weights
    max_grad_norm: float = 1.0
    seed: int = 0
    sampler: str = "auto"  # auto: what the loss asks for (no-duplicates for in-batch negatives), else random
    drop_last: bool = False
    eval_steps: int | None = None  # evaluate every N steps; always at the end
    save_steps: int | None = 500  # checkpoint every N steps, to resume an interrupted run
    save_total_limit: int = 2  # checkpoints kept; older ones are deleted
    mixed_precision: str = "auto"  # auto: bf16 autocast on a GPU that has it, off on CPU; or "no" / "bf16" / "fp16"
    resume: bool = True  # continue from the output folder's last checkpoint if there is one
    show_progress_bar: bool = True


@dataclass
class DistributedConfig:
    workers: int | None = None  # Ray Train workers, data-parallel; None trains in this process
    use_gpu: bool = False  # one GPU per worker, NCCL between them (gloo on CPU)
    cpus_per_worker: int = 1
    # Where Ray Train keeps checkpoints: a folder, or a pyarrow URI (s3://bucket/runs, gs://...) that every
    # node can reach; default: <output_dir>/ray. The same run name there resumes an interrupted run.
    storage_path: str | None = None
    max_failures: int = 2  # worker failures recovered from the last checkpoint before the run gives up
    num_to_keep: int = 2  # checkpoints kept in storage: the best by the first evaluator's primary metric
    address: str | None = None  # Ray cluster; default: RAY_ADDRESS (set by `ray job submit`) or a new local one
    # Refuse to start when the cluster has fewer CPUs / GPUs than the workers need, instead of waiting.
    # false on an autoscaling cluster whose worker nodes start on demand.
    check_resources: bool = True


@dataclass
class TrackingConfig:
    """MLflow tracking; `tracking: optional` is short for `tracking: {mode: optional}`."""

    # required: an unreachable tracking server stops the run before it starts; optional: warn and record
    # locally instead; off: no MLflow
    mode: str = "required"
    uri: str | None = None  # an MLflow server (http://host:5000) or store; default: MLFLOW_TRACKING_URI, else <output_dir>/mlflow.db
    experiment: str | None = None  # default: the output folder's name


@dataclass
class EvaluatorConfig:
    data: DataSource
    name: str = ""
    type: str | None = None  # default: the evaluator that suits the data's format
    batch_size: int = 32
    params: dict = field(default_factory=dict)


@dataclass
class LossSearchConfig:
    name: str  # a catalogue loss that suits the data
    params: dict = field(default_factory=dict)  # fixed parameters, e.g. a guide model
    space: dict | None = None  # parameter -> {loguniform|uniform|int: [low, high]} or {choice: [..]}; default: the loss's own


@dataclass
class SearchConfig:
    """What a sweep (`embedlab sweep`) searches over; see experiments/sweeps/ for examples."""

    losses: list[LossSearchConfig] | str = "auto"  # auto: every loss that suits the data's format
    modifiers: list[LossModifierConfig | None] = field(default_factory=list)  # options, null = none
    space: dict = field(default_factory=dict)  # dotted config key -> range, e.g. training.learning_rate
    metric: str | None = None  # default: the first evaluator's primary metric
    mode: str | None = None  # max | min; default: what the metric's evaluator says
    num_samples: int = 8  # trials
    max_concurrent: int = 1  # trials at once
    workers_per_trial: int = 1  # 1: the in-process trainer (no worker start-up); more: a TorchTrainer each
    cpus_per_trial: int | None = None  # per worker; default: the cluster's CPUs / max_concurrent / workers
    use_gpu: bool = False  # one GPU per worker
    scheduler: str = "fifo"  # or asha: stop weak trials early, judged at each evaluation
    grace_period: int = 2  # ASHA: evaluations a trial always gets
    reduction_factor: int = 2  # ASHA: keep the best 1/reduction_factor at each rung
    seed: int = 0  # the TPE sampler's
    points_to_evaluate: list[dict] = field(default_factory=list)  # known-good trials to start from


@dataclass
class DataConfig:
    train: DataSource


@dataclass
class Config:
    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluators: list[EvaluatorConfig] = field(default_factory=list)  # run every eval_steps and at the end
    test_evaluators: list[EvaluatorConfig] = field(default_factory=list)  # run before and after training
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    search: SearchConfig | None = None  # a sweep config: `embedlab sweep`
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    output_dir: str = "runs/default"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "Config":
        return _build(cls, raw, "")


SHORTHANDS = {DataSource: "path", LossSearchConfig: "name", LossModifierConfig: "name", TrackingConfig: "mode"}  # a bare string fills this key


def _tracking_off(raw):
    """`tracking: off` and `mode: off` as written: YAML 1.1 reads the bare word off as false."""
    if raw is False:
        return {"mode": "off"}
    if isinstance(raw, dict) and raw.get("mode") is False:
        return {**raw, "mode": "off"}
    return raw


def _build(cls, raw, where: str):
    """Builds dataclass `cls` from plain YAML data, checking keys and types on the way."""
    if dataclasses.is_dataclass(cls):
        if cls is TrackingConfig:
            raw = _tracking_off(raw)
        if isinstance(raw, str) and cls in SHORTHANDS:  # e.g. `train: data.csv` for `train: {path: data.csv}`
            raw = {SHORTHANDS[cls]: raw}
        if not isinstance(raw, dict):
            raise EmbedlabError(f"config key '{where}' must be a mapping, got {type(raw).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in raw:
            if key not in fields:
                close = difflib.get_close_matches(str(key), fields, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                prefix = f"{where}." if where else ""
                raise EmbedlabError(
                    f"unknown config key '{prefix}{key}'{hint}: valid keys are {', '.join(fields)}"
                )
        values = {}
        hints = typing.get_type_hints(cls)
        for name, spec in fields.items():
            child = f"{where}.{name}" if where else name
            if name in raw:
                values[name] = _build(hints[name], raw[name], child)
            elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise EmbedlabError(f"config key '{child}' is required")
        return cls(**values)
    origin = typing.get_origin(cls)
    if origin in (typing.Union, types.UnionType):
        if raw is None:
            return None
        options = [option for option in typing.get_args(cls) if option is not type(None)]
        for option in options[:-1]:  # the first type that fits, e.g. a class label that is str or int
            try:
                return _build(option, raw, where)
            except EmbedlabError:
                continue
        return _build(options[-1], raw, where)
    if origin is list:
        if not isinstance(raw, list):
            raise EmbedlabError(f"config key '{where}' must be a list")
        (item_type,) = typing.get_args(cls)
        return [_build(item_type, item, f"{where}.{index}") for index, item in enumerate(raw)]
    if cls is dict or origin is dict:
        if not isinstance(raw, dict):
            raise EmbedlabError(f"config key '{where}' must be a mapping")
        return dict(raw)
    if cls is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if cls in (int, float, str, bool) and not (isinstance(raw, cls) and not (cls is int and isinstance(raw, bool))):
        raise EmbedlabError(f"config key '{where}' must be {cls.__name__}, got {raw!r}")
    return raw


def apply_override(raw: dict, override: str) -> None:
    """Applies one `dotted.key=value` (value parsed as YAML) to raw config data, in place."""
    key, sep, value = override.partition("=")
    if not sep or not key:
        raise EmbedlabError(f"override '{override}' is not key=value, e.g. training.batch_size=32")
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise EmbedlabError(f"override '{key}': '{part}' is not an index of that list")
            node = node[int(part)]
        else:
            if not isinstance(node.get(part, {}), (dict, list)):
                node[part] = {"path": node[part]}  # a data source given as a bare path
            node = node.setdefault(part, {})
    last = parts[-1]
    parsed = yaml.safe_load(value) if value else None
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise EmbedlabError(f"override '{key}': '{last}' is not an index of that list")
        node[int(last)] = parsed
    else:
        node[last] = parsed


def load_config(path: str | Path, overrides: list[str] = (), smoke_test: bool = False) -> Config:
    path = Path(path)
    if not path.is_file():
        raise EmbedlabError(f"config file '{path}' does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise EmbedlabError(f"config file '{path}' is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise EmbedlabError(f"config file '{path}' must hold a mapping of keys")
    raw.setdefault("output_dir", f"runs/{path.stem}")
    for override in overrides:
        apply_override(raw, override)
    config = _build(Config, raw, "")
    if smoke_test:
        config = smoke_test_config(config)
    return config


def smoke_test_config(config: Config) -> Config:
    """The same run, cut to a few steps on a few rows: checks that everything is wired up, in seconds."""
    config = copy.deepcopy(config)
    config.training.max_steps = 4
    config.training.eval_steps = None
    config.training.save_steps = 2
    config.data.train.limit = min(config.data.train.limit or 10**9, 64)
    for evaluator in config.evaluators + config.test_evaluators:
        evaluator.data.limit = min(evaluator.data.limit or 10**9, 64)
    config.output_dir = str(Path(config.output_dir).with_name(Path(config.output_dir).name + "-smoke"))
    if config.search is not None:  # a sweep: 2 trials, each evaluated twice (what ASHA needs to act)
        config.search.num_samples = min(config.search.num_samples, 2)
        config.search.grace_period = 1
        config.training.eval_steps = 2
    return config
