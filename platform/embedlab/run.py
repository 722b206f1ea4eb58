"""From a config to a trained model: validate everything first, then train and report.

`prepare()` loads data, reads its format, checks the loss against it, builds evaluators and the model,
and writes nothing; only `train()` creates the output folder. A bad input therefore fails in seconds,
with one line, and leaves no half-written run behind.
"""

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from embedlab import tracking
from embedlab.config import SINGLE_DATA_SET, Config, MixtureConfig, TrainingConfig, dump_yaml
from embedlab.data import load_with_format
from embedlab.errors import EmbedlabError
from embedlab.evaluation import build_evaluator
from embedlab.formats import DetectedFormat
from embedlab.identity import check_output_folder, fingerprint, run_identity, start_over, write_run_file
from embedlab.losses import build_loss, check_format, config_of, get_loss_class
from embedlab.model import EmbeddingModel, resolve_model_path
from embedlab.model_card import write_model_card
from embedlab.prompts import resolve_prompts, store_prompts
from embedlab.trainer import LossMixture, Trainer, make_sampler, packs_sequences, set_seed


@dataclass
class Loaded:
    """What a run reads from its data files: the training data, its format and the evaluators. A Ray
    worker receives it from the driver (through Ray's object store) instead of reading any file.
    A mixture's `dataset` and `detected` are mappings by data set name."""

    dataset: object
    detected: DetectedFormat | dict[str, DetectedFormat]
    evaluators: list
    test_evaluators: list


def load_inputs(config: Config) -> Loaded:
    check_mixture(config)
    datasets, formats = {}, {}
    for name, source in config.train_sources().items():
        where = f"data.train.{name}" if config.is_mixture else "data.train"
        datasets[name], formats[name] = load_with_format(source, where=where)
        try:
            check_format(get_loss_class(config.loss_for(name).name), formats[name])
        except EmbedlabError as error:
            raise EmbedlabError(f"data set '{name}': {error}" if config.is_mixture else str(error)) from None
    dataset, detected = (datasets, formats) if config.is_mixture else (datasets[SINGLE_DATA_SET], formats[SINGLE_DATA_SET])
    resolve_model_path(config.model.name)  # a wrong path fails before slower work
    evaluators = [build_evaluator(entry, where=f"evaluators.{index}") for index, entry in enumerate(config.evaluators)]
    test_evaluators = [build_evaluator(entry, where=f"test_evaluators.{index}") for index, entry in enumerate(config.test_evaluators)]
    return Loaded(dataset, detected, evaluators, test_evaluators)


@dataclass
class Prepared:
    config: Config
    dataset: object
    detected: DetectedFormat
    loss: object  # a mixture's: a LossMixture of each data set's loss
    evaluators: list
    test_evaluators: list
    identity: dict  # what the run's result depends on (embedlab.identity)
    prompts: dict  # data set -> column -> prompt (embedlab.prompts.resolve_prompts)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.identity)

    @property
    def model(self) -> EmbeddingModel:
        return self.loss.model


def prepare(config: Config, device: str | None = None, identity: dict | None = None, loaded: Loaded | None = None, model: EmbeddingModel | None = None) -> Prepared:
    """Checks and loads everything a run needs, writing nothing. A Ray worker passes what the driver
    `loaded` and the `identity` it computed (and checked against the output folder); a sweep's trial passes
    the inputs and a fresh copy of config.model as loaded (embedlab.trial_cache)."""
    loaded = loaded or load_inputs(config)
    dataset, detected = loaded.dataset, loaded.detected
    check_distributed(config)
    if model is None:
        model = EmbeddingModel(config.model.name, device=device, trust_remote_code=config.model.trust_remote_code)
    if config.model.max_seq_length:
        model.max_seq_length = config.model.max_seq_length
    if config.model.pooling:
        model.set_pooling(config.model.pooling)
    if config.model.include_prompt is not None:
        model.set_include_prompt(config.model.include_prompt)
    formats = config.per_data_set(detected)
    prompts = resolve_prompts(config.training.prompts, list(formats), {name: part.input_columns for name, part in formats.items()})
    store_prompts(model, config.training.prompts, prompts)  # the trained model encodes with them by name
    set_seed(config.training.seed)  # loss heads (e.g. a classifier) start the same on every run
    if config.is_mixture:
        loss = LossMixture({name: _build_loss(config, name, model, detected[name]) for name in detected}).to(model.device)
    else:
        loss = _build_loss(config, SINGLE_DATA_SET, model, detected).to(model.device)
    check_training(config, dataset, detected, loss)
    if identity is None:
        identity = run_identity(config, loss)
        if config.training.resume:  # resume off starts over in the folder, whatever was there
            check_output_folder(Path(config.output_dir), identity)
    return Prepared(config, dataset, detected, loss, loaded.evaluators, loaded.test_evaluators, identity, prompts)


def _build_loss(config: Config, name: str, model, detected):
    spec = config.loss_for(name)
    return build_loss(spec.name, model, spec.params, detected, spec.modifiers)


def check_mixture(config: Config) -> None:
    """A loss mapping and mixture weights name the data sets of data.train, and only those."""
    names = list(config.train_sources())
    mixture = config.training.mixture
    if not config.is_mixture:
        if isinstance(config.loss, dict):
            raise EmbedlabError(f"loss is a mapping of data set names ({', '.join(config.loss)}), but data.train is one data source: give one loss, or data.train as a mapping of those names")
        if isinstance(mixture, MixtureConfig):
            raise EmbedlabError("training.mixture weights or temperature need several data sets: give data.train as a mapping of names to data sources")
        return
    if isinstance(config.loss, dict):
        unknown, missing = [key for key in config.loss if key not in names], [name for name in names if name not in config.loss]
        if unknown or missing:
            what = f"names data set(s) {', '.join(unknown)} that data.train does not have" if unknown else f"has no loss for data set(s) {', '.join(missing)}"
            raise EmbedlabError(f"the loss mapping {what}: data.train's data sets are {', '.join(names)}")
    if isinstance(mixture, MixtureConfig):
        if (mixture.weights is None) == (mixture.temperature is None):
            raise EmbedlabError("training.mixture takes either weights: {data set: weight, ...} or temperature: T, not both or neither")
        if mixture.temperature is not None and not mixture.temperature > 0:
            raise EmbedlabError(f"training.mixture.temperature must be > 0, got {mixture.temperature}")
        if mixture.weights is not None:
            if sorted(mixture.weights) != sorted(names):
                raise EmbedlabError(f"training.mixture.weights names {', '.join(mixture.weights)}: give a weight to each of data.train's data sets, {', '.join(names)}")
            if any(not weight >= 0 for weight in mixture.weights.values()) or not sum(mixture.weights.values()) > 0:
                raise EmbedlabError(f"training.mixture.weights must be >= 0 with a positive sum, got {mixture.weights}")


def describe_data(config: Config, detected) -> str:
    """One line per run: the format and rows, of each data set in a mixture."""
    if not config.is_mixture:
        return f"{detected.describe()}, {detected.num_rows} rows"
    return "; ".join(f"{name}: {part.describe()}, {part.num_rows} rows" for name, part in detected.items())


def format_key(config: Config, detected) -> str:
    """The data format's key; a mixture's, e.g. `mixture(pair_score, anchor_positive_pairs)`."""
    if not config.is_mixture:
        return detected.format.key
    return f"mixture({', '.join(part.format.key for part in detected.values())})"


def conversion_counts(config: Config, detected) -> dict:
    """What the training data's conversions counted (e.g. `mining_anchors_with_too_few_negatives`); a
    mixture's per data set (`mining_anchors_with_too_few_negatives/<name>`)."""
    if not config.is_mixture:
        return dict(detected.conversion_counts)
    return {f"{key}/{name}": value for name, part in detected.items() for key, value in part.conversion_counts.items()}


def check_training(config: Config, dataset, detected, loss) -> None:
    """What would otherwise fail (or never end) once training started: step counts, batch sizes, the sampler."""
    args, workers = config.training, config.distributed.workers or 1
    for key in ("batch_size", "max_steps", "eval_steps", "save_steps", "epochs", "save_total_limit"):
        value = getattr(args, key)
        if value is not None and value < 1:
            hint = {"max_steps": ": leave it out to train for training.epochs", "eval_steps": ": leave it out to evaluate at the end only", "save_steps": ": leave it out to save no checkpoints"}.get(key, "")
            raise EmbedlabError(f"training.{key} must be at least 1, got {value}{hint}")
    if args.learning_rate <= 0:
        raise EmbedlabError(f"training.learning_rate must be > 0, got {args.learning_rate}")
    if not 0 <= args.warmup_ratio <= 1:
        raise EmbedlabError(f"training.warmup_ratio must be within [0, 1] (a share of the steps), got {args.warmup_ratio}")
    if args.max_grad_norm < 0:
        raise EmbedlabError(f"training.max_grad_norm must be >= 0 (0 turns clipping off), got {args.max_grad_norm}")
    for name, rows in (dataset.items() if config.is_mixture else [(None, dataset)]):
        if args.batch_size * workers > len(rows):
            per_worker = f" x {workers} workers = {args.batch_size * workers}" if workers > 1 else ""
            which = f"data set '{name}'" if name else "the data"
            raise EmbedlabError(
                f"training.batch_size {args.batch_size}{per_worker} is larger than {which} ({len(rows)} rows): "
                f"use a batch of at most {len(rows) // workers}{' per worker' if workers > 1 else ''}"
            )
    make_sampler(args, loss, dataset, detected, workers)  # the sampler's constructor checks its own needs
    packs_sequences(args, loss)


def check_distributed(config: Config) -> None:
    distributed = config.distributed
    if distributed.workers is not None and distributed.workers < 1:
        raise EmbedlabError(f"distributed.workers must be at least 1, got {distributed.workers}; leave it out to train in this process")
    if distributed.use_gpu and distributed.workers is None:
        raise EmbedlabError("--gpu (distributed.use_gpu) needs --workers N: GPU training runs on Ray Train workers")
    if distributed.cpus_per_worker < 1:
        raise EmbedlabError(f"distributed.cpus_per_worker must be at least 1, got {distributed.cpus_per_worker}")


def evaluate_all(evaluators: list, model, output_path: Path | None = None, steps: int = -1) -> dict[str, float]:
    metrics = {}
    for evaluator in evaluators:
        metrics.update(evaluator(model, output_path=output_path, steps=steps))
    return metrics


def train(
    prepared: Prepared,
    callbacks=(),
    evaluate_before: bool = True,
    tracking_parent: dict | None = None,
    run_name: str | None = None,
    run_key: str | None = None,
    world_size: int = 1,
) -> dict:
    """Trains; returns {"before": test metrics, "after": test metrics, "final": dev metrics, "step", "output_dir"}.
    `evaluate_before=False` skips the test evaluators on the untrained model (a sweep's trials);
    `tracking_parent` (a sweep's parent run) nests this run's MLflow run under it. `world_size` > 1: this
    process is rank 0 of a process group whose other ranks train `make_trainer`'s Trainer alongside (a
    sweep's trial group, embedlab.trial_group)."""
    config = prepared.config
    uri = tracking.resolve_uri(config, tracking_parent)  # an unreachable server stops us here
    if not config.training.resume:
        start_over(Path(config.output_dir))
    configured = {} if config.is_mixture else config.loss.params  # a mixture's LossMixture has its own config dict
    loss_line = f"{config.loss_names(with_modifiers=True)} {config_of(prepared.loss, configured)}"
    tracker, before = open_run(prepared, uri, loss_line, evaluate_before, tracking_parent, run_name, run_key)
    if tracker is not None:
        callbacks = [tracking.TrackingCallback(tracker), *callbacks]  # recorded before Tune may stop the trial
    with failing_run(tracker):
        trainer = make_trainer(prepared, callbacks, rank=0, world_size=world_size)
        final = trainer.train()
        return close_run(prepared, prepared.model, tracker, before, final, trainer.global_step)


def make_trainer(prepared: Prepared, callbacks=(), rank: int = 0, world_size: int = 1, args: TrainingConfig | None = None, output_dir: Path | None = None) -> Trainer:
    """The run's Trainer (rank `rank` of `world_size`), with the config's training settings unless `args`
    are given. Its output goes to the run's output folder, which every rank shares, unless `output_dir` is a
    folder of this rank's own (a Ray Train worker's, whose checkpoints Ray Train merges)."""
    return Trainer(
        prepared.loss,
        prepared.dataset,
        prepared.detected,
        args or prepared.config.training,
        output_dir or Path(prepared.config.output_dir),
        evaluators=prepared.evaluators,
        callbacks=callbacks,
        rank=rank,
        world_size=world_size,
        identity=prepared.identity,
        prompts=prepared.prompts,
        shared_output_dir=output_dir is None,
    )


@contextmanager
def failing_run(tracker: tracking.Tracker | None):
    """A run that fails, or is interrupted, is marked so in MLflow, never left RUNNING."""
    try:
        yield
    except BaseException as error:
        tracking.fail_run(tracker, error)
        raise


# --- a run's life around its training, the same in this process and on Ray Train workers ---------------
def open_run(prepared: Prepared, uri: str | None, loss_line: str, evaluate_before: bool, tracking_parent: dict | None, run_name: str | None, run_key: str | None) -> tuple[tracking.Tracker | None, dict]:
    """Creates the output folder with the resolved config, opens the MLflow run and records the test
    metrics of the untrained model; returns the tracker (None when tracking is off) and those metrics."""
    config = prepared.config
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_run_file(output_dir, prepared.identity)
    (output_dir / "config.yaml").write_text(dump_yaml(tracking.redact_config(config.to_dict())))
    print(f"Data: {describe_data(config, prepared.detected)}")
    print(f"Loss: {loss_line}")
    primary = prepared.evaluators[0].primary_metric if prepared.evaluators else None
    # The fingerprint in the key: a changed config is a new MLflow run, never more metrics in the old one.
    key = f"{run_key or output_dir.resolve()}@{prepared.fingerprint}"
    tracker = tracking.start_run(config, prepared.loss, format_key(config, prepared.detected), primary, uri, tracking_parent, run_name, key)
    with failing_run(tracker):
        before = evaluate_all(prepared.test_evaluators, prepared.model, output_dir / "eval", steps=0) if evaluate_before else {}
    if tracker is not None:
        tracker.log_metrics({**before, **conversion_counts(config, prepared.detected)}, step=0)
    return tracker, before


def close_run(prepared: Prepared, trained: EmbeddingModel, tracker: tracking.Tracker | None, before: dict, final: dict, step: int) -> dict:
    """Evaluates the trained model on the test evaluators, writes the model card, records and closes the run."""
    config = prepared.config
    output_dir = Path(config.output_dir)
    after = evaluate_all(prepared.test_evaluators, trained, output_dir / "eval", steps=step)
    results = {"before": before, "after": after, "final": final, "step": step, "output_dir": str(output_dir)}
    if (output_dir / "model").is_dir():  # a sweep keeps only its best trials' models
        write_model_card(output_dir / "model", config, prepared.loss, prepared.detected, results)
    tracking.finish_run(tracker, output_dir, after, step)
    return results
