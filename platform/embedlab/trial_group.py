"""Sweep trials of several workers (`search.workers_per_trial` > 1) on processes kept from one trial to the next.

A Ray Train TorchTrainer per trial starts its worker processes anew every time: they import torch and
transformers, load the data and model and join a process group, which on short trials costs more than the
training. Here rank 0 of a trial is Tune's trial process itself, which Tune keeps for the next trial
(`reuse_actors`), and ranks 1.. are `TrialWorker` actors that this process starts once, in the trial's
placement group (one bundle per rank), and keeps. All ranks stay in one torch.distributed process group
(gloo on CPU, NCCL on GPU). For each trial every rank loads the inputs through embedlab.trial_cache (kept
in its process, keyed by fingerprint) and trains the same Trainer as anywhere, data-parallel, writing its
checkpoints into the trial's folder (storage every node mounts, as a sweep's trials need anyway).

A trial whose rank 0 does not end normally (Tune stopped it, or it failed) leaves the other ranks waiting in
a collective: the group is ended, its actors killed, and the next trial in this process starts a new one.
A rank other than 0 that fails ends its process, so that rank 0's next collective fails instead of waiting.
"""

import os
import socket
import traceback

import ray
import torch.distributed

from embedlab import run, trial_cache
from embedlab.config import Config


def join_group(address: str, port: int, rank: int, world_size: int, use_gpu: bool) -> None:
    torch.distributed.init_process_group("nccl" if use_gpu else "gloo", init_method=f"tcp://{address}:{port}", rank=rank, world_size=world_size)


@ray.remote
class TrialWorker:
    """Rank `rank` (> 0) of a trial group: joins the group once, then trains one trial per `train` call."""

    def join(self, address: str, port: int, rank: int, world_size: int, use_gpu: bool) -> int:
        join_group(address, port, rank, world_size, use_gpu)
        self.rank, self.world_size, self.device = rank, world_size, "cuda" if use_gpu else "cpu"
        return os.getpid()

    def train(self, config: dict) -> None:
        try:
            prepared = trial_cache.prepare(Config.from_dict(config), device=self.device)
            run.make_trainer(prepared, rank=self.rank, world_size=self.world_size).train()
        except BaseException:
            traceback.print_exc()
            os._exit(1)  # rank 0 may be waiting for this rank in a collective: a closed connection ends it


class TrialGroup:
    """Ranks 1.. of this process's trials, joined with this process (rank 0) in one process group."""

    def __init__(self, world_size: int, use_gpu: bool, cpus_per_worker: int):
        from ray.util.placement_group import get_current_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self.key = (world_size, use_gpu, cpus_per_worker)
        self.use_gpu = use_gpu
        group = get_current_placement_group()  # the trial's: bundle 0 holds this process, bundle k rank k
        self.workers = [
            TrialWorker.options(
                num_cpus=cpus_per_worker,
                num_gpus=1 if use_gpu else 0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=rank),
            ).remote()
            for rank in range(1, world_size)
        ]
        address, port = ray.util.get_node_ip_address(), _free_port()
        joined = [worker.join.remote(address, port, rank, world_size, use_gpu) for rank, worker in enumerate(self.workers, 1)]
        join_group(address, port, 0, world_size, use_gpu)
        self.pids = ray.get(joined)

    def end(self) -> None:
        for worker in self.workers:
            ray.kill(worker)
        torch.distributed.destroy_process_group()


_group: TrialGroup | None = None  # this trial process's group, kept for its next trial


def train(config: Config, workers: int, use_gpu: bool, cpus_per_worker: int, callbacks=(), **tracked) -> dict:
    """`run.train` for a trial of `workers` ranks: this process is rank 0; returns run.train's results."""
    global _group
    if _group is not None and _group.key != (workers, use_gpu, cpus_per_worker):
        _end_group()
    kept = _group is not None
    if _group is None:
        _group = TrialGroup(workers, use_gpu, cpus_per_worker)
    print(f"Trial workers: ranks 1-{workers - 1} (pids {_group.pids}) {'kept from an earlier trial' if kept else 'started'}")
    others = [worker.train.remote(config.to_dict()) for worker in _group.workers]
    try:
        results = run.train(trial_cache.prepare(config, device="cuda" if use_gpu else "cpu"), callbacks, evaluate_before=False, world_size=workers, **tracked)
        ray.get(others)
    except BaseException as error:
        failed = _failed_rank(others) if isinstance(error, Exception) else None  # not when Tune stopped the trial
        _end_group()
        if failed is not None:
            raise RuntimeError(f"trial worker rank {failed} failed ({_last_line(error)}): its traceback is in the log above") from error
        raise
    return results


def _end_group() -> None:
    global _group
    _group.end()
    _group = None


def _failed_rank(others: list) -> int | None:
    """The first rank > 0 whose trial ended in an error (its process ends with it), if any did."""
    done, _ = ray.wait(others, num_returns=len(others), timeout=5)
    for rank, reference in enumerate(others, 1):
        if reference in done:
            try:
                ray.get(reference)
            except Exception:
                return rank
    return None


def _last_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]
