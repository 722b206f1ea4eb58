from torch import Tensor, nn

from embedlab.losses.gradcache import cached_loss
from embedlab.losses.multiple_negatives_ranking_loss import MultipleNegativesRankingLoss
from embedlab.similarity import cos_sim


class CachedMultipleNegativesRankingLoss(MultipleNegativesRankingLoss):
    """MultipleNegativesRankingLoss with GradCache: the same loss and gradients, with memory that stays
    flat as the batch grows, so batches of thousands fit on one device.

    The batch is embedded in mini-batches without a graph, the loss is backpropagated to the embeddings
    only, and then each mini-batch is re-embedded with a graph to carry those gradients into the model.
    It costs about one extra forward pass per step; in exchange the batch size (the number of negatives)
    is no longer bounded by memory.

    Args:
        model: the EmbeddingModel to train.
        scale: inverse temperature. Default 20.0.
        similarity_fct: similarity matrix function. Default ``cos_sim``.
        mini_batch_size: rows per mini-batch; only memory and speed depend on it. Default 32.
        mini_batch_num_tokens: a token budget per mini-batch instead (rows x longest row). Default None.
        gather_across_devices: gather embeddings across workers with gradients. Default False.
        directions: as for MultipleNegativesRankingLoss. Default ``("query_to_doc",)``.
        partition_mode: as for MultipleNegativesRankingLoss. Default ``"joint"``.
        show_progress_bar: show mini-batch progress. Default False.
        hardness_mode: as for MultipleNegativesRankingLoss. Default None.
        hardness_strength: as for MultipleNegativesRankingLoss. Default 0.0.

    References:
        - Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup, Gao et al., 2021:
          https://arxiv.org/abs/2101.06983

    Requirements:
        - The no-duplicates batch sampler (chosen by `sampler: auto`); large batches to be worth it.

    Inputs:
        +-------------------------------------------------+--------+-----------------------+
        | Inputs                                          | Labels | Format                |
        +=================================================+========+=======================+
        | (anchor, positive) pairs                        | none   | anchor_positive_pairs |
        +-------------------------------------------------+--------+-----------------------+
        | (anchor, positive, negative) triplets           | none   | triplets              |
        +-------------------------------------------------+--------+-----------------------+
        | (anchor, positive, negative_1, ..., negative_n) | none   | n_tuples              |
        +-------------------------------------------------+--------+-----------------------+

    Relations:
        - Equivalent to MultipleNegativesRankingLoss; use that one while the batch fits in memory.

    Example:
        loss = CachedMultipleNegativesRankingLoss(model, mini_batch_size=32)  # with training.batch_size=512
    """

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
        directions: tuple[str, ...] = ("query_to_doc",),
        partition_mode: str = "joint",
        show_progress_bar: bool = False,
        hardness_mode: str | None = None,
        hardness_strength: float = 0.0,
    ):
        super().__init__(model, scale, similarity_fct, gather_across_devices, directions, partition_mode, hardness_mode, hardness_strength)
        if mini_batch_size < 1 or (mini_batch_num_tokens is not None and mini_batch_num_tokens < 1):
            raise ValueError("mini_batch_size and mini_batch_num_tokens must be positive")
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


GRADCACHE_CITATION = """
@misc{gao2021scaling,
    title={Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup},
    author={Luyu Gao and Yunyi Zhang and Jiawei Han and Jamie Callan},
    year={2021},
    eprint={2101.06983},
    archivePrefix={arXiv},
    primaryClass={cs.LG}
}
"""
