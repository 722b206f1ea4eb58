import json

import datasets
import pyarrow as pa
import pyarrow.parquet
import pytest

from embedlab import EmbedlabError
from embedlab.config import DataSource
from embedlab.data import Collator, NoDuplicatesBatchSampler, RandomBatchSampler, load_data, load_with_format
from embedlab.formats import detect_format

ROWS = {"sentence1": ["a cat", "a dog", "two birds"], "sentence2": ["a kitten", "a puppy", "some birds"], "score": [0.9, 0.8, 0.7]}


@pytest.fixture(params=["csv", "tsv", "jsonl", "parquet", "datasets-folder"])
def data_path(request, tmp_path):
    table = pa.table(ROWS)
    kind = request.param
    if kind == "csv":
        pa.csv.write_csv(table, tmp_path / "d.csv")
        return tmp_path / "d.csv"
    if kind == "tsv":
        lines = ["sentence1\tsentence2\tscore"] + [f"{a}\t{b}\t{s}" for a, b, s in zip(*ROWS.values(), strict=True)]
        (tmp_path / "d.tsv").write_text("\n".join(lines) + "\n")
        return tmp_path / "d.tsv"
    if kind == "jsonl":
        import json

        rows = [dict(zip(ROWS, values, strict=True)) for values in zip(*ROWS.values(), strict=True)]
        (tmp_path / "d.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        return tmp_path / "d.jsonl"
    if kind == "parquet":
        pa.parquet.write_table(table, tmp_path / "d.parquet")
        return tmp_path / "d.parquet"
    datasets.Dataset(table).save_to_disk(str(tmp_path / "saved"))
    return tmp_path / "saved"


def test_every_file_kind_loads_the_same_rows(data_path):
    dataset, detected = load_with_format(DataSource(str(data_path)))
    assert dataset.to_dict() == ROWS
    assert detected.format.key == "pair_score"


def test_tsv_with_quotes_inside_sentences(tmp_path):
    (tmp_path / "q.tsv").write_text('sentence1\tsentence2\tscore\nHe said "hi.\tShe said "bye".\t0.5\n')
    assert load_data(DataSource(str(tmp_path / "q.tsv")))["sentence1"] == ['He said "hi.']


def test_a_file_is_fingerprinted_by_its_version_not_by_hashing_its_rows(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("sentence1,sentence2,score\na,b,0.5\n")
    first = load_data(DataSource(str(path)))
    assert load_data(DataSource(str(path)))._fingerprint == first._fingerprint
    path.write_text("sentence1,sentence2,score\na,other,0.5\n")
    assert load_data(DataSource(str(path)))._fingerprint != first._fingerprint


def test_columns_rename_and_limit(tmp_path):
    pa.parquet.write_table(pa.table({**ROWS, "genre": ["x", "y", "z"]}), tmp_path / "d.parquet")
    source = DataSource(str(tmp_path / "d.parquet"), columns=["sentence2", "sentence1", "score"], rename={"score": "label"}, limit=2)
    dataset = load_data(source)
    assert dataset.column_names == ["sentence2", "sentence1", "label"] and len(dataset) == 2
    with pytest.raises(EmbedlabError, match=r"has no column\(s\) \['nope'\]"):
        load_data(DataSource(str(tmp_path / "d.parquet"), columns=["nope"]))


def test_missing_empty_and_unreadable_data(tmp_path):
    with pytest.raises(EmbedlabError, match="does not exist"):
        load_data(DataSource(str(tmp_path / "missing.csv")))
    (tmp_path / "empty.csv").write_text("sentence1,sentence2,score\n")
    with pytest.raises(EmbedlabError, match="is empty"):
        load_data(DataSource(str(tmp_path / "empty.csv")))
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(EmbedlabError, match="could not be read"):
        load_data(DataSource(str(tmp_path / "bad.parquet")))


def test_collator_tokenizes_each_input_column_and_maps_class_names(tiny_model):
    dataset = datasets.Dataset.from_dict({"premise": ["a cat", "a dog"], "hypothesis": ["a pet", "a car"], "label": ["yes", "no"]})
    detected = detect_format(dataset)
    features, labels = Collator(tiny_model.tokenize, detected, dataset)(dataset[:2])
    assert len(features) == 2 and "input_ids" in features[0]
    assert labels.tolist() == [1, 0]  # sorted class names: no=0, yes=1


def test_random_sampler_is_a_seeded_permutation_per_epoch():
    dataset = datasets.Dataset.from_dict({"a": [str(i) for i in range(10)], "b": [str(i) for i in range(10)]})
    detected = detect_format(dataset)
    sampler = RandomBatchSampler(dataset, detected, batch_size=4, seed=3)
    epoch0 = sampler.batches(0)
    assert [len(batch) for batch in epoch0] == [4, 4, 2]
    assert sorted(i for batch in epoch0 for i in batch) == list(range(10))
    assert epoch0 == RandomBatchSampler(dataset, detected, batch_size=4, seed=3).batches(0)
    assert epoch0 != sampler.batches(1)
    assert len(RandomBatchSampler(dataset, detected, batch_size=4, seed=3, drop_last=True).batches(0)) == 2


def test_no_duplicates_sampler_never_repeats_a_text_in_a_batch():
    anchors = ["q1", "q1", "q1", "q2", "q3", "q4", "q5", "q6"]
    positives = ["p1", "p2", "p3", "p4", "p4", "p5", "p6", "p7"]
    dataset = datasets.Dataset.from_dict({"anchor": anchors, "positive": positives})
    detected = detect_format(dataset)
    batches = NoDuplicatesBatchSampler(dataset, detected, batch_size=4, seed=0).batches(0)
    assert sorted(i for batch in batches for i in batch) == list(range(8))
    for batch in batches:
        texts = [anchors[i] for i in batch] + [positives[i] for i in batch]
        assert len(texts) == len(set(texts))


def test_metadata_columns_are_an_error_that_names_the_config_key(tmp_path):
    path = tmp_path / "stsb.tsv"
    path.write_text("genre\tsentence1\tsentence2\tscore\tyear\nmain-news\ta man eats\ta man is eating\t0.9\t2012\nmain-forums\ta dog runs\ta cat sleeps\t0.1\t2013\n")
    with pytest.raises(EmbedlabError, match=r"genre, year; .*`data\.train\.columns: \[sentence1, sentence2, score\]`"):
        load_with_format(DataSource(str(path)))
    with pytest.raises(EmbedlabError, match=r"`evaluators\.0\.data\.columns: \[sentence1, sentence2, score\]`"):
        load_with_format(DataSource(str(path)), where="evaluators.0.data")
    assert load_with_format(DataSource(str(path), columns=["sentence1", "sentence2", "score"]))[1].format.key == "pair_score"


def test_every_shipped_config_data_source_loads():
    from conftest import REPO
    from embedlab.config import load_config

    configs = sorted((REPO / "experiments").glob("configs/*.yaml")) + sorted((REPO / "experiments").glob("sweeps/*.yaml"))
    assert configs
    for path in configs:
        config = load_config(path)
        for source in [*config.train_sources().values()] + [entry.data for entry in config.evaluators + config.test_evaluators]:
            source.path = str(REPO / source.path)
            source.limit = 64  # the columns and format, not the size, are under test
            load_with_format(source)


LATIN1 = "sentence1,sentence2,score\n" + "a man eats,a man is eating,0.5\n" * 3000 + "un caf\xe9 noir,a black coffee,0.7\n"  # the bad byte far in


@pytest.mark.parametrize("name", ["latin.csv", "latin.tsv", "latin.jsonl"])
def test_latin1_file_is_a_one_line_error_saying_to_resave_as_utf8(tmp_path, name):
    text = LATIN1.replace(",", "\t") if name.endswith(".tsv") else LATIN1
    if name.endswith(".jsonl"):
        rows = [line.split(",") for line in LATIN1.splitlines()[1:]]
        text = "".join(json.dumps({"sentence1": a, "sentence2": b, "score": float(s)}, ensure_ascii=False) + "\n" for a, b, s in rows)
    (tmp_path / name).write_bytes(text.encode("latin-1"))
    with pytest.raises(EmbedlabError, match=r"is not UTF-8 text .*byte 0xe9 on line \d+.*Latin-1.*iconv -f latin1 -t utf-8") as caught:
        load_with_format(DataSource(str(tmp_path / name)))
    assert len(str(caught.value).splitlines()) == 1


def test_binary_and_utf16_files_say_what_they_look_like(tmp_path):
    import random

    rng = random.Random(0)
    (tmp_path / "noise.csv").write_bytes(bytes(rng.randrange(256) for _ in range(4000)))
    with pytest.raises(EmbedlabError, match="looks binary"):
        load_data(DataSource(str(tmp_path / "noise.csv")))
    (tmp_path / "wide.tsv").write_bytes("sentence1\tsentence2\tscore\na b\tc d\t0.5\n".encode("utf-16"))
    with pytest.raises(EmbedlabError, match="UTF-16 text.*iconv -f utf-16 -t utf-8"):
        load_data(DataSource(str(tmp_path / "wide.tsv")))


def test_a_file_with_the_other_separator_than_its_name_says_is_an_error(tmp_path):
    (tmp_path / "commas.tsv").write_text("sentence1,sentence2,score\na man eats,a man is eating,0.5\n")
    with pytest.raises(EmbedlabError, match=r"looks comma-separated \(columns sentence1, sentence2, score\).*rename it to \.csv"):
        load_data(DataSource(str(tmp_path / "commas.tsv")))
    (tmp_path / "tabs.csv").write_text("sentence1\tsentence2\tscore\na man, eating\ta man eats\t0.5\n")
    with pytest.raises(EmbedlabError, match=r"looks tab-separated \(columns sentence1, sentence2, score\).*rename it to \.tsv"):
        load_data(DataSource(str(tmp_path / "tabs.csv")))
    (tmp_path / "one.tsv").write_text("text\na man, eating\nthe sky, blue\n")  # one column whose texts hold commas: fine
    assert load_data(DataSource(str(tmp_path / "one.tsv")))["text"] == ["a man, eating", "the sky, blue"]
