"""Loss values and the gradients of every parameter match sentence-transformers (a test-only reference,
dev extra), in float64 with tolerances a few orders above float64 rounding."""

import re

import pytest
import torch

from conftest import require_reference
from embedlab import EmbeddingModel, similarity
from embedlab import losses as our_losses
from embedlab.losses import distances

sentence_transformers = require_reference("sentence_transformers")
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
    # margin 0.01: at 0.1 the relative margin masked every negative (the tiny models rate all pairs > 0.9
    # similar), so the loss was exactly 0 with zero gradients on both sides and the case could not fail.
    ("GISTEmbedLoss", {"guide": "GUIDE", "temperature": 0.05, "margin_strategy": "relative", "margin": 0.01, "contrast_anchors": False}, {"guide": "GUIDE", "temperature": 0.05, "margin_strategy": "relative", "margin": 0.01, "contrast_anchors": False}, [A, B, C], None),
    ("CachedGISTEmbedLoss", {"guide": "GUIDE", "mini_batch_size": 2}, {"guide": "GUIDE", "mini_batch_size": 2}, [A, B, C], None),
    ("CachedGISTEmbedLoss", {"guide": "GUIDE", "margin": 0.05, "contrast_positives": False}, {"guide": "GUIDE", "margin": 0.05, "contrast_positives": False}, [A, B], None),
    ("ContrastiveTensionLoss", {}, {}, [A, A[:2] + B[2:]], None),
    ("DenoisingAutoEncoderLoss", {}, {}, [[" ".join(t.split()[::2]) for t in A], A], None),
    ("DenoisingAutoEncoderLoss", {"decoder_name_or_path": "GUIDE_PATH", "tie_encoder_decoder": False}, {"decoder_name_or_path": "GUIDE_PATH", "tie_encoder_decoder": False}, [[t.split()[0] for t in A], A], None),
    ("ContrastiveTensionLossInBatchNegatives", {}, {}, [A, A], None),
    ("ContrastiveTensionLossInBatchNegatives", {"scale": 5.0, "similarity_fct": similarity.dot_score}, {"scale": 5.0, "similarity_fct": st_util.dot_score}, [A, A], None),
]


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

# Tolerances, float64 (eps 2.2e-16). Both sides run the same torch kernels, so most cases agree bit for bit;
# the cached (GradCache) losses and the Matryoshka modifiers sum in another order: measured at most 5e-16
# relative on the loss and 7e-15 absolute on a gradient entry (of magnitude ~9). With rtol 1e-9 and atol
# 1e-12 the worst entry uses < 0.1% of its tolerance, while a real change of maths moves values far more:
# a default scale off by 1e-6 relative fails here (it passed the former float32 rtol 1e-4).
RTOL, ATOL = 1e-9, 1e-12
# Gradients that are zero in exact maths: attention key biases. Softmax over keys is invariant to adding
# the same constant to every logit of a query, and a key bias adds q·b_k to all of them, so its true
# gradient is 0 and what autograd returns is rounding noise (measured <= 8e-18 in float64).
# Relative tolerance means nothing there: both sides must be below this absolute floor instead.
ZERO_GRADIENT = re.compile(r"attention\.self\.key\.bias$")
ZERO_FLOOR = 1e-14
# A case must exercise the loss: some reference gradient above this (else it passes whatever the loss does).
LIVE_GRADIENT = 1e-6


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny matrices gain nothing from intra-op threads, and on a busy shared CPU the threads' barriers
    make some float64 cases 10-50x slower; one thread here, restored for the rest of the session."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _precisions(cases, loss_names_of):
    """pytest params: every case in float64."""
    return [pytest.param(*case, torch.float64, id="-".join(loss_names_of(case)) + f"-{i}-float64") for i, case in enumerate(cases)]


def _copy_loss_heads(ours, reference) -> None:
    """Heads that start random (SoftmaxLoss's classifier, TSDAE's cross-attention) start equal on both sides."""
    for head in ("classifier", "decoder"):
        if hasattr(ours, head):
            getattr(ours, head).load_state_dict(getattr(reference, head).state_dict())


def loss_and_gradients(loss, model, columns, labels, dtype, rename=lambda name: name):
    loss.to(dtype)  # the model, guide, heads and Contrastive Tension's second copy are submodules
    model.eval()  # no dropout: both sides see identical activations
    for module in loss.modules():
        module.eval()
    features = [model.tokenize(column) for column in columns]
    label_tensor = torch.tensor(labels) if labels is not None else None
    if label_tensor is not None and label_tensor.is_floating_point():
        label_tensor = label_tensor.to(dtype)  # scores, teacher embeddings, margins: same precision as the model
    value = loss(features, label_tensor)
    value.backward()
    gradients = {rename(name): parameter.grad.clone() for name, parameter in model.named_parameters() if parameter.grad is not None}
    return value.detach(), gradients


def assert_same_loss_and_gradients(ours, reference, dtype) -> None:
    (our_value, our_gradients), (st_value, st_gradients) = ours, reference
    assert torch.isfinite(st_value), st_value
    assert set(our_gradients) == set(st_gradients) and our_gradients
    assert max(g.abs().max().item() for g in st_gradients.values()) > LIVE_GRADIENT, "the case leaves every gradient ~0: it tests nothing"
    assert our_value.dtype == st_value.dtype == dtype
    torch.testing.assert_close(our_value, st_value, rtol=RTOL, atol=ATOL)
    for name, gradient in our_gradients.items():
        reference_gradient = st_gradients[name]
        if ZERO_GRADIENT.search(name):
            largest = max(gradient.abs().max().item(), reference_gradient.abs().max().item())
            assert largest < ZERO_FLOOR, f"{name}: zero in exact maths, got {largest:.3g} (floor {ZERO_FLOOR:g})"
        else:
            torch.testing.assert_close(gradient, reference_gradient, rtol=RTOL, atol=ATOL, msg=name)


def _rename(name: str) -> str:
    return name.replace(".auto_model.", ".model.")


@pytest.mark.parametrize(("name", "ours", "reference", "columns", "labels", "dtype"), _precisions(CASES, lambda case: [case[0]]))
def test_loss_and_gradients_match_sentence_transformers(tiny_model_path, tiny_guide_path, name, ours, reference, columns, labels, dtype):
    our_model = EmbeddingModel(str(tiny_model_path), device="cpu").to(dtype)
    st_model = sentence_transformers.SentenceTransformer(str(tiny_model_path), device="cpu").to(dtype)
    if ours.get("decoder_name_or_path") == "GUIDE_PATH":  # TSDAE with a separate decoder
        ours = {**ours, "decoder_name_or_path": str(tiny_guide_path)}
        reference = {**reference, "decoder_name_or_path": str(tiny_guide_path)}
    if ours.get("guide") == "GUIDE":  # GIST: the same guide weights on both sides, in eval mode
        ours = {**ours, "guide": EmbeddingModel(str(tiny_guide_path), device="cpu").to(dtype)}
        reference = {**reference, "guide": sentence_transformers.SentenceTransformer(str(tiny_guide_path), device="cpu").eval().to(dtype)}
    reference_loss = getattr(st_losses, name)(st_model, **reference)
    our_loss = getattr(our_losses, name)(our_model, **ours)
    _copy_loss_heads(our_loss, reference_loss)
    ours_result = loss_and_gradients(our_loss, our_model, columns, labels, dtype, rename=_rename)
    assert_same_loss_and_gradients(ours_result, loss_and_gradients(reference_loss, st_model, columns, labels, dtype), dtype)


@pytest.mark.parametrize(("modifier", "params", "inner", "inner_params", "columns", "labels", "dtype"), _precisions(MODIFIER_CASES, lambda case: [case[0], case[2]]))
def test_loss_modifiers_match_sentence_transformers(tiny_model_path, modifier, params, inner, inner_params, columns, labels, dtype):
    import random

    our_model = EmbeddingModel(str(tiny_model_path), device="cpu").to(dtype)
    st_model = sentence_transformers.SentenceTransformer(str(tiny_model_path), device="cpu").to(dtype)
    our_loss = getattr(our_losses, modifier)(our_model, getattr(our_losses, inner)(our_model, **inner_params), **params)
    st_loss = getattr(st_losses, modifier)(st_model, getattr(st_losses, inner)(st_model, **inner_params), **params)
    random.seed(0)  # the layers / dimensions sampled per step come from Python's RNG on both sides
    ours_result = loss_and_gradients(our_loss, our_model, columns, labels, dtype, rename=_rename)
    random.seed(0)
    assert_same_loss_and_gradients(ours_result, loss_and_gradients(st_loss, st_model, columns, labels, dtype), dtype)
