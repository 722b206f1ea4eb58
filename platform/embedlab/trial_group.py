"""Sweep trials of several workers (`search.workers_per_trial` > 1) on processes kept from one trial to the next.

A Ray Train TorchTrainer per trial starts its worker processes anew every time: they import torch and
transformers, load the data and model and join a process group, which on short trials costs more than the
training. Here rank 0 of a trial is Tune's trial process itself, which Tune keeps for the next trial
(`reuse_actors`), and ranks 1.. are `TrialWorker` actors that this process starts once, in the trial's
placement group (one bundle per rank), and keeps. All ranks stay in one torch.distributed process group
(gloo on CPU, NCCL on GPU). For each trial every rank loads the inputs through embedlab.trial_cache (kept
in its process, keyed by fingerprint) and trains the same Trainer as anywhere, data-parallel, writing its
checkpoints into the trial's folder (storage every node mounts, as a sweep's trials need anyway).

Tune stops a trial (ASHA) inside its report to Tune: after each evaluation rank 0 tells the other ranks
whether the trial goes on, so a stopped trial's ranks end together and the group serves the next trial.
A trial whose rank 0 fails anywhere else leaves the other ranks waiting in a collective: the group is ended,
its actors killed, and the next trial starts a new one. A rank other than 0 that fails ends its process,
so that rank 0's next collective fails (on gloo at once) instead of waiting.

A trial process starts its other ranks (`start`, from embedlab.trial) before it imports torch and the rest
of embedlab, so this module imports those only where it uses them: each rank imports them in its own
process, at the same time.
"""

from __future__ import annotations

import os
import socket
import traceback
from datetime import timedelta
from typing import TYPE_CHECKING

import ray

from embedlab.errors import EmbedlabError

if TYPE_CHECKING:
    from embedlab.config import Config
    from embedlab.run import Prepared

# Every rank has started and loaded its inputs before any joins (rank 0 waits for their `prepare`), so joining
# takes moments: a rank that cannot reach rank 0 fails the trial after this, not after torch's 30 minutes.
JOIN_TIMEOUT = timedelta(minutes=5)


def join_group(address: str, port: int, rank: int, world_size: int, use_gpu: bool) -> None:
    import torch.distributed

    if use_gpu:
        torch.cuda.set_device(0)  # Ray shows each rank its own GPU only; NCCL's barriers and broadcasts use it
    store = torch.distributed.TCPStore(address, port, world_size, is_master=rank == 0, timeout=JOIN_TIMEOUT)
    torch.distributed.init_process_group("nccl" if use_gpu else "gloo", store=store, rank=rank, world_size=world_size)


def go_on(decision: bool | None = None) -> bool:
    """Rank 0's decision whether the trial goes on, on every rank (rank 0 passes it, the others receive it)."""
    import torch.distributed

    decided = [decision]
    torch.distributed.broadcast_object_list(decided, src=0)
    return decided[0]


class TrialStopped(Exception):
    """Rank 0 ended the trial at an evaluation (Tune stopped it, or a callback of rank 0 failed)."""


class FollowRank0:
    """A rank > 0's callback: after each evaluation it goes on only if rank 0 does."""

    def on_evaluate(self, trainer, step: int, metrics: dict) -> None:
        if not go_on():
            raise TrialStopped


class Rank0Callbacks:
    """The trial's callbacks on rank 0 (its reports to Tune, BestModels), run as one. After each evaluation's
    callbacks, rank 0 tells the other ranks whether the trial goes on: it does not when one of them raised,
    e.g. Tune's SystemExit in a report when it stops the trial."""

    def __init__(self, callbacks):
        self.callbacks = list(callbacks)
        self.stopped = False

    def _hooks(self, name: str) -> list:
        return [getattr(callback, name) for callback in self.callbacks if hasattr(callback, name)]

    def on_step_end(self, trainer, step: int, loss_value: float) -> None:
        for hook in self._hooks("on_step_end"):
            hook(trainer, step, loss_value)

    def on_evaluate(self, trainer, step: int, metrics: dict) -> None:
        try:
            for hook in self._hooks("on_evaluate"):
                hook(trainer, step, metrics)
        except BaseException:
            self.stopped = True
            raise
        finally:
            go_on(not self.stopped)

    def keep_model(self, trainer, metrics: dict) -> bool:
        return all(hook(trainer, metrics) for hook in self._hooks("keep_model"))

    def on_train_end(self, trainer, metrics: dict) -> None:
        for hook in self._hooks("on_train_end"):
            hook(trainer, metrics)


@ray.remote
class TrialWorker:
    """Rank `rank` (> 0) of a trial group. For each trial rank 0 calls `prepare` (the trial's inputs, loaded
    while rank 0 loads its own), in a new group `join`, then `train`."""

    def __init__(self):
        from embedlab import run, trial_cache  # torch and transformers, while rank 0 imports its own

        self.run, self.trial_cache = run, trial_cache

    def prepare(self, config: dict, device: str) -> int:
        from embedlab.config import Config

        self.prepared = self.trial_cache.prepare(Config.from_dict(config), device=device)
        return os.getpid()

    def join(self, address: str, port: int, rank: int, world_size: int, use_gpu: bool) -> None:
        join_group(address, port, rank, world_size, use_gpu)
        self.rank, self.world_size = rank, world_size

    def train(self) -> None:
        try:
            self.run.make_trainer(self.prepared, [FollowRank0()], rank=self.rank, world_size=self.world_size).train()
        except TrialStopped:
            return
        except BaseException:
            traceback.print_exc()
            os._exit(1)  # rank 0 may be waiting for this rank in a collective: a closed connection ends it


class TrialGroup:
    """Ranks 1.. of this process's trials, to be joined with this process (rank 0) in one process group."""

    def __init__(self, world_size: int, use_gpu: bool, cpus_per_worker: int):
        from ray.util.placement_group import get_current_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self.world_size, self.use_gpu, self.joined, self.pids = world_size, use_gpu, False, None
        self.used = False  # by a trial: a later trial finds the group kept
        group = get_current_placement_group()  # the trial's: bundle 0 holds this process, bundle k rank k
        self.workers = [
            TrialWorker.options(
                num_cpus=cpus_per_worker,
                num_gpus=1 if use_gpu else 0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=rank),
            ).remote()
            for rank in range(1, world_size)
        ]

    def prepare(self, config: Config) -> list:
        """Each rank's `prepare` of the trial (in a new group, after its process starts); refs to their pids."""
        return [worker.prepare.remote(config.to_dict(), "cuda" if self.use_gpu else "cpu") for worker in self.workers]

    def join(self) -> None:
        address, port = ray.util.get_node_ip_address(), _free_port()
        joined = [worker.join.remote(address, port, rank, self.world_size, self.use_gpu) for rank, worker in enumerate(self.workers, 1)]
        join_group(address, port, 0, self.world_size, self.use_gpu)
        ray.get(joined)
        self.joined = True

    def end(self) -> None:
        import torch.distributed

        for worker in self.workers:
            ray.kill(worker)
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


_group: TrialGroup | None = None  # this trial process's group, kept for its next trial


def start(world_size: int, use_gpu: bool, cpus_per_worker: int) -> None:
    """Starts this trial process's other ranks, unless an earlier trial did (the same in every trial of a sweep)."""
    global _group
    if _group is None:
        _group = TrialGroup(world_size, use_gpu, cpus_per_worker)


def prepare(config: Config) -> Prepared:
    """`trial_cache.prepare` on every rank of a trial of `config.distributed.workers` ranks, joined in one process
    group; this process is rank 0, and its Prepared is returned."""
    from embedlab import trial_cache

    distributed = config.distributed
    start(distributed.workers, distributed.use_gpu, distributed.cpus_per_worker)
    kept, _group.used = _group.used, True
    preparing = _group.prepare(config)  # the other ranks load the trial's inputs meanwhile
    try:
        prepared = trial_cache.prepare(config, device="cuda" if distributed.use_gpu else "cpu")
        # A rank's own mistake (an input its node cannot read) is raised here. Such mistakes leave the group idle,
        # ready for the next trial; a rank whose process died, or a failed join, ends it.
        _group.pids = ray.get(preparing)
        if not _group.joined:
            _group.join()
    except BaseException as error:
        if isinstance(error, ray.exceptions.RayActorError) or _group.pids is not None and not _group.joined:
            _end_group()
        raise
    print(f"Trial workers: ranks 1-{distributed.workers - 1} (pids {_group.pids}) {'kept from an earlier trial' if kept else 'started'}")
    return prepared


def train(prepared: Prepared, callbacks=(), **tracked) -> dict:
    """`run.train` on the ranks `prepare` readied, this process as rank 0."""
    from embedlab import run

    others = [worker.train.remote() for worker in _group.workers]
    rank0 = Rank0Callbacks(callbacks)
    try:
        results = run.train(prepared, [rank0], evaluate_before=False, world_size=_group.world_size, **tracked)
        ray.get(others)
    except BaseException as error:
        if rank0.stopped and _ended_with(others):  # every rank left the trial together: the group lives on
            raise
        failed = _failed_rank(others) if isinstance(error, Exception) and not isinstance(error, EmbedlabError) else None
        _end_group()
        if failed is not None:
            raise RuntimeError(f"trial worker rank {failed} failed ({_last_line(error)}): its traceback is in the log above") from error
        raise
    return results


def _end_group() -> None:
    global _group
    group, _group = _group, None
    group.end()


def _ended_with(others: list) -> bool:
    """Whether the other ranks' trials ended without error (they follow rank 0's stop within moments)."""
    try:
        ray.get(others, timeout=30)
        return True
    except Exception:
        return False


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
