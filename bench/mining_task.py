"""Builds the retrieval task the mining benchmarks use, from the shipped STSb and SICK data.

- Queries and positives: STSb pairs scoring at least 0.8 (sentence1 -> sentence2); the train split's
  are the training pairs (`train_pairs.jsonl`), the test split's are held out for evaluation.
- Corpus (`ir_test.json`, for the InformationRetrievalEvaluator): every distinct STSb (train, dev, test)
  and SICK sentence, less the query sentences of both splits (a query's own text would rank first and
  hide every positive), plus the test positives (the documents to find).
- Mining corpus (`mining_corpus.txt`): that corpus less the test positives, so that no held-out document
  is ever mined as a training negative.

Run:  .venv/bin/python bench/mining_task.py [--output FOLDER]   (default bench/results/mining_task)
"""

import argparse
import json
from pathlib import Path

import pyarrow.csv
import pyarrow.json

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "experiments" / "data"
THRESHOLD = 0.8  # STSb's 4 of 5: the two sentences mean the same


def stsb(split: str):
    return pyarrow.csv.read_csv(DATA / "stsb" / f"{split}.tsv", parse_options=pyarrow.csv.ParseOptions(delimiter="\t", quote_char=False)).to_pylist()


def sick_sentences() -> list[str]:
    sentences = []
    for split in ("train", "dev", "test"):
        for row in pyarrow.json.read_json(DATA / "sick" / f"{split}.jsonl").to_pylist():
            sentences += [row["sentence1"], row["sentence2"]]
    return sentences


def build(output: Path) -> dict:
    output.mkdir(parents=True, exist_ok=True)
    rows = {split: stsb(split) for split in ("train", "dev", "test")}
    train = [(row["sentence1"], row["sentence2"]) for row in rows["train"] if row["score"] >= THRESHOLD]
    test = [(row["sentence1"], row["sentence2"]) for row in rows["test"] if row["score"] >= THRESHOLD]
    queries = {anchor for anchor, _ in train + test}
    test_positives = {positive for _, positive in test}
    everything = dict.fromkeys(sentence for split in rows.values() for row in split for sentence in (row["sentence1"], row["sentence2"]))
    everything.update(dict.fromkeys(sick_sentences()))
    corpus = [text for text in everything if text not in queries or text in test_positives]
    mining_corpus = [text for text in corpus if text not in test_positives]

    (output / "train_pairs.jsonl").write_text("".join(json.dumps({"anchor": a, "positive": p}) + "\n" for a, p in train))
    (output / "mining_corpus.txt").write_text("\n".join(mining_corpus) + "\n")
    corpus_ids = {text: f"d{index}" for index, text in enumerate(corpus)}
    test_queries, relevant = {}, {}
    for anchor, positive in test:
        qid = test_queries.setdefault(anchor, f"q{len(test_queries)}")
        relevant.setdefault(qid, set()).add(corpus_ids[positive])
    ir = {"queries": {qid: text for text, qid in test_queries.items()}, "corpus": {doc: text for text, doc in corpus_ids.items()}, "relevant_docs": {qid: sorted(docs) for qid, docs in relevant.items()}}
    (output / "ir_test.json").write_text(json.dumps(ir))
    sizes = {"train_pairs": len(train), "test_queries": len(test_queries), "corpus": len(corpus), "mining_corpus": len(mining_corpus)}
    (output / "sizes.json").write_text(json.dumps(sizes, indent=2))
    return sizes


def ir_evaluator(folder: Path, name: str = "stsb-ir-test", batch_size: int = 64, corpus_limit: int | None = None):
    """The held-out InformationRetrievalEvaluator (NDCG@10, MRR@10) of a built task folder; `corpus_limit`
    (smoke tests) keeps the relevant documents and that many others."""
    from embedlab.evaluation import InformationRetrievalEvaluator

    ir = json.loads((folder / "ir_test.json").read_text())
    relevant = {qid: set(docs) for qid, docs in ir["relevant_docs"].items()}
    corpus = ir["corpus"]
    if corpus_limit is not None:
        needed = set().union(*relevant.values())
        corpus = {doc: text for index, (doc, text) in enumerate(corpus.items()) if doc in needed or index < corpus_limit}
    return InformationRetrievalEvaluator(ir["queries"], corpus, relevant, name=name, batch_size=batch_size, write_csv=False)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "mining_task"))
    args = parser.parse_args()
    print(json.dumps(build(Path(args.output))))
