"""Length-grouped batches (`training.group_by_length`): less padding, every sampler's guarantee kept."""

import random

import datasets
import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import sentence, write_config, write_jsonl
from embedlab import run
from embedlab.config import DataSource, TrainingConfig, load_config
from embedlab.data import (
    GroupByLabelBatchSampler,
    NoDuplicatesBatchSampler,
    RandomBatchSampler,
    load_with_format,
    row_token_lengths,
)
from embedlab.formats import detect_format
from embedlab.losses import CoSENTLoss, MultipleNegativesRankingLoss
from embedlab.model import EmbeddingModel
from embedlab.trainer import Trainer, latest_checkpoint


class Interrupt(Exception):
    pass


def _args(**overrides) -> TrainingConfig:
    return TrainingConfig(**{"batch_size": 8, "learning_rate": 1e-3, "show_progress_bar": False, **overrides})


def _rows(count: int, seed: int = 0):
    """Anchor-positive pairs with lengths from 2 to 80 words, and each row's length (its words)."""
    rng = random.Random(seed)
    words = [rng.randint(1, 40) for _ in range(2 * count)]
    anchors = [" ".join(f"a{i}" for i in range(n)) + f" #{row}" for row, n in enumerate(words[:count])]
    positives = [" ".join(f"p{i}" for i in range(n)) + f" #{row}" for row, n in enumerate(words[count:])]
    dataset = datasets.Dataset.from_dict({"anchor": anchors, "positive": positives})
    return dataset, detect_format(dataset), [a + b + 2 for a, b in zip(words[:count], words[count:], strict=True)]


def _padding(batches, lengths) -> int:
    """Pad tokens the batches would hold (each row padded to its batch's longest)."""
    return sum(max(lengths[i] for i in batch) * len(batch) - sum(lengths[i] for i in batch) for batch in batches)


@pytest.mark.parametrize("sampler_class", [RandomBatchSampler, NoDuplicatesBatchSampler])
def test_grouped_batches_take_every_row_once_in_a_seeded_order_with_a_fraction_of_the_padding(sampler_class):
    dataset, detected, lengths = _rows(2000)
    grouped = sampler_class(dataset, detected, batch_size=16, seed=3, lengths=lengths)
    epoch0 = grouped.batches(0)
    assert sorted(i for batch in epoch0 for i in batch) == list(range(2000))
    assert epoch0 == sampler_class(dataset, detected, batch_size=16, seed=3, lengths=lengths).batches(0)
    assert epoch0 != grouped.batches(1)
    shuffled = sampler_class(dataset, detected, batch_size=16, seed=3).batches(0)
    assert _padding(epoch0, lengths) < 0.2 * _padding(shuffled, lengths)
    # batch order is shuffled too: the epoch does not run from long to short batches
    longest = [max(lengths[i] for i in batch) for batch in epoch0[:50]]
    assert longest != sorted(longest, reverse=True)


def test_grouped_no_duplicates_batches_still_never_repeat_a_text():
    rng = random.Random(1)
    anchors = [f"q{rng.randint(0, 30)}" + " x" * rng.randint(0, 20) for _ in range(300)]  # many repeated anchors
    positives = [f"p{i}" + " y" * rng.randint(0, 20) for i in range(300)]
    dataset = datasets.Dataset.from_dict({"anchor": anchors, "positive": positives})
    lengths = [len(a.split()) + len(p.split()) for a, p in zip(anchors, positives, strict=True)]
    batches = NoDuplicatesBatchSampler(dataset, detect_format(dataset), batch_size=8, seed=0, lengths=lengths).batches(0)
    assert sorted(i for batch in batches for i in batch) == list(range(300))
    for batch in batches:
        texts = [anchors[i] for i in batch] + [positives[i] for i in batch]
        assert len(texts) == len(set(texts))


@pytest.mark.parametrize("share_of_one_label", [0.25, 0.9])
def test_grouped_label_batches_keep_two_labels_with_two_rows_each(share_of_one_label):
    rng = random.Random(2)
    labels = [0 if rng.random() < share_of_one_label else rng.randint(1, 5) for _ in range(801)]
    dataset = datasets.Dataset.from_dict({"sentence": [f"s{i}" for i in range(801)], "label": labels})
    lengths = [rng.randint(3, 60) for _ in range(801)]
    detected = detect_format(dataset)
    grouped = GroupByLabelBatchSampler(dataset, detected, batch_size=16, seed=0, lengths=lengths).batches(0)
    rows = [i for batch in grouped for i in batch]
    assert len(rows) == len(set(rows))
    plain = GroupByLabelBatchSampler(dataset, detected, batch_size=16, seed=0).batches(0)
    unpaired = sum(count % 2 for count in map(labels.count, set(labels)))  # one odd row out per label waits
    if share_of_one_label < 0.5:
        assert len(rows) == 801 - unpaired
    else:  # a batch needs another label's pair: pairs of the large label wait once those run out
        assert sum(map(len, plain)) <= len(rows) < 801 - unpaired
    for batch in grouped:
        counts = [sum(labels[i] == label for i in batch) for label in {labels[i] for i in batch}]
        assert len(counts) >= 2 and min(counts) >= 2
    assert grouped == GroupByLabelBatchSampler(dataset, detected, batch_size=16, seed=0, lengths=lengths).batches(0)
    assert _padding(grouped, lengths) < 0.5 * _padding(plain, lengths)


def test_row_lengths_are_the_tokens_training_pads_and_are_counted_once_per_data_set(tiny_model, monkeypatch):
    dataset, detected, _ = _rows(20)
    calls = []
    count = tiny_model.token_counts
    monkeypatch.setattr(tiny_model, "token_counts", lambda texts: calls.append(len(texts)) or count(texts))
    lengths = row_token_lengths(tiny_model, dataset, detected, {"anchor": "query: "})
    for row in (0, 7):
        anchor = tiny_model.tokenize(["query: " + dataset[row]["anchor"]])["input_ids"].shape[1]
        positive = tiny_model.tokenize([dataset[row]["positive"]])["input_ids"].shape[1]
        assert lengths[row] == anchor + positive
    assert calls == [20, 20]
    assert row_token_lengths(tiny_model, dataset, detected, {"anchor": "query: "}) == lengths and calls == [20, 20]
    row_token_lengths(tiny_model, dataset, detected)  # other prompts: other lengths
    assert calls == [20, 20, 20, 20]
    tiny_model.max_seq_length = 4  # truncated texts pad to at most max_seq_length
    assert max(row_token_lengths(tiny_model, dataset, detected)) == 8


def test_grouped_batches_are_the_same_global_stream_for_one_and_two_workers(tiny_model_path, tmp_path):
    rng = random.Random(0)
    write_jsonl(tmp_path / "pairs.jsonl", [{"anchor": f"q{i} " + sentence(rng, rng.randint(1, 12)), "positive": f"p{i} " + sentence(rng)} for i in range(90)])
    model = EmbeddingModel(str(tiny_model_path), device="cpu")
    dataset, detected = load_with_format(DataSource(str(tmp_path / "pairs.jsonl")))

    def batches(world_size, rank):
        args = _args(max_steps=None, batch_size=8 // world_size, save_steps=None, group_by_length=True)
        trainer = Trainer(MultipleNegativesRankingLoss(model), dataset, detected, args, tmp_path / "out", rank=rank, world_size=world_size)
        return [indices for _, indices, _ in trainer.worker_batches(0)]

    one = batches(1, 0)
    random_batches = Trainer(MultipleNegativesRankingLoss(model), dataset, detected, _args(max_steps=None, save_steps=None, group_by_length=False), tmp_path / "o")
    assert one != [indices for _, indices, _ in random_batches.worker_batches(0)]
    halves = [batches(2, rank) for rank in range(2)]
    assert [first + second for first, second in zip(*halves, strict=True)] == one


def test_a_grouped_run_resumes_exactly_and_a_mixture_groups_each_data_set(tiny_model_path, tmp_path):
    rng = random.Random(0)
    write_jsonl(tmp_path / "scores.jsonl", [{"sentence1": sentence(rng, rng.randint(1, 12)), "sentence2": sentence(rng), "score": rng.random()} for _ in range(40)])
    write_jsonl(tmp_path / "pairs.jsonl", [{"anchor": f"q{i} " + sentence(rng, rng.randint(1, 12)), "positive": f"p{i} " + sentence(rng)} for i in range(40)])

    def config(name):
        path = write_config(
            tmp_path / f"{name}.yaml", tiny_model_path, tmp_path / "scores.jsonl", tmp_path / name,
            data={"train": {"scores": str(tmp_path / "scores.jsonl"), "pairs": str(tmp_path / "pairs.jsonl")}},
            training={"batch_size": 4, "max_steps": 12, "save_steps": 4, "learning_rate": 1e-3, "group_by_length": True}, tracking="off",
        )  # fmt: skip
        raw = yaml.safe_load(path.read_text())
        raw["loss"] = {"scores": {"name": "CoSENTLoss"}, "pairs": {"name": "MultipleNegativesRankingLoss"}}
        path.write_text(yaml.safe_dump(raw))
        return load_config(path)

    class StopAtStep:
        def on_step_end(self, trainer, step, loss_value):
            assert all(sampler.lengths is not None for sampler in trainer.sampler.samplers.values())
            if step == 10:
                raise Interrupt

    run.train(run.prepare(config("whole")))
    with pytest.raises(Interrupt):
        run.train(run.prepare(config("cut")), callbacks=[StopAtStep()])
    assert latest_checkpoint(tmp_path / "cut").name == "checkpoint-8"
    run.train(run.prepare(config("cut")))
    expected = load_file(tmp_path / "whole" / "model" / "model.safetensors")
    got = load_file(tmp_path / "cut" / "model" / "model.safetensors")
    assert all(torch.equal(expected[name], got[name]) for name in expected)


@pytest.mark.parametrize(
    ("loss_class", "setting", "grouped"),
    [
        (MultipleNegativesRankingLoss, "auto", True),  # measured to cost nothing: on by default
        (MultipleNegativesRankingLoss, False, False),
        (CoSENTLoss, "auto", False),  # measured to cost STSb Spearman: off unless asked
        (CoSENTLoss, True, True),
    ],
)
def test_auto_groups_by_length_only_for_the_losses_measured_to_lose_nothing(tiny_model_path, tmp_path, loss_class, setting, grouped):
    rng = random.Random(0)
    write_jsonl(tmp_path / "pairs.jsonl", [{"sentence1": f"q{i} " + sentence(rng), "sentence2": f"p{i} " + sentence(rng), "score": rng.random()} for i in range(20)])
    dataset, detected = load_with_format(DataSource(str(tmp_path / "pairs.jsonl")))
    if loss_class is MultipleNegativesRankingLoss:
        dataset, detected = dataset.remove_columns("score"), detect_format(dataset.remove_columns("score"))
    model = EmbeddingModel(str(tiny_model_path), device="cpu")
    trainer = Trainer(loss_class(model), dataset, detected, _args(max_steps=None, save_steps=None, group_by_length=setting), tmp_path / "out")
    assert (trainer.sampler.lengths is not None) == grouped
