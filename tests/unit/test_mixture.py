"""Training on a mixture of data sets: each batch from one data set, with its own loss and sampler."""

import json
import random
from collections import Counter

import datasets
import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import require_reference, sentence, write_config, write_jsonl
from embedlab import EmbeddingModel, run
from embedlab.config import MixtureConfig, load_config
from embedlab.data import (
    GroupByLabelBatchSampler,
    MixtureSampler,
    NoDuplicatesBatchSampler,
    RandomBatchSampler,
)
from embedlab.errors import EmbedlabError
from embedlab.formats import detect_format


@pytest.fixture
def mixture_files(tmp_path):
    """Three formats: score pairs (24 rows), anchor-positive pairs (40) and sentences with classes (32)."""
    rng = random.Random(0)
    scores = write_jsonl(tmp_path / "scores.jsonl", [{"sentence1": sentence(rng), "sentence2": sentence(rng), "score": rng.random()} for _ in range(24)])
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"anchor": f"q{i} {sentence(rng)}", "positive": f"p{i} {sentence(rng)}"} for i in range(40)])
    classes = write_jsonl(tmp_path / "classes.jsonl", [{"sentence": sentence(rng), "label": i % 4} for i in range(32)])
    return {"scores": scores, "pairs": pairs, "classes": classes}


def _mixture_config(tmp_path, tiny_model_path, files, name="run", losses=None, **training):
    """Score pairs with CoSENTLoss and anchor-positive pairs with MultipleNegativesRankingLoss, by default."""
    path = write_config(
        tmp_path / f"{name}.yaml", tiny_model_path, files["scores"], tmp_path / name,
        data={"train": {part: str(files[part]) for part in losses or ("scores", "pairs")}},
        training={"batch_size": 4, "max_steps": 8, "save_steps": 3, "learning_rate": 1e-3, **training}, tracking="off",
    )  # fmt: skip
    raw = yaml.safe_load(path.read_text())
    raw["loss"] = {part: {"name": loss} for part, loss in (losses or {"scores": "CoSENTLoss", "pairs": "MultipleNegativesRankingLoss"}).items()}
    path.write_text(yaml.safe_dump(raw))
    return path


def _sampler(rows: int, batch_size: int = 4, seed: int = 0):
    dataset = datasets.Dataset.from_dict({"anchor": [f"a{i}" for i in range(rows)], "positive": [f"p{i}" for i in range(rows)]})
    return RandomBatchSampler(dataset, detect_format(dataset), batch_size, seed)


def test_proportional_takes_every_batch_of_every_data_set_once_in_a_seeded_order():
    mixture = MixtureSampler({"a": _sampler(40), "b": _sampler(12, seed=1)}, "proportional", {"a": 40, "b": 12}, seed=0)
    epoch = mixture.batches(0)
    assert Counter(name for name, _ in epoch) == {"a": 10, "b": 3}
    assert [batch for name, batch in epoch if name == "a"] == _sampler(40).batches(0)  # each data set's own batches, in order
    assert epoch == mixture.batches(0) and [name for name, _ in epoch] != [name for name, _ in mixture.batches(1)]


def test_round_robin_takes_turns_until_the_smallest_data_set_runs_out():
    mixture = MixtureSampler({"a": _sampler(40), "b": _sampler(12)}, "round_robin", {"a": 40, "b": 12}, seed=0)
    assert [name for name, _ in mixture.batches(0)] == ["a", "b"] * 3


@pytest.mark.parametrize(
    "mixture, expected",
    [
        (MixtureConfig(weights={"a": 1.0, "b": 3.0}), {"a": 0.25, "b": 0.75}),
        (MixtureConfig(temperature=1.0), {"a": 0.8, "b": 0.2}),  # by size: 400 and 100 rows
        (MixtureConfig(temperature=1000.0), {"a": 0.5, "b": 0.5}),  # nearly uniform
    ],
)
def test_weights_and_temperature_set_each_data_sets_share_of_the_steps(mixture, expected):
    sampler = MixtureSampler({"a": _sampler(400), "b": _sampler(100)}, mixture, {"a": 400, "b": 100}, seed=0)
    names = [name for epoch in range(8) for name, _ in sampler.batches(epoch)]
    assert len(names) == 8 * 125  # an epoch has as many steps as a proportional one
    for name, share in expected.items():
        assert names.count(name) / len(names) == pytest.approx(share, abs=0.03)


def test_a_small_data_set_with_a_large_weight_repeats_in_passes_and_a_zero_weight_is_never_drawn():
    sampler = MixtureSampler({"big": _sampler(400), "small": _sampler(8), "off": _sampler(40)}, MixtureConfig(weights={"big": 1, "small": 1, "off": 0}), {}, seed=0)
    small = [batch for epoch in range(3) for name, batch in sampler.batches(epoch) if name == "small"]
    assert len(small) > 100 and all(len(batch) == 4 for batch in small)
    passes = [sorted(small[i] + small[i + 1]) for i in range(0, len(small) - 1, 2)]
    assert all(rows == list(range(8)) for rows in passes)  # every two batches, one whole pass of its 8 rows
    assert "off" not in {name for epoch in range(3) for name, _ in sampler.batches(epoch)}
    # Epoch 2 continues each stream where epoch 1 stopped: recomputed from scratch, it is the same.
    fresh = MixtureSampler({"big": _sampler(400), "small": _sampler(8), "off": _sampler(40)}, MixtureConfig(weights={"big": 1, "small": 1, "off": 0}), {}, seed=0)
    assert fresh.batches(2) == sampler.batches(2)


def test_each_data_set_is_batched_by_the_sampler_its_loss_needs(tmp_path, tiny_model_path, mixture_files):
    from embedlab.trainer import Trainer

    losses = {"scores": "CoSENTLoss", "pairs": "MultipleNegativesRankingLoss", "classes": "BatchAllTripletLoss"}
    prepared = run.prepare(load_config(_mixture_config(tmp_path, tiny_model_path, mixture_files, losses=losses)), device="cpu")
    trainer = Trainer(prepared.loss, prepared.dataset, prepared.detected, prepared.config.training, tmp_path / "out")
    samplers = trainer.sampler.samplers
    assert type(samplers["scores"]) is RandomBatchSampler
    assert type(samplers["pairs"]) is NoDuplicatesBatchSampler
    assert type(samplers["classes"]) is GroupByLabelBatchSampler


def test_a_mixture_resumes_exactly_and_logs_each_data_sets_loss(tmp_path, tiny_model_path, mixture_files):
    class Interrupt(Exception):
        pass

    class StopAt:
        def on_step_end(self, trainer, step, loss_value):
            if step == 5:
                raise Interrupt

    reference = run.train(run.prepare(load_config(_mixture_config(tmp_path, tiny_model_path, mixture_files, "whole", mixture={"weights": {"scores": 1, "pairs": 2}})), device="cpu"))
    config = _mixture_config(tmp_path, tiny_model_path, mixture_files, "resumed", mixture={"weights": {"scores": 1, "pairs": 2}})
    with pytest.raises(Interrupt):
        run.train(run.prepare(load_config(config), device="cpu"), callbacks=[StopAt()])
    resumed = run.train(run.prepare(load_config(config), device="cpu"))  # from the step-3 checkpoint
    assert resumed["step"] == reference["step"] == 8
    whole, again = (load_file(tmp_path / name / "model" / "model.safetensors") for name in ("whole", "resumed"))
    for name, weights in whole.items():
        assert torch.equal(again[name], weights), name
    final = json.loads((tmp_path / "whole" / "results.json").read_text())["metrics"]
    assert {"loss", "train_loss/scores", "train_loss/pairs"} <= set(final)
    card = (tmp_path / "whole" / "model" / "README.md").read_text()
    assert "| scores |" in card and "| pairs |" in card and "MultipleNegativesRankingLoss" in card and "CoSENTLoss" in card


@pytest.mark.parametrize(
    "change, message",
    [
        ({"loss": {"scores": {"name": "CoSENTLoss"}, "nli": {"name": "MultipleNegativesRankingLoss"}}}, "the loss mapping names data set(s) nli that data.train does not have: data.train's data sets are pairs, scores"),
        ({"loss": {"name": "CoSENTLoss"}}, "data set 'pairs': CoSENTLoss does not suit this data"),
        ({"training": {"mixture": {"weights": {"scores": 1}}}}, "training.mixture.weights names scores: give a weight to each of data.train's data sets, pairs, scores"),
        ({"training": {"mixture": {"temperature": 0}}}, "training.mixture.temperature must be > 0, got 0"),
        ({"training": {"mixture": "random"}}, "config key 'training.mixture' must be one of proportional, round_robin"),
    ],
)
def test_mixture_mistakes_fail_in_one_line_naming_the_data_set(tmp_path, tiny_model_path, mixture_files, change, message):
    path = _mixture_config(tmp_path, tiny_model_path, mixture_files)
    raw = yaml.safe_load(path.read_text())
    for section, value in change.items():
        raw[section] = {**raw[section], **value} if section == "training" else value
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(EmbedlabError) as error:
        run.prepare(load_config(path), device="cpu")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_single_data_set_config_reads_as_before(tmp_path, tiny_model_path, score_pairs_file):
    config = load_config(write_config(tmp_path / "c.yaml", tiny_model_path, score_pairs_file, tmp_path / "out", data={"train": {"path": str(score_pairs_file), "limit": 10}}))
    assert not config.is_mixture and config.data.train.limit == 10 and config.loss.name == "CoSENTLoss"
    path = write_config(tmp_path / "typo.yaml", tiny_model_path, score_pairs_file, tmp_path / "out", data={"train": {"path": str(score_pairs_file), "limt": 10}})
    with pytest.raises(EmbedlabError, match="unknown config key 'data.train.limt' \\(did you mean 'limit'\\?\\)"):
        load_config(path)


def test_prompts_of_a_trained_mixture_encode_the_same_in_sentence_transformers(tmp_path, tiny_model_path, mixture_files):
    sentence_transformers = require_reference("sentence_transformers")
    config = _mixture_config(tmp_path, tiny_model_path, mixture_files, "prompted", prompts={"pairs": {"anchor": "query: ", "positive": "passage: "}, "scores": "sts: "})
    config.write_text(config.read_text().replace(f"name: {tiny_model_path}", f"name: {tiny_model_path}\n  include_prompt: false"))
    run.train(run.prepare(load_config(config), device="cpu"))
    folder = str(tmp_path / "prompted" / "model")
    texts = ["a dog runs in the park", "the cat sits"]
    ours, theirs = EmbeddingModel(folder, device="cpu"), sentence_transformers.SentenceTransformer(folder, device="cpu")
    assert set(ours.prompts) >= {"pairs/anchor", "pairs/positive", "scores"}
    for name in ("pairs/anchor", "scores"):
        torch.testing.assert_close(torch.tensor(ours.encode(texts, prompt_name=name)), torch.tensor(theirs.encode(texts, prompt_name=name)), atol=1e-6, rtol=0)
    assert not torch.allclose(torch.tensor(ours.encode(texts, prompt_name="scores")), torch.tensor(ours.encode(texts)), atol=1e-4)


def test_the_trainer_takes_a_plain_mapping_of_losses(tmp_path, tiny_model_path, mixture_files):
    from embedlab.config import DataSource, TrainingConfig
    from embedlab.data import load_with_format
    from embedlab.losses import CoSENTLoss, MultipleNegativesRankingLoss
    from embedlab.trainer import Trainer

    model = EmbeddingModel(str(tiny_model_path), device="cpu")
    loaded = {name: load_with_format(DataSource(str(mixture_files[name]))) for name in ("scores", "pairs")}
    losses = {"scores": CoSENTLoss(model), "pairs": MultipleNegativesRankingLoss(model)}  # the Python API's shape, as the docstring says
    args = TrainingConfig(batch_size=4, max_steps=2, save_steps=None, show_progress_bar=False)
    trainer = Trainer(losses, {name: rows for name, (rows, _) in loaded.items()}, {name: fmt for name, (_, fmt) in loaded.items()}, args, tmp_path / "out")
    before = next(model.parameters()).detach().clone()
    trainer.train()
    assert trainer.global_step == 2 and not torch.equal(before, next(model.parameters()))
