from torch import nn

from embedlab.losses.cosent_loss import CoSENTLoss
from embedlab.similarity import pairwise_angle_sim


class AnglELoss(CoSENTLoss):
    """AnglE (angle-optimized) loss: CoSENTLoss with the angle similarity instead of cosine.

    Cosine similarity saturates near 1 and -1, where its gradient vanishes; AnglE measures the angle
    difference in complex space, which keeps gradients alive there. Use it like CoSENTLoss on pairs with a
    similarity score, optionally next to MultipleNegativesRankingLoss as in the paper.

    Args:
        model: the EmbeddingModel to train.
        scale: inverse temperature applied to the similarities. Default 20.0.

    References:
        - AnglE-optimized Text Embeddings, Li and Li, 2023: https://arxiv.org/abs/2309.12871

    Requirements:
        - Scores in the range [-1, 1] or [0, 1]; only their order matters.

    Inputs:
        +--------------------------------+------------------------+-------------+
        | Inputs                         | Labels                 | Format      |
        +================================+========================+=============+
        | (sentence_A, sentence_B) pairs | float similarity score | pair_score  |
        +--------------------------------+------------------------+-------------+

    Relations:
        - CoSENTLoss is AnglELoss with ``pairwise_cos_sim`` as the similarity.
        - CosineSimilarityLoss gives a weaker training signal than both.

    Example:
        loss = AnglELoss(model)
        loss([model.tokenize(["A plane takes off."]), model.tokenize(["A jet departs."])], torch.tensor([0.9]))
    """

    def __init__(self, model: nn.Module, scale: float = 20.0):
        super().__init__(model, scale=scale, similarity_fct=pairwise_angle_sim)

    def get_config_dict(self) -> dict:
        return {"scale": self.scale}

    @property
    def citation(self) -> str:
        return """
@misc{li2023angleoptimized,
    title={AnglE-optimized Text Embeddings},
    author={Xianming Li and Jing Li},
    year={2023},
    eprint={2309.12871},
    archivePrefix={arXiv},
    primaryClass={cs.CL}
}
"""
