from torch import Tensor, nn

from embedlab.losses.cached_multiple_negatives_ranking_loss import GRADCACHE_CITATION
from embedlab.losses.gradcache import cached_loss
from embedlab.losses.multiple_negatives_symmetric_ranking_loss import MultipleNegativesSymmetricRankingLoss
from embedlab.similarity import cos_sim


class CachedMultipleNegativesSymmetricRankingLoss(MultipleNegativesSymmetricRankingLoss):
    """MultipleNegativesSymmetricRankingLoss with GradCache: same loss and gradients, flat memory in the
    batch size (see CachedMultipleNegativesRankingLoss for how).

    Args:
        model: the EmbeddingModel to train.
        scale: inverse temperature. Default 20.0.
        similarity_fct: similarity matrix function. Default ``cos_sim``.
        mini_batch_size: rows per mini-batch. Default 32.
        mini_batch_num_tokens: a token budget per mini-batch instead. Default None.
        gather_across_devices: gather embeddings across workers with gradients. Default False.
        show_progress_bar: show mini-batch progress. Default False.

    References:
        - Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup, Gao et al., 2021:
          https://arxiv.org/abs/2101.06983

    Requirements:
        - The no-duplicates batch sampler (chosen by `sampler: auto`).

    Inputs:
        +---------------------------------------+--------+-----------------------+
        | Inputs                                | Labels | Format                |
        +=======================================+========+=======================+
        | (anchor, positive) pairs              | none   | anchor_positive_pairs |
        +---------------------------------------+--------+-----------------------+

    Relations:
        - Equivalent to MultipleNegativesSymmetricRankingLoss.

    Example:
        loss = CachedMultipleNegativesSymmetricRankingLoss(model, mini_batch_size=32)
    """

    def __init__(
        self,
        model: nn.Module,
        scale: float = 20.0,
        similarity_fct=cos_sim,
        mini_batch_size: int = 32,
        mini_batch_num_tokens: int | None = None,
        gather_across_devices: bool = False,
        show_progress_bar: bool = False,
    ):
        super().__init__(model, scale, similarity_fct, gather_across_devices)
        self.mini_batch_size = mini_batch_size
        self.mini_batch_num_tokens = mini_batch_num_tokens
        self.show_progress_bar = show_progress_bar

    def forward(self, sentence_features: list[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        return cached_loss(
            self.model, list(sentence_features), self.compute_loss_from_embeddings,
            self.mini_batch_size, self.mini_batch_num_tokens, self.show_progress_bar,
        )

    @property
    def uses_gradient_cache(self) -> bool:
        """Loss modifiers wrap `compute_loss_from_embeddings` instead of the model's forward."""
        return True

    def get_config_dict(self) -> dict:
        return {**super().get_config_dict(), "mini_batch_size": self.mini_batch_size, "mini_batch_num_tokens": self.mini_batch_num_tokens}

    @property
    def citation(self) -> str:
        return GRADCACHE_CITATION
