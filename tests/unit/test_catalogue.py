"""The catalogue around the losses: conversions, the group-by-label sampler, modifiers from config, the
`embedlab losses` table, and GradCache's gradients."""

import datasets
import pytest
import torch

from embedlab import EmbedlabError
from embedlab.config import ConversionConfig, LossModifierConfig
from embedlab.conversions import convert
from embedlab.data import GroupByLabelBatchSampler
from embedlab.formats import detect_format
from embedlab.losses import (
    CATALOGUE,
    CachedMultipleNegativesRankingLoss,
    MatryoshkaLoss,
    MultipleNegativesRankingLoss,
    build_loss,
)

PREMISES = ["a man eats", "a man eats", "a man eats", "two dogs run", "two dogs run", "a cat sleeps"]
HYPOTHESES = ["a person eats", "nobody eats", "a man cooks", "dogs are running", "the dogs sit", "a cat is awake"]
LABELS = ["ENTAILMENT", "CONTRADICTION", "NEUTRAL", "ENTAILMENT", "CONTRADICTION", "ENTAILMENT"]


def test_pair_class_to_triplets_uses_own_negatives_else_samples_them():
    data = datasets.Dataset.from_dict({"premise": PREMISES, "hypothesis": HYPOTHESES, "label": LABELS})
    conversion = ConversionConfig(to="triplets", positive_label="ENTAILMENT", negative_label="CONTRADICTION", seed=3)
    triplets, detected = convert(data, detect_format(data), conversion)
    assert detected.format.key == "triplets" and len(triplets) == 3
    rows = {row["anchor"]: row for row in triplets}
    assert rows["a man eats"]["negative"] == "nobody eats" and rows["two dogs run"]["negative"] == "the dogs sit"
    assert rows["a cat sleeps"]["negative"] in {"nobody eats", "a man cooks", "the dogs sit"}  # sampled: not a positive
    again, _ = convert(data, detect_format(data), conversion)
    assert again.to_dict() == triplets.to_dict()  # seeded
    with pytest.raises(EmbedlabError, match="positive_label 'YES' is not a label"):
        convert(data, detect_format(data), ConversionConfig(to="triplets", positive_label="YES"))


def test_score_and_binary_pairs_to_anchor_positive_pairs(capsys):
    scores = datasets.Dataset.from_dict({"s1": ["a", "b", "c"], "s2": ["x", "y", "z"], "score": [0.9, 0.2, 0.8]})
    pairs, detected = convert(scores, detect_format(scores), ConversionConfig(to="anchor_positive_pairs", threshold=0.8))
    assert pairs.to_dict() == {"anchor": ["a", "c"], "positive": ["x", "z"]} and detected.format.key == "anchor_positive_pairs"
    assert "Converted pair_score (3 rows) -> anchor_positive_pairs (2 rows)" in capsys.readouterr().out  # logged
    binary = datasets.Dataset.from_dict({"s1": ["a", "b"], "s2": ["x", "y"], "label": [0, 1]})
    assert convert(binary, detect_format(binary), ConversionConfig(to="anchor_positive_pairs"))[0]["anchor"] == ["b"]
    with pytest.raises(EmbedlabError, match="needs `threshold`"):
        convert(scores, detect_format(scores), ConversionConfig(to="anchor_positive_pairs"))
    with pytest.raises(EmbedlabError, match="no conversion from pair_score to triplets"):
        convert(scores, detect_format(scores), ConversionConfig(to="triplets"))


def test_group_by_label_batches_hold_two_labels_with_two_rows_each():
    labels = [0] * 9 + [1] * 6 + [2] * 4 + [3]
    data = datasets.Dataset.from_dict({"text": [f"t{i}" for i in range(len(labels))], "label": labels})
    sampler = GroupByLabelBatchSampler(data, detect_format(data), batch_size=6, seed=0)
    batches = sampler.batches(0)
    assert batches and batches != sampler.batches(1)
    for batch in batches:
        counts = {}
        for index in batch:
            counts[labels[index]] = counts.get(labels[index], 0) + 1
        assert len(counts) >= 2 and all(count >= 2 for count in counts.values()), counts
    with pytest.raises(EmbedlabError, match="even batch size"):
        GroupByLabelBatchSampler(data, detect_format(data), batch_size=5, seed=0)


def test_cached_mnrl_gives_the_gradients_of_mnrl(tiny_model_path):
    from embedlab import EmbeddingModel

    texts = [f"{a} {b}" for a in ("a man", "the dog", "two cats", "a bird") for b in ("runs", "sits", "eats")]
    gradients = []
    for loss_class, params in ((MultipleNegativesRankingLoss, {}), (CachedMultipleNegativesRankingLoss, {"mini_batch_size": 5})):
        model = EmbeddingModel(str(tiny_model_path), device="cpu").eval().double()  # float64: no summation-order noise
        loss = loss_class(model, **params)
        features = [model.tokenize(texts), model.tokenize(texts[::-1]), model.tokenize(texts[3:] + texts[:3])]
        value = loss(features, None)
        value.backward()
        gradients.append((value.item(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}))
    (plain_value, plain), (cached_value, cached) = gradients
    assert cached_value == pytest.approx(plain_value, rel=1e-12)  # float64: measured equal; other order of sums moves ~1e-15
    assert plain.keys() == cached.keys()
    for name in plain:
        torch.testing.assert_close(cached[name], plain[name], rtol=1e-7, atol=1e-12, msg=name)


def test_modifiers_from_config_wrap_the_loss(tiny_model):
    data = datasets.Dataset.from_dict({"a": ["x y", "y z"], "b": ["y x", "z y"], "score": [0.2, 0.9]})
    detected = detect_format(data)
    loss = build_loss("CoSENTLoss", tiny_model, {}, detected, [LossModifierConfig("MatryoshkaLoss", {"matryoshka_dims": [32, 8]})])
    assert isinstance(loss, MatryoshkaLoss) and loss.get_config_dict()["matryoshka_dims"] == [32, 8]
    with pytest.raises(EmbedlabError, match="unknown loss modifier 'Matryoshka'"):
        build_loss("CoSENTLoss", tiny_model, {}, detected, [LossModifierConfig("Matryoshka", {})])
    with pytest.raises(EmbedlabError, match="exceed the model's embedding dimension"):
        build_loss("CoSENTLoss", tiny_model, {}, detected, [LossModifierConfig("MatryoshkaLoss", {"matryoshka_dims": [64]})])
    with pytest.raises(EmbedlabError, match="is a loss modifier"):
        build_loss("MatryoshkaLoss", tiny_model, {}, detected)


MATRYOSHKA = ("MatryoshkaLoss", {"matryoshka_dims": [32, 8]})
ADAPTIVE, MATRYOSHKA_2D = ("AdaptiveLayerLoss", {}), ("Matryoshka2dLoss", {"matryoshka_dims": [32, 8]})


@pytest.mark.parametrize("stack", [[MATRYOSHKA], [ADAPTIVE], [MATRYOSHKA_2D], [MATRYOSHKA, ADAPTIVE]], ids=lambda stack: "+".join(name for name, _ in stack))
def test_modifier_stacks_that_train(tiny_model, stack):
    data = datasets.Dataset.from_dict({"a": ["x y", "y z"], "b": ["y x", "z y"], "score": [0.2, 0.9]})
    loss = build_loss("CoSENTLoss", tiny_model, {}, detect_format(data), [LossModifierConfig(name, params) for name, params in stack])
    value = loss([tiny_model.tokenize(data["a"]), tiny_model.tokenize(data["b"])], torch.tensor(data["score"]))
    value.backward()
    assert torch.isfinite(value)


@pytest.mark.parametrize(
    "stack",
    [[ADAPTIVE, MATRYOSHKA], [ADAPTIVE, ADAPTIVE], [MATRYOSHKA_2D, ADAPTIVE], [MATRYOSHKA, MATRYOSHKA], [MATRYOSHKA, MATRYOSHKA_2D]],
    ids=lambda stack: "+".join(name for name, _ in stack),
)
def test_modifier_stacks_that_cannot_train_are_refused_before_training(tiny_model, stack):
    """Each of these failed in its first step (IndexError, KeyError, a dimension error) once a run had started."""
    data = datasets.Dataset.from_dict({"a": ["x y", "y z"], "b": ["y x", "z y"], "score": [0.2, 0.9]})
    with pytest.raises(EmbedlabError, match=r"\(inner to outer\) do not stack: each at most once, AdaptiveLayerLoss or Matryoshka2dLoss last"):
        build_loss("CoSENTLoss", tiny_model, {}, detect_format(data), [LossModifierConfig(name, params) for name, params in stack])


def test_config_names_distance_metrics_and_fills_softmax_sizes(tiny_model):
    pairs = datasets.Dataset.from_dict({"a": ["x y", "y z"], "b": ["y x", "z y"], "label": [1, 0]})
    loss = build_loss("ContrastiveLoss", tiny_model, {"distance_metric": "euclidean", "margin": 1.0}, detect_format(pairs))
    assert loss.get_config_dict()["distance_metric"] == "euclidean"
    with pytest.raises(EmbedlabError, match="distance_metric 'cosine' is unknown: choose from euclidean, manhattan, cosine_distance"):
        build_loss("ContrastiveLoss", tiny_model, {"distance_metric": "cosine"}, detect_format(pairs))
    classes = datasets.Dataset.from_dict({"a": ["x", "y", "z"], "b": ["y", "z", "x"], "label": ["no", "yes", "maybe"]})
    softmax = build_loss("SoftmaxLoss", tiny_model, {}, detect_format(classes))
    assert softmax.classifier.in_features == 3 * 32 and softmax.num_labels == 3


def test_losses_table_is_derived_from_declarations(capsys):
    from embedlab.cli import main

    assert main(["losses"]) == 0
    table = capsys.readouterr().out
    for name, loss_class in CATALOGUE.items():
        for key in loss_class.formats:
            line = next(line for line in table.splitlines() if line.startswith(key + " "))
            assert name in line
    assert "MatryoshkaLoss, AdaptiveLayerLoss, Matryoshka2dLoss" in table
    assert main(["losses", "MatryoshkaLoss"]) == 0
    assert "matryoshka_dims = required" in capsys.readouterr().out


def test_teacher_model_labels_rows_for_mse_distillation(tmp_path, tiny_model_path, tiny_guide_path, capsys):
    from embedlab import EmbeddingModel
    from embedlab.config import DataSource
    from embedlab.data import load_with_format

    (tmp_path / "sentences.csv").write_text("english,french\na man eats,un homme mange\ntwo dogs run,deux chiens courent\n")
    dataset, detected = load_with_format(DataSource(str(tmp_path / "sentences.csv"), teacher_model=str(tiny_guide_path)))
    assert detected.format.key == "teacher_embedding" and detected.input_columns == ("english", "french")
    expected = EmbeddingModel(str(tiny_guide_path), device="cpu").encode(["a man eats", "two dogs run"])
    torch.testing.assert_close(torch.tensor(dataset["label"]), torch.from_numpy(expected))
    assert "Teacher" in capsys.readouterr().out
    loss = build_loss("MSELoss", EmbeddingModel(str(tiny_model_path), device="cpu"), {}, detected)
    assert loss.get_config_dict() == {"projection_dim": None}
