"""Cross-worker in-batch negatives: 2 workers with batch B/2 each, gathering embeddings with gradients,
give the loss and gradients of 1 worker with batch B (torch.distributed over gloo, as DDP on CPU)."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from embedlab import EmbeddingModel
from embedlab.distributed import average_gradients
from embedlab.losses import CachedMultipleNegativesRankingLoss, MultipleNegativesRankingLoss

ANCHORS = ["a man eats food", "the dog runs", "two cats sit", "a bird flies", "a red car drives", "the old house", "a boat on water", "what is the capital of france ?"]
POSITIVES = ["someone eats", "a dog is running", "cats are sitting", "the bird is flying", "a car on the road", "an old home", "a ship in the sea", "paris is the capital of france"]
LOSSES = {"mnrl": (MultipleNegativesRankingLoss, {}), "cached": (CachedMultipleNegativesRankingLoss, {"mini_batch_size": 3})}


def _loss_and_model(model_path: str, loss_name: str, rows: slice, gather: bool) -> tuple[torch.Tensor, EmbeddingModel]:
    model = EmbeddingModel(model_path, device="cpu").eval().double()  # float64: compare to 1e-9, not noise
    loss_class, params = LOSSES[loss_name]
    loss = loss_class(model, gather_across_devices=gather, **params)
    value = loss([model.tokenize(ANCHORS[rows]), model.tokenize(POSITIVES[rows])], None)
    value.backward()
    return value.detach(), model


def _gradients(model) -> dict:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _worker(rank: int, world_size: int, port: int, model_path: str, loss_name: str, result_file: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        half = len(ANCHORS) // world_size
        value, model = _loss_and_model(model_path, loss_name, slice(rank * half, (rank + 1) * half), gather=True)
        average_gradients(model)  # the trainer's step on each worker
        dist.all_reduce(value)
        value /= world_size
        gradients = _gradients(model)
        if rank == 0:
            torch.save({"loss": value, "gradients": gradients}, result_file)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("loss_name", list(LOSSES))
def test_two_workers_with_gathering_equal_one_worker_with_the_whole_batch(tiny_model_path, tmp_path, loss_name):
    result_file = str(tmp_path / "two_workers.pt")
    mp.spawn(_worker, args=(2, _free_port(), str(tiny_model_path), loss_name, result_file), nprocs=2, join=True)
    two_workers = torch.load(result_file, weights_only=True)
    one_value, one_model = _loss_and_model(str(tiny_model_path), loss_name, slice(None), gather=False)
    one_gradients = _gradients(one_model)
    torch.testing.assert_close(two_workers["loss"], one_value, rtol=1e-9, atol=1e-12)
    assert two_workers["gradients"].keys() == one_gradients.keys()
    for name, gradient in one_gradients.items():
        torch.testing.assert_close(two_workers["gradients"][name], gradient, rtol=1e-7, atol=1e-10, msg=name)
