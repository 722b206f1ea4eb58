"""Cross-worker helpers. Without an initialized process group every function is the identity."""

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def all_gather_with_grad(tensor: Tensor) -> Tensor:
    """Concatenates `tensor` from every worker along dim 0; gradients flow back to each worker's part."""
    if not is_distributed():
        return tensor
    import torch.distributed.nn.functional as dist_fn

    return torch.cat(dist_fn.all_gather(tensor), dim=0)
