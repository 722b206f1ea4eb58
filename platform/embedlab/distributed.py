"""The rules every data-parallel worker follows, in one place; the trainer applies them without Ray.

How batches are dealt and combined (one process per worker, a torch.distributed process group):

1. Each step the trainer takes one global batch of G rows and deals it into `world_size()` contiguous
   shards, in rank order, as equal as possible (`shard_of`: sizes differ by at most one; none is empty,
   so a last global batch with fewer rows than workers is left out).
2. Worker r computes its loss on its own shard: a mean over its own n_r anchors. A gathering loss
   (`gather_across_devices=True`) scores its own anchors against every worker's candidates, gathered
   with `gather_columns_with_offset` (gradients flow back to the worker that owns each row).
3. The trainer backpropagates `loss_r * shard_weight(n_r, G)` and then calls `average_gradients`.

A mean over n_r anchors weighted by n_r * W / G and averaged over the W workers is the mean over all G
anchors, so the averaged loss and every gradient equal one process computing the loss on the whole
global batch (up to float summation order), however G divides. With equal shards the weight is 1.0.

4. The training loss a run logs is `mean_over_ranks` of the weighted losses: the global batch's loss.
   At the end of training `check_ranks_agree` compares a checksum of every rank's weights.

What a worker reads, writes and reports (embedlab.ray_train): it reads data, evaluators and models by
paths or URIs every node can reach, writes checkpoints and the final model only to the run's storage
(`distributed.storage_path`, a folder every node mounts or an object-store URI; a multi-node run without
one is refused before it starts), and reports metrics with `ray.train.report` and, from rank 0 only, to
the MLflow tracking server (a store that is a file on the driver is refused on multi-node clusters).

Without an initialized process group (or with a single worker) every function here is the identity.
"""

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def _collective_device() -> torch.device:
    """Where small bookkeeping tensors (sizes, choices) must live for the backend: the GPU for NCCL."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# torch >= 2.13 renames the single-tensor collectives (the old names warn); both exist in older versions.
_all_gather_into = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_into = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def _all_gather_ints(values: Sequence[int]) -> list[list[int]]:
    """Every worker's `values` (a list of the same length on every worker), in rank order."""
    device = _collective_device()
    mine = torch.tensor(list(values), dtype=torch.int64, device=device)
    everyone = torch.empty(world_size() * len(mine), dtype=torch.int64, device=device)
    _all_gather_into(everyone, mine)
    return everyone.view(world_size(), len(mine)).tolist()


def gathered_sizes(rows: int) -> list[int]:
    """Every worker's `rows`, in rank order: one all-gather of a single int64 per call."""
    if not is_distributed():
        return [rows]
    return [row[0] for row in _all_gather_ints([rows])]


def _gathered_sizes_checked(rows: int, shape_key: Sequence[int]) -> list[int]:
    """Every worker's `rows`, checking that every worker gathers the same columns' shapes (`shape_key`).

    This exchange (a few int64 per worker, one collective) is the only one exact gathering adds to the
    data's gathers: latency, not bandwidth. The check turns workers that disagree (say, a modifier that
    truncated embeddings to different sizes on different workers) into the same error on every worker,
    where gloo would abort the process and NCCL could hang or return garbage.
    """
    everyone = _all_gather_ints([rows, *shape_key])
    if any(row[1:] != everyone[0][1:] for row in everyone):
        raise ValueError(f"workers gather columns of different shapes (rows, shape key per worker: {everyone}); every worker must gather the same columns")
    return [row[0] for row in everyone]


class _GatherRows(torch.autograd.Function):
    """All-gather along dim 0 of tensors whose row counts differ between workers (pad to the largest,
    gather, unpad). Backward sums every worker's gradient of the gathered tensor (a reduce-scatter of the
    padded gradient) and hands each worker the rows it contributed."""

    @staticmethod
    def forward(ctx, tensor: Tensor, sizes: tuple[int, ...]) -> Tensor:
        ctx.sizes = sizes
        largest, trailing = max(sizes), tensor.shape[1:]
        if tensor.size(0) < largest:
            tensor = torch.cat([tensor, tensor.new_zeros((largest - tensor.size(0), *trailing))])
        gathered = tensor.new_empty((largest * len(sizes), *trailing))
        _all_gather_into(gathered, tensor.contiguous())
        if all(size == largest for size in sizes):
            return gathered
        return torch.cat([gathered[r * largest : r * largest + size] for r, size in enumerate(sizes)])

    @staticmethod
    def backward(ctx, grad: Tensor):
        sizes = ctx.sizes
        largest, trailing = max(sizes), grad.shape[1:]
        if all(size == largest for size in sizes):
            padded = grad.contiguous()
        else:
            padded = grad.new_zeros((largest * len(sizes), *trailing))
            start = 0
            for r, size in enumerate(sizes):
                padded[r * largest : r * largest + size] = grad[start : start + size]
                start += size
        mine = grad.new_empty((largest, *trailing))
        _reduce_scatter_into(mine, padded)
        return mine[: sizes[dist.get_rank()]], None


def all_gather_with_grad(tensor: Tensor, sizes: Sequence[int] | None = None) -> Tensor:
    """Concatenates `tensor` from every worker along dim 0, in rank order; row counts may differ between
    workers (only the trailing dimensions and dtype must agree). Gradients flow back to each worker's rows.

    `sizes`: every worker's row count, if already known (else gathered here: one tiny collective).
    """
    if not is_distributed():
        return tensor
    if sizes is None:
        sizes = _gathered_sizes_checked(tensor.size(0), [tensor.dim(), math.prod(tensor.shape[1:])])
    sizes = tuple(int(size) for size in sizes)
    if len(sizes) != world_size() or sizes[rank()] != tensor.size(0):
        raise ValueError(f"sizes {list(sizes)} do not match {world_size()} workers with {tensor.size(0)} rows on rank {rank()}")
    return _GatherRows.apply(tensor, sizes)


def gather_with_offset(tensor: Tensor) -> tuple[Tensor, int]:
    """`tensor` from every worker, concatenated in rank order, and where this worker's rows start in it
    (the sum of the lower ranks' row counts; never `rank() * local rows`, as shards may differ in size)."""
    (gathered,), offset = gather_columns_with_offset([tensor])
    return gathered, offset


def gather_columns_with_offset(columns: Sequence[Tensor]) -> tuple[list[Tensor], int]:
    """Each of `columns` (tensors with the same rows: a batch's anchors, positives, negatives, guide
    embeddings) from every worker, and this worker's row offset in each of them.

    One size exchange, then one all-gather per dtype (the columns are laid side by side), however many
    columns: gathering N columns costs about what gathering one did. Column j of the result is column j
    of every worker in rank order, so positives stay positives and each hard-negative column stays
    one column (never interleaved per worker). Without a process group: the columns as they are, offset 0.
    """
    columns = list(columns)
    if not is_distributed():
        return columns, 0
    rows = columns[0].size(0)
    if any(column.size(0) != rows for column in columns):
        raise ValueError(f"columns to gather must have the same rows, got {[column.size(0) for column in columns]}")
    sizes = _gathered_sizes_checked(rows, [len(columns), sum(math.prod(column.shape[1:]) for column in columns)])
    offset = sum(sizes[: rank()])
    gathered: list[Tensor | None] = [None] * len(columns)
    by_dtype: dict[torch.dtype, list[int]] = {}
    for index, column in enumerate(columns):
        by_dtype.setdefault(column.dtype, []).append(index)
    for indices in by_dtype.values():
        widths = [math.prod(columns[i].shape[1:]) for i in indices]
        side_by_side = torch.cat([columns[i].reshape(rows, -1) for i in indices], dim=1) if len(indices) > 1 else columns[indices[0]].reshape(rows, -1)
        everyone = all_gather_with_grad(side_by_side, sizes)
        for i, part in zip(indices, everyone.split(widths, dim=1), strict=True):
            gathered[i] = part.reshape(-1, *columns[i].shape[1:])
    return gathered, offset


def shard_weight(local_rows: int, global_rows: int | None = None) -> float:
    """The factor the trainer multiplies this worker's loss by before backward: local_rows * W / global_rows.

    `local_rows`: the rows of this worker's shard; `global_rows`: the rows of the whole global batch (the
    sum over the W workers' shards). The trainer knows every shard's size, so it passes `global_rows`
    and no collective runs; left out, it is summed over the workers here (one all-reduce of one int64,
    which every worker must then call at the same point).

    A loss that is a mean over its worker's anchors, weighted so and averaged over workers by
    `average_gradients`, equals the mean over the global batch: the averaged loss and its gradients are
    those of one process on the global batch. 1.0 with equal shards, and 1.0 without a process group.
    """
    if not is_distributed():
        return 1.0
    if local_rows < 1:
        raise ValueError(f"a shard must have at least one row, got {local_rows}")
    if global_rows is None:
        total = torch.tensor([local_rows], dtype=torch.int64, device=_collective_device())
        dist.all_reduce(total)
        global_rows = int(total.item())
    if global_rows < local_rows:
        raise ValueError(f"global_rows ({global_rows}) is smaller than this shard's {local_rows} rows")
    return local_rows * world_size() / global_rows


def same_on_every_rank(choice: Sequence[int]) -> list[int]:
    """Rank 0's `choice` (a list of ints of the same length on every worker) on every worker: one broadcast.

    For random choices that shape the loss (AdaptiveLayerLoss's layers, MatryoshkaLoss's dimensions per
    step): if workers chose differently, gathered embeddings would mix layers or sizes, and the averaged
    gradient would be no loss's gradient. Python's RNG agrees across workers only while every worker
    draws the same numbers (rank 0 alone runs evaluators). Identity without a process group.
    """
    choice = [int(value) for value in choice]
    if not is_distributed():
        return choice
    values = torch.tensor(choice, dtype=torch.int64, device=_collective_device())
    dist.broadcast(values, src=0)
    return values.tolist()


def shard_of(batch: list[int], rank: int, world_size: int) -> list[int]:
    """Worker `rank`'s contiguous part of a global batch; the first len(batch) % world_size get one more row."""
    size, extra = divmod(len(batch), world_size)
    start = rank * size + min(rank, extra)
    return batch[start : start + size + (rank < extra)]


def mean_over_ranks(value: float) -> float:
    if not is_distributed():
        return value
    total = torch.tensor(value, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(total)
    return total.item() / dist.get_world_size()


def check_ranks_agree(module: torch.nn.Module) -> None:
    """Every rank must hold the same weights (one averaged gradient per step guarantees it, unless a step
    ran on some ranks only): a float64 checksum of the parameters, compared across ranks."""
    if not is_distributed():
        return
    checksum = torch.stack([parameter.detach().double().sum() for parameter in module.parameters()]).sum().to(_collective_device())
    # Compared as bit patterns: equal weights give equal bits, NaN ones (a diverged run) included.
    low, high = checksum.view(torch.int64).clone(), checksum.view(torch.int64).clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if low.item() != high.item():
        values = [bits.view(torch.float64).item() for bits in (low, high)]
        raise RuntimeError(f"workers ended with different weights (parameter checksums {values[0]!r} .. {values[1]!r}): the run is not data-parallel")


def average_gradients(module: torch.nn.Module) -> None:
    """Averages every parameter's gradient over the workers, in one all-reduce (what DDP does).

    The DDP wrapper itself is not used: the cached (GradCache) losses run the model forward a second
    time inside backward, which DDP's per-forward bookkeeping does not allow.
    """
    gradients = [parameter.grad for parameter in module.parameters() if parameter.grad is not None]
    if not gradients or not is_distributed():
        return
    flat = torch.cat([gradient.reshape(-1) for gradient in gradients])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for gradient, averaged in zip(gradients, flat.split([gradient.numel() for gradient in gradients]), strict=True):
        gradient.copy_(averaged.view_as(gradient))
