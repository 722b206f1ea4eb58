"""GradCache: the gradients of a big-batch loss with the memory of a mini-batch.

1. Embed every column in mini-batches without building a graph, remembering each mini-batch's RNG state.
2. Compute the loss on those embeddings (as leaf tensors); when the trainer calls `loss.backward()`,
   backpropagate it to them: cheap, as the loss only sees embeddings.
3. Then, still inside that backward, re-embed each mini-batch with a graph (same RNG state, so the same
   dropout) and backpropagate the cached embedding gradients into the model, one mini-batch at a time.

The parameter gradients equal those of the uncached loss (exactly, up to float summation order, where
dropout is off; with dropout, each mini-batch draws its own masks).

References:
    - Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup, Gao et al., 2021:
      https://arxiv.org/abs/2101.06983
"""

from collections.abc import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm


def _row_ranges(features: dict[str, Tensor], size: int, num_tokens: int | None) -> list[tuple[int, int]]:
    rows = features["input_ids"].shape[0]
    if num_tokens is None:
        return [(start, min(start + size, rows)) for start in range(0, rows, size)]
    # A token budget: grow each mini-batch while rows x longest row stays within it.
    lengths = features["attention_mask"].sum(dim=1).tolist() if "attention_mask" in features else [features["input_ids"].shape[1]] * rows
    ranges, start, longest = [], 0, 0
    for end, length in enumerate(lengths):
        longest_with = max(longest, length)
        if end > start and ((end - start + 1) * longest_with > num_tokens or end - start >= size):
            ranges.append((start, end))
            start, longest_with = end, length
        longest = longest_with
    ranges.append((start, rows))
    return ranges


def mini_batches(features: dict[str, Tensor], size: int, num_tokens: int | None = None) -> list[dict[str, Tensor]]:
    """Row slices of a tokenized batch, each trimmed to its own longest sequence (less padding)."""
    batches = []
    for start, end in _row_ranges(features, size, num_tokens):
        batch = {key: value[start:end] for key, value in features.items()}
        if "attention_mask" in batch:
            width = int(batch["attention_mask"].sum(dim=1).max())
            batch = {key: value[:, :width] if value.dim() == 2 else value for key, value in batch.items()}
        batches.append(batch)
    return batches


def _rng_state(device: torch.device) -> dict:
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def _with_rng(state: dict, device: torch.device):
    """A context that runs with `state` and then restores the RNG as it was."""
    devices = [device] if device.type == "cuda" else []
    context = torch.random.fork_rng(devices=devices)
    context.__enter__()
    torch.set_rng_state(state["cpu"])
    if state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    return context


def embed_without_graph(model, sentence_features, mini_batch_size: int, num_tokens: int | None = None, show_progress_bar: bool = False):
    """Step 1: per column, the detached embeddings (leaf tensors needing grad) and the RNG states."""
    embeddings, states = [], []
    device = next(model.parameters()).device
    for features in sentence_features:
        column, column_states = [], []
        batches = mini_batches(features, mini_batch_size, num_tokens)
        for batch in tqdm(batches, desc="Embed mini-batches", disable=not show_progress_bar, leave=False):
            column_states.append(_rng_state(device))
            with torch.no_grad():
                column.append(model.embed([dict(batch)])[0].detach().requires_grad_())
        embeddings.append(column)
        states.append(column_states)
    return embeddings, states


def cached_loss(
    model,
    sentence_features: list[dict[str, Tensor]],
    loss_fn: Callable[[list[Tensor]], Tensor],
    mini_batch_size: int,
    num_tokens: int | None = None,
    show_progress_bar: bool = False,
) -> Tensor:
    """Steps 1-3 for `loss_fn(full-batch embeddings per column)`: returns the loss, whose backward() runs
    steps 2 and 3.

    Step 2 runs inside the caller's backward, not here, so that it starts from the gradient the caller
    gives the loss. Across workers that matters: a loss that gathers embeddings sums every worker's
    gradient for each row in step 2, and each worker's loss arrives weighted by its own shard weight
    (`embedlab.distributed.shard_weight`; workers' shards may differ in size). Backpropagating the unit
    gradient here and scaling by the caller's weight afterwards would weigh every worker's share of a
    row's gradient by the owner's weight instead.
    """
    embeddings, states = embed_without_graph(model, sentence_features, mini_batch_size, num_tokens, show_progress_bar)
    full = [torch.cat(column) for column in embeddings]
    if not torch.is_grad_enabled():
        return loss_fn(full)
    loss = loss_fn(full)  # the graph over embeddings only: small next to the model's
    pieces = [piece for column in embeddings for piece in column]
    device = next(model.parameters()).device
    # The recomputation runs inside backward(), outside the trainer's autocast: carry it over.
    autocast = torch.autocast(device.type, dtype=torch.get_autocast_dtype(device.type), enabled=torch.is_autocast_enabled(device.type))

    def backward_into_model(grad_output: Tensor) -> None:
        # Step 2: gradients of the (weighted) loss with respect to each mini-batch's embeddings.
        flat = torch.autograd.grad(loss, pieces, grad_outputs=grad_output, allow_unused=True)
        flat = [torch.zeros_like(piece) if gradient is None else gradient for piece, gradient in zip(pieces, flat, strict=True)]
        gradients, start = [], 0
        for column in embeddings:
            gradients.append(flat[start : start + len(column)])
            start += len(column)
        # Step 3: re-embed each mini-batch with a graph and carry its embeddings' gradients into the model.
        with torch.enable_grad():
            for features, column_gradients, column_states in zip(sentence_features, gradients, states, strict=True):
                batches = mini_batches(features, mini_batch_size, num_tokens)
                for batch, gradient, state in zip(batches, column_gradients, column_states, strict=True):
                    context = _with_rng(state, device)
                    try:
                        with autocast:
                            recomputed = model.embed([dict(batch)])[0]
                    finally:
                        context.__exit__(None, None, None)
                    (recomputed * gradient).sum().backward()

    result = loss.detach().requires_grad_()
    result.register_hook(backward_into_model)
    return result
