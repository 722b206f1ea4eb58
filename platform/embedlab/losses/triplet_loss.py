import torch.nn.functional as F
from torch import Tensor, nn

from embedlab.losses.distances import TRIPLET_DISTANCES, TripletDistanceMetric, distance_name


class TripletLoss(nn.Module):
    """Triplet loss: the anchor must be closer to the positive than to the negative by `triplet_margin`.

    ``loss = relu(d(a, p) - d(a, n) + margin)``, averaged. The classic objective for (anchor, positive,
    negative) data.

    Args:
        model: the EmbeddingModel to train.
        distance_metric: ``euclidean`` (default), ``cosine`` or ``manhattan`` (``TripletDistanceMetric``).
        triplet_margin: how much closer the positive must be. Default 5 (for euclidean distance; use about
            0.5 or less with cosine).

    References:
        - FaceNet, Schroff et al., 2015: https://arxiv.org/abs/1503.03832

    Requirements:
        - Triplets of (anchor, positive, negative) texts.

    Inputs:
        +---------------------------------------+--------+----------+
        | Inputs                                | Labels | Format   |
        +=======================================+========+==========+
        | (anchor, positive, negative) triplets | none   | triplets |
        +---------------------------------------+--------+----------+

    Relations:
        - MultipleNegativesRankingLoss also uses the other rows' positives as negatives, often better.
        - BatchHardTripletLoss and friends mine triplets from sentences with class labels.

    Example:
        loss = TripletLoss(model, distance_metric=TripletDistanceMetric.COSINE, triplet_margin=0.3)
        loss([model.tokenize(["A cat."]), model.tokenize(["A kitten."]), model.tokenize(["A car."])], None)
    """

    formats = ("triplets",)
    batch_sampler = "no_duplicates"
    # The sweep's default search space (embedlab addition): the parameters worth tuning, and where.
    search_space = {"triplet_margin": {"uniform": [0.5, 10.0]}}
    param_choices = {"distance_metric": TRIPLET_DISTANCES}

    def __init__(self, model: nn.Module, distance_metric=TripletDistanceMetric.EUCLIDEAN, triplet_margin: float = 5):
        super().__init__()
        self.model = model
        self.distance_metric = distance_metric
        self.triplet_margin = triplet_margin

    def forward(self, sentence_features: list[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        anchors, positives, negatives = self.model.embed(sentence_features)
        return F.relu(self.distance_metric(anchors, positives) - self.distance_metric(anchors, negatives) + self.triplet_margin).mean()

    def get_config_dict(self) -> dict:
        return {"distance_metric": distance_name(self.distance_metric, TRIPLET_DISTANCES), "triplet_margin": self.triplet_margin}

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
