import torch
from torch import Tensor, nn

from embedlab.similarity import pairwise_dot_score


class MarginMSELoss(nn.Module):
    """Margin-MSE distillation: the student's score margin sim(q, p1) - sim(q, p2) must match a teacher's
    (usually a cross-encoder's) gold margin.

    Distilling margins rather than scores lets a bi-encoder learn from a stronger model whose scores live
    on another scale. The standard recipe for MS MARCO-style retrieval training.

    Args:
        model: the EmbeddingModel to train.
        similarity_fct: pairwise similarity. Default ``pairwise_dot_score``, as in the paper.

    References:
        - Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge Distillation,
          Hofstätter et al., 2020: https://arxiv.org/abs/2010.02666

    Requirements:
        - A gold margin per row (teacher score of passage one minus that of passage two); or a list of
          scores, positive first, for several negatives.

    Inputs:
        +-------------------------------------+-------------+----------------------+
        | Inputs                              | Labels      | Format               |
        +=====================================+=============+======================+
        | (query, passage_one, passage_two)   | gold margin | query_passage_margin |
        +-------------------------------------+-------------+----------------------+

    Relations:
        - MSELoss distills embeddings instead of margins.

    Example:
        loss = MarginMSELoss(model)
        loss([model.tokenize(["q"]), model.tokenize(["relevant"]), model.tokenize(["less relevant"])], torch.tensor([3.2]))
    """

    formats = ("query_passage_margin",)
    batch_sampler = "random"

    def __init__(self, model: nn.Module, similarity_fct=pairwise_dot_score):
        super().__init__()
        self.model = model
        self.similarity_fct = similarity_fct
        self.loss_fct = nn.MSELoss()

    def forward(self, sentence_features: list[dict[str, Tensor]], labels: Tensor) -> Tensor:
        queries, positives, *negatives = self.model.embed(sentence_features)
        batch_size = queries.shape[0]
        if labels.shape == (batch_size, len(negatives) + 1):  # scores given: positive first, then negatives
            labels = labels[:, :1] - labels[:, 1:]
        if labels.shape == (batch_size,):
            labels = labels.unsqueeze(1)
        if labels.shape != (batch_size, len(negatives)):
            raise ValueError(f"labels of shape {tuple(labels.shape)} do not fit {len(negatives)} negative column(s)")
        positive_scores = self.similarity_fct(queries, positives)
        margins = torch.stack([positive_scores - self.similarity_fct(queries, negative) for negative in negatives], dim=1)
        return self.loss_fct(margins, labels.detach().to(margins.dtype))

    def get_config_dict(self) -> dict:
        return {"similarity_fct": self.similarity_fct.__name__}

    @property
    def citation(self) -> str:
        return """
@misc{hofstätter2021improving,
    title={Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge Distillation},
    author={Sebastian Hofstätter and Sophia Althammer and Michael Schröder and Mete Sertkan and Allan Hanbury},
    year={2021},
    eprint={2010.02666},
    archivePrefix={arXiv},
    primaryClass={cs.IR}
}
"""
