"""Loss values and the gradients of every parameter match sentence-transformers (dev extra), rtol 1e-4."""

import pytest
import torch

from embedlab import EmbeddingModel, similarity
from embedlab import losses as our_losses

sentence_transformers = pytest.importorskip("sentence_transformers")
from sentence_transformers import losses as st_losses  # noqa: E402
from sentence_transformers import util as st_util  # noqa: E402

A = ["a man is playing a guitar", "the dog runs in the park", "two cats sit on a table", "what is the capital of france ?", "a red car"]
B = ["a man plays a flute", "a dog is running", "the cats are sitting", "paris is the capital of france", "a blue boat"]
C = ["a car drives on the road", "the sky is blue", "a boat on the water", "a bird sits in a tree", "the old house"]

# (loss name, our params, reference params, columns, labels)
CASES = [
    ("CoSENTLoss", {}, {}, [A, B], [0.9, 0.1, 0.5, 0.5, 0.3]),
    ("CoSENTLoss", {"scale": 7.5, "similarity_fct": similarity.pairwise_dot_score}, {"scale": 7.5, "similarity_fct": st_util.pairwise_dot_score}, [A, B], [0.9, 0.1, 0.5, 0.5, 0.3]),
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
]


def loss_and_gradients(loss, model, columns, labels, rename=lambda name: name):
    model.eval()  # no dropout: both sides see identical activations
    features = [model.tokenize(column) for column in columns]
    label_tensor = torch.tensor(labels) if labels is not None else None
    value = loss(features, label_tensor)
    value.backward()
    gradients = {rename(name): parameter.grad.clone() for name, parameter in model.named_parameters() if parameter.grad is not None}
    return value.detach(), gradients


@pytest.mark.parametrize(("name", "ours", "reference", "columns", "labels"), CASES, ids=[f"{case[0]}-{i}" for i, case in enumerate(CASES)])
def test_loss_and_gradients_match_sentence_transformers(tiny_model_path, name, ours, reference, columns, labels):
    our_model = EmbeddingModel(str(tiny_model_path), device="cpu")
    st_model = sentence_transformers.SentenceTransformer(str(tiny_model_path), device="cpu")
    our_value, our_gradients = loss_and_gradients(
        getattr(our_losses, name)(our_model, **ours), our_model, columns, labels, rename=lambda n: n.replace(".auto_model.", ".model.")
    )
    st_value, st_gradients = loss_and_gradients(getattr(st_losses, name)(st_model, **reference), st_model, columns, labels)
    torch.testing.assert_close(our_value, st_value, rtol=1e-4, atol=1e-6)
    assert set(our_gradients) == set(st_gradients) and our_gradients
    for parameter_name, gradient in our_gradients.items():
        reference_gradient = st_gradients[parameter_name]
        # rtol 1e-4, with an absolute floor at 1e-4 of the tensor's largest entry: summation order differs
        # (e.g. embedding rows summed over tokens), which moves near-zero entries by ~1e-6 in float32 (and gradients that are zero in exact maths, such as attention key biases, are pure noise).
        floor = max(1e-6, 1e-4 * reference_gradient.abs().max().item())
        torch.testing.assert_close(gradient, reference_gradient, rtol=1e-4, atol=floor, msg=parameter_name)
