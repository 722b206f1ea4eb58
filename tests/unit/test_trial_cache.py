"""Cheap sweep trials: a trial takes the inputs and base model an earlier trial in its process loaded (and only
when they are the same), and saves its model only when it ranks among the best so far."""

import math
import random
from types import SimpleNamespace

import pytest
import torch

from conftest import sentence, write_config, write_jsonl
from embedlab import run, trial_cache
from embedlab.config import load_config
from embedlab.errors import EmbedlabError
from embedlab.model import EmbeddingModel
from embedlab.sweep import BestModels, prune_models


@pytest.fixture
def counted(monkeypatch):
    """Empty caches, and a list of what was loaded from files: "inputs" (data and evaluators) or "model"."""
    for name in ("_inputs", "_models"):
        monkeypatch.setattr(trial_cache, name, trial_cache._Kept())
    loads = []
    load_inputs = run.load_inputs
    monkeypatch.setattr(run, "load_inputs", lambda config: loads.append("inputs") or load_inputs(config))
    monkeypatch.setattr(trial_cache, "EmbeddingModel", lambda *args, **kwargs: loads.append("model") or EmbeddingModel(*args, **kwargs))
    return loads


def _config(tmp_path, model_path, *overrides):
    rng = random.Random(0)
    rows = [{"sentence1": sentence(rng), "sentence2": sentence(rng), "score": rng.random()} for _ in range(40)]
    train, dev = tmp_path / "train.jsonl", tmp_path / "dev.jsonl"
    if not train.exists():
        write_jsonl(train, rows[:32]), write_jsonl(dev, rows[32:])
    path = write_config(tmp_path / "trial.yaml", model_path, train, tmp_path / "trial", evaluators=[{"name": "dev", "data": str(dev)}])
    return load_config(path, list(overrides))


def _weights(model) -> dict:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def test_a_second_trial_reloads_neither_data_nor_model_and_gets_what_a_fresh_load_gives(tmp_path, tiny_model_path, counted):
    first = trial_cache.prepare(_config(tmp_path, tiny_model_path, "training.learning_rate=1e-4"), device="cpu")
    assert counted == ["inputs", "model"]
    with torch.no_grad():  # the first trial trains its model: the kept one must not change with it
        next(first.model.parameters()).add_(1.0)

    config = _config(tmp_path, tiny_model_path, "training.learning_rate=3e-4", "loss.params={scale: 10.0}", "model.pooling=cls")
    second = trial_cache.prepare(config, device="cpu")
    assert counted == ["inputs", "model"]  # nothing loaded again
    fresh = run.prepare(config, device="cpu")  # loads its own, from the files
    counted.clear()
    assert second.model is not first.model and second.evaluators[0] is not first.evaluators[0]
    assert all(torch.equal(tensor, _weights(fresh.model)[name]) for name, tensor in _weights(second.model).items())
    assert second.identity == fresh.identity and second.prompts == fresh.prompts
    assert run.evaluate_all(second.evaluators, second.model) == run.evaluate_all(fresh.evaluators, fresh.model)
    assert second.model[1].modes == fresh.model[1].modes == ["cls"]  # the trial's own model settings

    # A trial's own settings are still checked: its loss against the kept data, its mixture settings.
    with pytest.raises(EmbedlabError, match="does not suit"):
        trial_cache.prepare(_config(tmp_path, tiny_model_path, "loss.name=MultipleNegativesRankingLoss"), device="cpu")
    mixture = [f"data.train={{a: {tmp_path / 'train.jsonl'}, b: {tmp_path / 'train.jsonl'}}}", "training.mixture={temperature: 2}"]
    trial_cache.prepare(_config(tmp_path, tiny_model_path, *mixture), device="cpu")
    with pytest.raises(EmbedlabError, match="temperature must be > 0"):
        trial_cache.prepare(_config(tmp_path, tiny_model_path, *mixture[:1], "training.mixture={temperature: 0}"), device="cpu")
    assert counted == ["inputs"]  # the mixture's
    counted.clear()

    # What shapes the inputs decides: another data limit, or the same path with other content, loads again.
    trial_cache.prepare(_config(tmp_path, tiny_model_path, "data.train.limit=16"), device="cpu")
    assert counted == ["inputs"]
    with open(tmp_path / "dev.jsonl", "a") as file:
        file.write('{"sentence1": "a man", "sentence2": "a dog", "score": 0.5}\n')
    trial_cache.prepare(_config(tmp_path, tiny_model_path), device="cpu")
    assert counted == ["inputs", "inputs"]


def test_a_trial_saves_its_model_only_among_the_best_so_far(tmp_path):
    def claim(folder, trial, value, count=1, mode="max"):
        (tmp_path / folder).mkdir(exist_ok=True)
        return BestModels(tmp_path / folder, trial, "dev_spearman", mode, count).keep_model(None, {"dev_spearman": value})

    assert claim("one", "a", 0.5) and not claim("one", "b", 0.4) and claim("one", "c", 0.6)
    assert not claim("one", "d", math.nan) and not claim("one", "e", None) and not claim("one", "f", 0.55)
    assert claim("two", "a", 0.5, count=2) and claim("two", "b", 0.4, count=2) and not claim("two", "c", 0.3, count=2)
    assert claim("two", "d", 0.45, count=2)  # second best so far
    assert claim("min", "a", 0.5, mode="min") and claim("min", "b", 0.4, mode="min") and not claim("min", "c", 0.45, mode="min")


def test_the_sweep_keeps_the_models_of_its_best_finished_trials_only(tmp_path):
    for trial in ("best", "second", "third", "stopped"):
        (tmp_path / "trials" / trial / "model").mkdir(parents=True)
    ranked = [{"trial_id": "best", "status": "ok"}, {"trial_id": "second", "status": "ok"}, {"trial_id": "third", "status": "ok"}, {"trial_id": "stopped", "status": "stopped"}]
    prune_models(SimpleNamespace(output_dir=tmp_path, search=SimpleNamespace(keep_models=2)), {"trials": ranked})
    assert sorted(path.parent.name for path in (tmp_path / "trials").glob("*/model")) == ["best", "second"]
