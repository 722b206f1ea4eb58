"""Training on Ray Train workers: `embedlab train CONFIG --workers N [--gpu]`.

The driver checks everything first (config, data, loss, storage, cluster resources), then runs a Ray
Train V2 `TorchTrainer` whose `train_fn_per_worker` runs the same `Trainer` as in-process training,
data-parallel over the process group Ray Train sets up (gloo on CPU, NCCL on GPU). Each evaluation
reports its metrics and a checkpoint to Ray Train: a failed worker restarts the group from the last
checkpoint (up to `max_failures` times), and running again with the same run name and storage resumes
an interrupted run. The last checkpoint also holds the model folder, which the driver copies to
`<output_dir>/model`, so the model is reachable from any storage (s3://, gs://, a shared folder).
"""

import dataclasses
import json
import os
import shutil
import socket
import sys
import sysconfig
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.fs
import torch.distributed
from datasets.table import InMemoryTable

from embedlab import run, tracking
from embedlab.config import SINGLE_DATA_SET, Config, DistributedConfig
from embedlab.errors import EmbedlabError
from embedlab.formats import DetectedFormat
from embedlab.identity import last_fingerprint, start_over
from embedlab.losses import CATALOGUE, get_loss_class
from embedlab.model import EmbeddingModel
from embedlab.trainer import Trainer

# Rank 0's MLflow fallback store (used if the tracking server fails mid-run) lives in the worker's own
# folder, on whichever node it runs, and comes back to the driver's output folder with the results.
WORKER_FALLBACK = "worker-mlflow-fallback"
RESULT_FILES = ("model", "results.json", "eval", WORKER_FALLBACK)  # what the last checkpoint carries back to the driver
WORKER_ERROR = "embedlab_error"  # carries a worker's EmbedlabError back to the driver, as its return value


# --- the driver ---------------------------------------------------------------------------------
def train_on_ray(prepared: run.Prepared, evaluate_before: bool = True) -> dict:
    """`run.train()` on Ray Train workers; returns the same dict. The driver opens the MLflow run and
    records params and artifacts; rank 0 records the metrics into it."""
    import ray
    import ray.train

    config = prepared.config
    distributed = config.distributed
    uri = tracking.resolve_uri(config)  # before Ray starts: an unreachable server stops us here
    storage_path = storage_location(config)
    connect(distributed.address)
    check_multi_node(config, uri, count_nodes())
    if distributed.check_resources:
        check_resources(distributed)
    check_storage(storage_path)

    ray_run_name = run_name_in_storage(config.output_dir, prepared.fingerprint)
    if not config.training.resume:  # start over: this run's and the folder's previous run's checkpoints go
        previous = last_fingerprint(Path(config.output_dir))
        for name in {ray_run_name, *([run_name_in_storage(config.output_dir, previous)] if previous else [])}:
            delete_run(storage_path, name)
        start_over(Path(config.output_dir))
    loss_line = f"{config.loss_names(with_modifiers=True)} on {distributed.workers} Ray Train worker(s), storage {storage_path}/{ray_run_name}"
    tracker, before = run.open_run(prepared, uri, loss_line, evaluate_before, tracking_parent=None, run_name=None, run_key=None)
    # Ray Train's controller polls its workers every 2 s by default, and a finished run needs two polls
    # (one drains the last report, one sees the end): about 4 s of every run spent waiting. Its workers
    # and controller inherit the driver's setting.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    with run.failing_run(tracker):
        shipment = ray.put(pack_shipment(prepared))
        trainer = torch_trainer(prepared, tracker, storage_path, ray_run_name, shipment)
        try:
            result = trainer.fit()
        except ray.train.TrainingFailedError as error:
            raise EmbedlabError(
                f"training failed on the Ray workers after {distributed.max_failures} restart(s): {_first_line(error)}; "
                f"rerun the same command to resume from the last checkpoint in {storage_path}/{ray_run_name}"
            ) from None
        if isinstance(result.return_value, dict) and WORKER_ERROR in result.return_value:  # not worth a retry
            raise EmbedlabError(result.return_value[WORKER_ERROR])
        output_dir = Path(config.output_dir)
        final = {key: value for key, value in result.metrics.items() if key != "step"}
        with result.checkpoint.as_directory() as folder:
            copy_files(RESULT_FILES, Path(folder), output_dir)
            # Only the test evaluators use the trained model here.
            trained = EmbeddingModel(str(Path(folder) / "model"), device=str(prepared.model.device)) if prepared.test_evaluators else None
            return run.close_run(prepared, trained, tracker, before, final, result.metrics["step"])


def torch_trainer(prepared: run.Prepared, tracker, storage_path: str, ray_run_name: str, shipment):
    """The TorchTrainer of a run: its workers, checkpoint policy (scored by the first evaluator), restarts."""
    import ray.train
    from ray.train.torch import TorchTrainer

    config, distributed = prepared.config, prepared.config.distributed
    scored_by = prepared.evaluators[0] if prepared.evaluators else None

    resources = {"CPU": distributed.cpus_per_worker, **({"GPU": 1} if distributed.use_gpu else {})}
    return TorchTrainer(
        train_fn_per_worker,
        train_loop_config={
            "config": config.to_dict(),
            "identity": prepared.identity,
            "tracking": tracker.location() if tracker else None,
            "shipment": shipment,  # an object ref: every worker fetches the run's inputs from the object store
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=distributed.workers, use_gpu=distributed.use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=ray_run_name,
            storage_path=storage_path,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=distributed.num_to_keep,
                checkpoint_score_attribute=scored_by.primary_metric if scored_by else None,
                checkpoint_score_order="max" if scored_by is None or scored_by.greater_is_better else "min",
            ),
            failure_config=ray.train.FailureConfig(max_failures=distributed.max_failures),
        ),
    )


def run_name_in_storage(output_dir: str, fingerprint: str) -> str:
    """The Ray Train run folder in storage: the output folder's name and the run's fingerprint, so a changed
    config never resumes (or, with resume off, deletes) another run's checkpoints."""
    return f"{Path(output_dir).resolve().name}-{fingerprint}"


def copy_files(names, source: Path, target: Path) -> None:
    """Copies the named files and folders that exist in `source` into `target`."""
    for name in names:
        if (source / name).is_dir():
            shutil.copytree(source / name, target / name, dirs_exist_ok=True)
        elif (source / name).exists():
            shutil.copy(source / name, target / name)


STORAGE_ENV = "EMBEDLAB_STORAGE_PATH"  # a cluster's shared storage, set once for every job (cluster.yaml)


def storage_location(config: Config) -> str:
    return config.distributed.storage_path or os.environ.get(STORAGE_ENV) or str(Path(config.output_dir).resolve() / "ray")


def _filesystem(storage_path: str) -> tuple[pyarrow.fs.FileSystem, str]:
    if "://" not in storage_path:
        return pyarrow.fs.LocalFileSystem(), str(Path(storage_path).resolve())
    return pyarrow.fs.FileSystem.from_uri(storage_path)


def check_storage(storage_path: str) -> None:
    """Writes and deletes a small file there, so a bad path fails now and not at the first checkpoint.
    A local folder that does not exist yet is not created: its nearest existing parent is probed."""
    try:
        if "://" in storage_path:
            filesystem, root = pyarrow.fs.FileSystem.from_uri(storage_path)
            filesystem.create_dir(root, recursive=True)
        else:
            filesystem, root = pyarrow.fs.LocalFileSystem(), Path(storage_path).resolve()
            while not root.exists():
                root = root.parent
            root = str(root)
        probe = f"{root}/.embedlab-write-check-{uuid.uuid4().hex}"
        with filesystem.open_output_stream(probe) as stream:
            stream.write(b"ok")
        filesystem.delete_file(probe)
    except Exception as error:  # each filesystem raises its own kind (OSError, ArrowInvalid, ...)
        raise EmbedlabError(
            f"storage path '{storage_path}' cannot be written ({_first_line(error)}): set distributed.storage_path "
            "to a writable folder, or an s3:// / gs:// URI with credentials in the environment"
        ) from None


def delete_run(storage_path: str, run_name: str) -> None:
    filesystem, root = _filesystem(storage_path)
    if filesystem.get_file_info(f"{root}/{run_name}").type != pyarrow.fs.FileType.NotFound:
        filesystem.delete_dir(f"{root}/{run_name}")


def count_nodes() -> int:
    import ray

    return sum(1 for node in ray.nodes() if node["Alive"])


def check_multi_node(config: Config, tracking_uri: str | None, nodes: int) -> None:
    """On a cluster of several nodes a worker may run on another machine: it can reach neither a path on
    this one nor an MLflow store that is a file here. Refused up front, in one line, saying what to set."""
    if nodes < 2:
        return
    if config.distributed.storage_path is None and not os.environ.get(STORAGE_ENV):
        raise EmbedlabError(
            f"this Ray cluster has {nodes} nodes, and checkpoints would go to {storage_location(config)}, a folder on this "
            f"machine only: set distributed.storage_path (or {STORAGE_ENV}) to an s3:// / gs:// URI or a folder every node mounts"
        )
    check_tracking_for_nodes(tracking_uri, nodes)


def check_tracking_for_nodes(tracking_uri: str | None, nodes: int) -> None:
    """A worker on another node cannot record into an MLflow store that is a file on this one (a SQLite
    file, even on a folder every node mounts, is not made for writers on several machines)."""
    if nodes > 1 and tracking_uri is not None and not tracking_uri.startswith(("http://", "https://", "databricks")):
        raise EmbedlabError(
            f"this Ray cluster has {nodes} nodes, and MLflow at {tracking.redact(tracking_uri)} is a store on this machine only: "
            "set tracking.uri (or MLFLOW_TRACKING_URI) to a tracking server, or `tracking: off`"
        )


def check_job_output_dir(output_dir: str) -> None:
    """Inside `ray job submit --working-dir`, the job runs in a temporary copy of that folder, which
    `ray stop` deletes: a relative output_dir would vanish with it. Refused in one line."""
    job_config = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")
    if (job_config.get("runtime_env") or {}).get("working_dir") and not Path(output_dir).is_absolute():
        raise EmbedlabError(
            f"output_dir '{output_dir}' is relative, and this Ray job runs in a temporary copy of its working directory "
            f"that `ray stop` deletes: give an absolute output_dir on storage every node can reach, e.g. output_dir=$PWD/{output_dir}"
        )


def check_reachable(address: str | None, timeout_s: float = 10.0) -> None:
    """Fails in one line when nothing listens at a Ray cluster's host:port: `ray.init` would retry it for
    minutes before giving up. Other forms (auto, local, unknown schemes) are left to Ray."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address or address in ("auto", "local"):
        return
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if "://" in target or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise EmbedlabError(f"cannot reach the Ray cluster at '{address}': {reason} (is a Ray cluster running there?)") from None


def connect(address: str | None) -> None:
    """Joins the cluster at `address`, else RAY_ADDRESS (what `ray job submit` sets), else starts a local one."""
    import ray

    if ray.is_initialized():
        return
    check_reachable(address)
    if address is None and "RAY_ADDRESS" not in os.environ:
        # A local cluster of our own: its workers are the training, so they run at normal priority
        # (Ray's default nice 15 lets Ray's own processes take CPU from them on small machines).
        os.environ.setdefault("RAY_worker_niceness", "0")
    try:
        ray.init(address=address, logging_level="WARNING", log_to_driver=True)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise EmbedlabError(f"cannot reach the Ray cluster at '{address}': {_first_line(error)}") from None


def check_resources(distributed: DistributedConfig) -> None:
    """Fails now, in one line, where Ray would otherwise wait forever for resources that never come."""
    import ray

    available = ray.cluster_resources()
    cpus, gpus = available.get("CPU", 0), available.get("GPU", 0)
    if distributed.use_gpu and gpus == 0:
        raise EmbedlabError("--gpu was given but the Ray cluster has no GPU: drop --gpu to train on CPUs")
    if distributed.use_gpu and gpus < distributed.workers:
        raise EmbedlabError(f"{distributed.workers} GPU workers need {distributed.workers} GPUs; the Ray cluster has {gpus:g}: use --workers {int(gpus)}")
    needed = distributed.workers * distributed.cpus_per_worker
    if cpus < needed:
        most = int(cpus // distributed.cpus_per_worker)
        raise EmbedlabError(
            f"{distributed.workers} workers x {distributed.cpus_per_worker} CPUs need {needed} CPUs; the Ray cluster has {cpus:g}: "
            f"use --workers {most} or fewer CPUs per worker (distributed.cpus_per_worker)"
        )


def _first_line(error: BaseException) -> str:
    """The line that names the error: the last line of a worker's traceback, else the first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    return lines[-1] if "Traceback" in str(error) else lines[0]


# --- what the driver sends: a run's inputs through Ray's object store, so no worker reads its disk ----
@dataclass
class Shipment:
    """What a worker needs from the driver: the loaded (and converted) training data and its format (by
    data set name), the evaluators with their data, the model and any guide model as saved files, and
    the source of a user's own loss module. A worker on any node reads none of the driver's paths."""

    data: dict[str, pa.Table]
    features: dict[str, datasets.Features]
    detected: DetectedFormat | dict[str, DetectedFormat]
    evaluators: list
    models: dict[str, dict[str, bytes]]  # "model" / "guide/<data set>": file path in the folder -> bytes
    user_code: dict[str, bytes]  # file path below an import folder -> bytes


def pack_shipment(prepared: run.Prepared) -> Shipment:
    config = prepared.config
    models = {}
    if not config.model.trust_remote_code:  # remote code is not in a saved copy: workers load it by name
        models["model"] = saved_files(prepared.model)
    parts = config.per_data_set(prepared.loss)
    for name, loss in parts.items():
        guide = next((module.guide for module in loss.modules() if isinstance(getattr(module, "guide", None), EmbeddingModel)), None)
        if guide is not None and "guide" in config.loss_for(name).params:
            models[f"guide/{name}"] = saved_files(guide)
    rows = config.per_data_set(prepared.dataset)
    data = {name: part.with_format("arrow")[:] for name, part in rows.items()}  # the rows in order (a selection or limit applied)
    features = {name: part.features for name, part in rows.items()}
    user_code = {path: content for name in parts for path, content in user_code_files(config.loss_for(name).name).items()}
    return Shipment(data, features, prepared.detected, prepared.evaluators, models, user_code)


def saved_files(model: EmbeddingModel) -> dict[str, bytes]:
    """The model as `model.save` writes it (safetensors weights, tokenizer, module configs), in memory."""
    with tempfile.TemporaryDirectory() as folder:
        model.save(folder)
        return {path.relative_to(folder).as_posix(): path.read_bytes() for path in Path(folder).rglob("*") if path.is_file()}


def user_code_files(loss_name: str) -> dict[str, bytes]:
    """The source of a custom loss's top-level module (a file, or its package's .py files), keyed by the
    path below the folder it was imported from. Installed packages are left out: every node has them."""
    if loss_name in CATALOGUE or "." not in loss_name:
        return {}
    top = sys.modules[get_loss_class(loss_name).__module__.split(".")[0]]
    origin = Path(top.__file__).resolve() if getattr(top, "__file__", None) else None
    installed = [Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")]
    if origin is None or any(origin.is_relative_to(folder) for folder in installed):
        return {}
    if not hasattr(top, "__path__"):
        return {origin.name: origin.read_bytes()}
    package = origin.parent
    return {f"{top.__name__}/{path.relative_to(package).as_posix()}": path.read_bytes() for path in package.rglob("*.py")}


def unpack_shipment(shipment: Shipment, config: Config, workdir: Path) -> run.Loaded:
    """Writes the shipped model files and user code into this worker's folder, points the config at them,
    and returns the data and evaluators for `run.prepare`."""
    for name, files in {**shipment.models, "user_code": shipment.user_code}.items():
        for relative, content in files.items():
            (workdir / name / relative).parent.mkdir(parents=True, exist_ok=True)
            (workdir / name / relative).write_bytes(content)
    if "model" in shipment.models:
        config.model.name = str(workdir / "model")
    for key in shipment.models:
        if key.startswith("guide/"):  # a guide shared by every data set's loss is the same object: set once each
            config.loss_for(key.removeprefix("guide/")).params["guide"] = str(workdir / key)
    if shipment.user_code:
        sys.path.insert(0, str(workdir / "user_code"))  # ahead of anything of the same name on this node
    rows = {
        name: datasets.Dataset(InMemoryTable(table), info=datasets.DatasetInfo(features=shipment.features[name]))
        for name, table in shipment.data.items()
    }
    dataset = rows if config.is_mixture else rows[SINGLE_DATA_SET]
    return run.Loaded(dataset, shipment.detected, shipment.evaluators, test_evaluators=[])


# --- the workers --------------------------------------------------------------------------------
def train_fn_per_worker(loop_config: dict) -> dict | None:
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    workdir = Path(tempfile.mkdtemp(prefix=f"embedlab-rank{rank}-"))
    try:
        try:
            trainer, resume_from = _worker_trainer(loop_config, rank, world_size, workdir)
            error = None
        except EmbedlabError as mistake:
            trainer, resume_from, error = None, None, str(mistake)
        # A mistake in the input fails the same way on every retry: every rank learns of any rank's, and
        # all return it and end normally (rank 0's return value reaches the driver), so Ray Train does not
        # restart the group max_failures times.
        errors = [None] * world_size
        torch.distributed.all_gather_object(errors, error)
        error = next((message for message in errors if message), None)
        if error is not None:
            return {WORKER_ERROR: error}
        trainer.train(resume_from=resume_from)
        return None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _worker_trainer(loop_config: dict, rank: int, world_size: int, workdir: Path) -> tuple[Trainer, Path | None]:
    """This worker's Trainer and Ray Train's last checkpoint (checked to be this run's), if there is one."""
    import ray
    import ray.train
    import ray.train.torch

    config = Config.from_dict(loop_config["config"])
    loaded = unpack_shipment(ray.get(loop_config["shipment"]), config, workdir / "inputs")
    prepared = run.prepare(config, device=str(ray.train.torch.get_device()), identity=loop_config["identity"], loaded=loaded)
    # Ray Train checkpoints replace the trainer's own: one at each evaluation (every eval_steps, else
    # every save_steps) and one at the end; a restarted worker group resumes from the last one.
    args = dataclasses.replace(config.training, eval_steps=config.training.eval_steps or config.training.save_steps, save_steps=None)
    callbacks = []
    if rank == 0 and loop_config.get("tracking"):  # only rank 0 records, into the driver's MLflow run
        location = {**loop_config["tracking"], "folder": str(workdir / WORKER_FALLBACK)}
        callbacks.append(tracking.TrackingCallback(tracking.Tracker.at(location)))
    callbacks.append(RayTrainReport())  # last: the final checkpoint carries everything recorded before it
    trainer = run.make_trainer(prepared, callbacks, rank, world_size, args=args, output_dir=workdir)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return trainer, None
    with checkpoint.as_directory() as folder:
        resume_from = Path(shutil.copytree(folder, workdir / "resume"))
    trainer.check_checkpoint(resume_from)
    return trainer, resume_from


class RayTrainReport:
    """Reports every evaluation to Ray Train with a checkpoint; the last checkpoint also holds the model."""

    def on_evaluate(self, trainer: Trainer, step: int, metrics: dict) -> None:
        if step < trainer.total_steps:  # the last evaluation is reported by on_train_end, with the model
            self._report(trainer, step, metrics, extra_files=())

    def on_train_end(self, trainer: Trainer, metrics: dict) -> None:
        self._report(trainer, trainer.global_step, metrics, extra_files=RESULT_FILES)

    @staticmethod
    def _report(trainer: Trainer, step: int, metrics: dict, extra_files) -> None:
        import ray.train

        folder = trainer.save_checkpoint()  # every rank: its RNG state; rank 0 also weights and optimizer
        if trainer.is_main:
            copy_files(extra_files, trainer.output_dir, folder)
        # The same folder name on every rank: Ray Train merges the workers' files into one checkpoint.
        ray.train.report(
            {**metrics, "step": step},
            checkpoint=ray.train.Checkpoint.from_directory(folder),
            checkpoint_dir_name=f"checkpoint-{step:07d}",
        )
