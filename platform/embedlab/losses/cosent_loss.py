import torch
from torch import Tensor, nn

from embedlab.similarity import pairwise_cos_sim


class CoSENTLoss(nn.Module):
    """CoSENT (Consistent SENTence embedding) loss, for pairs with a similarity score.

    For every two pairs (i, j) and (k, l) in the batch whose gold score says (i, j) is more similar, it
    penalizes the model when s(k, l) > s(i, j): ``loss = log(1 + sum(exp(scale * (s(k,l) - s(i,j)))))``.
    It only uses the order of the scores, so it trains faster and better than CosineSimilarityLoss and
    is a drop-in replacement for it.

    Args:
        model: the EmbeddingModel to train.
        scale: inverse temperature applied to the similarities. Default 20.0, as in the paper.
        similarity_fct: pairwise similarity between embeddings. Default ``pairwise_cos_sim``.

    References:
        - CoSENT: Consistent Sentence Embedding via Similarity Ranking, Huang et al., 2024:
          https://penghao-bdsc.github.io/papers/CoSENT_TASLP2024.pdf

    Requirements:
        - Scores in the range of the similarity function (cosine: [-1, 1]); only their order matters.

    Inputs:
        +--------------------------------+------------------------+-------------+
        | Inputs                         | Labels                 | Format      |
        +================================+========================+=============+
        | (sentence_A, sentence_B) pairs | float similarity score | pair_score  |
        +--------------------------------+------------------------+-------------+

    Relations:
        - AnglELoss is CoSENTLoss with the angle similarity instead of cosine.
        - CosineSimilarityLoss regresses the scores directly and gives a weaker training signal.

    Example:
        model = EmbeddingModel("sentence-transformers/all-MiniLM-L6-v2")
        loss = CoSENTLoss(model, scale=20.0)
        features = [model.tokenize(["A plane takes off."]), model.tokenize(["An airplane departs."])]
        loss(features, torch.tensor([0.9])).backward()
    """

    formats = ("pair_score",)
    batch_sampler = "random"
    # The sweep's default search space (embedlab addition): the parameters worth tuning, and where.
    search_space = {"scale": {"loguniform": [5.0, 50.0]}}

    def __init__(self, model: nn.Module, scale: float = 20.0, similarity_fct=pairwise_cos_sim):
        super().__init__()
        self.model = model
        self.scale = scale
        self.similarity_fct = similarity_fct

    def forward(self, sentence_features: list[dict[str, Tensor]], labels: Tensor) -> Tensor:
        embeddings = self.model.embed(sentence_features)
        scores = self.similarity_fct(embeddings[0], embeddings[1])
        if scores.dtype in (torch.float16, torch.bfloat16):  # 1e12 and exp() overflow half precision
            scores = scores.float()
        scores = scores * self.scale
        # differences[a, b] = s_a - s_b, kept only where pair b should be more similar than pair a.
        differences = scores[:, None] - scores[None, :]
        should_be_lower = (labels[:, None] < labels[None, :]).float()
        differences = differences - (1 - should_be_lower) * 1e12
        # The leading zero is the "1 +" inside the log.
        return torch.logsumexp(torch.cat((differences.new_zeros(1), differences.view(-1))), dim=0)

    def get_config_dict(self) -> dict:
        return {"scale": self.scale, "similarity_fct": self.similarity_fct.__name__}

    @property
    def citation(self) -> str:
        return """
@article{10531646,
    author={Huang, Xiang and Peng, Hao and Zou, Dongcheng and Liu, Zhiwei and Li, Jianxin and Liu, Kay and Wu, Jia and Su, Jianlin and Yu, Philip S.},
    journal={IEEE/ACM Transactions on Audio, Speech, and Language Processing},
    title={CoSENT: Consistent Sentence Embedding via Similarity Ranking},
    year={2024},
    doi={10.1109/TASLP.2024.3402087}
}
"""
