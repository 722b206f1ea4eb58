import numpy as np
import pytest

from conftest import require_reference
from embedlab.evaluation import EmbeddingSimilarityEvaluator

S1 = ["a man is playing a guitar", "the dog runs in the park", "two cats sit on a table", "what is the capital of france ?", "a red car", "a bird"]
S2 = ["a man plays a flute", "a dog is running", "the cats are sitting", "paris is the capital of france", "a blue boat", "the sky"]
SCORES = [0.8, 0.9, 0.7, 1.0, 0.2, 0.1]
ALL = ["cosine", "euclidean", "manhattan", "dot"]


def test_metric_names_primary_metric_and_csv(tiny_model, tmp_path):
    evaluator = EmbeddingSimilarityEvaluator(S1, S2, SCORES, name="sts-dev", similarity_fn_names=ALL)
    metrics = evaluator(tiny_model, output_path=tmp_path, steps=5)
    assert set(metrics) == {f"sts-dev_{kind}_{fn}" for kind in ("pearson", "spearman") for fn in [*ALL, "max"]}
    assert evaluator.primary_metric == "sts-dev_spearman_max" and evaluator.greater_is_better
    assert EmbeddingSimilarityEvaluator(S1, S2, SCORES, name="d").primary_metric == "d_spearman_cosine"
    csv_lines = (tmp_path / "similarity_evaluation_sts-dev_results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("epoch,steps,cosine_pearson,cosine_spearman") and csv_lines[1].startswith("-1,5,")


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError, match="equal lengths"):
        EmbeddingSimilarityEvaluator(S1, S2[:2], SCORES)


def test_values_match_sentence_transformers(tiny_model_path):
    sentence_transformers = require_reference("sentence_transformers")
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator as Reference

    from embedlab import EmbeddingModel

    ours = EmbeddingSimilarityEvaluator(S1, S2, SCORES, name="sts", similarity_fn_names=ALL)(EmbeddingModel(str(tiny_model_path), device="cpu"))
    reference_model = sentence_transformers.SentenceTransformer(str(tiny_model_path), device="cpu")
    expected = Reference(S1, S2, SCORES, name="sts", similarity_fn_names=ALL)(reference_model)
    assert set(ours) == set(expected)
    for name, value in expected.items():
        assert ours[name] == pytest.approx(value, abs=1e-6), name
    assert np.isfinite(list(ours.values())).all()
