"""Hard-negative mining (embedlab.mining) on the tiny random BERT: the search, the cache, the rules for
positives and short anchors, errors before encoding, the config / CLI / sweep wiring."""

import json
import random
import re

import datasets
import numpy as np
import pytest
import torch

from conftest import REPO, require_reference, sentence, write_config, write_jsonl
from embedlab import cli
from embedlab.config import ConversionConfig, DataSource, MiningConfig, load_config
from embedlab.data import load_with_format
from embedlab.errors import EmbedlabError
from embedlab.mining import mine, mining_model_path, top_k
from embedlab.model import EmbeddingModel


@pytest.fixture
def pairs():
    rng = random.Random(0)
    anchors = [sentence(rng) for _ in range(40)]
    rows = {"anchor": anchors, "positive": [sentence(rng) for _ in anchors]}
    # The first anchor has three positives: each gets its rows, and none is ever its negative.
    for _ in range(2):
        rows["anchor"].append(anchors[0])
        rows["positive"].append(sentence(rng))
    return datasets.Dataset.from_dict(rows)


@pytest.fixture
def settings(tiny_model_path, tmp_path):
    def make(**values):
        return MiningConfig(model=str(tiny_model_path), cache_folder=str(tmp_path / "cache"), **values)

    return make


@pytest.fixture
def count_encodes(monkeypatch):
    """Counts the texts EmbeddingModel.encode is asked to embed."""
    counter = {"texts": 0}
    original = EmbeddingModel.encode

    def counting(self, sentences, *args, **kwargs):
        counter["texts"] += len(sentences)
        return original(self, sentences, *args, **kwargs)

    monkeypatch.setattr(EmbeddingModel, "encode", counting)
    return counter


# --- the search -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("query_chunk,corpus_chunk", [(1, 1), (7, 13), (64, 5), (1000, 1000)])
def test_chunked_top_k_equals_the_full_search(query_chunk, corpus_chunk):
    generator = np.random.default_rng(0)
    queries = generator.standard_normal((50, 16)).astype(np.float32)
    corpus = generator.standard_normal((90, 16)).astype(np.float32)
    scores, indices = top_k(queries, corpus, k=12, query_chunk=query_chunk, corpus_chunk=corpus_chunk)
    full_scores, full_indices = torch.topk(torch.from_numpy(queries) @ torch.from_numpy(corpus).T, k=12, dim=1)
    assert torch.equal(indices, full_indices)
    torch.testing.assert_close(scores, full_scores)


def test_top_k_pads_when_the_corpus_is_smaller_than_k():
    corpus = np.eye(3, dtype=np.float32)
    scores, indices = top_k(corpus[:2], corpus, k=5, corpus_chunk=2)
    assert indices.tolist() == [[0, indices[0, 1].item(), indices[0, 2].item(), -1, -1], [1, indices[1, 1].item(), indices[1, 2].item(), -1, -1]]
    assert sorted(indices[0, :3].tolist()) == [0, 1, 2]
    assert torch.isinf(scores[:, 3:]).all() and scores[0, 0] == 1.0


# --- what is mined --------------------------------------------------------------------------------------
def test_top_negatives_equal_sentence_transformers_on_the_tiny_model(pairs, settings, tiny_model_path):
    st = require_reference("sentence_transformers")
    from sentence_transformers.util import mine_hard_negatives

    reference_model = st.SentenceTransformer(str(tiny_model_path), device="cpu")
    for values in ({"num_negatives": 3}, {"num_negatives": 2, "range_min": 4, "relative_margin": 0.01}, {"num_negatives": 2, "range_max": 30, "absolute_margin": 0.001, "max_score": 0.99}):
        ours = mine(pairs, settings(**values)).dataset
        theirs = mine_hard_negatives(pairs, reference_model, verbose=False, **values)
        assert ours.to_dict() == theirs.to_dict(), values


def test_an_anchors_positives_are_never_its_negatives(pairs, settings):
    # Every other text is a candidate: only the positives can keep one out.
    result = mine(pairs, settings(num_negatives=40, range_max=60))
    own = {}
    for row in pairs:
        own.setdefault(row["anchor"], set()).add(row["positive"])
    for row in result.dataset:
        assert row["negative"] not in own[row["anchor"]]
    first = pairs[0]["anchor"]
    assert {row["positive"] for row in result.dataset if row["anchor"] == first} == own[first]  # a row per positive


def test_n_tuples_leave_out_short_anchors_and_say_so(pairs, settings, capsys):
    # A relative margin of 0 keeps only candidates scoring below the anchor's weakest positive: some anchors run short.
    result = mine(pairs, settings(num_negatives=3, relative_margin=0.0, range_max=45), output_format="n-tuple")
    short = result.summary["anchors_with_too_few_negatives"]
    assert 0 < short < result.summary["anchors"]
    assert result.dataset.column_names == ["anchor", "positive", "negative_1", "negative_2", "negative_3"]
    assert len(result.dataset) == result.summary["pairs"] - result.summary["pairs_dropped"] > 0
    assert f"{short} of {result.summary['anchors']} anchors have fewer than 3 negatives" in capsys.readouterr().out
    # Triplets keep those anchors, with the negatives they have.
    triplets = mine(pairs, settings(num_negatives=3, relative_margin=0.0, range_max=45)).dataset
    anchors = set(triplets["anchor"])
    assert set(result.dataset["anchor"]) < anchors
    assert len(triplets) < 3 * result.summary["pairs"]


def test_relative_margin_keeps_negatives_below_the_weakest_positive(pairs, settings, tiny_model_path):
    result = mine(pairs, settings(num_negatives=2, relative_margin=0.01, range_max=45)).dataset
    model = EmbeddingModel(str(tiny_model_path), device="cpu")
    weakest = {}
    for row in pairs:
        anchor, positive = model.encode([row["anchor"], row["positive"]], normalize_embeddings=True)
        weakest[row["anchor"]] = min(weakest.get(row["anchor"], 2.0), float(anchor @ positive))
    for row in result.select(range(0, len(result), 7)):
        anchor, negative = model.encode([row["anchor"], row["negative"]], normalize_embeddings=True)
        assert float(anchor @ negative) <= weakest[row["anchor"]] * 0.99 + 1e-5


def test_random_sampling_is_seeded_and_stays_in_the_candidate_ranks(pairs, settings):
    top = mine(pairs, settings(num_negatives=8, range_min=2, range_max=10)).dataset  # ranks 2..9, all of them
    first = mine(pairs, settings(num_negatives=3, range_min=2, range_max=10, sampling_strategy="random", seed=1)).dataset
    again = mine(pairs, settings(num_negatives=3, range_min=2, range_max=10, sampling_strategy="random", seed=1)).dataset
    other = mine(pairs, settings(num_negatives=3, range_min=2, range_max=10, sampling_strategy="random", seed=2)).dataset
    assert first.to_dict() == again.to_dict() != other.to_dict()
    candidates = {}
    for row in top:
        candidates.setdefault((row["anchor"], row["positive"]), set()).add(row["negative"])
    for row in first:
        assert row["negative"] in candidates[(row["anchor"], row["positive"])]


def test_a_separate_corpus_file_is_mined_from(pairs, settings, tmp_path):
    rng = random.Random(5)
    passages = [f"{sentence(rng)} zebra" for _ in range(30)]  # a word no positive has
    (tmp_path / "corpus.txt").write_text("\n".join(passages) + "\n\n")
    negatives = set(mine(pairs, settings(num_negatives=2, corpus=str(tmp_path / "corpus.txt"))).dataset["negative"])
    assert negatives <= set(passages) | set(pairs["positive"]) and negatives & set(passages)
    write_jsonl(tmp_path / "corpus.jsonl", [{"text": passage} for passage in passages])
    assert set(mine(pairs, settings(num_negatives=2, corpus=str(tmp_path / "corpus.jsonl"))).dataset["negative"]) == negatives


# --- the cache ------------------------------------------------------------------------------------------
def test_a_rerun_with_the_same_model_and_corpus_does_not_encode_again(pairs, settings, count_encodes, tiny_guide_path):
    first = mine(pairs, settings(num_negatives=2))
    texts = count_encodes["texts"]
    assert texts == first.summary["corpus"] + first.summary["anchors"] == first.summary["encoded_texts"]
    # Other mining settings (what a sweep varies) reuse the embeddings.
    second = mine(pairs, settings(num_negatives=3, range_min=1))
    assert count_encodes["texts"] == texts and second.summary["encoded_texts"] == 0
    assert mine(pairs, settings(num_negatives=2)).dataset.to_dict() == first.dataset.to_dict()
    # Another corpus or other weights encode again.
    mine(pairs.select(range(30)), settings(num_negatives=2))
    assert count_encodes["texts"] > texts
    before = count_encodes["texts"]
    other = mine(pairs, MiningConfig(model=str(tiny_guide_path), cache_folder=settings().cache_folder, num_negatives=2))
    assert other.summary["encoded_texts"] == count_encodes["texts"] - before == first.summary["encoded_texts"]


def test_a_prompt_is_part_of_the_cache_key(pairs, settings, count_encodes):
    mine(pairs, settings(num_negatives=2))
    before = count_encodes["texts"]
    result = mine(pairs, settings(num_negatives=2, query_prompt="query: "))
    assert result.summary["encoded_texts"] == result.summary["anchors"] == count_encodes["texts"] - before  # the corpus came from the cache


# --- bad input: one line, before any encoding -----------------------------------------------------------
@pytest.mark.parametrize(
    "values,data,message",
    [
        ({"range_min": 5, "range_max": 5}, None, "range_min (5) must be smaller than mine.range_max (5)"),
        ({"num_negatives": 0}, None, "num_negatives must be at least 1, got 0"),
        ({"num_negatives": 4, "range_min": 2, "range_max": 5}, None, "cannot mine 4 negatives per anchor from ranks 2 .. 4"),
        ({"corpus": "no/such/corpus.txt"}, None, "corpus file 'no/such/corpus.txt' does not exist"),
        ({"query_prompt_name": "query"}, None, "prompt name 'query' is unknown"),
        ({"use_gpu": True}, None, "use_gpu needs mine.workers"),
        ({}, {"anchor": ["a dog", "a cat"]}, "a second column of positives is missing"),
    ],
)
def test_bad_input_fails_in_one_line_before_encoding(values, data, message, pairs, settings, monkeypatch):
    monkeypatch.setattr(EmbeddingModel, "encode", lambda *args, **kwargs: pytest.fail("encoded before the check"))
    dataset = datasets.Dataset.from_dict(data) if data else pairs
    with pytest.raises(EmbedlabError) as error:
        mine(dataset, settings(**values))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_model_that_does_not_load_fails_in_one_line(pairs, tmp_path, monkeypatch):
    monkeypatch.setattr(EmbeddingModel, "encode", lambda *args, **kwargs: pytest.fail("encoded before the check"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    for name, message in ((str(broken), "does not load"), (str(tmp_path / "none"), "does not exist")):
        with pytest.raises(EmbedlabError) as error:
            mine(pairs, MiningConfig(model=name, cache_folder=str(tmp_path / "cache")))
        assert message in str(error.value) and "\n" not in str(error.value)


def test_a_run_folder_names_its_model(tmp_path, tiny_model_path):
    run_folder = tmp_path / "runs" / "mnrl"
    EmbeddingModel(str(tiny_model_path), device="cpu").save(run_folder / "model")
    assert mining_model_path(str(run_folder)) == str(run_folder / "model")


# --- a data step in a config ------------------------------------------------------------------------------
def _mining_config(tmp_path, tiny_model_path, train, **mine_values):
    convert = {"to": "triplets", "mine": {"model": str(tiny_model_path), "cache_folder": str(tmp_path / "cache"), "num_negatives": 2, **mine_values}}
    return write_config(tmp_path / "c.yaml", tiny_model_path, train, tmp_path / "out", data={"train": {"path": str(train), "convert": convert}}, loss={"name": "MultipleNegativesRankingLoss"})


def test_a_config_mines_before_it_trains_and_mining_settings_are_part_of_the_run_identity(tmp_path, tiny_model_path, pairs):
    from embedlab import run
    from embedlab.identity import fingerprint, run_identity

    train = write_jsonl(tmp_path / "pairs.jsonl", list(pairs))
    config_file = _mining_config(tmp_path, tiny_model_path, train)
    prepared = run.prepare(load_config(config_file), device="cpu")
    assert prepared.detected.format.key == "triplets" and prepared.dataset.column_names == ["anchor", "positive", "negative"]
    assert len(prepared.dataset) == 2 * len(pairs)
    base = prepared.identity
    assert base["data.train.convert.mine.num_negatives"] == 2
    for override in ["data.train.convert.mine.range_min=3", "data.train.convert.mine.relative_margin=0.05", "data.train.convert.mine.num_negatives=1"]:
        config = load_config(config_file, [override])
        assert fingerprint(run_identity(config, prepared.loss)) != fingerprint(base), override
    # n_tuples: one row per pair with num_negatives negative columns
    ntuples, detected = load_with_format(DataSource(path=str(train), convert=ConversionConfig(to="n_tuples", mine=MiningConfig(model=str(tiny_model_path), cache_folder=str(tmp_path / "cache"), num_negatives=2))))
    assert detected.format.key == "n_tuples" and ntuples.column_names == ["anchor", "positive", "negative_1", "negative_2"]


def test_score_pairs_are_kept_above_the_threshold_then_mined(tmp_path, tiny_model_path, score_pairs_file):
    conversion = ConversionConfig(to="triplets", threshold=0.5, mine=MiningConfig(model=str(tiny_model_path), cache_folder=str(tmp_path / "cache"), num_negatives=1))
    dataset, detected = load_with_format(DataSource(path=str(score_pairs_file), convert=conversion))
    rows = [json.loads(line) for line in score_pairs_file.read_text().splitlines()]
    kept = {(row["sentence1"], row["sentence2"]) for row in rows if row["score"] >= 0.5}
    assert detected.format.key == "triplets" and {(row["anchor"], row["positive"]) for row in dataset} == kept


def test_mining_config_errors_name_the_key(tmp_path, tiny_model_path, pairs):
    train = write_jsonl(tmp_path / "pairs.jsonl", list(pairs))
    with pytest.raises(EmbedlabError, match=r"config key 'data.train.convert.mine.sampling_strategy' must be one of top, random, got 'tpo' \(did you mean 'top'\?\)"):
        load_config(_mining_config(tmp_path, tiny_model_path, train, sampling_strategy="tpo"))
    with pytest.raises(EmbedlabError, match=r"unknown config key 'data.train.convert.mine.rnage_min' \(did you mean 'range_min'\?\)"):
        load_config(_mining_config(tmp_path, tiny_model_path, train, rnage_min=2))
    config = load_config(_mining_config(tmp_path, tiny_model_path, train, range_min=4, range_max=4))
    with pytest.raises(EmbedlabError, match=r"data.train.convert.mine.range_min \(4\) must be smaller than data.train.convert.mine.range_max \(4\)"):
        load_with_format(config.data.train)


def test_a_sweep_space_reaches_the_mining_settings(tmp_path, tiny_model_path, pairs):
    from embedlab.sweep import _check_config_key, trial_config

    train = write_jsonl(tmp_path / "pairs.jsonl", list(pairs))
    config = load_config(_mining_config(tmp_path, tiny_model_path, train))
    for key, value in [("data.train.convert.mine.range_min", 3), ("data.train.convert.mine.num_negatives", 1), ("data.train.convert.mine.relative_margin", 0.05)]:
        _check_config_key(config, key, value)
    with pytest.raises(EmbedlabError, match="rnage_min"):
        _check_config_key(config, "data.train.convert.mine.rnage_min", 3)
    params = {"loss": "MultipleNegativesRankingLoss", "data.train.convert.mine.range_min": 3, "data.train.convert.mine.relative_margin": 0.05, "training.learning_rate": 1e-4}
    trial = trial_config(config.to_dict(), params, {"train": {}}, [], str(tmp_path / "trial"))
    mining = trial.data.train.convert.mine
    assert (mining.range_min, mining.relative_margin, mining.num_negatives, trial.training.learning_rate) == (3, 0.05, 2, 1e-4)


# --- the command ------------------------------------------------------------------------------------------
def test_embedlab_mine_writes_the_mined_rows(tmp_path, tiny_model_path, capsys):
    output = tmp_path / "mined.parquet"
    code = cli.main([
        "mine", str(REPO / "experiments/data/stsb/dev.tsv"), "--columns", "sentence1,sentence2,score", "--threshold", "0.8", "--limit", "300",
        "--model", str(tiny_model_path), "--output", str(output), "--num-negatives", "2", "--range-min", "1", "--output-format", "n-tuple",
        "--cache-folder", str(tmp_path / "cache"),
    ])
    out = capsys.readouterr().out
    assert code == 0, out
    mined = datasets.Dataset.from_parquet(str(output))
    assert mined.column_names == ["anchor", "positive", "negative_1", "negative_2"] and len(mined) > 10
    assert f"Wrote {len(mined)} rows" in out and "candidates ranks 1 .." in out
    assert f"Mining with {tiny_model_path}: " in out  # which model ranked the candidates


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--range-min", "3", "--range-max", "2"], "--range-min (3) must be smaller than --range-max (2)"),
        (["--num-negatives", "0"], "--num-negatives must be at least 1"),
        (["--corpus", "missing.txt"], "--corpus file 'missing.txt' does not exist"),
        (["--sampling-strategy", "randon"], "did you mean 'random'?"),
        (["--gpu"], "--gpu needs --workers N"),
        (["--output", "out.xlsx"], "output file 'out.xlsx' has an unknown type"),
    ],
)
def test_embedlab_mine_bad_flags_are_one_line(flags, message, tmp_path, tiny_model_path, capsys, monkeypatch):
    monkeypatch.setattr(EmbeddingModel, "encode", lambda *args, **kwargs: pytest.fail("encoded before the check"))
    base = ["mine", str(REPO / "experiments/data/stsb/dev.tsv"), "--columns", "sentence1,sentence2,score", "--threshold", "0.8", "--model", str(tiny_model_path), "--output", str(tmp_path / "o.jsonl")]
    code = cli.main(base + flags)
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err


def test_embedlab_mine_that_keeps_no_row_writes_nothing_and_says_why(tmp_path, tiny_model_path, capsys):
    output = tmp_path / "mined.parquet"
    code = cli.main([
        "mine", str(REPO / "experiments/data/stsb/dev.tsv"), "--columns", "sentence1,sentence2,score", "--threshold", "0.8", "--limit", "100",
        "--model", str(tiny_model_path), "--output", str(output), "--max-score", "-1.0", "--cache-folder", str(tmp_path / "cache"),
    ])  # cosine scores are all above -1: the bound removes every candidate
    captured = capsys.readouterr()
    assert code == 2 and "mining kept no row" in captured.err and not output.exists(), captured.err
    assert re.search(r"max_score -1.0 skipped (\d+) of the \1 candidates retrieved", captured.out), captured.out


def test_embedlab_mine_needs_a_positive_column(tmp_path, tiny_model_path, capsys):
    code = cli.main(["mine", str(REPO / "experiments/data/trec/test.jsonl"), "--model", str(tiny_model_path), "--output", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no positive column" in err and len(err.splitlines()) == 1


def test_texts_are_encoded_in_blocks_and_the_result_is_the_same(pairs, settings, tmp_path, monkeypatch):
    from embedlab import mining

    whole = mine(pairs, settings(num_negatives=2))
    sizes = []
    original = EmbeddingModel.encode

    def spy(self, sentences, *args, **kwargs):
        sizes.append(len(sentences))
        return original(self, sentences, *args, **kwargs)

    monkeypatch.setattr(EmbeddingModel, "encode", spy)
    monkeypatch.setattr(mining, "ENCODE_BLOCK", 16)
    blocked = mine(pairs, MiningConfig(model=settings().model, cache_folder=str(tmp_path / "other-cache"), num_negatives=2))
    assert max(sizes) == 16 and sum(sizes) == whole.summary["encoded_texts"]
    assert blocked.dataset.to_dict() == whole.dataset.to_dict()


def test_a_corpus_file_is_cached_apart_from_the_positives(pairs, settings, tmp_path, count_encodes):
    rng = random.Random(6)
    passages = [sentence(rng) for _ in range(50)]
    (tmp_path / "corpus.txt").write_text("\n".join(passages) + "\n")
    mine(pairs.select(range(10)), settings(num_negatives=2, corpus=str(tmp_path / "corpus.txt")))
    before = count_encodes["texts"]
    # More pairs (a data limit raised, a smoke test's slice grown): only their new texts are encoded.
    result = mine(pairs, settings(num_negatives=2, corpus=str(tmp_path / "corpus.txt")))
    assert count_encodes["texts"] - before == result.summary["encoded_texts"] == (result.summary["corpus"] - len(passages)) + result.summary["anchors"]


def test_a_config_that_mines_records_its_counts_in_mlflow(tmp_path, tiny_model_path, pairs, monkeypatch, capsys):
    """Anchors with too few candidates are counted in the log and in the run's MLflow metrics (step 0)."""
    import re

    from mlflow.tracking import MlflowClient

    from embedlab import run

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    train = write_jsonl(tmp_path / "pairs.jsonl", list(pairs))
    # Two candidate ranks, two negatives wanted, and a score bound that rules out the closest candidates of some anchors.
    config = load_config(_mining_config(tmp_path, tiny_model_path, train, range_max=2, num_negatives=2, max_score=0.95), ["training.max_steps=1", "training.save_steps=null"])
    run.train(run.prepare(config, device="cpu"))
    out = capsys.readouterr().out
    found_line = re.search(r"Mining: (\d+) of (\d+) anchors have fewer than 2 negatives", out)
    assert found_line, out[-3000:]
    short, anchors = map(int, found_line.groups())
    assert 0 < short < anchors
    client = MlflowClient(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    (found,) = client.search_runs([client.get_experiment_by_name("out").experiment_id])
    assert found.data.metrics["mining_anchors_with_too_few_negatives"] == short and found.data.metrics["mining_anchors"] == anchors


def test_mining_identity_is_the_models_and_corpus_content_not_their_paths_or_the_cache(tmp_path, tiny_model_path, tiny_guide_path, pairs):
    from embedlab.identity import fingerprint, run_identity
    from embedlab.losses import build_loss

    train = write_jsonl(tmp_path / "pairs.jsonl", list(pairs))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(row["positive"] for row in pairs) + "\n")
    copy = tmp_path / "elsewhere" / "corpus.txt"
    copy.parent.mkdir()
    copy.write_text(corpus.read_text())
    config_file = _mining_config(tmp_path, tiny_model_path, train, corpus=str(corpus))
    loss = build_loss("MultipleNegativesRankingLoss", EmbeddingModel(str(tiny_model_path), device="cpu"), {}, load_with_format(DataSource(path=str(train)))[1])

    def identity(*overrides):
        return fingerprint(run_identity(load_config(config_file, list(overrides)), loss))

    base = identity()
    assert identity(f"data.train.convert.mine.corpus={copy}", f"data.train.convert.mine.cache_folder={tmp_path / 'other-cache'}", "data.train.convert.mine.workers=2") == base
    copy.write_text(corpus.read_text() + "one more passage\n")
    assert identity(f"data.train.convert.mine.corpus={copy}") != base
    assert identity(f"data.train.convert.mine.model={tiny_guide_path}") != base
