"""Saved models load in sentence-transformers with equal embeddings, and the other way round (dev extra)."""

import numpy as np
import pytest
import torch

from conftest import require_reference
from embedlab import EmbeddingModel
from embedlab.model import Dense, Normalize

sentence_transformers = require_reference("sentence_transformers")

TEXTS = ["a man is playing a guitar", "the dog runs in the park near the water", "two cats", "what is the capital of france ?"]


def _train_a_little(model):
    """Moves the weights away from their initial values, so the test covers a trained model."""
    from embedlab.losses import CoSENTLoss

    loss = CoSENTLoss(model)
    optimizer = torch.optim.AdamW(loss.parameters(), lr=1e-2)
    features = [model.tokenize(TEXTS), model.tokenize(TEXTS[::-1])]
    for _ in range(3):
        loss(features, torch.tensor([0.1, 0.5, 0.5, 0.9])).backward()
        optimizer.step()
        optimizer.zero_grad()


@pytest.mark.parametrize("extra_modules", [False, True], ids=["transformer+pooling", "with-dense-normalize"])
def test_saved_model_loads_in_sentence_transformers_with_equal_embeddings(tiny_model, tmp_path, extra_modules):
    model = tiny_model
    if extra_modules:
        torch.manual_seed(0)
        model = EmbeddingModel(modules=[*tiny_model, Dense(32, 24), Normalize()], device="cpu")
    _train_a_little(model)
    model.save(tmp_path / "model")
    reference = sentence_transformers.SentenceTransformer(str(tmp_path / "model"), device="cpu")
    np.testing.assert_allclose(reference.encode(TEXTS), model.encode(TEXTS), atol=1e-5)


def test_sentence_transformers_folder_loads_here_with_equal_embeddings(tiny_model_path, tmp_path):
    reference = sentence_transformers.SentenceTransformer(str(tiny_model_path), device="cpu")
    reference.save(str(tmp_path / "st"))  # the newest layout: module types and pooling_mode as it writes them
    ours = EmbeddingModel(str(tmp_path / "st"), device="cpu")
    np.testing.assert_allclose(ours.encode(TEXTS), reference.encode(TEXTS), atol=1e-5)
