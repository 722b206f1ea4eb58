"""Every catalogue loss trains on data of every format it declares: the loss falls on a repeated batch."""

import random

import datasets
import pytest
import torch

from conftest import losses_on_repeated_batch, sentence
from embedlab.data import Collator
from embedlab.formats import detect_format
from embedlab.losses import CATALOGUE, build_loss


def format_dataset(key: str, rows: int = 8) -> datasets.Dataset:
    rng = random.Random(1)

    def texts():
        return [sentence(rng) for _ in range(rows)]

    anchors = texts()
    columns = {
        "sentence_class": {"text": anchors, "label": [i % 3 for i in range(rows)]},
        "single_sentences": {"text": anchors},
        "anchor_anchor_pairs": {"anchor": anchors, "anchor_again": anchors},
        "damaged_original_pairs": {"damaged": [" ".join(t.split()[::2]) for t in anchors], "original": anchors},
        "pair_class": {"premise": anchors, "hypothesis": texts(), "label": [i % 3 for i in range(rows)]},
        "anchor_positive_pairs": {"anchor": anchors, "positive": texts()},
        "pair_binary": {"sentence1": anchors, "sentence2": texts(), "label": [i % 2 for i in range(rows)]},
        "pair_score": {"sentence1": anchors, "sentence2": texts(), "score": [round(rng.random(), 2) for _ in range(rows)]},
        "triplets": {"anchor": anchors, "positive": texts(), "negative": texts()},
        "n_tuples": {"anchor": anchors, "positive": texts(), "negative_1": texts(), "negative_2": texts()},
        "teacher_embedding": {"text": anchors, "label": torch.randn(rows, 32, generator=torch.Generator().manual_seed(0)).tolist()},
        "query_passage_margin": {"query": anchors, "passage_one": texts(), "passage_two": texts(), "score": [rng.uniform(-2, 2) for _ in range(rows)]},
    }[key]
    return datasets.Dataset.from_dict(columns)


CASES = [(name, key) for name, loss_class in CATALOGUE.items() for key in loss_class.formats]


def test_every_loss_declares_known_formats_and_has_the_documented_shape():
    from embedlab.formats import FORMATS_BY_KEY

    for name, loss_class in CATALOGUE.items():
        assert loss_class.formats and all(key in FORMATS_BY_KEY for key in loss_class.formats), name
        doc = loss_class.__doc__
        for section in ("Args:", "References:", "Requirements:", "Inputs:", "Relations:", "Example:"):
            assert section in doc, f"{name} docstring lacks {section}"
        assert "citation" in dir(loss_class) and "get_config_dict" in dir(loss_class), name


@pytest.mark.parametrize(("name", "format_key"), CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_loss_decreases_on_a_repeated_batch(tiny_model, tiny_guide_path, name, format_key):
    dataset = format_dataset(format_key)
    detected = detect_format(dataset, format_key=format_key)
    torch.manual_seed(0)
    params = {"guide": str(tiny_guide_path)} if "GIST" in name else {}  # the guide is named by path, as in configs
    loss = build_loss(name, tiny_model, params, detected)
    assert isinstance(loss.get_config_dict(), dict) and "@" in loss.citation
    features, labels = Collator(tiny_model.tokenize, detected, dataset)(dataset[:])
    values = losses_on_repeated_batch(loss, features, labels)
    assert values[-1] < values[0], values


MODIFIER_CASES = [
    ("MatryoshkaLoss", {"matryoshka_dims": [32, 16, 8]}, "CoSENTLoss", "pair_score"),
    ("AdaptiveLayerLoss", {}, "MultipleNegativesRankingLoss", "triplets"),
    ("Matryoshka2dLoss", {"matryoshka_dims": [32, 16]}, "CoSENTLoss", "pair_score"),
    ("MatryoshkaLoss", {"matryoshka_dims": [32, 8]}, "CachedMultipleNegativesRankingLoss", "anchor_positive_pairs"),
]


@pytest.mark.parametrize(("modifier", "params", "inner", "format_key"), MODIFIER_CASES, ids=[f"{c[0]}-{c[2]}" for c in MODIFIER_CASES])
def test_modified_loss_decreases_on_a_repeated_batch(tiny_model, modifier, params, inner, format_key):
    from embedlab.config import LossModifierConfig

    dataset = format_dataset(format_key)
    detected = detect_format(dataset, format_key=format_key)
    torch.manual_seed(0)
    loss = build_loss(inner, tiny_model, {}, detected, [LossModifierConfig(modifier, params)])
    features, labels = Collator(tiny_model.tokenize, detected, dataset)(dataset[:])
    values = losses_on_repeated_batch(loss, features, labels)
    assert values[-1] < values[0], values
