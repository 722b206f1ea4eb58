import datasets
import pytest

from embedlab import EmbedlabError
from embedlab.formats import (
    FORMATS,
    MetadataColumnsError,
    check_for_metadata_columns,
    detect_format,
    losses_for,
)


def _data(**columns) -> datasets.Dataset:
    return datasets.Dataset.from_dict(columns)


A = ["a man eats food", "a dog runs", "two cats sit"]
B = ["someone eats", "a cat sleeps", "the birds fly"]
C = ["a car drives", "the sky is blue", "a boat on water"]

CASES = {
    "sentence_class": _data(text=A, label=[0, 2, 1]),
    "single_sentences": _data(text=A),
    "anchor_anchor_pairs": _data(anchor=A, anchor_copy=A),
    "damaged_original_pairs": _data(damaged=["a man food", "dog runs", "two cats sit"], original=A),
    "pair_class": _data(premise=A, hypothesis=B, label=[0, 1, 2]),
    "anchor_positive_pairs": _data(anchor=A, positive=B),
    "pair_binary": _data(sentence1=A, sentence2=B, label=[1, 0, 1]),
    "pair_score": _data(sentence1=A, sentence2=B, score=[0.1, 0.73, 0.5]),
    "triplets": _data(anchor=A, positive=B, negative=C),
    "n_tuples": _data(anchor=A, positive=B, negative_1=C, negative_2=B[::-1]),
    "teacher_embedding": _data(text=A, label=[[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]),
    "query_passage_margin": _data(query=A, passage_one=B, passage_two=C, score=[1.5, -0.2, 3.0]),
}


def test_every_format_row_is_covered():
    assert set(CASES) == {data_format.key for data_format in FORMATS}


@pytest.mark.parametrize("key", list(CASES))
def test_detect_format(key):
    detected = detect_format(CASES[key])
    assert detected.format.key == key
    assert detected.num_rows == 3


def test_column_roles():
    detected = detect_format(_data(score=[0.5, 0.2, 0.1], sentence1=A, sentence2=B))
    assert detected.label_column == "score" and detected.input_columns == ("sentence1", "sentence2")
    named = detect_format(_data(first=A, second=B, target=[0.5, 0.2, 0.1]), label_column="target")
    assert named.format.key == "pair_score"


def test_string_class_names_and_bool_labels():
    assert detect_format(_data(premise=A, hypothesis=B, label=["ENTAILMENT", "NEUTRAL", "CONTRADICTION"])).format.key == "pair_class"
    assert detect_format(_data(sentence1=A, sentence2=B, label=[True, False, True])).format.key == "pair_binary"


def test_format_override_where_structure_allows():
    assert detect_format(CASES["anchor_anchor_pairs"], format_key="anchor_positive_pairs").format.key == "anchor_positive_pairs"
    assert detect_format(CASES["pair_binary"], format_key="pair_class").format.key == "pair_class"
    with pytest.raises(EmbedlabError, match="needs"):
        detect_format(CASES["pair_score"], format_key="triplets")
    with pytest.raises(EmbedlabError, match="unknown data format"):
        detect_format(CASES["pair_score"], format_key="pairs")


def test_bad_labels_are_one_line_errors():
    with pytest.raises(EmbedlabError, match="NaN value at row 2"):
        detect_format(_data(sentence1=A, sentence2=B, score=[0.1, float("nan"), 0.3]))
    with pytest.raises(EmbedlabError, match="mixes numbers and text"):
        detect_format(_data(sentence1=A, sentence2=B, score=["0.1", "n/a", "0.3"]))
    with pytest.raises(EmbedlabError, match="does not hold text"):
        detect_format(_data(sentence1=A, tags=[["x"], ["y"], ["z"]], score=[0.1, 0.2, 0.3]))
    with pytest.raises(EmbedlabError, match="no data format has 3 input column"):
        detect_format(_data(sentence1=A, sentence2=B, genre=C, label=[0, 1, 2]))


def test_empty_texts_train_but_are_counted_in_a_warning(capsys, monkeypatch):
    from embedlab import errors

    monkeypatch.setattr(errors, "_warned", set())  # warnings given earlier in this process
    gappy = _data(anchor=["a dog runs", "", "a cat sits"], positive=["a dog is running", "a man", ""])
    detected = detect_format(gappy)
    assert detected.format.key == "anchor_positive_pairs"
    warnings = capsys.readouterr().err.strip().splitlines()
    assert warnings == [
        "embedlab: warning: input column 'anchor' has 1 empty text(s): they train as empty strings (an empty CSV cell reads as one); drop those rows if they are gaps",
        "embedlab: warning: input column 'positive' has 1 empty text(s): they train as empty strings (an empty CSV cell reads as one); drop those rows if they are gaps",
    ]
    detect_format(gappy)  # the same data again (a sweep's driver, then its trials' processes): said once
    detect_format(_data(anchor=A, positive=B))
    assert capsys.readouterr().err == ""


def test_bad_input_columns_are_one_line_errors_that_say_how_to_fix_them():
    # A null past the first 100 rows (the sample the type check reads) is found too.
    positives = [*(["a man is playing"] * 150), None, "a cat sits"]
    with pytest.raises(EmbedlabError, match="input column 'positive' has a missing value at row 151: fill or drop those rows"):
        detect_format(_data(anchor=["a dog runs"] * 152, positive=positives))
    # A score column without a label name: naming it the label is the fix, not `columns`.
    with pytest.raises(EmbedlabError, match="input column 'similarity' holds numbers, not text: .*`--label-column similarity`"):
        detect_format(_data(text_a=A, text_b=B, similarity=[4.5, 1.0, 2.5]))


# The format -> losses table of DESIGN.md ("Data formats"), written out: the catalogue's declarations must give it.
DESIGN_TABLE = {
    "sentence_class": {"BatchAllTripletLoss", "BatchHardSoftMarginTripletLoss", "BatchHardTripletLoss", "BatchSemiHardTripletLoss"},
    # embedlab addition: ContrastiveTensionLossInBatchNegatives reads only its first column (both columns of
    # (anchor, anchor) pairs are the same sentence), so one column of sentences serves it too.
    "single_sentences": {"ContrastiveTensionLoss", "DenoisingAutoEncoderLoss", "ContrastiveTensionLossInBatchNegatives"},
    "anchor_anchor_pairs": {"ContrastiveTensionLossInBatchNegatives"},
    "damaged_original_pairs": {"DenoisingAutoEncoderLoss"},
    "pair_class": {"SoftmaxLoss"},
    "anchor_positive_pairs": {
        "MultipleNegativesRankingLoss", "CachedMultipleNegativesRankingLoss", "MultipleNegativesSymmetricRankingLoss",
        "CachedMultipleNegativesSymmetricRankingLoss", "MegaBatchMarginLoss", "GISTEmbedLoss", "CachedGISTEmbedLoss",
    },
    "pair_binary": {"ContrastiveLoss", "OnlineContrastiveLoss"},
    "pair_score": {"CoSENTLoss", "AnglELoss", "CosineSimilarityLoss"},
    "triplets": {"MultipleNegativesRankingLoss", "CachedMultipleNegativesRankingLoss", "TripletLoss", "CachedGISTEmbedLoss", "GISTEmbedLoss"},
    "n_tuples": {"MultipleNegativesRankingLoss", "CachedMultipleNegativesRankingLoss", "CachedGISTEmbedLoss"},
    "teacher_embedding": {"MSELoss"},
    "query_passage_margin": {"MarginMSELoss"},
}


@pytest.mark.parametrize("key", list(DESIGN_TABLE))
def test_losses_for_gives_the_design_table(key):
    assert list(DESIGN_TABLE) == [data_format.key for data_format in FORMATS]
    names = losses_for(key)
    assert len(names) == len(set(names)) and set(names) == DESIGN_TABLE[key]


WORDS = ["main-captions", "main-news", "main-forums"]  # STSb's genre column: tags, not sentences


def test_metadata_columns_next_to_text_are_an_error_naming_the_columns_to_select():
    data = _data(genre=WORDS, sentence1=A, sentence2=B, score=[0.1, 0.2, 0.3], year=[2012, 2013, 2012], source=["MSRvid"] * 3)
    with pytest.raises(MetadataColumnsError) as caught:
        check_for_metadata_columns(data, name="data 'stsb.tsv'")
    error = caught.value
    assert error.columns == ["sentence1", "sentence2", "score"]
    assert "genre, year, source" in str(error) and "data.train.columns: [sentence1, sentence2, score]" in str(error)
    assert error.with_flags().endswith("--columns sentence1,sentence2,score")
    assert "evaluators.0.data.columns: [sentence1, sentence2, score]" in error.with_config_key("evaluators.0.data")
    assert len(str(error).splitlines()) == 1


def test_metadata_check_suggests_a_numeric_label_by_name_when_none_is_named_label():
    data = _data(id=[1, 2, 3], sentence1=A, sentence2=B, similarity=[0.5, 0.25, 0.75])
    with pytest.raises(MetadataColumnsError) as caught:
        check_for_metadata_columns(data)
    assert caught.value.with_flags().endswith("--columns sentence1,sentence2,similarity --label-column similarity")
    # Column names with spaces come quoted, so that the suggestion pastes into a shell as it is.
    spaced = _data(**{"id": [1, 2, 3], "Question Text": A, "Answer Text": B, "my score": [0.5, 0.25, 0.75]})
    with pytest.raises(MetadataColumnsError) as caught:
        check_for_metadata_columns(spaced)
    assert caught.value.with_flags().endswith("--columns 'Question Text,Answer Text,my score' --label-column 'my score'")
    with pytest.raises(MetadataColumnsError, match=r"the label column score \(or label\)"):  # SICK: two label columns
        check_for_metadata_columns(_data(sentence1=A, sentence2=B, score=[0.1, 0.2, 0.3], label=["NEUTRAL", "ENTAILMENT", "NEUTRAL"]))


def test_clean_data_passes_the_metadata_check():
    for data in CASES.values():
        check_for_metadata_columns(data)
    check_for_metadata_columns(_data(query=["q1", "q2", "q3"], doc=["d1", "d2", "d3"]))  # short texts, but no long ones next to them
    check_for_metadata_columns(_data(sentence1=A, genre=WORDS), label_column="genre")  # the label the user named
