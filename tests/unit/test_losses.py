import itertools
import re

import pytest
import torch

from conftest import losses_on_repeated_batch
from embedlab import EmbedlabError
from embedlab.formats import detect_format
from embedlab.losses import CoSENTLoss, MultipleNegativesRankingLoss, build_loss
from embedlab.similarity import cos_sim

A = ["a man is playing a guitar", "the dog runs in the park", "two cats sit on a table", "what is the capital of france ?"]
B = ["a man plays a flute", "a dog is running", "the cats are sitting", "paris is the capital of france"]
C = ["a car drives on the road", "the sky is blue", "a boat on the water", "a bird sits in a tree"]


class FixedEmbeddings(torch.nn.Module):
    """A stand-in model whose 'embeddings' are parameters: the loss maths can be checked by hand."""

    def __init__(self, *tables):
        super().__init__()
        self.tables = torch.nn.ParameterList(torch.nn.Parameter(table) for table in tables)

    def embed(self, features_list):
        return [self.tables[features["column"]] for features in features_list]


def test_cosent_matches_its_formula():
    torch.manual_seed(0)
    first, second = torch.randn(5, 8), torch.randn(5, 8)
    labels = torch.tensor([0.1, 0.9, 0.5, 0.5, 0.3])
    loss = CoSENTLoss(FixedEmbeddings(first, second), scale=20.0)
    got = loss([{"column": 0}, {"column": 1}], labels)
    similarities = 20.0 * torch.nn.functional.cosine_similarity(first, second)
    terms = [similarities[k] - similarities[i] for i, k in itertools.product(range(5), range(5)) if labels[i] > labels[k]]
    expected = torch.log(1 + torch.exp(torch.stack(terms)).sum())
    torch.testing.assert_close(got, expected)


def test_mnrl_is_cross_entropy_over_in_batch_and_hard_negatives():
    torch.manual_seed(0)
    anchors, positives, negatives = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 8)
    loss = MultipleNegativesRankingLoss(FixedEmbeddings(anchors, positives, negatives), scale=10.0)
    got = loss([{"column": 0}, {"column": 1}, {"column": 2}], None)
    logits = 10.0 * cos_sim(anchors, torch.cat([positives, negatives]))
    torch.testing.assert_close(got, torch.nn.functional.cross_entropy(logits, torch.arange(4)))


def test_mnrl_symmetric_directions_and_config():
    torch.manual_seed(0)
    anchors, positives = torch.randn(4, 8), torch.randn(4, 8)
    loss = MultipleNegativesRankingLoss(FixedEmbeddings(anchors, positives), directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction")
    got = loss([{"column": 0}, {"column": 1}], None)
    forward = torch.nn.functional.cross_entropy(20 * cos_sim(anchors, positives), torch.arange(4))
    backward = torch.nn.functional.cross_entropy(20 * cos_sim(positives, anchors), torch.arange(4))
    torch.testing.assert_close(got, (forward + backward) / 2)
    assert loss.get_config_dict()["directions"] == ("query_to_doc", "doc_to_query")
    with pytest.raises(ValueError, match="directions"):
        MultipleNegativesRankingLoss(None, directions=("doc_to_doc",))


def test_build_loss_checks_name_format_and_parameters(tiny_model):
    import datasets

    pairs = detect_format(datasets.Dataset.from_dict({"a": A, "b": B, "score": [0.1, 0.2, 0.3, 0.4]}))
    loss = build_loss("CoSENTLoss", tiny_model, {"scale": 10, "similarity_fct": "pairwise_dot_score"}, pairs)
    assert loss.get_config_dict() == {"scale": 10, "similarity_fct": "pairwise_dot_score"}
    with pytest.raises(EmbedlabError, match="did you mean CoSENTLoss"):
        build_loss("CoSentLoss", tiny_model, {}, pairs)
    with pytest.raises(EmbedlabError, match=r"does not suit this data: the data is \(sentence_A, sentence_B\) pairs \+ float score.*losses for it: CoSENTLoss"):
        build_loss("MultipleNegativesRankingLoss", tiny_model, {}, pairs)
    with pytest.raises(EmbedlabError, match=r"CoSENTLoss has no parameter 'margin': its parameters are scale"):
        build_loss("CoSENTLoss", tiny_model, {"margin": 1.0}, pairs)
    with pytest.raises(EmbedlabError, match=r"CoSENTLoss has no parameter 'scal' \(did you mean 'scale'\?\)"):
        build_loss("CoSENTLoss", tiny_model, {"scal": 1.0}, pairs)


@pytest.mark.parametrize(
    ("loss_name", "params", "message"),
    [
        ("CoSENTLoss", {"scale": "abc"}, "CoSENTLoss: scale must be a number, got 'abc'"),
        ("CoSENTLoss", {"scale": None}, "CoSENTLoss: scale must be a number, got None"),
        ("CoSENTLoss", {"scale": True}, "CoSENTLoss: scale must be a number, got True"),
        ("CachedMultipleNegativesRankingLoss", {"mini_batch_size": 8.5}, "mini_batch_size must be a whole number, got 8.5"),
        ("MultipleNegativesRankingLoss", {"gather_across_devices": "yes"}, "gather_across_devices must be true or false, got 'yes'"),
    ],
)
def test_a_loss_parameter_of_the_wrong_type_is_refused_before_training(tiny_model, loss_name, params, message):
    """Left unchecked, a string scale trains until the loss's first step fails with a torch TypeError."""
    import datasets

    columns = {"a": A, "b": B} if loss_name != "CoSENTLoss" else {"a": A, "b": B, "score": [0.1, 0.2, 0.3, 0.4]}
    detected = detect_format(datasets.Dataset.from_dict(columns))
    with pytest.raises(EmbedlabError, match=re.escape(message)):
        build_loss(loss_name, tiny_model, params, detected)


def test_modifier_parameters_are_type_checked_too(tiny_model):
    import datasets

    from embedlab.config import LossModifierConfig

    detected = detect_format(datasets.Dataset.from_dict({"a": A, "b": B}))
    ok = build_loss("MultipleNegativesRankingLoss", tiny_model, {"scale": 10}, detected, [LossModifierConfig("MatryoshkaLoss", {"matryoshka_dims": [16, 8], "matryoshka_weights": None})])
    assert ok.get_config_dict()["matryoshka_dims"] == [16, 8]
    with pytest.raises(EmbedlabError, match=re.escape("MatryoshkaLoss: matryoshka_dims must be a list of whole numbers, got [16, 'eight']")):
        build_loss("MultipleNegativesRankingLoss", tiny_model, {}, detected, [LossModifierConfig("MatryoshkaLoss", {"matryoshka_dims": [16, "eight"]})])


def test_custom_loss_by_dotted_path(tiny_model):
    import datasets

    pairs = detect_format(datasets.Dataset.from_dict({"a": A, "b": B, "score": [0.1, 0.2, 0.3, 0.4]}))
    loss = build_loss("custom_losses.MeanSquaredCosineLoss", tiny_model, {"weight": 2.0}, pairs)
    features = [tiny_model.tokenize(A), tiny_model.tokenize(B)]
    assert loss(features, torch.tensor([0.1, 0.2, 0.3, 0.4])).dim() == 0
    with pytest.raises(EmbedlabError, match="could not be imported"):
        build_loss("custom_losses.Nope", tiny_model, {}, pairs)


@pytest.mark.parametrize(
    ("loss_class", "params", "columns", "labels"),
    [
        (CoSENTLoss, {}, [A, B], torch.tensor([0.9, 0.1, 0.5, 0.3])),
        (MultipleNegativesRankingLoss, {}, [A, B, C], None),
    ],
)
def test_loss_decreases_on_a_repeated_batch(tiny_model, loss_class, params, columns, labels):
    torch.manual_seed(0)
    loss = loss_class(tiny_model, **params)
    features = [tiny_model.tokenize(column) for column in columns]
    values = losses_on_repeated_batch(loss, features, labels, learning_rate=1e-3)
    assert values[-1] < values[0]


