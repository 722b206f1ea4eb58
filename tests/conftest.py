"""Shared fixtures: a tiny random BERT (built from a config with a small generated vocabulary) and small
data files of each format, so unit tests run in seconds without any model download."""

import importlib
import json
import os
import random
import re
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

WORDS = ["a", "an", "the", "man", "woman", "child", "dog", "cat", "bird", "horse", "car", "plane", "train", "boat", "guitar", "piano", "flute", "ball", "food", "is", "are", "was", "plays", "playing", "eats", "eating", "rides", "riding", "runs", "running", "sits", "sitting", "walks", "walking", "drives", "on", "in", "at", "with", "near", "under", "over", "by", "of", "to", "and", "or", "not", "no", "some", "two", "three", "big", "small", "red", "blue", "green", "old", "young", "happy", "sad", "fast", "slow", "street", "park", "beach", "water", "field", "house", "kitchen", "table", "road", "sky", "what", "where", "who", "how", "why", "when", "capital", "country", "city", "paris", "france", "river", "mountain", "question", "answer"]


def require_reference(module_name: str):
    """Imports a test-only reference library (e.g. sentence_transformers, which parity tests compare
    against) and returns it. When it is missing the test is skipped, except in CI (environment variable CI
    set to any non-empty value), where it fails: a CI run must not pass by skipping every parity test.
    Works at module level too (then the whole module is skipped, or fails to collect in CI)."""
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        message = f"reference library {module_name!r} is not importable ({error}); install the dev extra"
        if os.environ.get("CI"):
            pytest.fail(f"{message}. CI is set, so a missing reference is a failure, not a skip", pytrace=False)
        pytest.skip(message, allow_module_level=True)


RAY_FORWARDED_LOG = re.compile(r"^(\x1b\[[0-9;]*m)?\((\w+ )?(pid=|raylet|autoscaler)")


def cli_error_lines(stderr: str) -> list[str]:
    """The lines embedlab itself wrote to stderr. A Ray driver also prints the log lines its cluster's
    processes forward, prefixed "(Name pid=N)"; in a test session one shared cluster can forward a
    line from an earlier test's actor (a placement-group cleaner) while a later test runs."""
    return [line for line in stderr.strip().splitlines() if not RAY_FORWARDED_LOG.match(line)]


def trial_process_log(output: str) -> str:
    """What a sweep's first trial process printed, read from its Ray log file: the sweep's own `output` may lack
    the last lines of a short last trial (the driver exits before Ray's log streaming brings them)."""
    # Where a Ray cluster on this machine keeps its sessions' logs (RAY_TMPDIR or TMPDIR, else /tmp, + /ray).
    from ray._common.utils import get_default_ray_temp_dir

    found = re.search(r"\(train_trial pid=(\d+)\)", output)
    assert found, output[-3000:]
    logs = sorted(Path(get_default_ray_temp_dir()).glob(f"session_*/logs/worker-*-{found.group(1)}.out"), key=lambda path: path.stat().st_mtime)
    assert logs, f"no Ray log file of the trial process {found.group(1)} under {get_default_ray_temp_dir()}"
    return logs[-1].read_text(errors="replace")


def build_tiny_model(path: Path, seed: int = 0) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    letters = [chr(code) for code in range(ord("a"), ord("z") + 1)] + list("0123456789.,?!'-")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *[f"##{c}" for c in letters], *WORDS]
    (path / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    BertTokenizerFast(vocab=str(path / "vocab.txt"), do_lower_case=True).save_pretrained(path)  # vocab_file= is ignored by transformers 5
    config = BertConfig(
        vocab_size=len(dict.fromkeys(vocab)),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_guide_path(tmp_path_factory) -> Path:
    """Another tiny model (other weights, same vocabulary): a guide for GISTEmbed losses."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-guide"), seed=1)


@pytest.fixture
def tiny_model(tiny_model_path):
    from embedlab import EmbeddingModel

    return EmbeddingModel(str(tiny_model_path), device="cpu")


def sentence(rng: random.Random, length: int | None = None) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(length or rng.randint(3, 9)))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def score_pairs_file(tmp_path) -> Path:
    rng = random.Random(0)
    rows = [{"sentence1": sentence(rng), "sentence2": sentence(rng), "score": round(rng.random(), 3)} for _ in range(48)]
    return write_jsonl(tmp_path / "pairs.jsonl", rows)


def losses_on_repeated_batch(loss, features, labels, steps: int = 8, learning_rate: float = 2e-3) -> list[float]:
    """The loss value at each of `steps` AdamW steps on the same batch: it should fall."""
    optimizer = torch.optim.AdamW(loss.parameters(), lr=learning_rate)
    values = []
    for _ in range(steps):
        value = loss(features, labels)
        value.backward()
        optimizer.step()
        optimizer.zero_grad()
        values.append(value.item())
    return values


def write_config(path: Path, model_path: Path, train: Path, output_dir: Path, **sections) -> Path:
    import yaml

    config = {
        "model": {"name": str(model_path)},
        "data": {"train": str(train)},
        "loss": {"name": "CoSENTLoss"},
        "training": {"batch_size": 8, "max_steps": 4, "save_steps": 2, "show_progress_bar": False},
        "output_dir": str(output_dir),
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    path.write_text(yaml.safe_dump(config))
    return path
