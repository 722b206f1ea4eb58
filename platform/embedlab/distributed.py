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
