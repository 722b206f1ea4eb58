from torch import nn

from embedlab.losses.cached_multiple_negatives_ranking_loss import CachedMultipleNegativesRankingLoss
from embedlab.similarity import cos_sim


class CachedMultipleNegativesSymmetricRankingLoss(CachedMultipleNegativesRankingLoss):
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

    formats = ("anchor_positive_pairs",)
    # The sweep's default search space (embedlab addition): the parameters worth tuning, and where.
    search_space = {"scale": {"loguniform": [5.0, 50.0]}, "mini_batch_size": {"choice": [16, 32, 64]}}

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
        # The symmetric loss is the cached one with both directions, each with its own softmax.
        super().__init__(
            model,
            scale=scale,
            similarity_fct=similarity_fct,
            mini_batch_size=mini_batch_size,
            mini_batch_num_tokens=mini_batch_num_tokens,
            gather_across_devices=gather_across_devices,
            directions=("query_to_doc", "doc_to_query"),
            partition_mode="per_direction",
            show_progress_bar=show_progress_bar,
        )

    def get_config_dict(self) -> dict:
        return {
            "scale": self.scale,
            "similarity_fct": self.similarity_fct.__name__,
            "gather_across_devices": self.gather_across_devices,
            "mini_batch_size": self.mini_batch_size,
            "mini_batch_num_tokens": self.mini_batch_num_tokens,
        }
