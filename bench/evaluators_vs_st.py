"""embedlab's evaluators vs sentence-transformers', side by side on all-MiniLM-L6-v2: metric values
(largest difference over all metrics) and evaluation throughput (reference seconds / embedlab seconds).

Data: STSb test (score pairs), SICK test as score pairs, as 1/0 pairs and as triplets, and TREC train
questions as retrieval of same-class questions (odd rows query the even rows).

Run:  .venv/bin/python bench/evaluators_vs_st.py [--smoke-test]
"""

import argparse
import json
import time
from pathlib import Path

from embedlab.config import DataSource
from embedlab.data import load_with_format
from embedlab.evaluation import evaluator_for
from embedlab.formats import detect_format
from embedlab.model import DEFAULT_MODEL, EmbeddingModel, resolve_model_path
from sick_data import sick_formats, sick_split, trec

ROOT = Path(__file__).resolve().parents[1]
parser = argparse.ArgumentParser()
parser.add_argument("--smoke-test", action="store_true", help="64 rows per data set")
parser.add_argument("--rounds", type=int, default=3, help="timed rounds per library after the warm-up")
parser.add_argument("--only", nargs="*", help="run only these data sets, e.g. sick-test-binary")
parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "evaluators_vs_st.json"))
args = parser.parse_args()
limit = 64 if args.smoke_test else None

# 1. data, in the format each evaluator reads
stsb, stsb_format = load_with_format(DataSource(str(ROOT / "experiments/data/stsb/test.tsv"), columns=["sentence1", "sentence2", "score"], limit=limit))
sick = sick_formats(sick_split("TEST", limit))
questions = trec("train_5500.label")
questions = questions.select(range(limit)) if limit else questions
cases = {
    "stsb-test": (stsb, stsb_format),
    "sick-test-scores": sick["pair_score"],
    "sick-test-binary": sick["pair_binary"],
    "sick-test-triplets": sick["triplets"],
    "trec-same-class": (questions, detect_format(questions)),
}

# 2. models
from sentence_transformers import SentenceTransformer  # noqa: E402
from sentence_transformers import evaluation as st_evaluation  # noqa: E402

ours = EmbeddingModel(DEFAULT_MODEL, device="cpu")
reference = SentenceTransformer(str(resolve_model_path(DEFAULT_MODEL)), device="cpu")


def reference_evaluator(evaluator):
    """The sentence-transformers evaluator with exactly the inputs of ours."""
    kind = type(evaluator).__name__
    if kind == "EmbeddingSimilarityEvaluator":
        return st_evaluation.EmbeddingSimilarityEvaluator(evaluator.sentences1, evaluator.sentences2, evaluator.scores, name=evaluator.name, batch_size=evaluator.batch_size)
    if kind == "BinaryClassificationEvaluator":
        return st_evaluation.BinaryClassificationEvaluator(evaluator.sentences1, evaluator.sentences2, evaluator.labels, name=evaluator.name, batch_size=evaluator.batch_size)
    if kind == "TripletEvaluator":
        return st_evaluation.TripletEvaluator(evaluator.anchors, evaluator.positives, evaluator.negatives, name=evaluator.name, batch_size=evaluator.batch_size)
    queries = dict(zip(evaluator.queries_ids, evaluator.queries, strict=True))
    corpus = dict(zip(evaluator.corpus_ids, evaluator.corpus, strict=True))
    return st_evaluation.InformationRetrievalEvaluator(queries, corpus, evaluator.relevant_docs, name=evaluator.name, batch_size=evaluator.batch_size)


def timed(evaluator, model) -> tuple[dict, float]:
    start = time.perf_counter()
    metrics = evaluator(model)
    return metrics, time.perf_counter() - start


# 3. side by side: a warm-up pass each, then alternating rounds; the fastest round of each library
# counts, so a busy moment on the machine cannot tilt the ratio
results = []
for name, (dataset, detected) in cases.items():
    if args.only and name not in args.only:
        continue
    evaluator = evaluator_for(dataset, detected, None, name, 32, {})
    st_evaluator = reference_evaluator(evaluator)
    timed(evaluator, ours)
    timed(st_evaluator, reference)
    our_seconds = st_seconds = float("inf")
    for _ in range(args.rounds):
        our_metrics, seconds = timed(evaluator, ours)
        our_seconds = min(our_seconds, seconds)
        st_metrics, seconds = timed(st_evaluator, reference)
        st_seconds = min(st_seconds, seconds)
    difference = max(abs(our_metrics[key] - float(st_metrics[key])) for key in st_metrics)
    primary = evaluator.primary_metric
    results.append(
        {"data": name, "evaluator": type(evaluator).__name__, "rows": len(dataset), "primary_metric": primary,
         "embedlab": our_metrics[primary], "sentence_transformers": float(st_metrics[primary]), "max_abs_difference": difference,
         "embedlab_seconds": our_seconds, "sentence_transformers_seconds": st_seconds, "throughput_ratio": st_seconds / our_seconds,
         "same_metric_names": set(our_metrics) == set(st_metrics)}
    )
    print(results[-1], flush=True)

# 4. report
Path(args.output).parent.mkdir(parents=True, exist_ok=True)
Path(args.output).write_text(json.dumps(results, indent=2))
print("\n| data | evaluator | rows | primary metric | embedlab | sentence-transformers | max abs diff | throughput ratio |")
print("|---|---|---|---|---|---|---|---|")
for row in results:
    print(
        f"| {row['data']} | {row['evaluator']} | {row['rows']} | {row['primary_metric']} | {row['embedlab']:.4f} | "
        f"{row['sentence_transformers']:.4f} | {row['max_abs_difference']:.1e} | {row['throughput_ratio']:.2f} |"
    )
