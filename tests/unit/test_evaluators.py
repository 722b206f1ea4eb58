"""Evaluators: metric names and values equal sentence-transformers' (dev extra), defaults by format, bad input."""

import datasets
import pytest

from conftest import require_reference
from embedlab import EmbeddingModel, EmbedlabError
from embedlab.evaluation import (
    BinaryClassificationEvaluator,
    InformationRetrievalEvaluator,
    TripletEvaluator,
    evaluator_for,
)
from embedlab.formats import detect_format

S1 = ["a man is playing a guitar", "the dog runs in the park", "two cats sit on a table", "what is the capital of france ?", "a red car", "a bird", "the old house", "a boat on the water"]
S2 = ["a man plays a flute", "a dog is running", "the cats are sitting", "paris is the capital of france", "a blue boat", "the sky", "a young child", "the river is blue"]
S3 = ["a car drives on the road", "the sky is blue", "a boat on the water", "a bird sits in a tree", "the old house", "two dogs", "a woman walks", "a kitchen table"]
BINARY = [1, 1, 1, 1, 0, 0, 0, 1]
ALL = ["cosine", "dot", "euclidean", "manhattan"]
QUERIES = {f"q{i}": text for i, text in enumerate(S1)}
CORPUS = {f"d{i}": text for i, text in enumerate(S2 + S3)}
RELEVANT = {"q0": {"d0"}, "q1": {"d1", "d9"}, "q2": {"d2"}, "q3": {"d3"}, "q4": {"d12", "d4"}, "q5": {"d5"}, "q6": set()}


def _assert_same_metrics(ours: dict, expected: dict) -> None:
    assert set(ours) == set(expected)
    for name, value in expected.items():
        assert ours[name] == pytest.approx(float(value), abs=1e-6), name


@pytest.fixture
def both_models(tiny_model_path):
    sentence_transformers = require_reference("sentence_transformers")
    return EmbeddingModel(str(tiny_model_path), device="cpu"), sentence_transformers.SentenceTransformer(str(tiny_model_path), device="cpu")


@pytest.mark.parametrize("ci", [None, "", "true", "1"])
def test_require_reference_fails_in_ci_and_skips_elsewhere(monkeypatch, ci):
    """A missing reference library skips a parity test locally, but fails it when CI is set (non-empty)."""
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    missing = "embedlab_no_such_reference_library"
    with pytest.raises(pytest.fail.Exception if ci else pytest.skip.Exception, match=missing):
        require_reference(missing)
    import json

    assert require_reference("json") is json  # present: the module itself, CI or not


@pytest.mark.parametrize("similarity_fn_names", [None, ALL])
def test_binary_classification_matches_sentence_transformers(both_models, similarity_fn_names):
    from sentence_transformers.evaluation import BinaryClassificationEvaluator as Reference

    ours, reference = both_models
    kwargs = {"name": "pairs", "similarity_fn_names": similarity_fn_names}
    _assert_same_metrics(BinaryClassificationEvaluator(S1, S2, BINARY, **kwargs)(ours), Reference(S1, S2, BINARY, **kwargs)(reference))


@pytest.mark.parametrize("kwargs", [{}, {"similarity_fn_names": ALL, "margin": 0.05}, {"main_similarity_function": "dot", "margin": {"dot": 0.5}}])
def test_triplet_matches_sentence_transformers(both_models, kwargs):
    from sentence_transformers.evaluation import TripletEvaluator as Reference

    ours, reference = both_models
    our_evaluator, reference_evaluator = TripletEvaluator(S1, S2, S3, name="nli", **kwargs), Reference(S1, S2, S3, name="nli", **kwargs)
    _assert_same_metrics(our_evaluator(ours), reference_evaluator(reference))
    assert our_evaluator.primary_metric == "nli_" + reference_evaluator.primary_metric.removeprefix("nli_")


@pytest.mark.parametrize("kwargs", [{}, {"corpus_chunk_size": 5, "mrr_at_k": [3, 10], "ndcg_at_k": [5], "map_at_k": [4]}])
def test_information_retrieval_matches_sentence_transformers(both_models, kwargs):
    from sentence_transformers.evaluation import InformationRetrievalEvaluator as Reference

    ours, reference = both_models
    got = InformationRetrievalEvaluator(QUERIES, CORPUS, RELEVANT, name="ir", **kwargs)(ours)
    expected = Reference(QUERIES, CORPUS, RELEVANT, name="ir", **kwargs)(reference)
    _assert_same_metrics(got, expected)
    assert "ir_cosine_ndcg@10" in got or "ir_cosine_ndcg@5" in got


def test_information_retrieval_with_several_score_functions(tiny_model):
    evaluator = InformationRetrievalEvaluator(QUERIES, CORPUS, RELEVANT, name="ir", score_functions=["cosine", "dot"])
    metrics = evaluator(tiny_model)
    assert {"ir_cosine_map@100", "ir_dot_map@100", "ir_dot_accuracy@1"} <= set(metrics)
    assert evaluator.primary_metric in metrics


FORMAT_DATA = {
    "pair_score": ({"s1": S1, "s2": S2, "score": [0.1 * i for i in range(8)]}, "EmbeddingSimilarityEvaluator"),
    "pair_binary": ({"s1": S1, "s2": S2, "label": BINARY}, "BinaryClassificationEvaluator"),
    "triplets": ({"anchor": S1, "positive": S2, "negative": S3}, "TripletEvaluator"),
    "anchor_positive_pairs": ({"anchor": S1, "positive": S2}, "InformationRetrievalEvaluator"),
    "sentence_class": ({"text": S1 + S2, "label": [i % 3 for i in range(16)]}, "InformationRetrievalEvaluator"),
}


@pytest.mark.parametrize("format_key", list(FORMAT_DATA))
def test_default_evaluator_by_format(tiny_model, format_key):
    columns, expected = FORMAT_DATA[format_key]
    data = datasets.Dataset.from_dict(columns)
    evaluator = evaluator_for(data, detect_format(data), None, "dev", 16, {})
    assert type(evaluator).__name__ == expected
    metrics = evaluator(tiny_model)
    assert evaluator.primary_metric in metrics and all(name.startswith("dev_") for name in metrics)


def test_bad_evaluation_input_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match="equal lengths"):
        BinaryClassificationEvaluator(S1, S2[:3], BINARY)
    with pytest.raises(ValueError, match="equal lengths"):
        TripletEvaluator(S1, S2, S3[:2])
    with pytest.raises(ValueError, match="corpus is empty"):
        InformationRetrievalEvaluator(QUERIES, {}, {})
    with pytest.raises(ValueError, match=r"1 document id\(s\) not in the corpus, e.g. \['d99'\]"):
        InformationRetrievalEvaluator(QUERIES, CORPUS, {"q0": {"d99"}})
    triplets = datasets.Dataset.from_dict({"anchor": S1, "positive": S2, "negative": S3})
    with pytest.raises(EmbedlabError, match="BinaryClassificationEvaluator does not suit evaluation data"):
        evaluator_for(triplets, detect_format(triplets), "BinaryClassificationEvaluator", "x", 16, {})


def test_all_equal_gold_scores_give_nan_with_a_warning(tiny_model):
    from embedlab.evaluation import EmbeddingSimilarityEvaluator

    with pytest.warns(Warning, match="constant"):
        metrics = EmbeddingSimilarityEvaluator(S1, S2, [0.5] * 8, name="flat")(tiny_model)
    assert metrics["flat_spearman_cosine"] != metrics["flat_spearman_cosine"]  # NaN, documented


def test_mse_translation_reranking_and_sequential_match_sentence_transformers(both_models, tiny_guide_path):
    import sentence_transformers
    from sentence_transformers import evaluation as reference

    from embedlab.evaluation import (
        MSEEvaluator,
        RerankingEvaluator,
        SequentialEvaluator,
        TranslationEvaluator,
    )

    ours, st_model = both_models
    our_teacher = EmbeddingModel(str(tiny_guide_path), device="cpu")
    st_teacher = sentence_transformers.SentenceTransformer(str(tiny_guide_path), device="cpu")
    _assert_same_metrics(MSEEvaluator(S1, S2, teacher_model=our_teacher, name="mse")(ours), reference.MSEEvaluator(S1, S2, teacher_model=st_teacher, name="mse")(st_model))
    _assert_same_metrics(TranslationEvaluator(S1, S2, name="tr")(ours), reference.TranslationEvaluator(S1, S2, name="tr")(st_model))
    samples = [{"query": S1[i], "positive": [S2[i]], "negative": [S3[i], S3[(i + 1) % 8]]} for i in range(8)]
    for kwargs in ({}, {"at_k": 2}):
        _assert_same_metrics(RerankingEvaluator(samples, name="rr", **kwargs)(ours), reference.RerankingEvaluator(samples, name="rr", **kwargs)(st_model))
    ours_sequential = SequentialEvaluator([TripletEvaluator(S1, S2, S3, name="a"), TranslationEvaluator(S1, S2, name="b")])
    st_sequential = reference.SequentialEvaluator([reference.TripletEvaluator(S1, S2, S3, name="a"), reference.TranslationEvaluator(S1, S2, name="b")])
    _assert_same_metrics(ours_sequential(ours), st_sequential(st_model))


def test_label_accuracy_counts_the_softmax_heads_correct_classes(tiny_model):
    import torch

    from embedlab.evaluation import LabelAccuracyEvaluator
    from embedlab.losses import SoftmaxLoss

    torch.manual_seed(0)
    head = SoftmaxLoss(tiny_model, 32, 3)
    with torch.inference_mode():
        features = [tiny_model.tokenize(S1), tiny_model.tokenize(S2)]
        predicted = head(features, None)[1].argmax(dim=1).tolist()
    labels = [p if i % 2 else (p + 1) % 3 for i, p in enumerate(predicted)]  # half right by construction
    assert LabelAccuracyEvaluator(S1, S2, labels, softmax_model=head, name="nli", batch_size=3)(tiny_model) == {"nli_accuracy": 0.5}


def test_beir_folder_evaluator(tmp_path, tiny_model):
    import json

    from embedlab.evaluation import BEIREvaluator

    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"_id": cid, "title": "", "text": text}) + "\n" for cid, text in CORPUS.items()))
    (tmp_path / "queries.jsonl").write_text("".join(json.dumps({"_id": qid, "text": text}) + "\n" for qid, text in QUERIES.items()))
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, docs in RELEVANT.items() for d in sorted(docs)))
    beir = BEIREvaluator(tmp_path, name="mini")(tiny_model)
    assert beir == InformationRetrievalEvaluator(QUERIES, CORPUS, RELEVANT, name="mini")(tiny_model)
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\tnope\t1\n")
    with pytest.raises(EmbedlabError, match="not in the corpus"):
        BEIREvaluator(tmp_path)
    with pytest.raises(EmbedlabError, match="lacks"):
        BEIREvaluator(tmp_path, split="dev")


def test_truncate_dim_list_evaluates_every_matryoshka_size_in_one_call(tiny_model):
    data = datasets.Dataset.from_dict({"s1": S1, "s2": S2, "score": [0.1 * i for i in range(8)]})
    evaluator = evaluator_for(data, detect_format(data), None, "sts", 16, {"truncate_dim": [32, 8]})
    metrics = evaluator(tiny_model)
    assert {"sts_dim32_spearman_cosine", "sts_dim8_spearman_cosine", "sequential_score"} <= set(metrics)
    assert metrics["sequential_score"] == metrics["sts_dim32_spearman_cosine"]


@pytest.mark.parametrize("kwargs", [{}, {"top_k": 2, "max_pairs": 5, "query_chunk_size": 3, "corpus_chunk_size": 4, "add_transitive_closure": True}])
def test_paraphrase_mining_matches_sentence_transformers(both_models, kwargs):
    from sentence_transformers.evaluation import ParaphraseMiningEvaluator as Reference

    from embedlab.evaluation import ParaphraseMiningEvaluator

    ours, reference = both_models
    sentences = {str(i): text for i, text in enumerate(S1 + S2 + S3)}
    duplicates = [("0", "8"), ("1", "9"), ("3", "11"), ("9", "17"), ("4", "20")]
    got = ParaphraseMiningEvaluator(sentences, duplicates, name="pm", **kwargs)(ours)
    _assert_same_metrics(got, Reference(sentences, duplicates, name="pm", **kwargs)(reference))


def test_label_accuracy_matches_sentence_transformers(both_models):
    import torch
    from sentence_transformers import InputExample
    from sentence_transformers import losses as st_losses
    from sentence_transformers.evaluation import LabelAccuracyEvaluator as Reference
    from torch.utils.data import DataLoader

    from embedlab.evaluation import LabelAccuracyEvaluator
    from embedlab.losses import SoftmaxLoss

    ours, reference = both_models
    labels = [0, 1, 2, 1, 0, 2, 2, 1]
    torch.manual_seed(0)
    our_head, st_head = SoftmaxLoss(ours, 32, 3), st_losses.SoftmaxLoss(reference, 32, 3)
    our_head.classifier.load_state_dict(st_head.classifier.state_dict())
    loader = DataLoader([InputExample(texts=[a, b], label=label) for a, b, label in zip(S1, S2, labels, strict=True)], batch_size=3)
    expected = Reference(loader, name="nli", softmax_model=st_head)(reference)
    _assert_same_metrics(LabelAccuracyEvaluator(S1, S2, labels, softmax_model=our_head, name="nli", batch_size=3)(ours), expected)


def test_information_retrieval_breaks_score_ties_by_corpus_id_as_sentence_transformers(both_models):
    from sentence_transformers.evaluation import InformationRetrievalEvaluator as Reference

    ours, reference = both_models
    # Identical documents score identically: which one ranks first decides accuracy@1 and the rest.
    corpus = {"z1": S2[0], "a1": S2[0], "m1": S2[0], "b2": S2[1], "a2": S2[1], **{f"n{i}": text for i, text in enumerate(S3)}}
    relevant = {"q0": {"a1"}, "q1": {"b2"}, "q2": {"m1", "a2"}}
    cutoffs = {"accuracy_at_k": [1, 2], "precision_recall_at_k": [1, 2], "mrr_at_k": [2], "ndcg_at_k": [2], "map_at_k": [2], "corpus_chunk_size": 4}
    got = InformationRetrievalEvaluator(QUERIES, corpus, relevant, name="ties", **cutoffs)(ours)
    _assert_same_metrics(got, Reference(QUERIES, corpus, relevant, name="ties", **cutoffs)(reference))
