import torch
from torch import Tensor, nn


class MSELoss(nn.Module):
    """Distillation: the mean squared error between the student's embedding and a teacher's embedding.

    The teacher's embeddings are the label column (computed once, e.g. by `embedlab`'s teacher
    conversion or `dataset.map`). With several input columns (e.g. an English sentence and its
    translation), every column is pulled to the same teacher embedding: the recipe for making a model
    multilingual.

    Args:
        model: the student EmbeddingModel to train.
        projection_dim: add a trained ``nn.Linear(student_dim, projection_dim)`` before the error, when the
            teacher's dimension differs from the student's. Default None.

    References:
        - Making Monolingual Sentence Embeddings Multilingual using Knowledge Distillation, Reimers and
          Gurevych, 2020: https://arxiv.org/abs/2004.09813

    Requirements:
        - A label column of teacher embeddings, shape (batch, teacher_dim) or (batch, columns, teacher_dim).

    Inputs:
        +---------------------------+-------------------+-------------------+
        | Inputs                    | Labels            | Format            |
        +===========================+===================+===================+
        | sentence(s)               | teacher embedding | teacher_embedding |
        +---------------------------+-------------------+-------------------+

    Relations:
        - MarginMSELoss distills score margins rather than embeddings.

    Example:
        loss = MSELoss(model)
        loss([model.tokenize(["A cat."])], teacher.encode(["A cat."], convert_to_tensor=True))
    """

    formats = ("teacher_embedding",)
    batch_sampler = "random"

    def __init__(self, model: nn.Module, projection_dim: int | None = None):
        super().__init__()
        self.model = model
        self.projection_dim = projection_dim
        self.projection = None
        if projection_dim is not None:
            self.projection = nn.Linear(model.embedding_dimension, projection_dim, device=next(model.parameters()).device)

    def forward(self, sentence_features: list[dict[str, Tensor]], labels: Tensor) -> Tensor:
        embeddings = self.model.embed(sentence_features)
        labels = labels.detach()
        if labels.dim() == 3:
            if labels.size(1) != len(embeddings):
                raise ValueError(f"labels hold {labels.size(1)} teacher embeddings per row, but there are {len(embeddings)} input columns")
            teachers = [labels[:, column] for column in range(labels.size(1))]
        else:
            teachers = [labels] * len(embeddings)
        losses = []
        for student, teacher in zip(embeddings, teachers, strict=True):
            if self.projection is not None:
                student = self.projection(student)
            losses.append(nn.functional.mse_loss(student, teacher.to(device=student.device, dtype=student.dtype)))
        return torch.stack(losses).mean()

    def get_config_dict(self) -> dict:
        return {"projection_dim": self.projection_dim}

    @property
    def citation(self) -> str:
        return """
@inproceedings{reimers-2020-multilingual-sentence-bert,
    title = "Making Monolingual Sentence Embeddings Multilingual using Knowledge Distillation",
    author = "Reimers, Nils and Gurevych, Iryna",
    booktitle = "Proceedings of the 2020 Conference on Empirical Methods in Natural Language Processing",
    month = "11",
    year = "2020",
    publisher = "Association for Computational Linguistics",
    url = "https://arxiv.org/abs/2004.09813",
}
"""
