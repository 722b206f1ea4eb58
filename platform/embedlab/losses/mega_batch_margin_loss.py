import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embedlab.losses.gradcache import cached_loss
from embedlab.similarity import cos_sim


class MegaBatchMarginLoss(nn.Module):
    """For each (anchor, positive) pair, the hardest negative is the most similar other positive in the
    (very large) batch: ``relu(positive_margin - cos(a, p)) + relu(cos(a, n_hardest) - negative_margin)``.

    Made for mega-batches of hundreds of pairs, as in ParaNMT; the mini-batched version computes the same
    loss and gradients with GradCache, so the batch size is bounded by time, not memory.

    Args:
        model: the EmbeddingModel to train.
        positive_margin: positives should be at least this similar. Default 0.8.
        negative_margin: the hardest negative should be at most this similar. Default 0.3.
        use_mini_batched_version: embed through GradCache mini-batches (same result). Default True.
        mini_batch_size: rows per mini-batch. Default 50.
        mini_batch_num_tokens: a token budget per mini-batch instead. Default None.
        show_progress_bar: show mini-batch progress. Default False.

    References:
        - ParaNMT-50M, Wieting and Gimpel, 2018: https://aclanthology.org/P18-1042

    Requirements:
        - Large batches (e.g. 500): the hardest negative is only hard in a big batch.

    Inputs:
        +---------------------------------------+--------+-----------------------+
        | Inputs                                | Labels | Format                |
        +=======================================+========+=======================+
        | (anchor, positive) pairs              | none   | anchor_positive_pairs |
        +---------------------------------------+--------+-----------------------+

    Relations:
        - MultipleNegativesRankingLoss uses all in-batch negatives through a softmax instead of the hardest.

    Example:
        loss = MegaBatchMarginLoss(model, mini_batch_size=50)  # with training.batch_size=500
    """

    formats = ("anchor_positive_pairs",)
    batch_sampler = "no_duplicates"
    # The sweep's default search space (embedlab addition): the parameters worth tuning, and where.
    search_space = {"positive_margin": {"uniform": [0.5, 0.95]}, "negative_margin": {"uniform": [0.0, 0.5]}}

    def __init__(
        self,
        model: nn.Module,
        positive_margin: float = 0.8,
        negative_margin: float = 0.3,
        use_mini_batched_version: bool = True,
        mini_batch_size: int = 50,
        mini_batch_num_tokens: int | None = None,
        show_progress_bar: bool = False,
    ):
        super().__init__()
        self.model = model
        self.positive_margin = positive_margin
        self.negative_margin = negative_margin
        self.use_mini_batched_version = use_mini_batched_version
        self.mini_batch_size = mini_batch_size
        self.mini_batch_num_tokens = mini_batch_num_tokens
        self.show_progress_bar = show_progress_bar

    def compute_loss_from_embeddings(self, embeddings: list[Tensor]) -> Tensor:
        anchors, positives = embeddings
        scores = cos_sim(anchors, positives)
        rows = torch.arange(len(anchors), device=anchors.device)
        positive_scores = scores[rows, rows]
        hardest_negative = scores.index_put((rows, rows), scores.new_tensor(-torch.inf)).max(dim=1).values
        return (F.relu(self.positive_margin - positive_scores) + F.relu(hardest_negative - self.negative_margin)).mean()

    def forward(self, sentence_features: list[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        sentence_features = list(sentence_features)
        if len(sentence_features) != 2:
            raise ValueError(f"MegaBatchMarginLoss takes (anchor, positive) pairs, got {len(sentence_features)} columns")
        if not self.use_mini_batched_version:
            return self.compute_loss_from_embeddings(self.model.embed(sentence_features))
        return cached_loss(
            self.model, sentence_features, self.compute_loss_from_embeddings,
            self.mini_batch_size, self.mini_batch_num_tokens, self.show_progress_bar,
        )

    @property
    def uses_gradient_cache(self) -> bool:
        """Loss modifiers wrap `compute_loss_from_embeddings` instead of the model's forward."""
        return self.use_mini_batched_version

    def get_config_dict(self) -> dict:
        return {
            "positive_margin": self.positive_margin,
            "negative_margin": self.negative_margin,
            "mini_batch_size": self.mini_batch_size,
            "mini_batch_num_tokens": self.mini_batch_num_tokens,
        }

    @property
    def citation(self) -> str:
        from embedlab.losses.multiple_negatives_symmetric_ranking_loss import PARANMT_CITATION

        return PARANMT_CITATION
