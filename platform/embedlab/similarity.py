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
    return -torch.linalg.vector_norm(a - b, dim=-1)  # unlike sqrt(sum(d^2)), its gradient at d = 0 is 0, not NaN


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


def pairwise_angle_sim(a, b) -> Tensor:
    """AnglE similarity |cos(a, b) + sin(a, b)| after L2 normalization; dimensions i and i + D/2 pair up
    for the sine term (the complex-number form of the AnglE paper)."""
    a, b = _as_tensor(a), _as_tensor(b)
    if a.dtype in (torch.float16, torch.bfloat16):  # the angle's division loses too much in half precision
        a, b = a.float(), b.float()
    if a.shape[1] % 2:  # chunking needs an even dimension
        a, b = torch.nn.functional.pad(a, (0, 1)), torch.nn.functional.pad(b, (0, 1))
    a, b = torch.nn.functional.normalize(a, p=2, dim=1), torch.nn.functional.normalize(b, p=2, dim=1)
    cosines = (a * b).sum(dim=1)
    a_first, a_last = torch.chunk(a, 2, dim=1)
    b_first, b_last = torch.chunk(b, 2, dim=1)
    sines = (a_last * b_first - a_first * b_last).sum(dim=1)
    return torch.abs(cosines + sines)


# Distance matrices between all rows of one batch (the batch triplet losses).
def cosine_distance_matrix(embeddings: Tensor) -> Tensor:
    return 1 - cos_sim(embeddings, embeddings)


def euclidean_distance_matrix(embeddings: Tensor, squared: bool = False) -> Tensor:
    """Via ||a||^2 - 2<a, b> + ||b||^2: the diagonal is exactly 0, and sqrt gets no infinite gradient there."""
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        embeddings = embeddings.float() if embeddings.dtype in (torch.float16, torch.bfloat16) else embeddings
        dot_product = embeddings @ embeddings.T
    square_norm = torch.diag(dot_product)
    distances = (square_norm.unsqueeze(0) - 2.0 * dot_product + square_norm.unsqueeze(1)).clamp(min=0)
    if squared:
        return distances
    zero = distances.eq(0).float()
    return (1.0 - zero) * torch.sqrt(distances + zero * 1e-16)
