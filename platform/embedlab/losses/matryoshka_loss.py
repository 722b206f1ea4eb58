import random
from contextlib import contextmanager

import torch.nn.functional as F
from torch import Tensor, nn

from embedlab.distributed import same_on_every_rank


@contextmanager
def replaced_forward(module: nn.Module, forward):
    """Runs the block with `module.forward` replaced, then puts back exactly what was there before."""
    had_own = "forward" in module.__dict__
    previous = module.__dict__.get("forward")
    module.forward = forward
    try:
        yield forward
    finally:
        if had_own:
            module.forward = previous
        else:
            del module.forward


def shrink(embeddings: Tensor, dim: int) -> Tensor:
    """The first `dim` dimensions, re-normalized: what a Matryoshka model serves at that size."""
    if dim > embeddings.shape[-1]:
        raise ValueError(f"matryoshka dimension {dim} exceeds the embedding dimension {embeddings.shape[-1]}")
    return F.normalize(embeddings[..., :dim], p=2, dim=-1)


class ShrinkingForward:
    """Stands in for `model.forward` while the inner loss runs once per dimension: the first pass runs the
    model and keeps its outputs, later passes replay them (in call order), shrunk to the current size."""

    def __init__(self, forward):
        self.forward = forward
        self.outputs: list[dict] = []
        self.dim = None
        self.filled_at_dim = None
        self.call = 0

    def set_dim(self, dim: int) -> None:
        self.dim, self.call = dim, 0

    def __call__(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.filled_at_dim is None or self.filled_at_dim == self.dim:
            output = self.forward(features)
            self.outputs.append(output)
            self.filled_at_dim = self.dim
        else:
            output = self.outputs[self.call]
        output["sentence_embedding"] = shrink(output["sentence_embedding"], self.dim)
        self.call += 1
        return output


class MatryoshkaLoss(nn.Module):
    """Loss modifier: applies the inner loss to the embeddings truncated to each of `matryoshka_dims`
    (re-normalized), weighted and summed, so the first dimensions alone make a good small embedding.

    The model runs once per step; only the cheap loss runs per dimension. Use `truncate_dim` in
    `encode` and the evaluators to serve or test a smaller size.

    Args:
        model: the EmbeddingModel to train.
        loss: the inner loss (any catalogue or custom loss).
        matryoshka_dims: the sizes to train, e.g. [384, 256, 128, 64]; include the full size.
        matryoshka_weights: one weight per size. Default all 1.
        n_dims_per_step: train a random subset of this many sizes per step; -1 (default) for all.

    References:
        - Matryoshka Representation Learning, Kusupati et al., 2022: https://arxiv.org/abs/2205.13147

    Requirements:
        - The inner loss's own requirements.

    Inputs:
        +---------------------------------------+---------------------------------------+
        | Inputs                                | Labels                                |
        +=======================================+=======================================+
        | any: those of the inner loss          | any: those of the inner loss          |
        +---------------------------------------+---------------------------------------+

    Relations:
        - Matryoshka2dLoss combines it with AdaptiveLayerLoss.

    Example:
        loss = MatryoshkaLoss(model, CoSENTLoss(model), matryoshka_dims=[384, 128, 64])
    """

    is_modifier = True
    # Wraps GradCache losses too: it shrinks the cached embeddings inside `compute_loss_from_embeddings`.
    accepts_cached_losses = True

    def __init__(self, model: nn.Module, loss: nn.Module, matryoshka_dims: list[int], matryoshka_weights: list[float] | None = None, n_dims_per_step: int = -1):
        super().__init__()
        if not matryoshka_dims or any(dim <= 0 for dim in matryoshka_dims):
            raise ValueError("matryoshka_dims must be a non-empty list of positive sizes")
        if any(dim > model.embedding_dimension for dim in matryoshka_dims):
            raise ValueError(f"matryoshka_dims {list(matryoshka_dims)} exceed the model's embedding dimension {model.embedding_dimension}")
        weights = matryoshka_weights if matryoshka_weights is not None else [1] * len(matryoshka_dims)
        if len(weights) != len(matryoshka_dims):
            raise ValueError("matryoshka_weights must have one weight per dimension")
        self.model = model
        self.loss = loss
        # Largest first: the first pass runs the model at full size, later ones shrink its outputs.
        self.matryoshka_dims, self.matryoshka_weights = zip(*sorted(zip(matryoshka_dims, weights, strict=True), reverse=True), strict=True)
        self.n_dims_per_step = n_dims_per_step
        if getattr(loss, "uses_gradient_cache", False):
            inner = loss.compute_loss_from_embeddings
            loss.compute_loss_from_embeddings = lambda embeddings, *rest: sum(
                weight * inner([shrink(e, dim) for e in embeddings], *rest) for dim, weight in self._dims_this_step()
            )

    def _dims_this_step(self) -> list[tuple[int, float]]:
        indices = list(range(len(self.matryoshka_dims)))
        if 0 < self.n_dims_per_step < len(indices):
            # Every worker trains the same sizes (rank 0's draw): a gathered batch must not mix sizes.
            indices = same_on_every_rank(sorted(random.sample(indices, self.n_dims_per_step)))
        return [(self.matryoshka_dims[i], self.matryoshka_weights[i]) for i in indices]

    def forward(self, sentence_features: list[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        if getattr(self.loss, "uses_gradient_cache", False):
            return self.loss(sentence_features, labels)
        with replaced_forward(self.model, ShrinkingForward(self.model.forward)) as shrinking:
            total = 0.0
            for dim, weight in self._dims_this_step():
                shrinking.set_dim(dim)
                dim_labels = labels
                if isinstance(labels, Tensor) and labels.ndim in (2, 3) and labels.size(-1) == self.model.embedding_dimension:
                    dim_labels = labels[..., :dim]  # teacher embeddings shrink with the student's
                total = total + weight * self.loss(sentence_features, dim_labels)
        return total

    def get_config_dict(self) -> dict:
        return {
            "loss": type(self.loss).__name__,
            "matryoshka_dims": list(self.matryoshka_dims),
            "matryoshka_weights": list(self.matryoshka_weights),
            "n_dims_per_step": self.n_dims_per_step,
        }

    @property
    def citation(self) -> str:
        return """
@misc{kusupati2024matryoshka,
    title={Matryoshka Representation Learning},
    author={Aditya Kusupati and Gantavya Bhatt and Aniket Rege and Matthew Wallingford and Aditya Sinha and Vivek Ramanujan and William Howard-Snyder and Kaifeng Chen and Sham Kakade and Prateek Jain and Ali Farhadi},
    year={2024},
    eprint={2205.13147},
    archivePrefix={arXiv},
    primaryClass={cs.LG}
}
"""
