"""Typed configs loaded from YAML (safe loading), with `key=value` overrides from the command line.

Every section is a dataclass; a key that no field has is an error listing the valid keys, so typos
fail before anything runs. A key with a closed set of values is a `Literal`: any other value is a
one-line error naming the allowed ones and the closest match.

Dataclasses and a small builder (`_build`) rather than pydantic: the rest of the code relies on
dataclasses (replace, asdict, deepcopy, from_dict in Ray workers), and the builder already gives the
one-line errors with close matches that the command line prints; pydantic's would need rewriting.

YAML is read with YAML 1.2 core-schema scalars (`ConfigLoader`), not PyYAML's YAML 1.1 defaults: 1e-4
and 5E-3 are numbers (1.1 reads them as text, so `learning_rate: 1e-4` was refused), only
true/false are booleans (1.1 turns yes/no/on/off into booleans: the "Norway problem", and
`tracking: off` read as false), 010 is ten, not octal eight. This is what other YAML 1.2 tools and
most users expect.
"""

import copy
import dataclasses
import difflib
import math
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from embedlab.errors import EmbedlabError
from embedlab.model import DEFAULT_MODEL


class ConfigLoader(yaml.SafeLoader):
    """Safe loading (plain data only) with YAML 1.2 core-schema scalars: booleans are true/True/TRUE and
    false/False/FALSE only; ints are decimal, 0o octal or 0x hex; floats include 1e-4, .5, .inf, .nan;
    no timestamps or sexagesimal numbers. Merge keys (`<<: *anchor`) still work."""

    yaml_implicit_resolvers = {}  # replaced, not added to: none of YAML 1.1's resolvers


_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
# In this order: a resolver list is tried first to last, and the float pattern also matches ints.
_RESOLVERS = [
    ("tag:yaml.org,2002:bool", _BOOL, list("tTfF")),
    ("tag:yaml.org,2002:int", _INT, list("-+0123456789")),
    ("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789.")),
    ("tag:yaml.org,2002:null", _NULL, ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"]),
]
for _tag, _pattern, _first in _RESOLVERS:
    ConfigLoader.add_implicit_resolver(_tag, _pattern, _first)


def _construct_int(loader, node):
    text = loader.construct_scalar(node)
    try:
        if text.startswith(("0o", "0x")):
            return int(text[2:], 8 if text[1] == "o" else 16)
        return int(text, 10)  # 010 is ten: YAML 1.2 has no leading-zero octal
    except ValueError:
        raise yaml.constructor.ConstructorError(None, None, f"cannot read {text!r} as an integer", node.start_mark) from None


def _construct_float(loader, node):
    text = loader.construct_scalar(node)
    if text.lower().endswith(".inf"):
        return -math.inf if text.startswith("-") else math.inf
    if text.lower() == ".nan":
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise yaml.constructor.ConstructorError(None, None, f"cannot read {text!r} as a number", node.start_mark) from None


ConfigLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
ConfigLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)


class ConfigDumper(yaml.SafeDumper):
    """Writes plain data so that both ConfigLoader and YAML 1.1 readers read it back as it was: a string
    either would take for something else (yes, 010, 1e-4) is quoted."""


for _tag, _pattern, _first in _RESOLVERS:
    ConfigDumper.add_implicit_resolver(_tag, _pattern, _first)  # after YAML 1.1's own: quoting only


def load_yaml(text: str):
    return yaml.load(text, Loader=ConfigLoader)  # safe: a SafeLoader subclass


def dump_yaml(data) -> str:
    """YAML for a resolved config (`Config.to_dict()`) that loads back to the same config."""
    return yaml.dump(data, Dumper=ConfigDumper, sort_keys=False)


# The names embedlab.formats.FORMATS and embedlab.evaluation.EVALUATORS define (tests/unit/test_config.py
# checks that they agree; those modules import this one, so the names are written out here).
DataFormatName = Literal[
    "sentence_class", "single_sentences", "anchor_anchor_pairs", "damaged_original_pairs", "pair_class", "anchor_positive_pairs",
    "pair_binary", "pair_score", "triplets", "n_tuples", "teacher_embedding", "query_passage_margin",
]
EvaluatorName = Literal[
    "EmbeddingSimilarityEvaluator", "BinaryClassificationEvaluator", "TripletEvaluator", "InformationRetrievalEvaluator", "TranslationEvaluator"
]


@dataclass
class MiningConfig:
    """Hard-negative mining (`embedlab mine`, or `convert: {to: triplets, mine: {...}}`): sentence-transformers'
    `mine_hard_negatives` parameter names, meanings and defaults; see embedlab.mining."""

    model: str = DEFAULT_MODEL  # the model that ranks candidates: a model folder, hub id or a run's output folder
    corpus: str | None = None  # a file of passages (.txt: one per line); default: the data's positives
    num_negatives: int = 3
    range_min: int = 0  # skip this many top candidates (likely unlabelled positives)
    range_max: int | None = None  # default: range_min + num_negatives + most positives of an anchor (x10 negatives with margins)
    max_score: float | None = None
    min_score: float | None = None
    absolute_margin: float | None = None  # a negative scores at least this much below the anchor's weakest positive
    relative_margin: float | None = None  # ... at most (1 - relative_margin) x that positive's score
    sampling_strategy: Literal["top", "random"] = "top"
    output_format: Literal["triplet", "n-tuple"] | None = None  # in a config, `convert.to` decides (triplets, n_tuples)
    batch_size: int = 32
    query_prompt_name: str | None = None  # a prompt of the model's own `prompts`, for the anchors
    query_prompt: str | None = None
    corpus_prompt_name: str | None = None  # ... for the corpus
    corpus_prompt: str | None = None
    seed: int = 0  # sampling_strategy random
    workers: int | None = None  # embed with Ray Data on this many actors; None: in this process
    use_gpu: bool = False  # one GPU per Ray Data actor
    cache_folder: str | None = None  # embeddings cache; default: EMBEDLAB_CACHE, else ~/.cache/embedlab/embeddings


@dataclass
class ConversionConfig:
    to: Literal["triplets", "n_tuples", "anchor_positive_pairs"]
    threshold: float | None = None  # score pairs -> anchor-positive pairs: keep scores at or above this
    positive_label: str | int | None = None  # pairs + class -> triplets: e.g. ENTAILMENT
    negative_label: str | int | None = None  # pairs + class -> triplets: e.g. CONTRADICTION
    seed: int = 0
    mine: MiningConfig | None = None  # (anchor, positive) pairs -> triplets / n_tuples with mined hard negatives


@dataclass
class DataSource:
    path: str  # a CSV / TSV / JSONL / Parquet file, a saved `datasets` folder, or a hub data set name
    columns: list[str] | None = None  # keep only these, in this order (inputs first, then the label)
    rename: dict[str, str] = field(default_factory=dict)  # old name -> new name, applied after `columns`
    label_column: str | None = None  # default: the column named label, labels, score or scores
    format: DataFormatName | None = None  # override the detected format where the structure allows
    split: str = "train"  # for hub data sets
    subset: str | None = None  # for hub data sets with several configurations
    limit: int | None = None  # keep the first N rows
    convert: ConversionConfig | None = None  # an explicit, logged conversion to another format
    teacher_model: str | None = None  # distillation: label each row with this model's embedding of the first input


@dataclass
class ModelConfig:
    name: str = DEFAULT_MODEL
    max_seq_length: int | None = None  # default: the model's own
    pooling: Literal["mean", "cls", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"] | None = None  # replace the model's pooling
    trust_remote_code: bool = False  # running code shipped with a model is opt-in
    # false: pooling leaves prompt tokens out (sentence-transformers' Pooling include_prompt), in training and
    # in the saved model; None: the model's own setting (true unless its Pooling config says otherwise)
    include_prompt: bool | None = None


@dataclass
class LossModifierConfig:
    name: Literal["MatryoshkaLoss", "AdaptiveLayerLoss", "Matryoshka2dLoss"]
    params: dict = field(default_factory=dict)


@dataclass
class LossConfig:
    name: str = "CoSENTLoss"  # a catalogue name, or a dotted path to a user's loss class
    params: dict = field(default_factory=dict)
    modifiers: list[LossModifierConfig] = field(default_factory=list)  # wrapped around the loss, in order


@dataclass
class MixtureConfig:
    """`training.mixture` as a mapping: each batch's data set drawn with these weights (name -> weight), or
    with probability proportional to size^(1/temperature) (1: by size, large: uniform)."""

    weights: dict[str, float] | None = None
    temperature: float | None = None


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
    # auto: what the loss asks for (no_duplicates for in-batch negatives), else random
    sampler: Literal["auto", "random", "no_duplicates", "group_by_label"] = "auto"
    drop_last: bool = False
    # Batches of rows of similar token length (less padding, faster steps), with every sampler's guarantee
    # kept. It changes which rows share a batch, so auto turns it on only for the losses where BENCHMARKS.md
    # measured that it costs no quality (their `group_by_length` attribute: MultipleNegativesRankingLoss).
    group_by_length: bool | Literal["auto"] = "auto"
    # Texts share the rows of the forward pass (embedlab.model.Transformer.forward_packed): the embeddings
    # and loss of padded batches with almost no padding, so the same batches train faster (1.9x per step on
    # STSb, CPU). auto: wherever the model allows it (BERT, RoBERTa, XLM-RoBERTa with sdpa or eager
    # attention) and the loss has no modifier that runs its own forward (MatryoshkaLoss, AdaptiveLayerLoss);
    # true: an error where it cannot pack; false: padded batches.
    pack_sequences: bool | Literal["auto"] = "auto"
    # Several data sets (data.train as a mapping): which one each batch comes from (embedlab.data.MixtureSampler).
    # proportional, as sentence-transformers: every batch of every data set once per epoch, in a random order.
    mixture: Literal["proportional", "round_robin"] | MixtureConfig = "proportional"
    eval_steps: int | None = None  # evaluate every N steps; always at the end
    save_steps: int | None = 500  # checkpoint every N steps, to resume an interrupted run
    save_total_limit: int = 2  # checkpoints kept; older ones are deleted
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 autocast on a GPU that has it, off on CPU
    resume: bool = True  # continue from the output folder's last checkpoint if there is one
    show_progress_bar: bool = True
    # Text put before each input text, in sentence-transformers' shapes: one string for every column,
    # {column: prompt}, {data set: prompt} or {data set: {column: prompt}}; saved in the model's `prompts`
    # (see embedlab.prompts for how a mapping is read and which prompt names the model gets).
    # Its type is str | dict[str, str | dict[str, str]] | None, checked by embedlab.prompts.check_prompts:
    # typed Any here so that its one-line errors (which say what shape each key takes) are the ones shown.
    prompts: typing.Any = None

    def __post_init__(self):
        from embedlab.prompts import check_prompts  # the shape rules live with the other prompt rules

        check_prompts(self.prompts)


@dataclass
class DistributedConfig:
    workers: int | None = None  # Ray Train workers, data-parallel; None trains in this process
    use_gpu: bool = False  # one GPU per worker, NCCL between them (gloo on CPU)
    cpus_per_worker: int = 1
    # Where Ray Train keeps checkpoints: a folder, or a pyarrow URI (s3://bucket/runs, gs://...) that every
    # node can reach; default: EMBEDLAB_STORAGE_PATH, else <output_dir>/ray (one node only). The same run
    # (output folder name + run fingerprint) there resumes an interrupted run.
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
    mode: Literal["required", "optional", "off"] = "required"
    uri: str | None = None  # an MLflow server (http://host:5000) or store; default: MLFLOW_TRACKING_URI, else <output_dir>/mlflow.db
    experiment: str | None = None  # default: the output folder's name
    # a registered model name: the run's model (a sweep's: the best trial's) becomes a new version of it,
    # with the alias `champion`
    register: str | None = None
    system_metrics: bool = True  # CPU, memory, disk, network and (with nvidia-ml-py) GPU use, every 10 s


@dataclass
class EvaluatorConfig:
    data: DataSource
    name: str = ""
    type: EvaluatorName | None = None  # default: the evaluator that suits the data's format
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

    # auto: every loss that suits the data's format; on a mixture, also a mapping of data sets to auto or a list
    # (a data set left out trains with the config's loss)
    losses: list[LossSearchConfig] | Literal["auto"] | dict[str, list[LossSearchConfig] | Literal["auto"]] = "auto"
    modifiers: list[LossModifierConfig | None] = field(default_factory=list)  # options, null = none
    space: dict = field(default_factory=dict)  # dotted config key -> range, e.g. training.learning_rate
    metric: str | None = None  # default: the first evaluator's primary metric
    mode: Literal["max", "min"] | None = None  # default: what the metric's evaluator says
    num_samples: int = 8  # trials
    max_concurrent: int = 1  # trials at once
    workers_per_trial: int = 1  # 1: the in-process trainer; more: data-parallel ranks kept across trials (trial_group)
    cpus_per_trial: int | None = None  # per worker; default: the cluster's CPUs / max_concurrent / workers
    # per worker: 0 (CPU), 1, or with one worker per trial a fraction, e.g. 0.25: four trials share a GPU
    gpus_per_trial: float = 0
    scheduler: Literal["fifo", "asha"] = "fifo"  # asha: stop weak trials early, judged at each evaluation
    grace_period: int = 2  # ASHA: evaluations a trial always gets
    reduction_factor: int = 2  # ASHA: keep the best 1/reduction_factor at each rung
    seed: int = 0  # the TPE sampler's
    points_to_evaluate: list[dict] = field(default_factory=list)  # known-good trials to start from
    keep_models: int = 1  # the trained models kept: of the best trials (every trial keeps its metrics and checkpoints)


@dataclass
class DataConfig:
    train: DataSource | dict[str, DataSource]  # one data source, or several by name (a mixture)


SINGLE_DATA_SET = "train"  # the name of the one data set of a run that is not a mixture


@dataclass
class Config:
    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig | dict[str, LossConfig] = field(default_factory=LossConfig)  # one for all data sets, or one per data set
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

    @property
    def is_mixture(self) -> bool:
        return isinstance(self.data.train, dict)

    def train_sources(self) -> dict[str, DataSource]:
        """The training data sets by name; a single data source is named "train"."""
        return dict(self.per_data_set(self.data.train))

    def per_data_set(self, value):
        """What a run has per data set (its rows, format, loss) by data set name: a mixture's mapping as it
        is, a single data set's value under the name "train"."""
        return value if self.is_mixture else {SINGLE_DATA_SET: value}

    def loss_for(self, name: str) -> LossConfig:
        """The loss of a data set: its own in a loss mapping, else the one loss of every data set."""
        return self.loss[name] if isinstance(self.loss, dict) else self.loss

    def loss_names(self, with_modifiers: bool = False) -> str:
        """The losses for messages and tags: `CoSENTLoss`, or `stsb: CoSENTLoss, nli: MultipleNegativesRankingLoss`;
        `with_modifiers`: `MatryoshkaLoss(CoSENTLoss)` (the MLflow `loss` tag stays the loss's own name)."""
        def named(loss: LossConfig) -> str:
            name = loss.name
            for modifier in loss.modifiers if with_modifiers else ():
                name = f"{modifier.name}({name})"
            return name

        if not isinstance(self.loss, dict):
            return named(self.loss)
        return ", ".join(f"{name}: {named(loss)}" for name, loss in self.loss.items())


SHORTHANDS = {DataSource: "path", LossSearchConfig: "name", LossModifierConfig: "name", TrackingConfig: "mode"}  # a bare string fills this key
DEFINING_KEYS = {DataSource: "path", LossConfig: "name"}  # a mapping with this key is that section, not a mapping of names


def _shown(raw) -> str:
    """A value as the YAML that gave it: true, null, 'text', 0.0001."""
    if isinstance(raw, bool) or raw is None:
        return yaml.safe_dump(raw).split("\n")[0]
    return repr(raw)


def _shaped_like(option, raw) -> bool:
    """Whether a union's option is the one a value of this shape was meant for: a list, or a section."""
    if isinstance(raw, list):
        return typing.get_origin(option) is list
    if isinstance(raw, str):  # a name: meant for a closed set of names (`mixture: random` is a misspelt choice)
        return typing.get_origin(option) is Literal
    if isinstance(raw, dict):
        # A section when its keys are its fields or include its defining key, else a mapping of names:
        # `train: {path: a.csv}` is one data source (so is `{path: a.csv, limt: 5}`, a typo to report),
        # `train: {stsb: ..., nli: ...}` two.
        if dataclasses.is_dataclass(option):
            return set(raw) <= {f.name for f in dataclasses.fields(option)} or DEFINING_KEYS.get(option) in raw
        return option is dict or typing.get_origin(option) is dict
    return False


def _build_flag(options: list, raw, where: str):
    """A key that takes true, false or a named setting (`group_by_length: auto`)."""
    named = [value for option in options if option is not bool for value in typing.get_args(option)]
    if isinstance(raw, bool) or raw in named:
        return raw
    why = " (YAML 1.2: yes, no, on and off are text)" if str(raw).lower() in ("yes", "no", "on", "off", "y", "n") else ""
    raise EmbedlabError(f"config key '{where}' must be true, false or {' or '.join(map(str, named))}, got {_shown(raw)}{why}")


def _build(cls, raw, where: str):
    """Builds dataclass `cls` from plain YAML data, checking keys and types on the way."""
    if dataclasses.is_dataclass(cls):
        if isinstance(raw, str) and cls in SHORTHANDS:  # e.g. `train: data.csv` for `train: {path: data.csv}`
            raw = {SHORTHANDS[cls]: raw}
        if cls is TrackingConfig and raw is False:  # `tracking: false` reads as it means: no tracking
            raw = {"mode": "off"}
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
        if bool in options and len(options) > 1 and all(option is bool or typing.get_origin(option) is Literal for option in options):
            return _build_flag(options, raw, where)  # e.g. `bool | Literal["auto"]`: true, false or auto
        # Only the options the value is shaped for; a section before a mapping of names.
        shaped = [option for option in options if _shaped_like(option, raw)]
        options = [option for option in shaped if dataclasses.is_dataclass(option)] or shaped or options
        errors = []
        for option in options:  # the first type that fits, e.g. a class label that is str or int
            try:
                return _build(option, raw, where)
            except EmbedlabError as error:
                errors.append((option, error))
        # The error of the option the value is shaped for (a bad entry in a list, say), else the last's.
        raise next((error for option, error in errors if _shaped_like(option, raw)), errors[-1][1])
    if origin is Literal:
        allowed = typing.get_args(cls)
        if isinstance(raw, str) and raw in allowed:
            return raw
        lowered = {str(value).lower(): value for value in allowed}
        close = []
        if isinstance(raw, str) and raw:  # a close spelling, else a shorter or longer form (maximize: max)
            text = raw.lower()
            close = difflib.get_close_matches(text, lowered, n=1) or [v for v in lowered if text.startswith(v) or v.startswith(text)][:1]
        hint = f" (did you mean '{lowered[close[0]]}'?)" if close else ""
        raise EmbedlabError(f"config key '{where}' must be one of {', '.join(allowed)}, got {_shown(raw)}{hint}")
    if origin is list:
        if not isinstance(raw, list):
            raise EmbedlabError(f"config key '{where}' must be a list")
        (item_type,) = typing.get_args(cls)
        return [_build(item_type, item, f"{where}.{index}") for index, item in enumerate(raw)]
    if cls is dict or origin is dict:
        if not isinstance(raw, dict):
            raise EmbedlabError(f"config key '{where}' must be a mapping")
        value_type = typing.get_args(cls)[1] if typing.get_args(cls) else None
        if value_type is None or value_type is typing.Any:
            return dict(raw)
        return {key: _build(value_type, value, f"{where}.{key}") for key, value in raw.items()}
    if cls is bool and not isinstance(raw, bool):
        why = " (YAML 1.2: yes, no, on and off are text)" if str(raw).lower() in ("yes", "no", "on", "off", "y", "n") else ""
        raise EmbedlabError(f"config key '{where}' must be true or false, got {_shown(raw)}{why}")
    if cls is str and isinstance(raw, int | float) and not isinstance(raw, bool):
        # e.g. `name: 1e-4` or `experiment: 2024`, which YAML reads as numbers
        raise EmbedlabError(f"config key '{where}' must be a string, got the number {raw!r}: put the value in quotes")
    if cls is str and not isinstance(raw, str):
        raise EmbedlabError(f"config key '{where}' must be a string, got {_shown(raw)}")
    if cls is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if cls is int and isinstance(raw, float) and raw.is_integer():  # max_steps: 1e4
        return int(raw)
    if cls in (int, float) and not (isinstance(raw, cls) and not isinstance(raw, bool)):
        raise EmbedlabError(f"config key '{where}' must be {cls.__name__}, got {_shown(raw)}")
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
    try:
        parsed = load_yaml(value) if value else None  # the same YAML 1.2 scalars as a config file
    except yaml.YAMLError as error:
        raise EmbedlabError(f"override '{override}': the value is not valid YAML: {str(error).splitlines()[0]}") from None
    glued = _glued_key(parsed)
    if glued is not None:
        raise EmbedlabError(f"override '{override}': '{glued}' reads as one key: YAML needs a space after ':' ({{a: 1}}, not {{a:1}})")
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise EmbedlabError(f"override '{key}': '{last}' is not an index of that list")
        node[int(last)] = parsed
    else:
        node[last] = parsed


def _glued_key(value) -> str | None:
    """A mapping key with a ':' inside, as `{a:1}` gives (YAML reads `a:1` as one plain key with no value)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if isinstance(key, str) and ":" in key and inner is None:
                return key
            glued = _glued_key(inner)
            if glued is not None:
                return glued
    if isinstance(value, list):
        return next((glued for item in value if (glued := _glued_key(item)) is not None), None)
    return None


USER_IMPORT_PATHS: list[str] = []  # folders load_config added to sys.path for users' own modules


def load_config(path: str | Path, overrides: list[str] = (), smoke_test: bool = False) -> Config:
    path = Path(path)
    if not path.is_file():
        raise EmbedlabError(f"config file '{path}' does not exist")
    try:
        raw = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise EmbedlabError(f"config file '{path}' is not valid YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise EmbedlabError(f"config file '{path}' must hold a mapping of keys")
    raw.setdefault("output_dir", f"runs/{path.stem}")
    # A user's own loss module (loss.name: my_losses.MyLoss) beside the config or in the working folder
    # imports without PYTHONPATH; appended, so it never shadows an installed module. Ray workers append
    # the same folders (embedlab.ray_train).
    for folder in (str(path.resolve().parent), str(Path.cwd())):
        if folder not in USER_IMPORT_PATHS:
            USER_IMPORT_PATHS.append(folder)
        if folder not in sys.path:
            sys.path.append(folder)
    for override in overrides:
        apply_override(raw, override)
    config = _build(Config, raw, "")
    if smoke_test:
        config = smoke_test_config(config)
    return config


SMOKE_TEST_BATCH_SIZE = 8


def smoke_test_config(config: Config) -> Config:
    """The same run, cut to a few steps on a few rows: checks that everything is wired up, in seconds."""
    config = copy.deepcopy(config)
    config.training.max_steps = 4
    config.training.eval_steps = None
    config.training.save_steps = 2
    # 64 rows can shrink to a dozen in a conversion (SICK pairs -> triplets); 8 still batches them.
    config.training.batch_size = min(config.training.batch_size, SMOKE_TEST_BATCH_SIZE)
    for source in config.train_sources().values():
        source.limit = min(source.limit or 10**9, 64)
    for evaluator in config.evaluators + config.test_evaluators:
        evaluator.data.limit = min(evaluator.data.limit or 10**9, 64)
    config.output_dir = str(Path(config.output_dir).with_name(Path(config.output_dir).name + "-smoke"))
    if config.search is not None:  # a sweep: 2 trials, each evaluated twice (what ASHA needs to act)
        config.search.num_samples = min(config.search.num_samples, 2)
        config.search.grace_period = 1
        config.training.eval_steps = 2
        if "training.batch_size" in config.search.space:
            config.search.space["training.batch_size"] = {"choice": [SMOKE_TEST_BATCH_SIZE]}
        for point in config.search.points_to_evaluate:
            if "training.batch_size" in point:
                point["training.batch_size"] = SMOKE_TEST_BATCH_SIZE
    return config
