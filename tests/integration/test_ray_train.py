"""Training on real Ray Train workers (a local Ray cluster of 2 CPUs): a killed worker restarts the run
from its last checkpoint, an interrupted run resumes when run again, and bad cluster input fails
in one line before any worker starts."""

import json
import random
import shutil

import pytest

from conftest import REPO, cli_error_lines, sentence, write_config, write_jsonl
from embedlab import run
from embedlab.cli import main
from embedlab.config import load_config
from embedlab.errors import EmbedlabError
from embedlab.ray_train import train_on_ray

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    # Workers import the test's custom losses, as a user's workers import theirs.
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", runtime_env={"env_vars": {"PYTHONPATH": str(REPO / "tests")}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray-data")
    rng = random.Random(0)
    pairs = write_jsonl(folder / "pairs.jsonl", [{"anchor": sentence(rng), "positive": sentence(rng)} for _ in range(96)])
    dev = write_jsonl(folder / "dev.jsonl", [{"sentence1": sentence(rng), "sentence2": sentence(rng), "score": rng.random()} for _ in range(40)])
    return pairs, dev


def _config(tmp_path, model_path, data, name, loss_params, max_failures=2):
    pairs, dev = data
    return write_config(
        tmp_path / f"{name}.yaml",
        model_path,
        pairs,
        tmp_path / name,
        loss={"name": "custom_losses.CrashOnceLoss", "params": loss_params},
        # 12 steps of 8 rows per worker, a checkpoint every 4: a crash at step 6 resumes from step 4.
        training={"max_steps": 12, "eval_steps": 4, "learning_rate": 1e-3},
        evaluators=[{"name": "dev", "data": str(dev)}],
        distributed={"workers": 2, "max_failures": max_failures},
    )


def _train(config_path):
    return train_on_ray(run.prepare(load_config(config_path), device="cpu"))


def _final_metrics(output_dir):
    return _without_timings(json.loads((output_dir / "results.json").read_text())["metrics"])


def _without_timings(metrics):
    return {name: value for name, value in metrics.items() if name not in ("train_seconds", "train_samples_per_second")}


@pytest.fixture(scope="module")
def uninterrupted(ray_cluster, tmp_path_factory, tiny_model_path, data):
    """The reference: the same run, never interrupted (its marker exists, so it never crashes)."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    (folder / "never-crash").write_text("the marker exists: no crash")
    results = _train(_config(folder, tiny_model_path, data, "uninterrupted", {"crash_at": 6, "marker": str(folder / "never-crash")}))
    return results, folder / "uninterrupted"


def test_a_killed_worker_restarts_from_the_last_checkpoint_and_ends_as_an_uninterrupted_run(ray_cluster, tmp_path, tiny_model_path, data, uninterrupted):
    uninterrupted, uninterrupted_dir = uninterrupted

    marker, calls = tmp_path / "crashed", tmp_path / "calls.txt"
    params = {"crash_at": 6, "marker": str(marker), "calls_file": str(calls)}
    interrupted = _train(_config(tmp_path, tiny_model_path, data, "interrupted", params))
    assert marker.exists(), "the worker was never killed"
    assert calls.read_text().split().count("0") == 6 + (12 - 4)  # rank 0: 6 steps, then 8 from the step-4 checkpoint
    assert _without_timings(interrupted["final"]) == pytest.approx(_without_timings(uninterrupted["final"]), rel=1e-6, abs=1e-7)
    assert _final_metrics(tmp_path / "interrupted") == pytest.approx(_final_metrics(uninterrupted_dir), rel=1e-6, abs=1e-7)
    assert (tmp_path / "interrupted" / "model" / "modules.json").exists()


def test_running_a_failed_run_again_resumes_it(ray_cluster, tmp_path, tiny_model_path, data, uninterrupted, capsys):
    reference, _ = uninterrupted

    marker, calls = tmp_path / "crashed", tmp_path / "calls.txt"
    params = {"crash_at": 6, "marker": str(marker), "calls_file": str(calls)}
    config = _config(tmp_path, tiny_model_path, data, "rerun", params, max_failures=0)
    assert main(["train", str(config)]) == 2  # no restarts allowed: the run fails, with one line
    error = cli_error_lines(capsys.readouterr().err)
    assert error[-1].startswith("embedlab: error: training failed on the Ray workers") and "rerun the same command" in error[-1]
    calls.unlink()
    assert main(["train", str(config)]) == 0
    assert calls.read_text().split().count("0") == 12 - 4  # rank 0 trained from the step-4 checkpoint on
    assert _final_metrics(tmp_path / "rerun") == pytest.approx(_without_timings(reference["final"]), rel=1e-6, abs=1e-7)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--workers", "3"], "3 workers x 1 CPUs need 3 CPUs; the Ray cluster has 2: use --workers 2"),
        (["--workers", "1", "--gpu"], "--gpu was given but the Ray cluster has no GPU"),
        (["--workers", "1", "distributed.storage_path=/proc/embedlab-cannot-write"], "storage path '/proc/embedlab-cannot-write' cannot be written"),
        (["--gpu"], "--gpu (distributed.use_gpu) needs --workers N"),
        (["--workers", "0"], "distributed.workers must be at least 1"),
    ],
)
def test_bad_cluster_input_fails_in_one_line_before_any_worker_starts(ray_cluster, tmp_path, tiny_model_path, score_pairs_file, capsys, flags, message):
    config = write_config(tmp_path / "c.yaml", tiny_model_path, score_pairs_file, tmp_path / "run")
    assert main(["train", str(config), *flags]) == 2
    error = cli_error_lines(capsys.readouterr().err)
    assert len(error) == 1 and message in error[0], error
    assert not (tmp_path / "run").exists()  # nothing half-written


def test_a_mistake_found_on_the_workers_fails_once_in_one_line_without_restarts(ray_cluster, tmp_path, tiny_model_path, data):
    """A file the driver's checks found but the workers do not (as on a node without it): the same error on
    every retry, so it is reported as the mistake it is, not retried max_failures times as a crash."""
    pairs, dev = data
    needed = tmp_path / "needed.txt"
    needed.write_text("here on the driver only")
    config = write_config(
        tmp_path / "c.yaml", tiny_model_path, pairs, tmp_path / "gone", loss={"name": "custom_losses.NeedsFileLoss", "params": {"needs": str(needed)}},
        training={"max_steps": 2}, distributed={"workers": 2, "max_failures": 2}, tracking="off",
    )  # fmt: skip
    prepared = run.prepare(load_config(config), device="cpu")
    needed.unlink()
    with pytest.raises(EmbedlabError) as error:
        train_on_ray(prepared)
    message = str(error.value)
    assert "needed.txt' does not exist" in message and "restart" not in message and "rerun" not in message
    assert len(message.splitlines()) == 1


@pytest.fixture(scope="module")
def no_dropout_model(tmp_path_factory, tiny_model_path):
    """The tiny model without dropout: two workers and one process then differ only by float summation order."""
    folder = tmp_path_factory.mktemp("no-dropout")
    for file in tiny_model_path.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}))
    return folder


def test_ray_train_equals_in_process_training(ray_cluster, tmp_path, no_dropout_model):
    """The same config in this process (batch 8), on 1 Ray worker (batch 8) and on 2 (4 each: the same global
    batch), over uneven data (37 rows: global batches of 8, 8, 8, 8, 5, the last split 3 + 2) into a second
    epoch, with cross-worker negatives."""
    import torch
    from safetensors.torch import load_file

    rng = random.Random(1)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"anchor": sentence(rng), "positive": sentence(rng)} for _ in range(37)])
    dev = write_jsonl(tmp_path / "dev.jsonl", [{"sentence1": sentence(rng), "sentence2": sentence(rng), "score": rng.random()} for _ in range(20)])

    def train(name, batch_size, workers=None):
        config = write_config(
            tmp_path / f"{name}.yaml", no_dropout_model, pairs, tmp_path / name,
            loss={"name": "MultipleNegativesRankingLoss", "params": {"gather_across_devices": True}},
            training={"batch_size": batch_size, "max_steps": 7, "eval_steps": 3, "learning_rate": 1e-3},
            evaluators=[{"name": "dev", "data": str(dev)}], tracking="off",
            **({"distributed": {"workers": workers}} if workers else {}),
        )
        prepared = run.prepare(load_config(config), device="cpu")
        results = train_on_ray(prepared) if workers else run.train(prepared)
        history = json.loads((tmp_path / name / "results.json").read_text())["history"]
        return load_file(tmp_path / name / "model" / "model.safetensors"), [entry["loss"] for entry in history], results

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a Ray worker with one CPU: the same kernels, the same summation order
    try:
        in_process, in_process_losses, _ = train("in_process", 8)
    finally:
        torch.set_num_threads(threads)
    one_worker, one_worker_losses, _ = train("one_worker", 8, workers=1)
    two_workers, two_worker_losses, _ = train("two_workers", 4, workers=2)

    assert in_process.keys() == one_worker.keys() == two_workers.keys()
    for name, weights in in_process.items():
        assert torch.equal(one_worker[name], weights), name
        # two workers sum each gathered similarity and each gradient in another order: float32 rounding only
        torch.testing.assert_close(two_workers[name], weights, rtol=1e-4, atol=1e-5, msg=name)
    assert one_worker_losses == in_process_losses
    assert two_worker_losses == pytest.approx(in_process_losses, rel=1e-4)  # the mean over ranks, not rank 0's


def test_workers_read_nothing_from_the_drivers_disk(ray_cluster, tmp_path, tiny_model_path, data):
    """Everything a worker needs comes through Ray's object store: the data, the evaluator's data and the
    model are deleted from the driver's disk before the workers start, and the loss module lies beside the
    config, on no worker's path (the cluster's PYTHONPATH holds tests/ only)."""
    pairs, dev = data
    inputs = tmp_path / "inputs"
    shutil.copytree(tiny_model_path, inputs / "model")
    shutil.copy(pairs, inputs / "pairs.jsonl")
    shutil.copy(dev, inputs / "dev.jsonl")
    (tmp_path / "beside_losses.py").write_text(
        "from embedlab.losses import MultipleNegativesRankingLoss\n\n\nclass BesideLoss(MultipleNegativesRankingLoss):\n    pass\n"
    )
    config = write_config(
        tmp_path / "c.yaml", inputs / "model", inputs / "pairs.jsonl", tmp_path / "run", loss={"name": "beside_losses.BesideLoss"},
        training={"max_steps": 2, "save_steps": 2},
        evaluators=[{"name": "dev", "data": str(inputs / "dev.jsonl")}], distributed={"workers": 2}, tracking="off",
    )  # fmt: skip
    prepared = run.prepare(load_config(config), device="cpu")
    shutil.rmtree(inputs)
    results = train_on_ray(prepared)
    assert results["step"] == 2 and "dev_spearman_cosine" in results["final"]
    assert (tmp_path / "run" / "model" / "modules.json").exists()


def test_a_mixture_on_two_workers_equals_one_process(ray_cluster, tmp_path, no_dropout_model):
    """Two data sets (21 and 19 rows, uneven), each batch from one of them: every worker takes the same data
    set at each step, so 2 workers (4 rows each, cross-worker negatives) equal one process (8 rows)."""
    import torch
    import yaml
    from safetensors.torch import load_file

    rng = random.Random(2)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"anchor": sentence(rng), "positive": sentence(rng)} for _ in range(21)])
    scores = write_jsonl(tmp_path / "scores.jsonl", [{"sentence1": sentence(rng), "sentence2": sentence(rng), "score": rng.random()} for _ in range(19)])

    def train(name, batch_size, workers=None):
        path = write_config(
            tmp_path / f"{name}.yaml", no_dropout_model, pairs, tmp_path / name, tracking="off",
            training={"batch_size": batch_size, "max_steps": 6, "eval_steps": 3, "learning_rate": 1e-3},
            **({"distributed": {"workers": workers}} if workers else {}),
        )  # fmt: skip
        raw = yaml.safe_load(path.read_text())
        raw["data"]["train"] = {"pairs": str(pairs), "scores": str(scores)}
        # CosineSimilarityLoss: a mean over pairs, split exactly by shards (CoSENTLoss compares the pairs of a
        # batch with each other, so its loss on two shards is not its loss on their union).
        raw["loss"] = {"pairs": {"name": "MultipleNegativesRankingLoss", "params": {"gather_across_devices": True}}, "scores": {"name": "CosineSimilarityLoss"}}
        path.write_text(yaml.safe_dump(raw))
        prepared = run.prepare(load_config(path), device="cpu")
        train_on_ray(prepared) if workers else run.train(prepared)
        history = json.loads((tmp_path / name / "results.json").read_text())["history"]
        return load_file(tmp_path / name / "model" / "model.safetensors"), history

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        in_process, in_process_history = train("in_process", 8)
    finally:
        torch.set_num_threads(threads)
    two_workers, two_worker_history = train("two_workers", 4, workers=2)
    for name, weights in in_process.items():
        torch.testing.assert_close(two_workers[name], weights, rtol=1e-4, atol=1e-5, msg=name)
    for ours, reference in zip(two_worker_history, in_process_history, strict=True):
        losses = [key for key in reference if key == "loss" or key.startswith("train_loss/")]
        assert {"train_loss/pairs", "train_loss/scores"} & set(losses)
        assert [ours[key] for key in losses] == pytest.approx([reference[key] for key in losses], rel=1e-4)


def test_a_trial_group_keeps_its_ranks_through_a_stop_trains_as_one_process_and_a_failed_trial_resumes_on_new_ones(
    ray_cluster, tmp_path, tiny_model_path, no_dropout_model
):
    """A sweep's trials of two workers (embedlab.trial_group), in an actor standing for Tune's trial process
    (bundle 0 of a placement group of one bundle per rank). A trial equals one process (batch 8 against 2 x 4,
    uneven data, cross-worker negatives). A trial that Tune stops at an evaluation (SystemExit in its report)
    ends on both ranks, and the next trial trains on the same rank-1 process. A trial whose rank 1 dies fails
    naming it, and its group is replaced. A trial whose rank 0 fails mid-step ends its group; run again, it
    resumes from its checkpoint of step 3 on new ranks and ends as the uninterrupted trial does, dropout
    included (each rank's RNG state is in the checkpoint)."""
    import ray
    import torch
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
    from safetensors.torch import load_file

    from embedlab.trainer import latest_checkpoint

    rng = random.Random(3)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"anchor": sentence(rng), "positive": sentence(rng)} for _ in range(37)])
    dev = write_jsonl(tmp_path / "dev.jsonl", [{"sentence1": sentence(rng), "sentence2": sentence(rng), "score": rng.random()} for _ in range(20)])

    def config(name, batch_size, model=no_dropout_model, loss=None, workers=2):
        path = write_config(
            tmp_path / f"{name}.yaml", model, pairs, tmp_path / name,
            loss=loss or {"name": "MultipleNegativesRankingLoss", "params": {"gather_across_devices": True}},
            training={"batch_size": batch_size, "max_steps": 7, "eval_steps": 3, "save_steps": 3, "learning_rate": 1e-3},
            evaluators=[{"name": "dev", "data": str(dev)}], tracking="off",
            **({"distributed": {"workers": workers, "cpus_per_worker": 1}} if workers else {}),
        )  # fmt: skip
        return load_config(path)

    def trained(name):
        history = json.loads((tmp_path / name / "results.json").read_text())["history"]
        return load_file(tmp_path / name / "model" / "model.safetensors"), [entry["loss"] for entry in history]

    @ray.remote
    class TrialProcess:
        def train(self, config, fail_at_step=None, stop_at_evaluation=None) -> tuple[str, list | None]:
            from embedlab import trial_group

            class Interrupt:
                def on_step_end(self, trainer, step, loss_value):
                    if step == fail_at_step:
                        raise RuntimeError(f"failed at step {step}")

                def on_evaluate(self, trainer, step, metrics):
                    if step == stop_at_evaluation:
                        raise SystemExit(0)  # what Tune's report raises in a trial it stops

            try:
                trial_group.train(trial_group.prepare(config), callbacks=[Interrupt()])
            except RuntimeError as error:
                return str(error), None
            except SystemExit:
                return "stopped", trial_group._group.pids
            return "ok", trial_group._group.pids

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank, with one CPU
    try:
        run.train(run.prepare(config("in_process", 8, workers=None), device="cpu"))
    finally:
        torch.set_num_threads(threads)
    in_process, in_process_losses = trained("in_process")

    bundles = placement_group([{"CPU": 1}, {"CPU": 1}])
    ray.get(bundles.ready())
    try:
        trial = TrialProcess.options(num_cpus=1, scheduling_strategy=PlacementGroupSchedulingStrategy(bundles, placement_group_bundle_index=0)).remote()
        assert ray.get(trial.train.remote(config("first", 4)))[0] == "ok"
        outcome, ranks = ray.get(trial.train.remote(config("stopped", 4), stop_at_evaluation=3))
        assert outcome == "stopped" and not (tmp_path / "stopped" / "results.json").exists()
        outcome, kept_ranks = ray.get(trial.train.remote(config("second", 4, model=tiny_model_path)))
        assert outcome == "ok" and kept_ranks == ranks  # the same rank-1 process, after the stop
        crash = {"name": "custom_losses.CrashOnceLoss", "params": {"crash_at": 2, "marker": str(tmp_path / "crashed"), "crash_after_s": 0}}
        outcome, _ = ray.get(trial.train.remote(config("crash", 4, loss=crash)))
        assert outcome.startswith("trial worker rank 1 failed") and (tmp_path / "crashed").exists()
        assert ray.get(trial.train.remote(config("interrupted", 4, model=tiny_model_path), fail_at_step=5)) == ("failed at step 5", None)
        checkpoint = latest_checkpoint(tmp_path / "interrupted")
        assert checkpoint.name == "checkpoint-3" and {"rng_state_rank0.pt", "rng_state_rank1.pt"} <= {path.name for path in checkpoint.iterdir()}
        outcome, new_ranks = ray.get(trial.train.remote(config("interrupted", 4, model=tiny_model_path)))
        assert outcome == "ok" and new_ranks != ranks  # the failed trial ended its group
    finally:
        remove_placement_group(bundles)

    first, first_losses = trained("first")
    for name, weights in in_process.items():
        torch.testing.assert_close(first[name], weights, rtol=1e-4, atol=1e-5, msg=name)
    assert first_losses == pytest.approx(in_process_losses, rel=1e-4)
    (second, second_losses), (resumed, resumed_losses) = trained("second"), trained("interrupted")
    assert all(torch.equal(resumed[name], second[name]) for name in second) and resumed_losses == second_losses
