"""Run identity: a rerun of the same config resumes; a changed config never trains on another run's
checkpoints, never mixes histories and never adds to another run's MLflow record."""

import json
import re

import pytest
import torch

from conftest import write_config
from embedlab import run
from embedlab.cli import main
from embedlab.config import load_config
from embedlab.errors import EmbedlabError
from embedlab.identity import changed_keys, fingerprint, run_identity
from embedlab.trainer import Trainer


def _train(capsys, config, *overrides) -> tuple[int, str, str]:
    code = main(["train", str(config), *overrides])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _mlflow_runs(output_dir) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{output_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(output_dir.name)
    return client.search_runs([experiment.experiment_id])


class Interrupt(Exception):
    pass


class StopAt:
    """A trainer callback that interrupts training at a step, as a crash or Ctrl-C would."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, step, loss_value):
        if step == self.step:
            raise Interrupt


@pytest.fixture
def finished_run(tmp_path, capsys, tiny_model_path, score_pairs_file):
    output_dir = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", tiny_model_path, score_pairs_file, output_dir, training={"eval_steps": 2})
    assert _train(capsys, config)[0] == 0
    return config, output_dir


def test_a_changed_config_stops_before_writing_and_names_the_changed_keys(finished_run, capsys):
    config, output_dir = finished_run
    before = {path: path.stat().st_mtime_ns for path in output_dir.rglob("*") if path.is_file() and "mlflow.db" not in path.name}
    code, _, err = _train(capsys, config, "loss.params.scale=10", "training.learning_rate=1e-4")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "loss.params.scale: (none) -> 10" in err and "training.learning_rate: 2e-05 -> 0.0001" in err
    assert "training.resume=false" in err and "output_dir" in err
    after = {path: path.stat().st_mtime_ns for path in output_dir.rglob("*") if path.is_file() and "mlflow.db" not in path.name}
    assert after == before  # nothing written, nothing resumed
    assert len(_mlflow_runs(output_dir)) == 1


def test_the_same_config_resumes_and_keeps_one_history(finished_run, capsys):
    config, output_dir = finished_run
    first = json.loads((output_dir / "results.json").read_text())
    code, out, _ = _train(capsys, config, "training.show_progress_bar=true", "training.save_total_limit=3")  # not identity
    assert code == 0 and "Resuming from" in out
    again = json.loads((output_dir / "results.json").read_text())
    assert again["fingerprint"] == first["fingerprint"]
    steps = [entry["step"] for entry in again["history"]]
    assert steps == sorted(set(steps))  # one run: no step twice
    (only_run,) = _mlflow_runs(output_dir)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{output_dir / 'mlflow.db'}")
    for key in ("train_loss", "learning_rate"):  # MLflow's history too: each step once
        assert [metric.step for metric in client.get_metric_history(only_run.info.run_id, key)] == [2, 4], key


def test_resume_false_starts_over_as_a_new_mlflow_run(finished_run, capsys):
    config, output_dir = finished_run
    old = json.loads((output_dir / "results.json").read_text())
    old_run = _mlflow_runs(output_dir)[0]
    code, out, _ = _train(capsys, config, "training.learning_rate=1e-4", "training.resume=false")
    assert code == 0 and "Resuming" not in out
    new = json.loads((output_dir / "results.json").read_text())
    assert new["fingerprint"] != old["fingerprint"] and new["identity"]["training.learning_rate"] == 1e-4
    assert [entry["step"] for entry in new["history"]] == [2, 4]
    assert new["history"][0]["learning_rate"] != old["history"][0]["learning_rate"]
    runs = {found.info.run_id: found for found in _mlflow_runs(output_dir)}
    assert len(runs) == 2
    # the old run keeps exactly its own history
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{output_dir / 'mlflow.db'}")
    assert [metric.step for metric in client.get_metric_history(old_run.info.run_id, "train_loss")] == [2, 4]


# Every config key that is not part of a run's identity, written out: a new config key joins the identity
# unless it is added here, on purpose.
NOT_IN_IDENTITY = {
    "output_dir", "search", "tracking.experiment", "tracking.mode", "tracking.uri", "tracking.register", "tracking.system_metrics",
    "training.resume", "training.save_steps", "training.save_total_limit", "training.show_progress_bar",
    "distributed.address", "distributed.check_resources", "distributed.cpus_per_worker", "distributed.max_failures",
    "distributed.num_to_keep", "distributed.storage_path",
    "data.train.path", "evaluators.0.data.path",  # replaced by the files' content digests
}


def test_every_config_key_is_in_the_identity_but_the_listed_ones(tmp_path, tiny_model_path, score_pairs_file):
    from embedlab.tracking import flatten

    config = load_config(write_config(tmp_path / "c.yaml", tiny_model_path, score_pairs_file, tmp_path / "out", evaluators=[{"name": "dev", "data": str(score_pairs_file)}]))
    identity = run.prepare(config, device="cpu").identity
    keys = set(flatten(config.to_dict()))
    assert keys - set(identity) == NOT_IN_IDENTITY
    assert set(identity) - keys == {"data.train.fingerprint", "evaluators.0.data.fingerprint", "model.fingerprint", "loss.resolved.scale", "loss.resolved.similarity_fct"}


def test_identity_leaves_out_only_what_cannot_change_the_result(tmp_path, tiny_model_path, score_pairs_file):
    config_file = write_config(tmp_path / "c.yaml", tiny_model_path, score_pairs_file, tmp_path / "out")

    def identity(*overrides):
        prepared = run.prepare(load_config(config_file, list(overrides)), device="cpu")
        return prepared.identity

    base = identity()
    same = ["output_dir=elsewhere", "tracking=off", "training.show_progress_bar=true", "training.save_steps=1", "training.resume=false"]
    for override in same:
        assert fingerprint(identity(override)) == fingerprint(base), override
    for override in ["training.seed=1", "training.batch_size=4", "training.mixed_precision=no", "training.sampler=random", "model.pooling=cls", "training.warmup_ratio=0.2", "distributed.workers=2"]:
        changed = identity(override)
        assert fingerprint(changed) != fingerprint(base), override
    assert base["loss.resolved.scale"] == 20.0  # the loss's defaults count, not only what the config wrote
    assert base["distributed.workers"] == 1


def test_data_content_is_part_of_the_identity(tmp_path, tiny_model_path, score_pairs_file):
    config = load_config(write_config(tmp_path / "c.yaml", tiny_model_path, score_pairs_file, tmp_path / "out"))
    prepared = run.prepare(config, device="cpu")
    score_pairs_file.write_text(score_pairs_file.read_text().replace('"score": 0.', '"score": 0.0'))
    changed = run_identity(config, prepared.loss)
    assert changed_keys(prepared.identity, changed) == [
        f"data.train.fingerprint: \"{prepared.identity['data.train.fingerprint']}\" -> \"{changed['data.train.fingerprint']}\""
    ]


def test_a_trainer_never_loads_another_runs_checkpoint(tmp_path, tiny_model_path, score_pairs_file):
    config = load_config(write_config(tmp_path / "c.yaml", tiny_model_path, score_pairs_file, tmp_path / "out"))
    prepared = run.prepare(config, device="cpu")

    def trainer(identity):
        return Trainer(prepared.loss, prepared.dataset, prepared.detected, config.training, tmp_path / "out", identity=identity)

    trainer(prepared.identity).train()
    other = {**prepared.identity, "training.seed": 7}
    with pytest.raises(EmbedlabError, match=re.escape("training.seed: 0 -> 7")):
        trainer(other).train()


def test_fp16_uses_a_gradient_scaler_whose_state_resumes_exactly(tmp_path, tiny_model_path, score_pairs_file):
    """fp16 autocast runs on CPU in this torch: the scaler's path (scale, unscale before clipping, skipped
    steps, state in checkpoints) is exercised without a GPU."""

    def trainer(folder, callbacks=()):
        config = load_config(write_config(tmp_path / f"{folder}.yaml", tiny_model_path, score_pairs_file, tmp_path / folder, training={"mixed_precision": "fp16", "max_steps": 8, "save_steps": 4}))
        prepared = run.prepare(config, device="cpu")
        made = Trainer(prepared.loss, prepared.dataset, prepared.detected, config.training, tmp_path / folder, callbacks=callbacks, identity=prepared.identity)
        assert made.scaler.is_enabled() and made.autocast_dtype == torch.float16
        # The scale moves at every step (doubled after each good step, halved and the step skipped on an
        # overflow), so a resumed run ends with the uninterrupted run's scale only if the checkpoint's was loaded.
        made.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1)
        return made

    whole = trainer("a")
    whole.train()
    state = torch.load(tmp_path / "a" / "checkpoints" / "checkpoint-4" / "training_state.pt", weights_only=True)
    assert state["grad_scaler"]["scale"] != 2.0**10  # it moved from the initial scale
    with pytest.raises(Interrupt):
        trainer("b", [StopAt(5)]).train()
    resumed = trainer("b")
    resumed.train()
    assert resumed.scaler.get_scale() == whole.scaler.get_scale() != state["grad_scaler"]["scale"]
    for name, value in whole.loss.state_dict().items():
        assert torch.equal(value, resumed.loss.state_dict()[name]), name


def test_bf16_and_full_precision_need_no_scaler(tmp_path, tiny_model_path, score_pairs_file):
    for precision, dtype in (("bf16", torch.bfloat16), ("no", None), ("auto", None)):
        config = load_config(write_config(tmp_path / "c.yaml", tiny_model_path, score_pairs_file, tmp_path / precision, training={"mixed_precision": precision}))
        prepared = run.prepare(config, device="cpu")
        trainer = Trainer(prepared.loss, prepared.dataset, prepared.detected, config.training, tmp_path / precision)
        assert trainer.autocast_dtype == dtype and not trainer.scaler.is_enabled()


def test_a_moved_data_file_with_the_same_bytes_is_the_same_run(tmp_path, tiny_model_path, score_pairs_file):
    config = load_config(write_config(tmp_path / "c.yaml", tiny_model_path, score_pairs_file, tmp_path / "out"))
    prepared = run.prepare(config, device="cpu")
    moved = tmp_path / "moved" / "pairs.jsonl"
    moved.parent.mkdir()
    moved.write_bytes(score_pairs_file.read_bytes())
    config.data.train.path = str(moved)
    assert fingerprint(run_identity(config, prepared.loss)) == prepared.fingerprint


def test_the_identity_holds_no_credentials(tmp_path, tiny_model_path, score_pairs_file):
    config_file = write_config(tmp_path / "c.yaml", tiny_model_path, score_pairs_file, tmp_path / "out", loss={"name": "custom_losses.MeanSquaredCosineLoss"})
    config = load_config(config_file)
    config.loss.params = {"api_key": "sk-secret", "weight": 2.0}
    identity = run_identity(config, run.prepare(load_config(config_file), device="cpu").loss)
    assert "sk-secret" not in json.dumps(identity) and identity["loss.params.api_key"] == "***"


def test_a_run_that_stopped_before_its_first_checkpoint_does_not_block_a_changed_config(tmp_path, capsys, tiny_model_path, score_pairs_file):
    config = write_config(tmp_path / "c.yaml", tiny_model_path, score_pairs_file, tmp_path / "run", training={"save_steps": None}, tracking="off")

    with pytest.raises(Interrupt):
        run.train(run.prepare(load_config(config), device="cpu"), callbacks=[StopAt(2)])
    assert (tmp_path / "run" / "run.json").exists() and not (tmp_path / "run" / "checkpoints").exists()
    assert _train(capsys, config, "training.batch_size=4")[0] == 0  # e.g. out of memory, then a smaller batch
