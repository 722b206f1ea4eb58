import torch.nn.functional as F
from torch import Tensor, nn

from embedlab.losses.contrastive_loss import ContrastiveLoss
from embedlab.losses.distances import SIAMESE_DISTANCES, SiameseDistanceMetric, distance_name


class OnlineContrastiveLoss(nn.Module):
    """Contrastive loss on the hard pairs of each batch only: positives farther apart than the closest
    negative, and negatives closer than the farthest positive.

    Ignoring the easy pairs usually trains better than ContrastiveLoss on duplicate-detection data.
    Note that it sums (not averages) over the selected pairs, as sentence-transformers does.

    Args:
        model: the EmbeddingModel to train.
        distance_metric: ``cosine_distance`` (default), ``euclidean`` or ``manhattan``.
        margin: negative pairs farther apart than this cost nothing. Default 0.5.

    References:
        - Hadsell et al., 2006 (contrastive loss), with online hard-pair mining.

    Requirements:
        - Labels 1 (similar) and 0 (dissimilar); batches with both kinds.

    Inputs:
        +-----------------------------------------------+--------+-------------+
        | Inputs                                        | Labels | Format      |
        +===============================================+========+=============+
        | (anchor, positive/negative) pairs             | 1 / 0  | pair_binary |
        +-----------------------------------------------+--------+-------------+

    Relations:
        - ContrastiveLoss uses every pair of the batch.

    Example:
        loss = OnlineContrastiveLoss(model)
        loss([model.tokenize(["A cat.", "A cat."]), model.tokenize(["A kitten.", "A car."])], torch.tensor([1, 0]))
    """

    formats = ("pair_binary",)
    batch_sampler = "random"
    # The sweep's default search space (embedlab addition): the parameters worth tuning, and where.
    search_space = {"margin": {"uniform": [0.2, 1.0]}}
    param_choices = {"distance_metric": SIAMESE_DISTANCES}

    def __init__(self, model: nn.Module, distance_metric=SiameseDistanceMetric.COSINE_DISTANCE, margin: float = 0.5):
        super().__init__()
        self.model = model
        self.distance_metric = distance_metric
        self.margin = margin

    def forward(self, sentence_features: list[dict[str, Tensor]], labels: Tensor) -> Tensor:
        anchors, others = self.model.embed(sentence_features)
        labels = labels.view(-1)
        distances = self.distance_metric(anchors, others)
        negatives, positives = distances[labels == 0], distances[labels == 1]
        hard_negatives = negatives[negatives < (positives.max() if len(positives) else negatives.mean())]
        hard_positives = positives[positives > (negatives.min() if len(negatives) else positives.mean())]
        return hard_positives.pow(2).sum() + F.relu(self.margin - hard_negatives).pow(2).sum()

    def get_config_dict(self) -> dict:
        return {"distance_metric": distance_name(self.distance_metric, SIAMESE_DISTANCES), "margin": self.margin}

    citation = ContrastiveLoss.citation
