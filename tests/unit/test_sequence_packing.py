"""Sequence packing (`training.pack_sequences`): texts share the rows of the forward pass, and every
embedding and gradient is the padded forward's."""

import random
from itertools import pairwise

import pytest
import torch
from safetensors.torch import load_file

from conftest import sentence, write_config
from embedlab import run
from embedlab.config import DataSource, TrainingConfig, load_config
from embedlab.data import load_with_format
from embedlab.errors import EmbedlabError
from embedlab.losses import (
    AdaptiveLayerLoss,
    BatchAllTripletLoss,
    CachedMultipleNegativesRankingLoss,
    CoSENTLoss,
    MatryoshkaLoss,
)
from embedlab.model import EmbeddingModel, pack_lengths
from embedlab.trainer import Trainer


def _without_dropout(model: EmbeddingModel) -> EmbeddingModel:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def _columns(model: EmbeddingModel, seed: int = 0, rows: int = 7) -> list[dict]:
    """Three tokenized columns of texts from 1 to 30 words, so rows pad very differently."""
    rng = random.Random(seed)
    return [model.tokenize([sentence(rng, rng.randint(1, 30)) for _ in range(rows)]) for _ in range(3)]


def _embed(model: EmbeddingModel, columns: list[dict], packed: bool) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """Embeddings of the columns and the gradients of a loss on them. Packed, it checks that texts did share rows."""
    model.pack_sequences = packed
    model.zero_grad()
    shapes = []
    hook = model.transformer.auto_model.register_forward_pre_hook(lambda module, args, kwargs: shapes.append(kwargs["input_ids"].shape), with_kwargs=True)
    try:
        embeddings = model.embed([dict(features) for features in columns])
    finally:
        hook.remove()
    if packed:
        assert len(shapes) == 1 and shapes[0][0] < sum(len(features["input_ids"]) for features in columns)
    sum((embedding * torch.linspace(-1, 1, embedding.shape[1])).sum() ** 2 for embedding in embeddings).backward()
    gradients = {name: parameter.grad.clone() for name, parameter in model.named_parameters() if parameter.grad is not None}
    return [embedding.detach() for embedding in embeddings], gradients


def _assert_same(padded, packed):
    for expected, actual in zip(padded[0], packed[0], strict=True):
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)
    assert padded[1].keys() == packed[1].keys()
    for name, gradient in padded[1].items():
        torch.testing.assert_close(packed[1][name], gradient, rtol=1e-3, atol=1e-5)  # float rounding, summed in another order


def test_pack_lengths_places_every_text_once_within_the_row_without_overlap():
    rng = random.Random(0)
    lengths = [rng.randint(1, 40) for _ in range(200)]
    placements, rows = pack_lengths(lengths, max(lengths))
    spans = sorted((row, offset, offset + length) for (row, offset), length in zip(placements, lengths, strict=True))
    for (row, _, end), (next_row, next_start, _) in pairwise(spans):
        assert next_row != row or next_start >= end  # no two texts overlap
    assert all(end <= max(lengths) for _, _, end in spans)
    assert rows < 0.7 * len(lengths)  # several texts per row
    assert sum(lengths) / (rows * max(lengths)) > 0.9  # best-fit decreasing leaves little room unused
    assert pack_lengths(lengths, max(lengths)) == (placements, rows)  # the same layout every time
    # longest first, each into the row it fills best: 5 | 4 1 | 3 2
    assert pack_lengths([5, 3, 2, 4, 1], 5) == ([(0, 0), (2, 0), (2, 3), (1, 0), (1, 4)], 3)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("pooling", ["mean", "cls", "max", "lasttoken", "weightedmean"])
def test_packed_embeddings_and_gradients_are_the_padded_ones(tiny_model_path, pooling, attention):
    model = _without_dropout(EmbeddingModel(str(tiny_model_path), device="cpu"))
    model.transformer.auto_model.set_attn_implementation(attention)
    model.set_pooling(pooling)
    columns = _columns(model)
    columns[1]["token_type_ids"] = torch.randint(0, 2, columns[1]["input_ids"].shape, generator=torch.Generator().manual_seed(0))
    _assert_same(_embed(model, columns, packed=False), _embed(model, columns, packed=True))


def test_rows_twice_the_longest_text_where_that_clearly_saves_padding(tiny_model_path):
    """Texts of 22, 6 x 13, 5 and 3 tokens: 7 rows of 22 (154 slots) or 3 rows of 44 (132)."""
    model = _without_dropout(EmbeddingModel(str(tiny_model_path), device="cpu"))
    words = [20, *[11] * 6, 3, 1]  # + [CLS] and [SEP]
    columns = [model.tokenize([" ".join(["dog"] * count) for count in words])]
    assert pack_lengths([count + 2 for count in words], 44)[1] == 3
    shapes = []
    model.transformer.auto_model.register_forward_pre_hook(lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    _assert_same(_embed(model, columns, packed=False), _embed(model, columns, packed=True))
    assert shapes[-1] == (3, 44)


def test_packing_keeps_prompts_out_of_the_pooling_and_follows_left_padding(tiny_model_path):
    model = _without_dropout(EmbeddingModel(str(tiny_model_path), device="cpu"))
    model.transformer.tokenizer.padding_side = "left"  # BERT then counts positions from the row's start: packing too
    model.set_include_prompt(False)
    columns = _columns(model)
    for features in columns:  # a two-token prompt, as the training collator marks it
        features["prompt_length"] = torch.full((len(features["input_ids"]),), 2)
    _assert_same(_embed(model, columns, packed=False), _embed(model, columns, packed=True))


def test_roberta_positions_restart_after_the_padding_index(tiny_model_path, tmp_path):
    from transformers import AutoTokenizer, RobertaConfig, RobertaModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    config = RobertaConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=80, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model = _without_dropout(EmbeddingModel(str(tmp_path), device="cpu"))
    assert model.transformer.packing_unsupported() is None
    columns = _columns(model)
    # A literal padding token inside a text: RoBERTa gives it the padding position and counts on after it.
    columns[0] = model.tokenize(["the dog [PAD] runs in the park", *model.transformer.tokenizer.batch_decode(columns[0]["input_ids"][1:], skip_special_tokens=True)])
    text = columns[0]["input_ids"][0][columns[0]["attention_mask"][0].bool()]
    assert (text == tokenizer.pad_token_id).sum() == 1
    _assert_same(_embed(model, columns, packed=False), _embed(model, columns, packed=True))


def test_training_packed_gives_the_weights_of_training_padded(tiny_model_path, score_pairs_file, tmp_path):
    dataset, detected = load_with_format(DataSource(str(score_pairs_file)))
    weights = {}
    for pack in (False, True):
        model = _without_dropout(EmbeddingModel(str(tiny_model_path), device="cpu"))
        args = TrainingConfig(batch_size=8, max_steps=4, save_steps=None, learning_rate=1e-3, show_progress_bar=False, pack_sequences=pack)
        trainer = Trainer(CoSENTLoss(model), dataset, detected, args, tmp_path / str(pack))
        assert model.pack_sequences is pack
        trainer.train()
        weights[pack] = load_file(tmp_path / str(pack) / "model" / "model.safetensors")
    for name, tensor in weights[False].items():
        torch.testing.assert_close(weights[True][name], tensor, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("loss_class", [CachedMultipleNegativesRankingLoss, BatchAllTripletLoss])
def test_losses_that_embed_column_by_column_pack_too(tiny_model_path, loss_class):
    """The cached losses recompute mini-batches with a graph; the batch triplet losses embed one column."""
    model = _without_dropout(EmbeddingModel(str(tiny_model_path), device="cpu"))
    rng = random.Random(1)
    if loss_class is BatchAllTripletLoss:
        loss = loss_class(model)
        columns, labels = [model.tokenize([sentence(rng, rng.randint(1, 30)) for _ in range(8)])], torch.tensor([0, 1] * 4)
    else:
        loss = loss_class(model, mini_batch_size=3)
        columns, labels = _columns(model, rows=8)[:2], None
    calls = []
    forward_packed = model.transformer.forward_packed
    model.transformer.forward_packed = lambda features_list: calls.append(len(features_list)) or forward_packed(features_list)
    results = {}
    for packed in (False, True):
        model.pack_sequences = packed
        model.zero_grad()
        value = loss([dict(features) for features in columns], labels)
        value.backward()
        results[packed] = (value.detach(), {name: parameter.grad.clone() for name, parameter in model.named_parameters() if parameter.grad is not None})
    assert calls  # the packed run did pack
    torch.testing.assert_close(results[True][0], results[False][0], rtol=1e-5, atol=1e-6)
    for name, gradient in results[False][1].items():
        torch.testing.assert_close(results[True][1][name], gradient, rtol=1e-4, atol=1e-6)


def test_evaluation_never_packs(tiny_model_path):
    model = EmbeddingModel(str(tiny_model_path), device="cpu")
    model.pack_sequences = True
    model.transformer.forward_packed = lambda features_list: pytest.fail("packed in eval mode")
    model.eval()
    model.embed(_columns(model))  # e.g. LabelAccuracyEvaluator runs SoftmaxLoss, which embeds
    model.encode(["a dog runs", "the cat sits on the table"])


@pytest.mark.parametrize("modifier", ["MatryoshkaLoss", "AdaptiveLayerLoss"])
def test_modifiers_that_run_their_own_forward_train_as_padded_under_auto_and_refuse_true(tiny_model_path, score_pairs_file, tmp_path, modifier):
    dataset, detected = load_with_format(DataSource(str(score_pairs_file)))
    weights = {}
    for pack in (False, "auto"):
        model = _without_dropout(EmbeddingModel(str(tiny_model_path), device="cpu"))
        loss = MatryoshkaLoss(model, CoSENTLoss(model), [32, 8]) if modifier == "MatryoshkaLoss" else AdaptiveLayerLoss(model, CoSENTLoss(model))
        args = TrainingConfig(batch_size=8, max_steps=3, save_steps=None, learning_rate=1e-3, show_progress_bar=False, pack_sequences=pack)
        Trainer(loss, dataset, detected, args, tmp_path / str(pack)).train()
        weights[pack] = load_file(tmp_path / str(pack) / "model" / "model.safetensors")
    for name, tensor in weights[False].items():
        assert torch.equal(weights["auto"][name], tensor), name  # the same padded code path: the same bits

    args = TrainingConfig(batch_size=8, max_steps=1, save_steps=None, show_progress_bar=False, pack_sequences=True)
    with pytest.raises(EmbedlabError, match=rf"^training.pack_sequences is true, but {modifier} runs the model through its own forward"):
        Trainer(loss, dataset, detected, args, tmp_path / "true")


def test_auto_pads_where_packing_is_impossible_and_true_says_why_before_training(tiny_model_path, score_pairs_file, tmp_path):
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    config = DistilBertConfig(vocab_size=tokenizer.vocab_size, dim=32, n_layers=1, n_heads=4, hidden_dim=64, max_position_embeddings=64)
    DistilBertModel(config).save_pretrained(tmp_path / "distilbert")
    tokenizer.save_pretrained(tmp_path / "distilbert")
    model = EmbeddingModel(str(tmp_path / "distilbert"), device="cpu")
    assert "model type 'distilbert' is not one embedlab packs" in model.transformer.packing_unsupported()

    dataset, detected = load_with_format(DataSource(str(score_pairs_file)))
    args = TrainingConfig(batch_size=8, max_steps=1, save_steps=None, show_progress_bar=False)
    Trainer(CoSENTLoss(model), dataset, detected, args, tmp_path / "auto").train()
    assert model.pack_sequences is False

    config_path = write_config(tmp_path / "run.yaml", tmp_path / "distilbert", score_pairs_file, tmp_path / "out", training={"pack_sequences": True, "max_steps": 1})
    with pytest.raises(EmbedlabError, match=r"^training.pack_sequences is true, but model type 'distilbert' is not one embedlab packs .*set it to auto or false"):
        run.prepare(load_config(config_path))
    assert not (tmp_path / "out").exists()
