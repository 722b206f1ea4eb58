"""A user's own loss, importable by dotted path (tests/ is on sys.path through conftest.py)."""

import os
import time
from pathlib import Path

import torch
from torch import nn


class MeanSquaredCosineLoss(nn.Module):
    def __init__(self, model, weight: float = 1.0):
        super().__init__()
        self.model = model
        self.weight = weight

    def forward(self, sentence_features, labels):
        first, second = (self.model(features)["sentence_embedding"] for features in sentence_features)
        return self.weight * ((torch.cosine_similarity(first, second) - labels) ** 2).mean()


class CrashOnceLoss(nn.Module):
    """MultipleNegativesRankingLoss that kills its worker process (rank `crash_rank`) at the `crash_at`-th
    forward call, once: the marker file records the crash. Stands in for a worker lost mid-training.
    It waits `crash_after_s` first: Ray Train's controller registers reported checkpoints when it polls the
    workers (every 2 s), so a crash this soon after a report would otherwise race the registration.
    With `calls_file`, every forward call appends the worker's rank to it (to count the steps a run trains)."""

    formats = ("anchor_positive_pairs",)

    def __init__(self, model, crash_at: int, marker: str, crash_rank: int = 1, calls_file: str | None = None, crash_after_s: float = 6.0):
        super().__init__()
        from embedlab.losses import MultipleNegativesRankingLoss

        self.model = model
        self.inner = MultipleNegativesRankingLoss(model, gather_across_devices=True)
        self.crash_at, self.marker, self.crash_rank = crash_at, Path(marker), crash_rank
        self.calls_file = Path(calls_file) if calls_file else None
        self.crash_after_s = crash_after_s
        self.calls = 0

    def forward(self, sentence_features, labels):
        from embedlab.distributed import rank

        self.calls += 1
        if self.calls_file:
            with self.calls_file.open("a") as file:
                file.write(f"{rank()}\n")
        if self.calls == self.crash_at and rank() == self.crash_rank and not self.marker.exists():
            time.sleep(self.crash_after_s)
            self.marker.write_text("crashed")
            os._exit(1)  # as a killed process: no exception, no cleanup
        return self.inner(sentence_features, labels)


class NeedsFileLoss(nn.Module):
    """MultipleNegativesRankingLoss that needs a file to exist where it is built: a mistake the driver's
    checks pass and every worker finds (as a resource missing on the workers' nodes)."""

    formats = ("anchor_positive_pairs",)

    def __init__(self, model, needs: str):
        super().__init__()
        from embedlab.errors import EmbedlabError
        from embedlab.losses import MultipleNegativesRankingLoss

        if not Path(needs).exists():
            raise EmbedlabError(f"'{needs}' does not exist: NeedsFileLoss cannot start")
        self.model = model
        self.inner = MultipleNegativesRankingLoss(model)

    def forward(self, sentence_features, labels):
        return self.inner(sentence_features, labels)
