import json

import pytest
import torch
from safetensors.torch import load_file

from embedlab.config import DataSource, TrainingConfig
from embedlab.data import load_with_format
from embedlab.evaluation import EmbeddingSimilarityEvaluator
from embedlab.losses import CoSENTLoss, MultipleNegativesRankingLoss
from embedlab.model import EmbeddingModel
from embedlab.trainer import Trainer, latest_checkpoint, linear_schedule


def _args(**overrides) -> TrainingConfig:
    defaults = dict(batch_size=8, max_steps=6, save_steps=3, learning_rate=1e-3, warmup_ratio=0.2, show_progress_bar=False)
    return TrainingConfig(**{**defaults, **overrides})


def _trainer(model_path, data_file, output_dir, args, callbacks=(), evaluators=()):
    model = EmbeddingModel(str(model_path), device="cpu")
    dataset, detected = load_with_format(DataSource(str(data_file)))
    return Trainer(CoSENTLoss(model), dataset, detected, args, output_dir, evaluators=evaluators, callbacks=callbacks)


def test_linear_warmup_then_decay():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = linear_schedule(optimizer, warmup_steps=2, total_steps=6)
    rates = []
    for _ in range(6):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0.0, 0.5, 1.0, 0.75, 0.5, 0.25])


def test_training_runs_evaluates_saves_and_keeps_few_checkpoints(tiny_model_path, score_pairs_file, tmp_path):
    seen = []

    class Recorder:
        def on_evaluate(self, trainer, step, metrics):
            seen.append((step, metrics))

    evaluator = EmbeddingSimilarityEvaluator(["a cat", "a dog", "a car"], ["a kitten", "a puppy", "the sky"], [0.9, 0.8, 0.1], name="dev")
    trainer = _trainer(tiny_model_path, score_pairs_file, tmp_path, _args(eval_steps=2, save_steps=1, save_total_limit=2), [Recorder()], [evaluator])
    before = {name: value.clone() for name, value in trainer.model.state_dict().items()}
    metrics = trainer.train()
    assert [step for step, _ in seen] == [2, 4, 6]  # every eval_steps, and at the end
    assert "dev_spearman_cosine" in metrics and "loss" in metrics
    assert any(not torch.equal(before[name], value) for name, value in trainer.model.state_dict().items())
    assert sorted(path.name for path in (tmp_path / "checkpoints").iterdir()) == ["checkpoint-5", "checkpoint-6"]
    assert (tmp_path / "model" / "modules.json").exists()
    assert json.loads((tmp_path / "results.json").read_text())["step"] == 6
    assert (tmp_path / "eval" / "similarity_evaluation_dev_results.csv").read_text().count("\n") == 4  # header + 3


def test_epochs_set_the_number_of_steps(tiny_model_path, score_pairs_file, tmp_path):
    evaluator = EmbeddingSimilarityEvaluator(["a cat", "a dog", "a car"], ["a kitten", "a puppy", "the sky"], [0.9, 0.8, 0.1], name="dev")
    trainer = _trainer(tiny_model_path, score_pairs_file, tmp_path, _args(max_steps=None, epochs=2, save_steps=None, eval_steps=6), evaluators=[evaluator])
    assert trainer.total_steps == 2 * 6  # 48 rows in batches of 8, twice
    trainer.train()
    assert trainer.global_step == 12 and trainer.epoch == 1
    # The evaluation CSV names the epoch of each evaluation, as sentence-transformers' does.
    rows = (tmp_path / "eval" / "similarity_evaluation_dev_results.csv").read_text().splitlines()[1:]
    assert [row.split(",")[:2] for row in rows] == [["0", "6"], ["1", "12"]]


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_exactly_the_same_weights(tiny_model_path, score_pairs_file, tmp_path):
    # dropout on, several epochs: the RNG state and sampler position must both be restored exactly
    args = _args(max_steps=14, save_steps=4)
    uninterrupted = _trainer(tiny_model_path, score_pairs_file, tmp_path / "a", args)
    uninterrupted.train()

    class StopAtStep:
        def on_step_end(self, trainer, step, loss_value):
            if step == 10:
                raise Interrupt

    with pytest.raises(Interrupt):
        _trainer(tiny_model_path, score_pairs_file, tmp_path / "b", args, [StopAtStep()]).train()
    assert latest_checkpoint(tmp_path / "b").name == "checkpoint-8"
    resumed = _trainer(tiny_model_path, score_pairs_file, tmp_path / "b", args)
    resumed.train()
    assert resumed.global_step == 14
    expected = load_file(tmp_path / "a" / "model" / "model.safetensors")
    got = load_file(tmp_path / "b" / "model" / "model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


def test_a_finished_run_rerun_resumes_at_its_end_without_training_again(tiny_model_path, score_pairs_file, tmp_path, capsys):
    args = _args(max_steps=7, save_steps=5)  # 7 is no multiple of 5: the end gets its own checkpoint
    first = _trainer(tiny_model_path, score_pairs_file, tmp_path, args)
    first.train()
    assert sorted(path.name for path in (tmp_path / "checkpoints").iterdir()) == ["checkpoint-5", "checkpoint-7"]
    weights = load_file(tmp_path / "model" / "model.safetensors")

    class NoStep:
        def on_step_end(self, trainer, step, loss_value):
            raise AssertionError(f"step {step} trained again")

    again = _trainer(tiny_model_path, score_pairs_file, tmp_path, args, [NoStep()])
    again.train()
    assert again.global_step == 7 and "(step 7 of 7)" in capsys.readouterr().out
    assert all(torch.equal(weights[name], value) for name, value in load_file(tmp_path / "model" / "model.safetensors").items())


def test_resume_false_starts_over(tiny_model_path, score_pairs_file, tmp_path):
    _trainer(tiny_model_path, score_pairs_file, tmp_path, _args(max_steps=3, save_steps=3)).train()
    again = _trainer(tiny_model_path, score_pairs_file, tmp_path, _args(max_steps=3, save_steps=None, resume=False))
    again.train()
    assert not (tmp_path / "checkpoints").exists() and again.global_step == 3


def test_mnrl_uses_the_no_duplicates_sampler(tiny_model_path, tmp_path):
    (tmp_path / "pairs.csv").write_text("anchor,positive\n" + "".join(f"q{i % 3},p{i}\n" for i in range(12)))
    model = EmbeddingModel(str(tiny_model_path), device="cpu")
    dataset, detected = load_with_format(DataSource(str(tmp_path / "pairs.csv")))
    trainer = Trainer(MultipleNegativesRankingLoss(model), dataset, detected, _args(max_steps=None, batch_size=4, save_steps=None), tmp_path / "out")
    for batch in trainer.sampler.batches(0):
        anchors = [dataset[i]["anchor"] for i in batch]
        assert len(anchors) == len(set(anchors))
    trainer.train()


def test_softmax_classifier_head_is_checkpointed_and_restored(tiny_model_path, tmp_path):
    from embedlab.losses import SoftmaxLoss

    (tmp_path / "nli.csv").write_text("premise,hypothesis,label\n" + "".join(f"a man eats {i},a person eats,{['yes', 'no', 'maybe'][i % 3]}\n" for i in range(12)))
    dataset, detected = load_with_format(DataSource(str(tmp_path / "nli.csv")))

    def trainer(seed):
        torch.manual_seed(seed)
        model = EmbeddingModel(str(tiny_model_path), device="cpu")
        return Trainer(SoftmaxLoss(model, 32, 3), dataset, detected, _args(max_steps=2, save_steps=2, batch_size=4), tmp_path / "out")

    first = trainer(0)
    first.train()
    trained_head = first.loss.classifier.weight.detach().clone()
    second = trainer(1)  # another random head, until the checkpoint is loaded
    assert not torch.equal(second.loss.classifier.weight, trained_head)
    second.load_checkpoint(latest_checkpoint(tmp_path / "out"))
    assert torch.equal(second.loss.classifier.weight, trained_head)


def test_workers_split_each_global_batch_so_every_worker_count_sees_the_same_stream(tiny_model_path, tmp_path):
    (tmp_path / "pairs.csv").write_text("anchor,positive\n" + "".join(f"q{i},p{i}\n" for i in range(37)))
    model = EmbeddingModel(str(tiny_model_path), device="cpu")
    dataset, detected = load_with_format(DataSource(str(tmp_path / "pairs.csv")))

    def shards(world_size, rank, batch_size):
        # random batches, so the short last batch comes last (length-grouped ones: test_length_grouping.py)
        args = _args(max_steps=None, batch_size=batch_size, save_steps=None, group_by_length=False)
        trainer = Trainer(MultipleNegativesRankingLoss(model), dataset, detected, args, tmp_path / "out", rank=rank, world_size=world_size)
        return [(indices, rows) for _, indices, rows in trainer.worker_batches(0)]

    one = shards(1, 0, 8)
    assert [rows for _, rows in one] == [8, 8, 8, 8, 5]
    for world_size in (2, 4):
        parts = [shards(world_size, rank, 8 // world_size) for rank in range(world_size)]
        assert all(len(part) == len(one) for part in parts)
        for step, (batch, rows) in enumerate(one):
            assert [index for part in parts for index in part[step][0]] == batch  # the same global batch, in order
            sizes = [len(part[step][0]) for part in parts]
            assert all(part[step][1] == rows for part in parts) and max(sizes) - min(sizes) <= 1
    assert [len(indices) for indices, _ in shards(2, 0, 4)[-1:]] + [len(indices) for indices, _ in shards(2, 1, 4)[-1:]] == [3, 2]
    # 6 workers x 2 rows: batches of 12, 12, 12 and 1; the last has fewer rows than workers and is left out
    assert [rows for _, rows in shards(6, 5, 2)] == [12, 12, 12]
