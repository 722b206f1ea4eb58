"""Mining with `workers`: the texts are embedded on a Ray Data actor pool, and the mined rows are the
same as in one process."""

import random

import datasets
import numpy as np
import pytest

from conftest import sentence
from embedlab.config import MiningConfig
from embedlab.mining import mine

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    # A cluster of its own ("local"), even where another test or user has started one on this machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def test_ray_data_workers_mine_what_one_process_mines(ray_cluster, tiny_model_path, tmp_path, monkeypatch, capsys):
    from embedlab import mining

    monkeypatch.setattr(mining, "RAY_BLOCK", 64)  # several blocks per actor, returned in any order
    rng = random.Random(0)
    anchors = [sentence(rng) for _ in range(300)]
    pairs = datasets.Dataset.from_dict({"anchor": anchors, "positive": [sentence(rng) for _ in anchors]})

    def mined(workers):
        settings = MiningConfig(model=str(tiny_model_path), cache_folder=str(tmp_path / f"cache-{workers}"), num_negatives=3, range_min=1, workers=workers)
        return mine(pairs, settings, output_format="n-tuple")

    in_process = mined(None)
    capsys.readouterr()
    on_ray = mined(2)
    assert ", 2 Ray Data actors)" in capsys.readouterr().out
    assert on_ray.summary["encoded_texts"] == in_process.summary["encoded_texts"] > 0
    assert on_ray.dataset.to_dict() == in_process.dataset.to_dict()
    cached = [sorted((tmp_path / f"cache-{workers}").glob("*.npy")) for workers in (None, 2)]
    assert [path.name for path in cached[0]] == [path.name for path in cached[1]]  # the same cache keys
    for local, ray_made in zip(*cached, strict=True):
        np.testing.assert_allclose(np.load(local), np.load(ray_made), atol=1e-6)
