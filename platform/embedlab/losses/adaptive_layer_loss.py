import math
import random

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embedlab.distributed import same_on_every_rank
from embedlab.losses.matryoshka_loss import replaced_forward


class LayerReplay:
    """Stands in for the Transformer module's forward: the first pass runs it keeping every layer's token
    embeddings; a pass at layer k replays, for each call in order, layer k's embeddings as if final."""

    def __init__(self, transformer: nn.Module):
        self.transformer = transformer
        self.forward = transformer.forward
        self.layers: list[tuple] = []
        self.layer = None
        self.call = 0

    @property
    def num_layers(self) -> int:
        return len(self.layers[0])

    def set_layer(self, layer: int) -> None:
        self.layer, self.call = layer, 0

    def __call__(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.layer is None:
            self.transformer.output_all_layers = True
            try:
                features = self.forward(features)
            finally:
                self.transformer.output_all_layers = False
            self.layers.append(features["all_layer_embeddings"])
            return features
        features = {**features, "token_embeddings": self.layers[self.call][self.layer]}
        self.call += 1
        return features


class EmbeddingCollector:
    """Stands in for the model's forward and keeps the sentence embeddings it returns (for the KL term)."""

    def __init__(self, forward):
        self.forward = forward
        self.embeddings: list[Tensor] = []

    def __call__(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        output = self.forward(features)
        self.embeddings.append(output["sentence_embedding"])
        return output

    def take(self) -> Tensor:
        embeddings, self.embeddings = torch.cat(self.embeddings, dim=0), []
        return embeddings


def wraps_cached_loss(loss: nn.Module) -> bool:
    """Whether `loss`, or the loss inside its modifiers (Matryoshka2dLoss wraps a MatryoshkaLoss), is cached."""
    while loss is not None:
        if getattr(loss, "uses_gradient_cache", False):
            return True
        loss = getattr(loss, "loss", None) if getattr(loss, "is_modifier", False) else None
    return False


class AdaptiveLayerLoss(nn.Module):
    """Loss modifier: applies the inner loss to the final layer and to randomly chosen earlier layers
    (as if the model ended there), plus a KL term pulling earlier layers towards the final one, so the
    model can be cut to fewer layers for speed.

    The transformer runs once per step; earlier layers' outputs are reused, so each extra layer only costs
    pooling and the loss. Not for GradCache (cached) losses.

    Args:
        model: the EmbeddingModel to train.
        loss: the inner loss.
        n_layers_per_step: earlier layers trained per step; -1 or a large value for all. Default 1.
        last_layer_weight: weight of the final layer's loss. Default 1.0.
        prior_layers_weight: weight of the earlier layers' losses. Default 1.0.
        kl_div_weight: weight of the KL term. Default 1.0.
        kl_temperature: softmax temperature of the KL term; 0 turns it off. Default 0.3.
        layer_weighting: how earlier layers' losses are weighted by layer index: ``uniform`` (default),
            ``log``, ``linear``, or a function of the index.

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
        - Matryoshka2dLoss combines it with MatryoshkaLoss.

    Example:
        loss = AdaptiveLayerLoss(model, MultipleNegativesRankingLoss(model))
    """

    is_modifier = True
    # It replays the transformer's layers through the model's forward, which a GradCache (cached) loss
    # calls in mini-batches without a graph and again inside backward: the replay cannot follow it.
    accepts_cached_losses = False

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        n_layers_per_step: int = 1,
        last_layer_weight: float = 1.0,
        prior_layers_weight: float = 1.0,
        kl_div_weight: float = 1.0,
        kl_temperature: float = 0.3,
        layer_weighting="uniform",
    ):
        super().__init__()
        if not callable(layer_weighting) and layer_weighting not in ("uniform", "log", "linear"):
            raise ValueError(f"layer_weighting must be 'uniform', 'log', 'linear' or a function, got {layer_weighting!r}")
        if not self.accepts_cached_losses and wraps_cached_loss(loss):
            raise ValueError(f"{type(self).__name__} cannot wrap {type(loss).__name__}, which is or wraps a cached (GradCache) loss")
        self.model = model
        self.loss = loss
        self.n_layers_per_step = n_layers_per_step
        self.last_layer_weight = last_layer_weight
        self.prior_layers_weight = prior_layers_weight
        self.kl_div_weight = kl_div_weight
        self.kl_temperature = kl_temperature
        self.layer_weighting = layer_weighting

    def layer_weight(self, layer: int) -> float:
        if callable(self.layer_weighting):
            return self.layer_weighting(layer)
        if self.layer_weighting == "log":
            return 1.0 / (1.0 + math.log(1 + layer))
        if self.layer_weighting == "linear":
            return 1.0 / (1 + layer)
        return 1.0

    def forward(self, sentence_features: list[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        transformer = self.model.transformer
        with replaced_forward(transformer, LayerReplay(transformer)) as replay, replaced_forward(
            self.model, EmbeddingCollector(self.model.forward)
        ) as collector:
            loss = self.loss(sentence_features, labels) * self.last_layer_weight
            if self.kl_temperature > 0:
                final = F.softmax(collector.take() / self.kl_temperature, dim=-1).detach()
            layers = range(replay.num_layers - 1)  # hidden_states: the embedding layer, then each block but the last
            if 0 < self.n_layers_per_step < replay.num_layers - 1:
                # Every worker trains the same layers (rank 0's draw): a gathered batch must not mix layers.
                layers = same_on_every_rank(random.sample(layers, self.n_layers_per_step))
            for layer in layers:
                replay.set_layer(layer)
                layer_loss = self.loss(sentence_features, labels)
                loss = loss + layer_loss * self.layer_weight(layer) / len(layers) * self.prior_layers_weight
                if self.kl_temperature > 0:
                    layer_embeddings = F.log_softmax(collector.take() / self.kl_temperature, dim=-1)
                    kl = F.kl_div(layer_embeddings, final, reduction="batchmean")
                    loss = loss + kl * self.kl_temperature * self.kl_div_weight
        return loss

    def get_config_dict(self) -> dict:
        weighting = self.layer_weighting if isinstance(self.layer_weighting, str) else getattr(self.layer_weighting, "__name__", "custom")
        return {
            "loss": type(self.loss).__name__,
            "n_layers_per_step": self.n_layers_per_step,
            "last_layer_weight": self.last_layer_weight,
            "prior_layers_weight": self.prior_layers_weight,
            "kl_div_weight": self.kl_div_weight,
            "kl_temperature": self.kl_temperature,
            "layer_weighting": weighting,
        }

    @property
    def citation(self) -> str:
        return TWO_D_MATRYOSHKA_CITATION


TWO_D_MATRYOSHKA_CITATION = """
@misc{li20242d,
    title={2D Matryoshka Sentence Embeddings},
    author={Xianming Li and Zongxi Li and Jing Li and Haoran Xie and Qing Li},
    year={2024},
    eprint={2402.14776},
    archivePrefix={arXiv},
    primaryClass={cs.CL}
}
"""
