"""Contrastive Tension (CT): unsupervised training on plain sentences with two copies of the model.

model1 is a frozen-at-start copy that keeps training as a second encoder; model2 (the model passed in)
is the one that is saved. CT pushes the dot product of the two copies' embeddings up for the same
sentence and down for different sentences.
"""

import copy
import math

import torch
from torch import Tensor, nn

from embedlab.similarity import cos_sim

CT_CITATION = """
@inproceedings{carlsson2021semantic,
    title={Semantic Re-tuning with Contrastive Tension},
    author={Fredrik Carlsson and Amaru Cuba Gyllensten and Evangelia Gogoulou and Erik Ylipää Hellqvist and Magnus Sahlgren},
    booktitle={International Conference on Learning Representations},
    year={2021},
    url={https://openreview.net/forum?id=Ov_sMNau-PF}
}
"""


class ContrastiveTensionLoss(nn.Module):
    """Contrastive Tension: binary cross-entropy on the dot product of two model copies' embeddings, 1
    for the same sentence and 0 for different ones.

    Given pairs (two input columns) the label is 1 where both texts are the same. Given single sentences
    (one column), the loss builds the pairs itself from the batch: one row in `pos_neg_ratio` is paired
    with itself, the others with the next sentence, as sentence-transformers' ContrastiveTensionDataLoader.

    Args:
        model: the EmbeddingModel to train (model2, the one that is kept).
        pos_neg_ratio: one positive pair per this many pairs, for single-sentence batches. Default 4.

    References:
        - Semantic Re-tuning with Contrastive Tension, Carlsson et al., 2021:
          https://openreview.net/forum?id=Ov_sMNau-PF

    Requirements:
        - Plain sentences; no labels. Doubles the parameters in memory (two copies).

    Inputs:
        +------------------+--------+------------------+
        | Inputs           | Labels | Format           |
        +==================+========+==================+
        | single sentences | none   | single_sentences |
        +------------------+--------+------------------+

    Relations:
        - ContrastiveTensionLossInBatchNegatives uses in-batch negatives and usually trains better.

    Example:
        loss = ContrastiveTensionLoss(model)
        loss([model.tokenize(["A cat sits.", "A dog runs.", "The sky is blue.", "Birds fly."])], None)
    """

    formats = ("single_sentences",)
    batch_sampler = "random"
    # The sweep's default search space (embedlab addition): the parameters worth tuning, and where.
    search_space = {"pos_neg_ratio": {"choice": [2, 4, 8]}}

    def __init__(self, model: nn.Module, pos_neg_ratio: int = 4):
        super().__init__()
        self.model2 = model
        self.model1 = copy.deepcopy(model)
        self.pos_neg_ratio = pos_neg_ratio
        self.criterion = nn.BCEWithLogitsLoss(reduction="sum")

    @property
    def model(self) -> nn.Module:
        return self.model2

    def _pairs_from_sentences(self, features: dict[str, Tensor]) -> tuple[dict, dict]:
        rows = features["input_ids"].shape[0]
        partner = torch.arange(rows, device=features["input_ids"].device)
        negative_rows = partner % self.pos_neg_ratio != 0
        partner[negative_rows] = (partner[negative_rows] + 1) % rows
        return features, {key: value[partner] for key, value in features.items()}

    def forward(self, sentence_features: list[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        sentence_features = list(sentence_features)
        first, second = sentence_features if len(sentence_features) == 2 else self._pairs_from_sentences(sentence_features[0])
        embeddings1 = self.model1(dict(first))["sentence_embedding"]
        embeddings2 = self.model2(dict(second))["sentence_embedding"]
        scores = (embeddings1 * embeddings2).sum(dim=-1)
        if labels is None:  # the same text on both sides is a positive
            labels = torch.as_tensor(
                [
                    torch.equal(ids1[mask1.bool()], ids2[mask2.bool()])
                    for ids1, mask1, ids2, mask2 in zip(first["input_ids"], first["attention_mask"], second["input_ids"], second["attention_mask"], strict=True)
                ],
                device=scores.device,
                dtype=scores.dtype,
            )
        return self.criterion(scores, labels.view(-1).type_as(scores))

    def get_config_dict(self) -> dict:
        return {"pos_neg_ratio": self.pos_neg_ratio}

    @property
    def citation(self) -> str:
        return CT_CITATION


class ContrastiveTensionLossInBatchNegatives(nn.Module):
    """Contrastive Tension with in-batch negatives: the two model copies embed the same batch and a
    symmetric cross-entropy makes each sentence's two embeddings match each other rather than the
    other sentences'.

    Args:
        model: the EmbeddingModel to train (model2, the one that is kept).
        scale: initial inverse temperature; it is a trained parameter (``logit_scale``). Default 20.0.
        similarity_fct: similarity matrix function. Default ``cos_sim``.

    References:
        - Semantic Re-tuning with Contrastive Tension, Carlsson et al., 2021:
          https://openreview.net/forum?id=Ov_sMNau-PF

    Requirements:
        - The same sentence in both columns (or a single column); no labels.

    Inputs:
        +------------------------+--------+---------------------+
        | Inputs                 | Labels | Format              |
        +========================+========+=====================+
        | (anchor, anchor) pairs | none   | anchor_anchor_pairs |
        +------------------------+--------+---------------------+
        | single sentences       | none   | single_sentences    |
        +------------------------+--------+---------------------+

    Relations:
        - ContrastiveTensionLoss uses explicit positive and negative pairs.

    Example:
        loss = ContrastiveTensionLossInBatchNegatives(model)
        batch = model.tokenize(["A cat sits.", "A dog runs."])
        loss([batch, batch], None)
    """

    formats = ("anchor_anchor_pairs", "single_sentences")
    batch_sampler = "no_duplicates"
    # The sweep's default search space (embedlab addition): the parameters worth tuning, and where.
    search_space = {"scale": {"loguniform": [5.0, 50.0]}}

    def __init__(self, model: nn.Module, scale: float = 20.0, similarity_fct=cos_sim):
        super().__init__()
        self.model2 = model
        self.model1 = copy.deepcopy(model)
        self.similarity_fct = similarity_fct
        self.cross_entropy_loss = nn.CrossEntropyLoss()
        self.logit_scale = nn.Parameter(torch.ones([], device=next(model.parameters()).device) * math.log(scale))

    @property
    def model(self) -> nn.Module:
        return self.model2

    def forward(self, sentence_features: list[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        features = list(sentence_features)[0]
        embeddings_a = self.model1(dict(features))["sentence_embedding"]
        embeddings_b = self.model2(dict(features))["sentence_embedding"]
        scores = self.similarity_fct(embeddings_a, embeddings_b) * self.logit_scale.exp()
        targets = torch.arange(len(scores), device=scores.device)
        return (self.cross_entropy_loss(scores, targets) + self.cross_entropy_loss(scores.t(), targets)) / 2

    def get_config_dict(self) -> dict:
        return {"scale": self.logit_scale.exp().item(), "similarity_fct": self.similarity_fct.__name__}

    @property
    def citation(self) -> str:
        return CT_CITATION
