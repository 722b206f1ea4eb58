import csv
import json
from pathlib import Path

from embedlab.errors import EmbedlabError
from embedlab.evaluation.information_retrieval_evaluator import InformationRetrievalEvaluator


def read_beir_folder(folder: str | Path, split: str = "test") -> tuple[dict, dict, dict]:
    """(queries, corpus, relevant_docs) from a BEIR folder: corpus.jsonl, queries.jsonl, qrels/{split}.tsv."""
    folder = Path(folder)
    paths = {"corpus": folder / "corpus.jsonl", "queries": folder / "queries.jsonl", "qrels": folder / "qrels" / f"{split}.tsv"}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise EmbedlabError(f"BEIR folder '{folder}' lacks {', '.join(missing)}: it needs corpus.jsonl, queries.jsonl and qrels/{split}.tsv")

    def rows(path: Path):
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    # A title, where there is one, is part of the document, as BEIR's own evaluation has it.
    corpus = {str(row["_id"]): f"{row.get('title', '')} {row['text']}".strip() for row in rows(paths["corpus"])}
    queries = {str(row["_id"]): row["text"] for row in rows(paths["queries"])}
    relevant: dict[str, set[str]] = {}
    with paths["qrels"].open(encoding="utf-8") as file:
        for row in csv.DictReader(file, delimiter="\t"):
            if int(row["score"]) > 0:
                relevant.setdefault(str(row["query-id"]), set()).add(str(row["corpus-id"]))
    unknown_queries = sorted(set(relevant) - set(queries))
    if unknown_queries:
        raise EmbedlabError(f"qrels name {len(unknown_queries)} query id(s) not in queries.jsonl, e.g. {unknown_queries[:3]}")
    return queries, corpus, relevant


class BEIREvaluator(InformationRetrievalEvaluator):
    """InformationRetrievalEvaluator on a local BEIR-format folder (no hub needed): `corpus.jsonl`
    (`_id`, `title`, `text`), `queries.jsonl` (`_id`, `text`) and `qrels/{split}.tsv`
    (`query-id`, `corpus-id`, `score`; score > 0 is relevant). Same metrics and arguments as
    InformationRetrievalEvaluator.

    Args:
        folder: the BEIR folder.
        split: which qrels file. Default ``test``.
        **kwargs: as InformationRetrievalEvaluator (name, cut-offs, corpus_chunk_size, ...).

    References:
        - BEIR, Thakur et al., 2021: https://arxiv.org/abs/2104.08663

    Example:
        evaluator = BEIREvaluator("data/scifact", name="scifact")
        evaluator(model)["scifact_cosine_ndcg@10"]
    """

    formats = ()

    def __init__(self, folder: str | Path, split: str = "test", **kwargs):
        queries, corpus, relevant = read_beir_folder(folder, split)
        try:
            super().__init__(queries, corpus, relevant, **kwargs)
        except ValueError as error:
            raise EmbedlabError(f"BEIR folder '{folder}': {error}") from None
