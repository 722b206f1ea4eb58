import torch
from torch import Tensor, nn

from embedlab.losses.cosine_similarity_loss import SBERT_CITATION


class SoftmaxLoss(nn.Module):
    """A classifier on top of the pair's embeddings (u, v, |u - v|, optionally u * v), trained with
    cross-entropy over the pair's class: the original SBERT objective on NLI data.

    The classifier head is a parameter of the loss: it is trained with the model, saved in checkpoints
    and restored on resume, but not part of the saved embedding model.

    Args:
        model: the EmbeddingModel to train.
        embedding_dimension: size of the model's sentence embedding (filled in from the model in configs).
        num_labels: number of classes (filled in from the data in configs).
        concatenation_sent_rep: include u and v. Default True.
        concatenation_sent_difference: include |u - v|. Default True.
        concatenation_sent_multiplication: include u * v. Default False.
        loss_fct: the classification loss. Default ``nn.CrossEntropyLoss()``.

    References:
        - Sentence-BERT, Reimers and Gurevych, 2019: https://arxiv.org/abs/1908.10084

    Requirements:
        - Integer class labels (class names in the data are mapped to ids in sorted order).

    Inputs:
        +--------------------------------+-------+------------+
        | Inputs                         | Labels| Format     |
        +================================+=======+============+
        | (sentence_A, sentence_B) pairs | class | pair_class |
        +--------------------------------+-------+------------+

    Relations:
        - MultipleNegativesRankingLoss on (anchor, entailment, contradiction) triplets usually gives
          better embeddings from the same NLI data.

    Example:
        loss = SoftmaxLoss(model, embedding_dimension=model.embedding_dimension, num_labels=3)
        loss([model.tokenize(["A man eats."]), model.tokenize(["A person eats."])], torch.tensor([0]))
    """

    formats = ("pair_class",)
    batch_sampler = "random"

    def __init__(
        self,
        model: nn.Module,
        embedding_dimension: int,
        num_labels: int,
        concatenation_sent_rep: bool = True,
        concatenation_sent_difference: bool = True,
        concatenation_sent_multiplication: bool = False,
        loss_fct: nn.Module | None = None,
    ):
        super().__init__()
        self.model = model
        self.num_labels = num_labels
        self.concatenation_sent_rep = concatenation_sent_rep
        self.concatenation_sent_difference = concatenation_sent_difference
        self.concatenation_sent_multiplication = concatenation_sent_multiplication
        parts = 2 * concatenation_sent_rep + concatenation_sent_difference + concatenation_sent_multiplication
        self.classifier = nn.Linear(parts * embedding_dimension, num_labels, device=next(model.parameters()).device)
        self.loss_fct = loss_fct if loss_fct is not None else nn.CrossEntropyLoss()

    def forward(self, sentence_features: list[dict[str, Tensor]], labels: Tensor | None):
        first, second = self.model.embed(sentence_features)
        parts = []
        if self.concatenation_sent_rep:
            parts += [first, second]
        if self.concatenation_sent_difference:
            parts.append(torch.abs(first - second))
        if self.concatenation_sent_multiplication:
            parts.append(first * second)
        logits = self.classifier(torch.cat(parts, dim=1).to(self.classifier.weight.dtype))
        if labels is None:  # prediction, e.g. for the label accuracy evaluator
            return [first, second], logits
        if self.num_labels == 1 or labels.shape != logits.shape:
            labels = labels.view(-1)
        return self.loss_fct(logits, labels)

    def get_config_dict(self) -> dict:
        return {
            "num_labels": self.num_labels,
            "concatenation_sent_rep": self.concatenation_sent_rep,
            "concatenation_sent_difference": self.concatenation_sent_difference,
            "concatenation_sent_multiplication": self.concatenation_sent_multiplication,
        }

    @property
    def citation(self) -> str:
        return SBERT_CITATION
