"""Sweeps over a mixture of data sets: a loss (and its parameters) per data set, mixture weights as ranges."""

import random

import optuna
import pytest
import yaml

from conftest import sentence, write_config, write_jsonl
from embedlab import sweep as sweeps
from embedlab.config import load_config
from embedlab.errors import EmbedlabError
from embedlab.formats import losses_for
from embedlab.sweep import DefineByRunSpace, loss_label, parameter_names, prepare_sweep, trial_config


@pytest.fixture
def files(tmp_path):
    rng = random.Random(0)
    return {
        "scores": write_jsonl(tmp_path / "scores.jsonl", [{"sentence1": sentence(rng), "sentence2": sentence(rng), "score": rng.random()} for _ in range(32)]),
        "pairs": write_jsonl(tmp_path / "pairs.jsonl", [{"anchor": f"q{i} {sentence(rng)}", "positive": f"p{i} {sentence(rng)}"} for i in range(32)]),
        "classes": write_jsonl(tmp_path / "classes.jsonl", [{"sentence": sentence(rng), "label": i % 4} for i in range(32)]),
    }


def _sweep_config(tmp_path, tiny_model_path, files, search, loss=None, mixture=None, parts=("scores", "pairs", "classes")):
    path = write_config(
        tmp_path / "sweep.yaml", tiny_model_path, files["scores"], tmp_path / "sweep",
        data={"train": {part: str(files[part]) for part in parts}},
        evaluators=[{"name": "dev", "data": str(files["scores"])}], search=search, tracking="off",
    )  # fmt: skip
    raw = yaml.safe_load(path.read_text())
    raw["loss"] = loss or {"scores": {"name": "CoSENTLoss"}, "pairs": {"name": "MultipleNegativesRankingLoss"}, "classes": {"name": "BatchAllTripletLoss"}}
    if mixture is not None:
        raw["training"]["mixture"] = mixture
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def test_each_searched_data_set_is_offered_only_the_losses_that_suit_it(tmp_path, tiny_model_path, files):
    config = _sweep_config(tmp_path, tiny_model_path, files, {"losses": {"scores": "auto", "pairs": "auto"}, "space": {"training.mixture.temperature": {"uniform": [1.0, 5.0]}}}, mixture={"temperature": 2.0})
    sweep = prepare_sweep(config)
    assert list(sweep.losses) == ["pairs", "scores"]  # in data.train's order; classes trains with its configured loss
    names = parameter_names(sweep)
    assert names[0] == "pairs.loss" and "scores.loss" in names and "pairs.MultipleNegativesRankingLoss.scale" in names
    assert names[-1] == "training.mixture.temperature"
    space = DefineByRunSpace(sweep.losses, [], sweep.search.space, mixture=True)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    offered = {"scores": set(), "pairs": set()}
    for _ in range(40):
        trial = study.ask()
        space(trial)
        for data_set in offered:
            offered[data_set].add(trial.params[f"{data_set}.loss"])
        study.tell(trial, random.random())
    assert offered["scores"] == set(sweep.losses["scores"]) and offered["scores"] <= set(losses_for("pair_score"))
    assert offered["pairs"] == set(sweep.losses["pairs"]) and offered["pairs"] <= set(losses_for("anchor_positive_pairs"))
    assert "CoSENTLoss" in offered["scores"] and "MultipleNegativesRankingLoss" in offered["pairs"]


def test_a_trial_config_gives_each_data_set_its_chosen_loss_and_the_mixture_its_weights(tmp_path, tiny_model_path, files):
    search = {
        "losses": {"pairs": ["MultipleNegativesRankingLoss", {"name": "CachedMultipleNegativesRankingLoss", "params": {"mini_batch_size": 4}}]},
        "modifiers": [None, {"name": "MatryoshkaLoss", "params": {"matryoshka_dims": [32, 16]}}],
        "space": {"training.mixture.weights.pairs": {"uniform": [0.5, 4.0]}},
    }
    sweep = prepare_sweep(_sweep_config(tmp_path, tiny_model_path, files, search, mixture={"weights": {"scores": 1, "pairs": 1, "classes": 1}}))
    params = {"pairs.loss": "CachedMultipleNegativesRankingLoss", "pairs.CachedMultipleNegativesRankingLoss.scale": 30.0, "modifier": "MatryoshkaLoss", "training.mixture.weights.pairs": 2.5}
    loss_params = {data_set: {name: entry["params"] for name, entry in choices.items()} for data_set, choices in sweep.losses.items()}
    config = trial_config(sweep.config.to_dict(), params, loss_params, sweeps.plain_modifiers(sweep.search), str(tmp_path / "t1"))
    assert config.loss["pairs"].name == "CachedMultipleNegativesRankingLoss" and config.loss["pairs"].params == {"mini_batch_size": 4, "scale": 30.0}
    assert config.loss["scores"].name == "CoSENTLoss" and config.loss["classes"].name == "BatchAllTripletLoss"
    assert all([modifier.name for modifier in loss.modifiers] == ["MatryoshkaLoss"] for loss in config.loss.values())
    assert config.training.mixture.weights == {"scores": 1, "pairs": 2.5, "classes": 1}
    assert loss_label(params) == "pairs: CachedMultipleNegativesRankingLoss"


def test_one_list_of_losses_serves_each_data_set_the_ones_that_suit_it(tmp_path, tiny_model_path, files):
    search = {"losses": ["CoSENTLoss", "AnglELoss", "MultipleNegativesRankingLoss"]}
    sweep = prepare_sweep(_sweep_config(tmp_path, tiny_model_path, files, search, loss={"name": "CoSENTLoss"}, parts=("scores", "pairs")))
    assert {name: list(losses) for name, losses in sweep.losses.items()} == {"scores": ["CoSENTLoss", "AnglELoss"], "pairs": ["MultipleNegativesRankingLoss"]}
    assert sweep.format_key == "pairs: anchor_positive_pairs, scores: pair_score"


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ({"losses": {"nli": "auto"}}, "search.losses names data set(s) nli that data.train does not have: its data sets are classes, pairs, scores"),
        ({"losses": {"pairs": ["CoSENTLoss"]}}, "search.losses.pairs: CoSENTLoss does not suit this data"),
        ({"losses": ["CoSENTLoss"]}, "search.losses (data set 'classes'): none of the listed losses suits this data"),
        ({"space": {"training.mixture.weights.pairs": {"uniform": [0.5, 4.0]}}}, "search.space: 'training.mixture.weights.pairs': training.mixture is 'proportional' in the config, not a mapping"),
    ],
)
def test_mixture_sweep_mistakes_fail_in_one_line(tmp_path, tiny_model_path, files, search, message):
    with pytest.raises(EmbedlabError) as error:
        prepare_sweep(_sweep_config(tmp_path, tiny_model_path, files, {"losses": {"pairs": "auto"}, **search}))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_losses_by_data_set_need_a_mixture(tmp_path, tiny_model_path, files):
    path = write_config(tmp_path / "one.yaml", tiny_model_path, files["scores"], tmp_path / "one", evaluators=[{"name": "dev", "data": str(files["scores"])}], search={"losses": {"train": "auto"}}, tracking="off")
    with pytest.raises(EmbedlabError, match="search.losses by data set needs several data sets"):
        prepare_sweep(load_config(path))
