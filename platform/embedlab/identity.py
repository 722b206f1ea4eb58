"""Run identity: a fingerprint of everything that can change a run's result.

A run is exactly what its config says. Its identity is the resolved config without the keys that cannot
change the result (where it is written, how it is tracked, progress bars, how often it checkpoints,
whether it resumes, which Ray cluster runs it), plus what the config only names: the content of each
data file (in place of its path), the model's files and the loss's full `get_config_dict()` (defaults
included). Credentials (masked as in MLflow) are not part of it: they cannot change a result. The
fingerprint is a hash of that identity.

The output folder's `run.json`, every checkpoint and `results.json` carry it. Rerunning the same config
resumes; a changed config over a folder that holds another run stops before anything is written, naming
the changed keys, unless `training.resume=false` (start over in that folder) or another `output_dir`.
The MLflow run key and the Ray Train run name include the fingerprint, so a changed config never adds
to the old run's records.
"""

import hashlib
import json
import shutil
from pathlib import Path

from embedlab.config import Config, DataSource
from embedlab.errors import EmbedlabError
from embedlab.model import resolve_model_path
from embedlab.tracking import flatten, redact_config

RUN_FILE = "run.json"
# Keys that cannot change what a run computes. Everything else is part of its identity.
NOT_IDENTITY = (
    "output_dir",
    "tracking",
    "search",
    "training.resume",
    "training.show_progress_bar",
    "training.save_steps",
    "training.save_total_limit",
    "distributed.address",
    "distributed.storage_path",
    "distributed.max_failures",
    "distributed.num_to_keep",
    "distributed.check_resources",
    "distributed.cpus_per_worker",
)
RUN_FILES = ("checkpoints", "results.json", "eval", "model", "config.yaml", RUN_FILE)  # one run's outputs
MAX_KEYS_SHOWN = 6  # the error stays one readable line


def run_identity(config: Config, loss) -> dict:
    """The flat {dotted key: value} identity of a run (see the module docstring)."""
    # Credentials cannot change a result, and the identity is written to files: it holds them masked.
    identity = {key: _plain(value) for key, value in flatten(redact_config(config.to_dict())).items() if not _excluded(key)}
    identity["distributed.workers"] = config.distributed.workers or 1  # in-process is one worker
    sources = {f"data.train.{name}" if config.is_mixture else "data.train": source for name, source in config.train_sources().items()}
    for section in ("evaluators", "test_evaluators"):
        for index, entry in enumerate(getattr(config, section)):
            sources[f"{section}.{index}.data"] = entry.data
    for where, source in sources.items():
        del identity[f"{where}.path"]  # the content decides, not where the file lies
        identity[f"{where}.fingerprint"] = data_fingerprint(source)
        if source.convert is not None and source.convert.mine is not None:
            _mining_identity(identity, f"{where}.convert.mine", source.convert.mine)
    identity["model.fingerprint"] = model_fingerprint(config.model.name)
    inner = getattr(loss, "loss", None) if not config.is_mixture and config.loss.modifiers else None  # a modifier's wrapped loss
    for prefix, module in (("loss.resolved", loss), ("loss.resolved.inner", inner)):
        if module is not None and hasattr(module, "get_config_dict"):
            identity.update({f"{prefix}.{key}": _plain(value) for key, value in redact_config(module.get_config_dict()).items()})
    return identity


def _mining_identity(identity: dict, where: str, mine) -> None:
    """Mining by a model and a corpus: their content counts, not their paths; where embeddings are cached
    and how many Ray Data workers embed do not change the mined rows."""
    from embedlab.mining import mining_model_path

    for key in ("model", "corpus", "cache_folder", "workers"):
        identity.pop(f"{where}.{key}", None)
    identity[f"{where}.model_fingerprint"] = model_fingerprint(mining_model_path(mine.model))
    if mine.corpus is not None:
        corpus = Path(mine.corpus).expanduser()
        identity[f"{where}.corpus_fingerprint"] = _file_digest(corpus) if corpus.is_file() else mine.corpus


def fingerprint(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def data_fingerprint(source: DataSource) -> str:
    """A digest of a data file's bytes (a moved or touched file with the same rows is the same data);
    for a `datasets` folder or a hub data set, its own fingerprint and name."""
    path = Path(source.path).expanduser()
    if path.is_file():
        return _file_digest(path)
    if path.is_dir():
        return hashlib.sha256("".join(_file_digest(file) for file in sorted(path.rglob("*.arrow"))).encode()).hexdigest()[:16]
    return f"hub:{source.path}:{source.subset}:{source.split}"


def model_fingerprint(name: str) -> str:
    """A local model folder: its file names and sizes, and the first and last megabyte of each weight
    file (training changes those bytes; hashing whole weight files would cost seconds per large model)."""
    path = resolve_model_path(name)  # a hub id resolves to its downloaded folder
    digest = hashlib.sha256()
    for file in sorted(item for item in path.rglob("*") if item.is_file()):
        digest.update(f"{file.relative_to(path)}:{file.stat().st_size}".encode())
        if file.suffix in (".safetensors", ".bin", ".pt"):
            with file.open("rb") as stream:
                digest.update(stream.read(1 << 20))
                stream.seek(max(0, file.stat().st_size - (1 << 20)))
                digest.update(stream.read())
    return digest.hexdigest()[:16]


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


# --- the output folder ------------------------------------------------------------------------------
def recorded_identity(output_dir: Path) -> dict | None:
    """{"fingerprint", "identity"} of the run whose checkpoints or results are in `output_dir`, else None
    (a run that stopped before its first checkpoint left nothing to resume or to lose). Checkpoints or
    results without an identity (an earlier embedlab) have fingerprint "unknown"."""
    from embedlab.trainer import STATE_FILE, latest_checkpoint  # the trainer imports this module

    output_dir = Path(output_dir)
    checkpoint = latest_checkpoint(output_dir)
    for record in (checkpoint and checkpoint / STATE_FILE, output_dir / "results.json"):
        if record and record.exists():
            found = json.loads(record.read_text())
            return {"fingerprint": found.get("fingerprint") or "unknown", "identity": found.get("identity") or {}}
    return None


def check_output_folder(output_dir: Path, identity: dict) -> None:
    """Raises EmbedlabError when `output_dir` holds another run's files; writes nothing."""
    recorded = recorded_identity(output_dir)
    if recorded is None or recorded["fingerprint"] == fingerprint(identity):
        return
    changes = changed_keys(recorded["identity"], identity)
    shown = "; ".join(changes[:MAX_KEYS_SHOWN]) + (f"; and {len(changes) - MAX_KEYS_SHOWN} more" if len(changes) > MAX_KEYS_SHOWN else "")
    what = f"changed: {shown}" if recorded["identity"] else "it was written by an earlier embedlab without a run identity"
    raise EmbedlabError(
        f"output folder '{output_dir}' holds another run (fingerprint {recorded['fingerprint']}, this config's is "
        f"{fingerprint(identity)}), {what}: set training.resume=false to start over in that folder, or another "
        "output_dir to keep both"
    )


def changed_keys(old: dict, new: dict) -> list[str]:
    return [f"{key}: {_shown(old.get(key))} -> {_shown(new.get(key))}" for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)]


def start_over(output_dir: Path) -> None:
    """Deletes one run's outputs from `output_dir` (MLflow stores and other files stay)."""
    for name in RUN_FILES:
        target = Path(output_dir) / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def last_fingerprint(output_dir: Path) -> str | None:
    """The fingerprint of the last run started in `output_dir` (its run.json), finished or not."""
    run_file = Path(output_dir) / RUN_FILE
    return json.loads(run_file.read_text())["fingerprint"] if run_file.exists() else None


def write_run_file(output_dir: Path, identity: dict) -> None:
    Path(output_dir, RUN_FILE).write_text(json.dumps({"fingerprint": fingerprint(identity), "identity": identity}, indent=2, default=str))


def _excluded(key: str) -> bool:
    return under_any(key, NOT_IDENTITY)


def under_any(key: str, prefixes) -> bool:
    """Whether the dotted `key` is one of `prefixes` or lies under one (`training.save_steps` under `training`)."""
    return any(key == prefix or key.startswith(prefix + ".") for prefix in prefixes)


def _plain(value):
    """JSON's view of a value, so a recorded identity compares equal to a freshly built one."""
    return json.loads(json.dumps(value, default=str))


def _shown(value) -> str:
    return "(none)" if value is None else json.dumps(value, default=str)
