import torch
from torch import Tensor, nn


class CosineSimilarityLoss(nn.Module):
    """Regresses the cosine similarity of each pair onto its gold score: ``loss_fct(cos(u, v), score)``.

    The original SBERT objective for STS-style data. It asks for the exact score rather than the right
    order, which makes it a weaker signal than CoSENTLoss or AnglELoss, but it is simple and well known.

    Args:
        model: the EmbeddingModel to train.
        loss_fct: the regression loss between similarity and score. Default ``nn.MSELoss()``.
        cos_score_transformation: applied to the cosine similarity first. Default ``nn.Identity()``.

    References:
        - Sentence-BERT, Reimers and Gurevych, 2019: https://arxiv.org/abs/1908.10084

    Requirements:
        - Scores in the range of the cosine similarity, usually normalized to [0, 1].

    Inputs:
        +--------------------------------+------------------------+-------------+
        | Inputs                         | Labels                 | Format      |
        +================================+========================+=============+
        | (sentence_A, sentence_B) pairs | float similarity score | pair_score  |
        +--------------------------------+------------------------+-------------+

    Relations:
        - CoSENTLoss and AnglELoss only need the order of the scores and usually train better.

    Example:
        loss = CosineSimilarityLoss(model)
        loss([model.tokenize(["A cat."]), model.tokenize(["A kitten."])], torch.tensor([0.9]))
    """

    formats = ("pair_score",)
    batch_sampler = "random"

    def __init__(self, model: nn.Module, loss_fct: nn.Module | None = None, cos_score_transformation: nn.Module | None = None):
        super().__init__()
        self.model = model
        self.loss_fct = loss_fct if loss_fct is not None else nn.MSELoss()
        self.cos_score_transformation = cos_score_transformation if cos_score_transformation is not None else nn.Identity()

    def forward(self, sentence_features: list[dict[str, Tensor]], labels: Tensor) -> Tensor:
        first, second = self.model.embed(sentence_features)
        similarities = self.cos_score_transformation(torch.cosine_similarity(first, second))
        return self.loss_fct(similarities, labels.float().view(-1))

    def get_config_dict(self) -> dict:
        return {"loss_fct": type(self.loss_fct).__name__ + "()"}

    @property
    def citation(self) -> str:
        return SBERT_CITATION


SBERT_CITATION = """
@inproceedings{reimers-2019-sentence-bert,
    title = "Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks",
    author = "Reimers, Nils and Gurevych, Iryna",
    booktitle = "Proceedings of the 2019 Conference on Empirical Methods in Natural Language Processing",
    month = "11",
    year = "2019",
    publisher = "Association for Computational Linguistics",
    url = "https://arxiv.org/abs/1908.10084",
}
"""
