"""The batch triplet family: triplets mined inside a batch of single sentences with class labels.

Each batch holds several sentences per class (the group-by-label sampler makes sure of it); any two of a
class form an (anchor, positive), any other-class sentence a negative. The four losses differ in which
triplets count: all valid ones, the hardest per anchor (with a margin or a soft margin), or the
semi-hard ones.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embedlab.losses.distances import BATCH_DISTANCES, BatchHardTripletLossDistanceFunction, distance_name

TRIPLET_FORMATS = ("sentence_class",)


def anchor_positive_mask(labels: Tensor) -> Tensor:
    """mask[a, p]: a and p are different rows with the same label."""
    different_rows = ~torch.eye(labels.size(0), device=labels.device, dtype=torch.bool)
    return (labels.unsqueeze(0) == labels.unsqueeze(1)) & different_rows


def anchor_negative_mask(labels: Tensor) -> Tensor:
    """mask[a, n]: a and n have different labels."""
    return labels.unsqueeze(0) != labels.unsqueeze(1)


def hardest_distances(labels: Tensor, distances: Tensor) -> tuple[Tensor, Tensor]:
    """Per anchor: the largest same-label distance and the smallest other-label distance."""
    hardest_positive = (anchor_positive_mask(labels).float() * distances).max(1, keepdim=True).values
    largest = distances.max(1, keepdim=True).values
    # Same-label entries are pushed above every real distance, so min() only sees negatives.
    hardest_negative = (distances + largest * (1.0 - anchor_negative_mask(labels).float())).min(1, keepdim=True).values
    return hardest_positive, hardest_negative


class _BatchTripletBase(nn.Module):
    formats = TRIPLET_FORMATS
    batch_sampler = "group_by_label"
    param_choices = {"distance_metric": BATCH_DISTANCES}
    # The sweep's default search space (embedlab addition): the parameters worth tuning, and where.
    search_space = {"margin": {"uniform": [1.0, 10.0]}}

    def __init__(self, model: nn.Module, distance_metric=BatchHardTripletLossDistanceFunction.euclidean_distance, margin: float = 5):
        super().__init__()
        self.model = model
        self.distance_metric = distance_metric
        self.triplet_margin = margin

    def forward(self, sentence_features: list[dict[str, Tensor]], labels: Tensor) -> Tensor:
        embeddings = self.model.embed(sentence_features[:1])[0]
        return self.loss_from_distances(labels.view(-1), self.distance_metric(embeddings))

    def get_config_dict(self) -> dict:
        return {"distance_metric": distance_name(self.distance_metric, BATCH_DISTANCES), "margin": self.triplet_margin}

    @property
    def citation(self) -> str:
        return """
@misc{hermans2017defense,
    title={In Defense of the Triplet Loss for Person Re-Identification},
    author={Alexander Hermans and Lucas Beyer and Bastian Leibe},
    year={2017},
    eprint={1703.07737},
    archivePrefix={arXiv},
    primaryClass={cs.CV}
}
"""


class BatchAllTripletLoss(_BatchTripletBase):
    """Every valid triplet of the batch: ``relu(d(a, p) - d(a, n) + margin)`` averaged over those with a
    positive loss.

    Args:
        model: the EmbeddingModel to train.
        distance_metric: ``euclidean_distance`` (default) or ``cosine_distance``.
        margin: how much closer a positive must be than a negative. Default 5.

    References:
        - In Defense of the Triplet Loss for Person Re-Identification, Hermans et al., 2017:
          https://arxiv.org/abs/1703.07737

    Requirements:
        - Class labels, with at least two sentences of at least two classes per batch: the
          `group_by_label` sampler (chosen by `sampler: auto`).

    Inputs:
        +------------------+-------+----------------+
        | Inputs           | Labels| Format         |
        +==================+=======+================+
        | single sentences | class | sentence_class |
        +------------------+-------+----------------+

    Relations:
        - BatchHardTripletLoss uses only the hardest triplet per anchor; BatchSemiHardTripletLoss the
          semi-hard ones; BatchHardSoftMarginTripletLoss a soft margin.

    Example:
        loss = BatchAllTripletLoss(model)
        loss([model.tokenize(["How far is Mars?", "How tall is Ann?", "Who wrote Emma?", "Who is Ann?"])], torch.tensor([0, 0, 1, 1]))
    """

    def loss_from_distances(self, labels: Tensor, distances: Tensor) -> Tensor:
        anchors, positives = anchor_positive_mask(labels).nonzero(as_tuple=True)
        losses = distances[anchors, positives].unsqueeze(1) - distances[anchors] + self.triplet_margin
        losses = (labels[anchors].unsqueeze(1) != labels.unsqueeze(0)).float() * losses  # n must be a negative
        losses = losses.clamp(min=0)
        positive_count = (losses > 1e-16).sum()
        return losses.sum() / (positive_count + 1e-16)


class BatchHardTripletLoss(_BatchTripletBase):
    """For each anchor, only its hardest triplet: the farthest positive and the closest negative,
    ``relu(max d(a, p) - min d(a, n) + margin)`` averaged over anchors.

    Args:
        model: the EmbeddingModel to train.
        distance_metric: ``euclidean_distance`` (default) or ``cosine_distance``.
        margin: how much closer the hardest positive must be than the hardest negative. Default 5.

    References:
        - In Defense of the Triplet Loss for Person Re-Identification, Hermans et al., 2017:
          https://arxiv.org/abs/1703.07737

    Requirements:
        - Class labels, with at least two sentences of at least two classes per batch: the
          `group_by_label` sampler (chosen by `sampler: auto`).

    Inputs:
        +------------------+-------+----------------+
        | Inputs           | Labels| Format         |
        +==================+=======+================+
        | single sentences | class | sentence_class |
        +------------------+-------+----------------+

    Relations:
        - BatchHardSoftMarginTripletLoss replaces the margin with a softplus.

    Example:
        loss = BatchHardTripletLoss(model, margin=1.0)
        loss([model.tokenize(["How far is Mars?", "How tall is Ann?", "Who wrote Emma?", "Who is Ann?"])], torch.tensor([0, 0, 1, 1]))
    """

    def loss_from_distances(self, labels: Tensor, distances: Tensor) -> Tensor:
        hardest_positive, hardest_negative = hardest_distances(labels, distances)
        return (hardest_positive - hardest_negative + self.triplet_margin).clamp(min=0).mean()


class BatchHardSoftMarginTripletLoss(_BatchTripletBase):
    """BatchHardTripletLoss with a soft margin: ``softplus(max d(a, p) - min d(a, n))``, with no margin to
    tune.

    Args:
        model: the EmbeddingModel to train.
        distance_metric: ``euclidean_distance`` (default) or ``cosine_distance``.

    References:
        - In Defense of the Triplet Loss for Person Re-Identification, Hermans et al., 2017:
          https://arxiv.org/abs/1703.07737

    Requirements:
        - Class labels, with at least two sentences of at least two classes per batch: the
          `group_by_label` sampler (chosen by `sampler: auto`).

    Inputs:
        +------------------+-------+----------------+
        | Inputs           | Labels| Format         |
        +==================+=======+================+
        | single sentences | class | sentence_class |
        +------------------+-------+----------------+

    Relations:
        - BatchHardTripletLoss has an explicit margin.

    Example:
        loss = BatchHardSoftMarginTripletLoss(model)
        loss([model.tokenize(["How far is Mars?", "How tall is Ann?", "Who wrote Emma?", "Who is Ann?"])], torch.tensor([0, 0, 1, 1]))
    """

    search_space = {}  # no margin to tune

    def __init__(self, model: nn.Module, distance_metric=BatchHardTripletLossDistanceFunction.euclidean_distance):
        super().__init__(model, distance_metric)

    def loss_from_distances(self, labels: Tensor, distances: Tensor) -> Tensor:
        hardest_positive, hardest_negative = hardest_distances(labels, distances)
        return F.softplus(hardest_positive - hardest_negative).mean()

    def get_config_dict(self) -> dict:
        return {"distance_metric": distance_name(self.distance_metric, BATCH_DISTANCES)}


class BatchSemiHardTripletLoss(_BatchTripletBase):
    """For each (anchor, positive), the semi-hard negative: the closest negative that is still farther
    than the positive (or, if none is, the farthest negative); averaged over positive pairs.

    Args:
        model: the EmbeddingModel to train.
        distance_metric: ``euclidean_distance`` (default) or ``cosine_distance``.
        margin: how much closer the positive must be. Default 5.

    References:
        - FaceNet, Schroff et al., 2015: https://arxiv.org/abs/1503.03832

    Requirements:
        - Class labels, with at least two sentences of at least two classes per batch: the
          `group_by_label` sampler (chosen by `sampler: auto`).

    Inputs:
        +------------------+-------+----------------+
        | Inputs           | Labels| Format         |
        +==================+=======+================+
        | single sentences | class | sentence_class |
        +------------------+-------+----------------+

    Relations:
        - BatchHardTripletLoss takes the hardest negative instead.

    Example:
        loss = BatchSemiHardTripletLoss(model)
        loss([model.tokenize(["How far is Mars?", "How tall is Ann?", "Who wrote Emma?", "Who is Ann?"])], torch.tensor([0, 0, 1, 1]))
    """

    def loss_from_distances(self, labels: Tensor, distances: Tensor) -> Tensor:
        batch_size = labels.numel()
        same_label = labels.unsqueeze(1) == labels.unsqueeze(0)
        # For each (a, p): the smallest negative distance greater than d(a, p), by binary search.
        sorted_negatives = distances.masked_fill(same_label, torch.inf).sort(dim=1, stable=True).values
        positions = torch.searchsorted(sorted_negatives.detach().contiguous(), distances.detach().contiguous(), right=True)
        outside = sorted_negatives.gather(1, positions.clamp(max=batch_size - 1))
        # Fallback where no negative is farther: the farthest negative of the anchor.
        minimum = distances.min(1, keepdim=True).values
        farthest_negative = ((distances - minimum) * (~same_label)).max(1, keepdim=True).values + minimum
        semi_hard = torch.where(torch.isfinite(outside), outside, farthest_negative)
        losses = distances - semi_hard + self.triplet_margin
        positive_pairs = same_label.float() - torch.eye(batch_size, device=labels.device)
        return (losses * positive_pairs).clamp(min=0).sum() / positive_pairs.sum().clamp(min=1e-16)

    def get_config_dict(self) -> dict:
        return {"distance_metric": distance_name(self.distance_metric, BATCH_DISTANCES), "margin": self.triplet_margin}

    @property
    def citation(self) -> str:
        return """
@inproceedings{schroff2015facenet,
    title={FaceNet: A Unified Embedding for Face Recognition and Clustering},
    author={Schroff, Florian and Kalenichenko, Dmitry and Philbin, James},
    booktitle={2015 IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
    year={2015},
    doi={10.1109/cvpr.2015.7298682}
}
"""
