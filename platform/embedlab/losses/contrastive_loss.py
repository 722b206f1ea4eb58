import torch.nn.functional as F
from torch import Tensor, nn

from embedlab.losses.distances import SIAMESE_DISTANCES, SiameseDistanceMetric, distance_name


class ContrastiveLoss(nn.Module):
    """Contrastive loss: pulls positive pairs (label 1) together and pushes negative pairs (label 0)
    apart until their distance exceeds `margin`.

    ``loss = 0.5 * (y * d^2 + (1 - y) * relu(margin - d)^2)`` per pair, averaged (or summed). Use it for
    duplicate / paraphrase data labelled 1 or 0.

    Args:
        model: the EmbeddingModel to train.
        distance_metric: ``cosine_distance`` (default), ``euclidean`` or ``manhattan``
            (``SiameseDistanceMetric``).
        margin: negative pairs farther apart than this cost nothing. Default 0.5 (for cosine distance).
        size_average: average over the batch (True, default) or sum.

    References:
        - Dimensionality Reduction by Learning an Invariant Mapping, Hadsell et al., 2006:
          https://yann.lecun.com/exdb/publis/pdf/hadsell-chopra-lecun-06.pdf

    Requirements:
        - Labels 1 (similar) and 0 (dissimilar).

    Inputs:
        +-----------------------------------------------+--------+-------------+
        | Inputs                                        | Labels | Format      |
        +===============================================+========+=============+
        | (anchor, positive/negative) pairs             | 1 / 0  | pair_binary |
        +-----------------------------------------------+--------+-------------+

    Relations:
        - OnlineContrastiveLoss applies the same loss to the hard pairs of the batch only.

    Example:
        loss = ContrastiveLoss(model, margin=0.5)
        loss([model.tokenize(["A cat.", "A cat."]), model.tokenize(["A kitten.", "A car."])], torch.tensor([1, 0]))
    """

    formats = ("pair_binary",)
    batch_sampler = "random"
    # The sweep's default search space (embedlab addition): the parameters worth tuning, and where.
    search_space = {"margin": {"uniform": [0.2, 1.0]}}
    param_choices = {"distance_metric": SIAMESE_DISTANCES}

    def __init__(self, model: nn.Module, distance_metric=SiameseDistanceMetric.COSINE_DISTANCE, margin: float = 0.5, size_average: bool = True):
        super().__init__()
        self.model = model
        self.distance_metric = distance_metric
        self.margin = margin
        self.size_average = size_average

    def forward(self, sentence_features: list[dict[str, Tensor]], labels: Tensor) -> Tensor:
        anchors, others = self.model.embed(sentence_features)
        labels = labels.view(-1).float()
        distances = self.distance_metric(anchors, others)
        losses = 0.5 * (labels * distances.pow(2) + (1 - labels) * F.relu(self.margin - distances).pow(2))
        return losses.mean() if self.size_average else losses.sum()

    def get_config_dict(self) -> dict:
        return {"distance_metric": distance_name(self.distance_metric, SIAMESE_DISTANCES), "margin": self.margin, "size_average": self.size_average}

    @property
    def citation(self) -> str:
        return """
@inproceedings{hadsell2006dimensionality,
    author={Hadsell, R. and Chopra, S. and LeCun, Y.},
    booktitle={2006 IEEE Computer Society Conference on Computer Vision and Pattern Recognition (CVPR'06)},
    title={Dimensionality Reduction by Learning an Invariant Mapping},
    year={2006},
    volume={2},
    pages={1735-1742},
    doi={10.1109/CVPR.2006.100}
}
"""
