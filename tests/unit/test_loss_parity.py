"""Loss values and the gradients of every parameter match sentence-transformers (dev extra), rtol 1e-4."""

import pytest
import torch

from embedlab import EmbeddingModel, similarity
from embedlab import losses as our_losses
from embedlab.losses import distances

sentence_transformers = pytest.importorskip("sentence_transformers")
from sentence_transformers import losses as st_losses  # noqa: E402
from sentence_transformers import util as st_util  # noqa: E402

A = ["a man is playing a guitar", "the dog runs in the park", "two cats sit on a table", "what is the capital of france ?", "a red car"]
B = ["a man plays a flute", "a dog is running", "the cats are sitting", "paris is the capital of france", "a blue boat"]
C = ["a car drives on the road", "the sky is blue", "a boat on the water", "a bird sits in a tree", "the old house"]

LABELS4 = [0, 1, 1, 0, 0]
CLASSES = [0, 1, 0, 1, 2]
TEACHER = torch.randn(5, 32, generator=torch.Generator().manual_seed(0)).tolist()
MARGINS = [1.5, -0.3, 0.2, 2.0, 0.7]
D = distances

# (loss name, our params, reference params, columns, labels): defaults first, then other settings.
CASES = [
    ("CoSENTLoss", {}, {}, [A, B], [0.9, 0.1, 0.5, 0.5, 0.3]),
    ("CoSENTLoss", {"scale": 7.5, "similarity_fct": similarity.pairwise_dot_score}, {"scale": 7.5, "similarity_fct": st_util.pairwise_dot_score}, [A, B], [0.9, 0.1, 0.5, 0.5, 0.3]),
    ("AnglELoss", {}, {}, [A, B], [0.9, 0.1, 0.5, 0.5, 0.3]),
    ("AnglELoss", {"scale": 5.0}, {"scale": 5.0}, [A, B], [0.9, 0.1, 0.5, 0.5, 0.3]),
    ("CosineSimilarityLoss", {}, {}, [A, B], [0.9, 0.1, 0.5, 0.5, 0.3]),
    ("CosineSimilarityLoss", {"loss_fct": torch.nn.L1Loss()}, {"loss_fct": torch.nn.L1Loss()}, [A, B], [0.9, 0.1, 0.5, 0.5, 0.3]),
    ("ContrastiveLoss", {}, {}, [A, B], LABELS4),
    ("ContrastiveLoss", {"distance_metric": D.SiameseDistanceMetric.EUCLIDEAN, "margin": 2.0, "size_average": False}, {"distance_metric": st_losses.SiameseDistanceMetric.EUCLIDEAN, "margin": 2.0, "size_average": False}, [A, B], LABELS4),
    ("OnlineContrastiveLoss", {}, {}, [A, B], LABELS4),
    ("OnlineContrastiveLoss", {"distance_metric": D.SiameseDistanceMetric.MANHATTAN, "margin": 3.0}, {"distance_metric": st_losses.SiameseDistanceMetric.MANHATTAN, "margin": 3.0}, [A, B], LABELS4),
    ("TripletLoss", {}, {}, [A, B, C], None),
    ("TripletLoss", {"distance_metric": D.TripletDistanceMetric.COSINE, "triplet_margin": 0.3}, {"distance_metric": st_losses.TripletDistanceMetric.COSINE, "triplet_margin": 0.3}, [A, B, C], None),
    ("MultipleNegativesRankingLoss", {}, {}, [A, B], None),
    ("MultipleNegativesRankingLoss", {}, {}, [A, B, C], None),
    ("MultipleNegativesRankingLoss", {"scale": 5.0, "similarity_fct": similarity.dot_score}, {"scale": 5.0, "similarity_fct": st_util.dot_score}, [A, B, C], None),
    (
        "MultipleNegativesRankingLoss",
        {"directions": ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")},
        {"directions": ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")},
        [A, B, C],
        None,
    ),
    (
        "MultipleNegativesRankingLoss",
        {"directions": ("query_to_doc", "doc_to_query"), "partition_mode": "per_direction"},
        {"directions": ("query_to_doc", "doc_to_query"), "partition_mode": "per_direction"},
        [A, B],
        None,
    ),
    (
        "MultipleNegativesRankingLoss",
        {"hardness_mode": "all_negatives", "hardness_strength": 3.0},
        {"hardness_mode": "all_negatives", "hardness_strength": 3.0},
        [A, B, C],
        None,
    ),
    ("CachedMultipleNegativesRankingLoss", {"mini_batch_size": 2}, {"mini_batch_size": 2}, [A, B, C], None),
    ("CachedMultipleNegativesRankingLoss", {}, {}, [A, B], None),
    ("CachedMultipleNegativesRankingLoss", {"mini_batch_size": 3, "scale": 10.0, "directions": ("query_to_doc", "doc_to_query")}, {"mini_batch_size": 3, "scale": 10.0, "directions": ("query_to_doc", "doc_to_query")}, [A, B, C], None),
    ("MultipleNegativesSymmetricRankingLoss", {}, {}, [A, B], None),
    ("MultipleNegativesSymmetricRankingLoss", {"scale": 7.0, "similarity_fct": similarity.dot_score}, {"scale": 7.0, "similarity_fct": st_util.dot_score}, [A, B], None),
    ("CachedMultipleNegativesSymmetricRankingLoss", {}, {}, [A, B], None),
    ("CachedMultipleNegativesSymmetricRankingLoss", {"mini_batch_size": 2, "scale": 9.0}, {"mini_batch_size": 2, "scale": 9.0}, [A, B], None),
    ("MegaBatchMarginLoss", {}, {}, [A, B], None),
    ("MegaBatchMarginLoss", {"use_mini_batched_version": False, "positive_margin": 0.6}, {"use_mini_batched_version": False, "positive_margin": 0.6}, [A, B], None),
    ("MegaBatchMarginLoss", {"mini_batch_size": 2, "negative_margin": 0.1}, {"mini_batch_size": 2, "negative_margin": 0.1}, [A, B], None),
    ("BatchAllTripletLoss", {}, {}, [A], CLASSES),
    ("BatchAllTripletLoss", {"distance_metric": D.BatchHardTripletLossDistanceFunction.cosine_distance, "margin": 0.2}, {"distance_metric": st_losses.BatchHardTripletLossDistanceFunction.cosine_distance, "margin": 0.2}, [A], CLASSES),
    ("BatchHardTripletLoss", {}, {}, [A], CLASSES),
    ("BatchHardTripletLoss", {"distance_metric": D.BatchHardTripletLossDistanceFunction.cosine_distance, "margin": 0.2}, {"distance_metric": st_losses.BatchHardTripletLossDistanceFunction.cosine_distance, "margin": 0.2}, [A], CLASSES),
    ("BatchHardSoftMarginTripletLoss", {}, {}, [A], CLASSES),
    ("BatchHardSoftMarginTripletLoss", {"distance_metric": D.BatchHardTripletLossDistanceFunction.cosine_distance}, {"distance_metric": st_losses.BatchHardTripletLossDistanceFunction.cosine_distance}, [A], CLASSES),
    ("BatchSemiHardTripletLoss", {}, {}, [A], CLASSES),
    ("BatchSemiHardTripletLoss", {"distance_metric": D.BatchHardTripletLossDistanceFunction.cosine_distance, "margin": 0.2}, {"distance_metric": st_losses.BatchHardTripletLossDistanceFunction.cosine_distance, "margin": 0.2}, [A], CLASSES),
    ("SoftmaxLoss", {"embedding_dimension": 32, "num_labels": 3}, {"embedding_dimension": 32, "num_labels": 3}, [A, B], CLASSES),
    (
        "SoftmaxLoss",
        {"embedding_dimension": 32, "num_labels": 3, "concatenation_sent_multiplication": True, "concatenation_sent_rep": False},
        {"embedding_dimension": 32, "num_labels": 3, "concatenation_sent_multiplication": True, "concatenation_sent_rep": False},
        [A, B],
        CLASSES,
    ),
    ("MSELoss", {}, {}, [A], TEACHER),
    ("MSELoss", {}, {}, [A, B], TEACHER),
    ("MarginMSELoss", {}, {}, [A, B, C], MARGINS),
    ("MarginMSELoss", {"similarity_fct": similarity.pairwise_cos_sim}, {"similarity_fct": st_util.pairwise_cos_sim}, [A, B, C], MARGINS),
    ("GISTEmbedLoss", {"guide": "GUIDE"}, {"guide": "GUIDE"}, [A, B], None),
    ("GISTEmbedLoss", {"guide": "GUIDE", "temperature": 0.05, "margin_strategy": "relative", "margin": 0.1, "contrast_anchors": False}, {"guide": "GUIDE", "temperature": 0.05, "margin_strategy": "relative", "margin": 0.1, "contrast_anchors": False}, [A, B, C], None),
    ("CachedGISTEmbedLoss", {"guide": "GUIDE", "mini_batch_size": 2}, {"guide": "GUIDE", "mini_batch_size": 2}, [A, B, C], None),
    ("CachedGISTEmbedLoss", {"guide": "GUIDE", "margin": 0.05, "contrast_positives": False}, {"guide": "GUIDE", "margin": 0.05, "contrast_positives": False}, [A, B], None),
    ("ContrastiveTensionLoss", {}, {}, [A, A[:2] + B[2:]], None),
    ("DenoisingAutoEncoderLoss", {}, {}, [[" ".join(t.split()[::2]) for t in A], A], None),
    ("DenoisingAutoEncoderLoss", {"decoder_name_or_path": "GUIDE_PATH", "tie_encoder_decoder": False}, {"decoder_name_or_path": "GUIDE_PATH", "tie_encoder_decoder": False}, [[t.split()[0] for t in A], A], None),
    ("ContrastiveTensionLossInBatchNegatives", {}, {}, [A, A], None),
    ("ContrastiveTensionLossInBatchNegatives", {"scale": 5.0, "similarity_fct": similarity.dot_score}, {"scale": 5.0, "similarity_fct": st_util.dot_score}, [A, A], None),
]


def _copy_loss_heads(ours, reference) -> None:
    """Heads that start random (SoftmaxLoss's classifier, TSDAE's cross-attention) start equal on both sides."""
    for head in ("classifier", "decoder"):
        if hasattr(ours, head):
            getattr(ours, head).load_state_dict(getattr(reference, head).state_dict())


def loss_and_gradients(loss, model, columns, labels, rename=lambda name: name):
    model.eval()  # no dropout: both sides see identical activations
    for module in getattr(loss, "model1", model).modules():  # Contrastive Tension's second copy too
        module.eval()
    features = [model.tokenize(column) for column in columns]
    label_tensor = torch.tensor(labels) if labels is not None else None
    value = loss(features, label_tensor)
    value.backward()
    gradients = {rename(name): parameter.grad.clone() for name, parameter in model.named_parameters() if parameter.grad is not None}
    return value.detach(), gradients


@pytest.mark.parametrize(("name", "ours", "reference", "columns", "labels"), CASES, ids=[f"{case[0]}-{i}" for i, case in enumerate(CASES)])
def test_loss_and_gradients_match_sentence_transformers(tiny_model_path, tiny_guide_path, name, ours, reference, columns, labels):
    our_model = EmbeddingModel(str(tiny_model_path), device="cpu")
    st_model = sentence_transformers.SentenceTransformer(str(tiny_model_path), device="cpu")
    if ours.get("decoder_name_or_path") == "GUIDE_PATH":  # TSDAE with a separate decoder
        ours = {**ours, "decoder_name_or_path": str(tiny_guide_path)}
        reference = {**reference, "decoder_name_or_path": str(tiny_guide_path)}
    if ours.get("guide") == "GUIDE":  # GIST: the same guide weights on both sides, in eval mode
        ours = {**ours, "guide": EmbeddingModel(str(tiny_guide_path), device="cpu")}
        reference = {**reference, "guide": sentence_transformers.SentenceTransformer(str(tiny_guide_path), device="cpu").eval()}
    reference_loss = getattr(st_losses, name)(st_model, **reference)
    our_loss = getattr(our_losses, name)(our_model, **ours)
    _copy_loss_heads(our_loss, reference_loss)
    rename = lambda n: n.replace(".auto_model.", ".model.")  # noqa: E731
    our_value, our_gradients = loss_and_gradients(our_loss, our_model, columns, labels, rename=rename)
    st_value, st_gradients = loss_and_gradients(reference_loss, st_model, columns, labels)
    torch.testing.assert_close(our_value, st_value, rtol=1e-4, atol=1e-6)
    assert set(our_gradients) == set(st_gradients) and our_gradients
    for parameter_name, gradient in our_gradients.items():
        reference_gradient = st_gradients[parameter_name]
        # rtol 1e-4, with an absolute floor at 1e-4 of the tensor's largest entry: summation order differs
        # (e.g. embedding rows summed over tokens), which moves near-zero entries by ~1e-6 in float32 (and gradients that are zero in exact maths, such as attention key biases, are pure noise).
        floor = max(1e-6, 1e-4 * reference_gradient.abs().max().item())
        torch.testing.assert_close(gradient, reference_gradient, rtol=1e-4, atol=floor, msg=parameter_name)


# (modifier, its params, inner loss, inner params, columns, labels)
MODIFIER_CASES = [
    ("MatryoshkaLoss", {"matryoshka_dims": [32, 16, 8]}, "CoSENTLoss", {}, [A, B], [0.9, 0.1, 0.5, 0.5, 0.3]),
    ("MatryoshkaLoss", {"matryoshka_dims": [16, 32], "matryoshka_weights": [0.5, 1.0]}, "MultipleNegativesRankingLoss", {}, [A, B, C], None),
    ("MatryoshkaLoss", {"matryoshka_dims": [32, 8]}, "CachedMultipleNegativesRankingLoss", {"mini_batch_size": 2}, [A, B, C], None),
    ("MatryoshkaLoss", {"matryoshka_dims": [32, 12]}, "MSELoss", {}, [A], TEACHER),
    ("AdaptiveLayerLoss", {}, "MultipleNegativesRankingLoss", {}, [A, B], None),
    ("AdaptiveLayerLoss", {"n_layers_per_step": -1, "kl_temperature": 0.5, "layer_weighting": "log"}, "CoSENTLoss", {}, [A, B], [0.9, 0.1, 0.5, 0.5, 0.3]),
    ("Matryoshka2dLoss", {"matryoshka_dims": [32, 16]}, "MultipleNegativesRankingLoss", {}, [A, B, C], None),
    ("Matryoshka2dLoss", {"matryoshka_dims": [32, 16, 8], "n_dims_per_step": -1, "kl_temperature": 0.0}, "CoSENTLoss", {}, [A, B], [0.9, 0.1, 0.5, 0.5, 0.3]),
]


@pytest.mark.parametrize(("modifier", "params", "inner", "inner_params", "columns", "labels"), MODIFIER_CASES, ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(MODIFIER_CASES)])
def test_loss_modifiers_match_sentence_transformers(tiny_model_path, modifier, params, inner, inner_params, columns, labels):
    import random

    our_model = EmbeddingModel(str(tiny_model_path), device="cpu")
    st_model = sentence_transformers.SentenceTransformer(str(tiny_model_path), device="cpu")
    our_loss = getattr(our_losses, modifier)(our_model, getattr(our_losses, inner)(our_model, **inner_params), **params)
    st_loss = getattr(st_losses, modifier)(st_model, getattr(st_losses, inner)(st_model, **inner_params), **params)
    rename = lambda n: n.replace(".auto_model.", ".model.")  # noqa: E731
    random.seed(0)  # the layers / dimensions sampled per step come from Python's RNG on both sides
    our_value, our_gradients = loss_and_gradients(our_loss, our_model, columns, labels, rename=rename)
    random.seed(0)
    st_value, st_gradients = loss_and_gradients(st_loss, st_model, columns, labels)
    torch.testing.assert_close(our_value, st_value, rtol=1e-4, atol=1e-6)
    assert set(our_gradients) == set(st_gradients) and our_gradients
    for parameter_name, gradient in our_gradients.items():
        reference_gradient = st_gradients[parameter_name]
        floor = max(1e-6, 1e-4 * reference_gradient.abs().max().item())
        torch.testing.assert_close(gradient, reference_gradient, rtol=1e-4, atol=floor, msg=parameter_name)
