"""Named distance functions that the contrastive and triplet losses take as `distance_metric`.

The groups mirror sentence-transformers' `SiameseDistanceMetric`, `TripletDistanceMetric` and
`BatchHardTripletLossDistanceFunction` (same maths, including `F.pairwise_distance`'s epsilon), so a loss
gives the same values there and here. Config files name them in lower case, e.g.
`distance_metric: cosine_distance`.
"""

import torch.nn.functional as F

from embedlab.similarity import (
    cosine_distance_matrix,
    euclidean_distance_matrix,
    pairwise_cos_sim,
    pairwise_euclidean_sim,
    pairwise_manhattan_sim,
)


def siamese_euclidean(x, y):
    return F.pairwise_distance(x, y, p=2)


def siamese_manhattan(x, y):
    return F.pairwise_distance(x, y, p=1)


def siamese_cosine_distance(x, y):
    return 1 - F.cosine_similarity(x, y)


def triplet_cosine(x, y):
    return 1 - pairwise_cos_sim(x, y)


def triplet_euclidean(x, y):
    return -pairwise_euclidean_sim(x, y)


def triplet_manhattan(x, y):
    return -pairwise_manhattan_sim(x, y)


class SiameseDistanceMetric:
    EUCLIDEAN = staticmethod(siamese_euclidean)
    MANHATTAN = staticmethod(siamese_manhattan)
    COSINE_DISTANCE = staticmethod(siamese_cosine_distance)


class TripletDistanceMetric:
    COSINE = staticmethod(triplet_cosine)
    EUCLIDEAN = staticmethod(triplet_euclidean)
    MANHATTAN = staticmethod(triplet_manhattan)


class BatchHardTripletLossDistanceFunction:
    cosine_distance = staticmethod(cosine_distance_matrix)
    euclidean_distance = staticmethod(euclidean_distance_matrix)


SIAMESE_DISTANCES = {"euclidean": siamese_euclidean, "manhattan": siamese_manhattan, "cosine_distance": siamese_cosine_distance}
TRIPLET_DISTANCES = {"cosine": triplet_cosine, "euclidean": triplet_euclidean, "manhattan": triplet_manhattan}
BATCH_DISTANCES = {"cosine_distance": cosine_distance_matrix, "euclidean_distance": euclidean_distance_matrix}


def distance_name(function, choices: dict) -> str:
    return next((name for name, candidate in choices.items() if candidate is function), getattr(function, "__name__", str(function)))
