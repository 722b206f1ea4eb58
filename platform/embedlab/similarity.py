"""Similarity and distance functions between embeddings, in one place for losses and evaluators.

The matrix forms (`cos_sim`, ...) compare every row of `a` with every row of `b`; the `pairwise_` forms
compare row i of `a` with row i of `b`. Distances are negated so that larger always means more similar,
as in sentence-transformers.
"""

import numpy as np
import torch
from torch import Tensor


def _as_tensor(x) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    elif not isinstance(x, Tensor):
        x = torch.tensor(x)
    return x.unsqueeze(0) if x.dim() == 1 else x


def cos_sim(a, b) -> Tensor:
    a, b = _as_tensor(a), _as_tensor(b)
    return torch.nn.functional.normalize(a, p=2, dim=1) @ torch.nn.functional.normalize(b, p=2, dim=1).T


def dot_score(a, b) -> Tensor:
    a, b = _as_tensor(a), _as_tensor(b)
    return a @ b.T


def euclidean_sim(a, b) -> Tensor:
    a, b = _as_tensor(a), _as_tensor(b)
    return -torch.cdist(a, b, p=2.0)


def manhattan_sim(a, b) -> Tensor:
    a, b = _as_tensor(a), _as_tensor(b)
    return -torch.cdist(a, b, p=1.0)


def pairwise_cos_sim(a, b) -> Tensor:
    a, b = _as_tensor(a), _as_tensor(b)
    return (torch.nn.functional.normalize(a, p=2, dim=1) * torch.nn.functional.normalize(b, p=2, dim=1)).sum(dim=-1)


def pairwise_dot_score(a, b) -> Tensor:
    a, b = _as_tensor(a), _as_tensor(b)
    return (a * b).sum(dim=-1)


def pairwise_euclidean_sim(a, b) -> Tensor:
    a, b = _as_tensor(a), _as_tensor(b)
    return -torch.sqrt(torch.sum((a - b) ** 2, dim=-1))


def pairwise_manhattan_sim(a, b) -> Tensor:
    a, b = _as_tensor(a), _as_tensor(b)
    return -torch.sum(torch.abs(a - b), dim=-1)


# Names as sentence-transformers' SimilarityFunction spells them (config files and evaluators use these).
PAIRWISE_SIMILARITIES = {
    "cosine": pairwise_cos_sim,
    "dot": pairwise_dot_score,
    "euclidean": pairwise_euclidean_sim,
    "manhattan": pairwise_manhattan_sim,
}
SIMILARITIES = {"cosine": cos_sim, "dot": dot_score, "euclidean": euclidean_sim, "manhattan": manhattan_sim}
