"""A trial group's join is bounded: rank 0 does not wait torch's 30 minutes for a rank that never arrives. A
trial process can start its other ranks before it imports torch."""

import socket
import subprocess
import sys
import time
from datetime import timedelta

import pytest
import torch.distributed

from embedlab import trial_group


def test_rank_0_gives_up_on_a_rank_that_never_joins(monkeypatch):
    monkeypatch.setattr(trial_group, "JOIN_TIMEOUT", timedelta(seconds=2))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(RuntimeError):  # torch's DistStoreError: rank 1 never connected
        trial_group.join_group("127.0.0.1", port, rank=0, world_size=2, use_gpu=False)
    assert time.monotonic() - start < 30 and not torch.distributed.is_initialized()


def test_the_trial_function_and_its_group_start_without_importing_torch():
    """Tune's trial process imports embedlab.trial, which starts the trial's other ranks through trial_group:
    neither may import torch or transformers, or the ranks' imports would run one after the other."""
    code = "import sys, embedlab.trial, embedlab.trial_group; print(sorted({'torch', 'transformers', 'datasets'} & set(sys.modules)))"
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert imported == "[]"
