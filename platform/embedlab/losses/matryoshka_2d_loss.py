from torch import nn

from embedlab.losses.adaptive_layer_loss import (
    TWO_D_MATRYOSHKA_CITATION,
    AdaptiveLayerLoss,
    wraps_cached_loss,
)
from embedlab.losses.matryoshka_loss import MatryoshkaLoss


class Matryoshka2dLoss(AdaptiveLayerLoss):
    """Loss modifier: 2D Matryoshka, i.e. AdaptiveLayerLoss around MatryoshkaLoss, so the model works
    both with fewer layers and with fewer dimensions.

    Args:
        model: the EmbeddingModel to train.
        loss: the inner loss.
        matryoshka_dims: the sizes to train, e.g. [384, 256, 128, 64].
        matryoshka_weights: one weight per size. Default all 1.
        n_layers_per_step: earlier layers trained per step. Default 1.
        n_dims_per_step: sizes trained per step; -1 for all. Default 1, as in the paper.
        last_layer_weight: weight of the final layer's loss. Default 1.0.
        prior_layers_weight: weight of the earlier layers' losses. Default 1.0.
        kl_div_weight: weight of the KL term. Default 1.0.
        kl_temperature: softmax temperature of the KL term; 0 turns it off. Default 0.3.
        layer_weighting: ``uniform`` (default), ``log``, ``linear`` or a function of the layer index.

    References:
        - 2D Matryoshka Sentence Embeddings, Li et al., 2024: https://arxiv.org/abs/2402.14776

    Requirements:
        - A transformer model; a loss that is not cached.

    Inputs:
        +---------------------------------------+---------------------------------------+
        | Inputs                                | Labels                                |
        +=======================================+=======================================+
        | any: those of the inner loss          | any: those of the inner loss          |
        +---------------------------------------+---------------------------------------+

    Relations:
        - MatryoshkaLoss (dimensions only) and AdaptiveLayerLoss (layers only).

    Example:
        loss = Matryoshka2dLoss(model, CoSENTLoss(model), matryoshka_dims=[384, 128, 64])
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        matryoshka_dims: list[int],
        matryoshka_weights: list[float] | None = None,
        n_layers_per_step: int = 1,
        n_dims_per_step: int = 1,
        last_layer_weight: float = 1.0,
        prior_layers_weight: float = 1.0,
        kl_div_weight: float = 1.0,
        kl_temperature: float = 0.3,
        layer_weighting="uniform",
    ):
        if wraps_cached_loss(loss):  # before MatryoshkaLoss patches the cached loss it would then refuse
            raise ValueError(f"{type(self).__name__} cannot wrap {type(loss).__name__}, which is or wraps a cached (GradCache) loss")
        matryoshka = MatryoshkaLoss(model, loss, matryoshka_dims, matryoshka_weights, n_dims_per_step=n_dims_per_step)
        super().__init__(
            model,
            matryoshka,
            n_layers_per_step=n_layers_per_step,
            last_layer_weight=last_layer_weight,
            prior_layers_weight=prior_layers_weight,
            kl_div_weight=kl_div_weight,
            kl_temperature=kl_temperature,
            layer_weighting=layer_weighting,
        )

    def get_config_dict(self) -> dict:
        return {**super().get_config_dict(), **self.loss.get_config_dict()}

    @property
    def citation(self) -> str:
        return TWO_D_MATRYOSHKA_CITATION
