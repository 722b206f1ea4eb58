"""Training prompts: the four sentence-transformers shapes resolve per data set and column, errors are one
line, the collator prepends them (and tells pooling their length), and a model trained with prompts and
include_prompt false encodes the same here and in sentence-transformers (dev extra)."""

import datasets
import numpy as np
import pytest
import torch

from conftest import require_reference
from embedlab import EmbeddingModel, EmbedlabError
from embedlab.config import Config, load_config
from embedlab.data import Collator
from embedlab.formats import detect_format
from embedlab.prompts import check_prompts, resolve_prompts, saved_prompts, store_prompts

PARTS = ["nli", "stsb"]
COLUMNS = {"nli": ["anchor", "positive", "negative"], "stsb": ["sentence1", "sentence2"]}
Q, P = "question ", "answer "  # words of the tiny model's vocabulary: one token each

RESOLVE_CASES = {
    "none": (None, {"nli": {}, "stsb": {}}),
    "empty mapping": ({}, {"nli": {}, "stsb": {}}),
    "one string: every column of every data set": (
        Q,
        {"nli": {"anchor": Q, "positive": Q, "negative": Q}, "stsb": {"sentence1": Q, "sentence2": Q}},
    ),
    "column -> prompt, where a data set has the column": (
        {"anchor": Q, "positive": P, "sentence2": P},
        {"nli": {"anchor": Q, "positive": P}, "stsb": {"sentence2": P}},
    ),
    "data set -> prompt: all its columns; a data set left out has none": (
        {"stsb": Q},
        {"nli": {}, "stsb": {"sentence1": Q, "sentence2": Q}},
    ),
    "data set -> (column -> prompt), beside data set -> prompt": (
        {"nli": {"anchor": Q, "negative": P}, "stsb": P},
        {"nli": {"anchor": Q, "negative": P}, "stsb": {"sentence1": P, "sentence2": P}},
    ),
    "an empty prompt is no prompt": ({"anchor": Q, "positive": ""}, {"nli": {"anchor": Q}, "stsb": {}}),
}


@pytest.mark.parametrize(("prompts", "expected"), RESOLVE_CASES.values(), ids=RESOLVE_CASES.keys())
def test_every_shape_resolves_per_data_set_and_column(prompts, expected):
    assert resolve_prompts(prompts, PARTS, COLUMNS) == expected


def test_one_data_set_takes_every_shape_under_its_name():
    columns = {"train": ("query", "document")}  # a DetectedFormat's input columns are a tuple
    assert resolve_prompts(Q, ["train"], columns) == {"train": {"query": Q, "document": Q}}
    assert resolve_prompts({"query": Q}, ["train"], columns) == {"train": {"query": Q}}
    assert resolve_prompts({"train": P}, ["train"], columns) == {"train": {"query": P, "document": P}}
    assert resolve_prompts({"train": {"document": P}}, ["train"], columns) == {"train": {"document": P}}


def test_a_key_that_names_a_data_set_and_a_column_is_a_data_set_only_when_all_keys_are():
    parts, columns = ["query", "other"], {"query": ["text"], "other": ["query", "text"]}
    assert resolve_prompts({"query": Q}, parts, columns) == {"query": {"text": Q}, "other": {}}
    assert resolve_prompts({"query": Q, "text": P}, parts, columns) == {"query": {"text": P}, "other": {"query": Q, "text": P}}


ERROR_CASES = {
    "unknown key": ({"anchr": Q}, r"'training.prompts': 'anchr' is neither a data set nor an input column \(data sets: nli, stsb; input columns: anchor, positive, negative, sentence1, sentence2\)"),
    "the label column": ({"score": Q}, "'score' is neither a data set nor an input column"),
    "data sets mixed with columns": ({"nli": Q, "anchor": P}, "'nli' is a data set but other keys are not: give prompts per data set or per column, not both"),
    "a column of another data set": ({"stsb": {"anchor": Q}}, r"'training.prompts.stsb.anchor': data set 'stsb' has no input column 'anchor': its input columns are sentence1, sentence2"),
    "a mapping under a column": ({"anchor": {"x": Q}}, r"'training.prompts.anchor' must be a prompt \(a string\): 'anchor' is an input column, not a data set"),
    "a number": (5, r"'training.prompts' must be a prompt \(a string for every column\) or a mapping .*, got 5"),
    "a list": ([Q], "got a list"),
    "a number for a column": ({"anchor": 5}, r"'training.prompts.anchor' must be a prompt \(a string\) or, for a data set, a mapping column -> prompt, got 5"),
    "null inside a data set": ({"nli": {"anchor": None}}, r"'training.prompts.nli.anchor' must be a prompt \(a string\), got null"),
    "a key that is not text": ({1: Q}, "'training.prompts' has the key 1: its keys are column or data-set names"),
}


@pytest.mark.parametrize(("prompts", "message"), ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_errors_are_one_line_and_name_what_is_wrong(prompts, message):
    with pytest.raises(EmbedlabError, match=message) as error:
        resolve_prompts(prompts, PARTS, COLUMNS)
    assert "\n" not in str(error.value)


def test_the_config_checks_the_shape_before_anything_runs(tmp_path):
    def load(text: str) -> Config:
        path = tmp_path / "c.yaml"
        path.write_text("data: {train: d.csv}\n" + text)
        return load_config(path)

    assert load("").training.prompts is None and load("").model.include_prompt is None
    assert load('training: {prompts: "query: "}').training.prompts == "query: "
    nested = load("training:\n  prompts:\n    nli: {anchor: 'query: ', positive: 'passage: '}\n    stsb: 'sts: '\nmodel: {include_prompt: false}\n")
    assert nested.training.prompts == {"nli": {"anchor": "query: ", "positive": "passage: "}, "stsb": "sts: "}
    assert nested.model.include_prompt is False
    assert Config.from_dict(nested.to_dict()) == nested  # as a Ray worker rebuilds it
    for text, message in [
        ("training: {prompts: {anchor: [a]}}", "'training.prompts.anchor' must be a prompt"),
        ("training: {prompts: 5}", "'training.prompts' must be a prompt"),
        ("training: {prompts: {nli: {anchor: 3}}}", "'training.prompts.nli.anchor' must be a prompt"),
        ("model: {include_prompt: no}", "'model.include_prompt' must be true or false"),
    ]:
        with pytest.raises(EmbedlabError, match=message) as error:
            load(text)
        assert "\n" not in str(error.value)
    check_prompts(None)


SAVED_CASES = {
    "one string: the default prompt": (Q, ({"default": Q}, "default")),
    "column -> prompt: column names": ({"anchor": Q, "positive": P}, ({"anchor": Q, "positive": P}, None)),
    "data set -> prompt: data-set names": ({"nli": Q, "stsb": P}, ({"nli": Q, "stsb": P}, None)),
    "data set -> (column -> prompt): dataset/column names": (
        {"nli": {"anchor": Q, "positive": P}, "stsb": P},
        ({"nli/anchor": Q, "nli/positive": P, "stsb": P}, None),
    ),
    "none": (None, ({}, None)),
    "empty prompts are not kept": ({"anchor": Q, "positive": ""}, ({"anchor": Q}, None)),
}


@pytest.mark.parametrize(("prompts", "expected"), SAVED_CASES.values(), ids=SAVED_CASES.keys())
def test_saved_prompt_names_by_shape(prompts, expected):
    assert saved_prompts(prompts, resolve_prompts(prompts, PARTS, COLUMNS)) == expected


def test_store_prompts_adds_to_the_models_own_and_sets_the_trained_default(tiny_model):
    tiny_model.prompts, tiny_model.default_prompt_name = {"query": "q: ", "anchor": "old "}, "query"
    store_prompts(tiny_model, {"anchor": Q}, resolve_prompts({"anchor": Q}, PARTS, COLUMNS))
    assert tiny_model.prompts == {"query": "q: ", "anchor": Q} and tiny_model.default_prompt_name is None
    store_prompts(tiny_model, None, resolve_prompts(None, PARTS, COLUMNS))  # no training prompts: untouched
    assert tiny_model.prompts == {"query": "q: ", "anchor": Q}


TRIPLETS = datasets.Dataset.from_dict(
    {
        "anchor": ["a man plays the guitar", "two dogs run in the park", "what is the capital of france", "a cat sits"],
        "positive": ["the man is playing a guitar", "dogs running", "paris", "a cat is sitting on the table"],
        "negative": ["a woman eats food", "a car on the road", "the river", "a bird in the sky"],
    }
)


def test_the_collator_prepends_each_columns_prompt_and_gives_its_length(tiny_model):
    detected = detect_format(TRIPLETS)
    rows = TRIPLETS[:]
    plain, _ = Collator(tiny_model.tokenize, detected, TRIPLETS)(rows)
    assert all("prompt_length" not in features for features in plain)
    for features, column in zip(plain, detected.input_columns, strict=True):  # no prompts: as before
        expected = tiny_model.tokenize(rows[column])
        assert features.keys() == expected.keys() and all(torch.equal(features[key], expected[key]) for key in expected)

    prompted, _ = Collator(tiny_model.tokenize, detected, TRIPLETS, prompts={"anchor": "question : ", "negative": P})(rows)
    anchor_prompt_length = tiny_model.tokenize(["question : "])["input_ids"].shape[1] - 1  # [CLS] question : (no [SEP])
    assert anchor_prompt_length == 3
    assert torch.equal(prompted[0]["input_ids"], tiny_model.tokenize(["question : " + text for text in rows["anchor"]])["input_ids"])
    assert prompted[0]["prompt_length"].tolist() == [anchor_prompt_length] * len(TRIPLETS)
    assert torch.equal(prompted[1]["input_ids"], plain[1]["input_ids"]) and "prompt_length" not in prompted[1]  # its own prompt only
    assert prompted[2]["prompt_length"].tolist() == [2] * len(TRIPLETS)
    with pytest.raises(EmbedlabError, match=r"prompts for query: not input columns of this data \(anchor, positive, negative\)"):
        Collator(tiny_model.tokenize, detected, TRIPLETS, prompts={"query": Q})


def test_training_batches_pool_as_encode_does(tiny_model):
    """A collated batch with prompts, through the model (and through a loss's merged candidate pass),
    gives the embeddings `encode(prompt=...)` gives, with include_prompt false and true."""
    detected = detect_format(TRIPLETS)
    prompts = {"anchor": "question : ", "positive": P, "negative": P}
    for include_prompt in (False, True):
        tiny_model.set_include_prompt(include_prompt)
        tiny_model.eval()
        features, _ = Collator(tiny_model.tokenize, detected, TRIPLETS, prompts=prompts)(TRIPLETS[:])
        with torch.no_grad():
            embedded = tiny_model.embed([dict(f) for f in features])  # positives + negatives share one pass
            separately = [tiny_model(dict(f))["sentence_embedding"] for f in features]
        for column, merged, alone in zip(detected.input_columns, embedded, separately, strict=True):
            expected = tiny_model.encode(TRIPLETS[column], prompt=prompts[column], convert_to_tensor=True)
            torch.testing.assert_close(alone, expected, atol=1e-6, rtol=0)
            torch.testing.assert_close(merged, expected, atol=1e-6, rtol=0)


def test_a_cached_loss_slices_prompted_batches_into_mini_batches(tiny_model):
    from embedlab.losses import CachedMultipleNegativesRankingLoss, MultipleNegativesRankingLoss

    tiny_model.set_include_prompt(False)
    tiny_model.eval()  # no dropout: the two losses see the same embeddings
    detected = detect_format(TRIPLETS)
    features, _ = Collator(tiny_model.tokenize, detected, TRIPLETS, prompts={"anchor": "question : ", "positive": P})(TRIPLETS[:])
    full = MultipleNegativesRankingLoss(tiny_model)([dict(f) for f in features], None)
    cached = CachedMultipleNegativesRankingLoss(tiny_model, mini_batch_size=1)([dict(f) for f in features], None)
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=0)


TEXTS = ["a man is playing a guitar", "the dog runs in the park near the water", "two cats", "what is the capital of france ?"]


def _train_with_prompts(model, prompts: dict[str, str]) -> None:
    """A few steps with the collator's prompts, so the saved model is one trained that way."""
    from embedlab.losses import MultipleNegativesRankingLoss

    detected = detect_format(TRIPLETS)
    loss = MultipleNegativesRankingLoss(model)
    optimizer = torch.optim.AdamW(loss.parameters(), lr=1e-2)
    features, _ = Collator(model.tokenize, detected, TRIPLETS, prompts=prompts)(TRIPLETS[:])
    for _ in range(3):
        loss([dict(f) for f in features], None).backward()
        optimizer.step()
        optimizer.zero_grad()


def test_prompts_round_trip_through_sentence_transformers(tiny_model_path, tmp_path):
    sentence_transformers = require_reference("sentence_transformers")
    config_prompts = {"nli": {"anchor": "question : ", "positive": P}, "stsb": Q}
    resolved = resolve_prompts(config_prompts, PARTS, COLUMNS)
    torch.manual_seed(0)
    model = EmbeddingModel(str(tiny_model_path), device="cpu")
    model.set_include_prompt(False)
    _train_with_prompts(model, resolved["nli"])
    store_prompts(model, config_prompts, resolved)
    model.save(tmp_path / "model")

    ours = EmbeddingModel(str(tmp_path / "model"), device="cpu")
    reference = sentence_transformers.SentenceTransformer(str(tmp_path / "model"), device="cpu")
    assert ours.prompts == {"nli/anchor": "question : ", "nli/positive": P, "stsb": Q}
    assert reference.prompts.items() >= ours.prompts.items()  # sentence-transformers adds empty query and document prompts
    assert ours.default_prompt_name is None and reference.default_prompt_name is None
    for name in ours.prompts:
        np.testing.assert_allclose(ours.encode(TEXTS, prompt_name=name), reference.encode(TEXTS, prompt_name=name), atol=1e-6)
        np.testing.assert_allclose(model.encode(TEXTS, prompt_name=name), ours.encode(TEXTS, prompt_name=name), atol=1e-6)
    np.testing.assert_allclose(ours.encode(TEXTS), reference.encode(TEXTS), atol=1e-6)  # no default prompt: none used

    # The same weights with include_prompt true pool the prompt's tokens too: other embeddings, there and here.
    with_prompt_tokens = tmp_path / "with-prompt-tokens"
    model.set_include_prompt(True)
    model.save(with_prompt_tokens)
    reference_with = sentence_transformers.SentenceTransformer(str(with_prompt_tokens), device="cpu")
    for name in ours.prompts:
        differs = np.abs(reference_with.encode(TEXTS, prompt_name=name) - reference.encode(TEXTS, prompt_name=name)).max()
        assert differs > 1e-3, name
        np.testing.assert_allclose(model.encode(TEXTS, prompt_name=name), reference_with.encode(TEXTS, prompt_name=name), atol=1e-6)


def test_one_prompt_for_everything_is_the_default_there_and_here(tiny_model_path, tmp_path):
    sentence_transformers = require_reference("sentence_transformers")
    model = EmbeddingModel(str(tiny_model_path), device="cpu")
    model.set_include_prompt(False)
    store_prompts(model, Q, resolve_prompts(Q, ["train"], {"train": ["sentence1", "sentence2"]}))
    model.save(tmp_path / "model")
    reference = sentence_transformers.SentenceTransformer(str(tmp_path / "model"), device="cpu")
    assert reference.default_prompt_name == "default" and reference.prompts["default"] == Q
    ours = EmbeddingModel(str(tmp_path / "model"), device="cpu")
    assert ours[1].include_prompt is False
    np.testing.assert_allclose(ours.encode(TEXTS), reference.encode(TEXTS), atol=1e-6)
    np.testing.assert_allclose(ours.encode(TEXTS), ours.encode(TEXTS, prompt=Q), atol=1e-6)
    assert np.abs(ours.encode(TEXTS) - ours.encode(TEXTS, prompt="")).max() > 1e-3  # the default is in use
