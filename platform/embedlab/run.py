"""From a config to a trained model: validate everything first, then train and report.

`prepare()` loads data, reads its format, checks the loss against it, builds evaluators and the model,
and writes nothing; only `train()` creates the output folder. A bad input therefore fails in seconds,
with one line, and leaves no half-written run behind.
"""

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from embedlab import tracking
from embedlab.config import Config, dump_yaml
from embedlab.data import load_with_format
from embedlab.errors import EmbedlabError
from embedlab.evaluation import build_evaluator
from embedlab.formats import DetectedFormat
from embedlab.identity import check_output_folder, fingerprint, run_identity, start_over, write_run_file
from embedlab.losses import build_loss, check_format, get_loss_class
from embedlab.model import EmbeddingModel, resolve_model_path
from embedlab.model_card import write_model_card
from embedlab.trainer import Trainer, make_sampler, set_seed


@dataclass
class Loaded:
    """What a run reads from its data files: the training data, its format and the evaluators. A Ray
    worker receives it from the driver (through Ray's object store) instead of reading any file."""

    dataset: object
    detected: DetectedFormat
    evaluators: list
    test_evaluators: list


def load_inputs(config: Config) -> Loaded:
    dataset, detected = load_with_format(config.data.train, where="data.train")
    check_format(get_loss_class(config.loss.name), detected)
    resolve_model_path(config.model.name)  # a wrong path fails before slower work
    evaluators = [build_evaluator(entry, where=f"evaluators.{index}") for index, entry in enumerate(config.evaluators)]
    test_evaluators = [build_evaluator(entry, where=f"test_evaluators.{index}") for index, entry in enumerate(config.test_evaluators)]
    return Loaded(dataset, detected, evaluators, test_evaluators)


@dataclass
class Prepared:
    config: Config
    dataset: object
    detected: DetectedFormat
    loss: object
    evaluators: list
    test_evaluators: list
    identity: dict  # what the run's result depends on (embedlab.identity)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.identity)

    @property
    def model(self) -> EmbeddingModel:
        return self.loss.model


def prepare(config: Config, device: str | None = None, identity: dict | None = None, loaded: Loaded | None = None) -> Prepared:
    """Checks and loads everything a run needs, writing nothing. A Ray worker passes what the driver
    `loaded` and the `identity` it computed (and checked against the output folder)."""
    loaded = loaded or load_inputs(config)
    dataset, detected = loaded.dataset, loaded.detected
    check_distributed(config)
    model = EmbeddingModel(config.model.name, device=device, trust_remote_code=config.model.trust_remote_code)
    if config.model.max_seq_length:
        model.max_seq_length = config.model.max_seq_length
    if config.model.pooling:
        model.set_pooling(config.model.pooling)
    set_seed(config.training.seed)  # loss heads (e.g. a classifier) start the same on every run
    loss = build_loss(config.loss.name, model, config.loss.params, detected, config.loss.modifiers).to(model.device)
    check_training(config, dataset, detected, loss)
    if identity is None:
        identity = run_identity(config, loss)
        if config.training.resume:  # resume off starts over in the folder, whatever was there
            check_output_folder(Path(config.output_dir), identity)
    return Prepared(config, dataset, detected, loss, loaded.evaluators, loaded.test_evaluators, identity)


def check_training(config: Config, dataset, detected, loss) -> None:
    """What would otherwise fail (or never end) once training started: step counts, batch sizes, the sampler."""
    args, workers = config.training, config.distributed.workers or 1
    for key in ("batch_size", "max_steps", "eval_steps", "save_steps", "epochs", "save_total_limit"):
        value = getattr(args, key)
        if value is not None and value < 1:
            hint = {"max_steps": ": leave it out to train for training.epochs", "eval_steps": ": leave it out to evaluate at the end only", "save_steps": ": leave it out to save no checkpoints"}.get(key, "")
            raise EmbedlabError(f"training.{key} must be at least 1, got {value}{hint}")
    if args.learning_rate <= 0 or not 0 <= args.warmup_ratio <= 1 or args.max_grad_norm < 0:
        raise EmbedlabError(
            f"training.learning_rate must be > 0 (got {args.learning_rate}), warmup_ratio within [0, 1] (got {args.warmup_ratio}), "
            f"max_grad_norm >= 0 (got {args.max_grad_norm}; 0 turns clipping off)"
        )
    if args.batch_size * workers > len(dataset):
        per_worker = f" x {workers} workers = {args.batch_size * workers}" if workers > 1 else ""
        raise EmbedlabError(
            f"training.batch_size {args.batch_size}{per_worker} is larger than the data ({len(dataset)} rows): "
            f"use a batch of at most {len(dataset) // workers}{' per worker' if workers > 1 else ''}"
        )
    make_sampler(args, loss, dataset, detected, workers)  # the sampler's constructor checks its own needs


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


def train(prepared: Prepared, callbacks=(), evaluate_before: bool = True, tracking_parent: dict | None = None, run_name: str | None = None, run_key: str | None = None) -> dict:
    """Trains; returns {"before": test metrics, "after": test metrics, "final": dev metrics, "step", "output_dir"}.
    `evaluate_before=False` skips the test evaluators on the untrained model (a sweep's trials);
    `tracking_parent` (a sweep's parent run) nests this run's MLflow run under it."""
    config = prepared.config
    uri = tracking.resolve_uri(config, tracking_parent)  # an unreachable server stops us here
    if not config.training.resume:
        start_over(Path(config.output_dir))
    loss_line = f"{config.loss.name} {getattr(prepared.loss, 'get_config_dict', dict)()}"
    tracker, before = open_run(prepared, uri, loss_line, evaluate_before, tracking_parent, run_name, run_key)
    if tracker is not None:
        callbacks = [tracking.TrackingCallback(tracker), *callbacks]  # recorded before Tune may stop the trial
    with failing_run(tracker):
        trainer = Trainer(
            prepared.loss,
            prepared.dataset,
            prepared.detected,
            config.training,
            Path(config.output_dir),
            evaluators=prepared.evaluators,
            callbacks=callbacks,
            identity=prepared.identity,
        )
        final = trainer.train()
        return close_run(prepared, prepared.model, tracker, before, final, trainer.global_step)


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
    print(f"Data: {prepared.detected.describe()}, {prepared.detected.num_rows} rows")
    print(f"Loss: {loss_line}")
    primary = prepared.evaluators[0].primary_metric if prepared.evaluators else None
    # The fingerprint in the key: a changed config is a new MLflow run, never more metrics in the old one.
    key = f"{run_key or output_dir.resolve()}@{prepared.fingerprint}"
    tracker = tracking.start_run(config, prepared.loss, prepared.detected.format.key, primary, uri, tracking_parent, run_name, key)
    with failing_run(tracker):
        before = evaluate_all(prepared.test_evaluators, prepared.model, output_dir / "eval", steps=0) if evaluate_before else {}
    if tracker is not None:
        tracker.log_metrics(before, step=0)
    return tracker, before


def close_run(prepared: Prepared, trained: EmbeddingModel, tracker: tracking.Tracker | None, before: dict, final: dict, step: int) -> dict:
    """Evaluates the trained model on the test evaluators, writes the model card, records and closes the run."""
    config = prepared.config
    output_dir = Path(config.output_dir)
    after = evaluate_all(prepared.test_evaluators, trained, output_dir / "eval", steps=step)
    results = {"before": before, "after": after, "final": final, "step": step, "output_dir": str(output_dir)}
    write_model_card(output_dir / "model", config, prepared.loss, prepared.detected.describe(), results)
    tracking.finish_run(tracker, output_dir, after, step)
    return results
