import numpy as np
import torch
from tqdm.auto import trange

from embedlab.evaluation.common import append_csv, prefixed
from embedlab.similarity import SIMILARITIES


class InformationRetrievalEvaluator:
    """Retrieval quality: each query ranks the whole corpus, and the ranks of its relevant documents give
    accuracy@k, precision@k, recall@k, MRR@k, NDCG@k and MAP@k per score function.

    The corpus is embedded in chunks of `corpus_chunk_size`, keeping only each query's best `max k`
    hits per chunk, so corpora larger than memory can be scored. Ties rank by corpus id, as in
    sentence-transformers, so results are identical there and here.

    Args:
        queries: query id -> text.
        corpus: document id -> text.
        relevant_docs: query id -> set of relevant document ids (queries without any are skipped).
        corpus_chunk_size: documents embedded and scored at once. Default 50000.
        mrr_at_k, ndcg_at_k, accuracy_at_k, precision_recall_at_k, map_at_k: the cut-offs.
        show_progress_bar: show chunk progress.
        batch_size: encoding batch size.
        name: prefix of every metric name.
        write_csv: append results to ``Information-Retrieval_evaluation_{name}_results.csv``.
        truncate_dim: evaluate embeddings cut to this many dimensions.
        score_functions: name -> similarity matrix function, or a list of names (``cosine``, ``dot``,
            ``euclidean``, ``manhattan``); default: the model's similarity.
        main_score_function: whose NDCG is the primary metric; default: the best one.
        query_prompt, corpus_prompt: text put before queries / documents.

    References:
        - Mean reciprocal rank, NDCG, MAP: standard IR metrics (e.g. BEIR, Thakur et al., 2021:
          https://arxiv.org/abs/2104.08663).

    Inputs:
        +-------------------------------------+------------------------------+-----------------------+
        | Inputs                              | Relevance                    | Format                |
        +=====================================+==============================+=======================+
        | (anchor, positive) pairs            | each anchor's own positive   | anchor_positive_pairs |
        +-------------------------------------+------------------------------+-----------------------+
        | single sentences + class            | other sentences of its class | sentence_class        |
        +-------------------------------------+------------------------------+-----------------------+

    Example:
        evaluator = InformationRetrievalEvaluator({"q1": "capital of France?"}, {"d1": "Paris is the capital."}, {"q1": {"d1"}}, name="ir")
        evaluator(model)["ir_cosine_ndcg@10"]
    """

    greater_is_better = True
    formats = ("anchor_positive_pairs", "sentence_class")

    def __init__(
        self,
        queries: dict[str, str],
        corpus: dict[str, str],
        relevant_docs: dict[str, set[str]],
        corpus_chunk_size: int = 50000,
        mrr_at_k: list[int] = (10,),
        ndcg_at_k: list[int] = (10,),
        accuracy_at_k: list[int] = (1, 3, 5, 10),
        precision_recall_at_k: list[int] = (1, 3, 5, 10),
        map_at_k: list[int] = (100,),
        show_progress_bar: bool = False,
        batch_size: int = 32,
        name: str = "",
        write_csv: bool = True,
        truncate_dim: int | None = None,
        score_functions: dict | list[str] | None = None,
        main_score_function: str | None = None,
        query_prompt: str | None = None,
        corpus_prompt: str | None = None,
    ):
        if not corpus:
            raise ValueError("the corpus is empty: give at least one document")
        unknown = sorted({doc for docs in relevant_docs.values() for doc in docs} - set(corpus))
        if unknown:
            raise ValueError(f"relevant_docs names {len(unknown)} document id(s) not in the corpus, e.g. {unknown[:3]}")
        self.queries_ids = [qid for qid in queries if relevant_docs.get(qid)]
        if not self.queries_ids:
            raise ValueError("no query has a relevant document")
        self.queries = [queries[qid] for qid in self.queries_ids]
        self.corpus_ids = list(corpus)
        self.corpus = [corpus[cid] for cid in self.corpus_ids]
        self.relevant_docs = relevant_docs
        self.corpus_chunk_size = corpus_chunk_size
        self.mrr_at_k, self.ndcg_at_k, self.accuracy_at_k = list(mrr_at_k), list(ndcg_at_k), list(accuracy_at_k)
        self.precision_recall_at_k, self.map_at_k = list(precision_recall_at_k), list(map_at_k)
        self.show_progress_bar = show_progress_bar
        self.batch_size = batch_size
        self.name = name
        self.write_csv = write_csv
        self.truncate_dim = truncate_dim
        if isinstance(score_functions, (list, tuple)):
            score_functions = {function: SIMILARITIES[function] for function in score_functions}
        self.score_functions = score_functions
        self.main_score_function = main_score_function
        self.query_prompt, self.corpus_prompt = query_prompt, corpus_prompt
        self.csv_file = f"Information-Retrieval_evaluation{'_' + name if name else ''}_results.csv"
        self._last_best = None
        # Ties rank by corpus id: each document's position among the sorted ids.
        order = sorted(range(len(self.corpus_ids)), key=lambda i: self.corpus_ids[i])
        self.id_ranks = np.empty(len(order), dtype=np.int64)
        self.id_ranks[order] = np.arange(len(order))

    @property
    def max_k(self) -> int:
        return max(*self.mrr_at_k, *self.ndcg_at_k, *self.accuracy_at_k, *self.precision_recall_at_k, *self.map_at_k)

    @property
    def primary_metric(self) -> str:
        function = self.main_score_function or self._last_best or "cosine"
        metric = f"{function}_ndcg@{max(self.ndcg_at_k)}"
        return f"{self.name}_{metric}" if self.name else metric

    def _encode(self, model, texts: list[str], prompt: str | None):
        return model.encode(texts, batch_size=self.batch_size, convert_to_tensor=True, truncate_dim=self.truncate_dim, prompt=prompt).float().cpu()

    def top_hits(self, model) -> dict[str, list[list[tuple[str, float]]]]:
        """Per score function, per query: the best `max_k` (corpus id, score), best first."""
        functions = self.score_functions or {model.similarity_fn_name: SIMILARITIES[model.similarity_fn_name]}
        queries = self._encode(model, self.queries, self.query_prompt)
        hits = {name: [[] for _ in self.queries] for name in functions}
        for start in trange(0, len(self.corpus), self.corpus_chunk_size, desc="Corpus chunks", disable=not self.show_progress_bar):
            documents = self._encode(model, self.corpus[start : start + self.corpus_chunk_size], self.corpus_prompt)
            ranks = self.id_ranks[start : start + len(documents)]
            for name, function in functions.items():
                scores = function(queries, documents)
                k = min(self.max_k, scores.shape[1])
                values, indices = torch.topk(scores, k, dim=1)
                # Where the k-th score is tied beyond k, which tied documents make the cut depends on id order.
                tied = ((scores >= values[:, -1:]).sum(dim=1) > k).tolist()
                values, indices = values.tolist(), indices.tolist()
                for query_index in range(len(self.queries)):
                    if tied[query_index]:
                        row = scores[query_index].numpy()
                        best = np.lexsort((ranks, -row))[:k]  # score descending, then corpus id
                        candidates = [(i, float(row[i])) for i in best]
                    else:
                        candidates = zip(indices[query_index], values[query_index], strict=True)
                    merged = hits[name][query_index] + [(self.corpus_ids[start + i], score, ranks[i]) for i, score in candidates]
                    merged.sort(key=lambda hit: (-hit[1], hit[2]))
                    hits[name][query_index] = merged[: self.max_k]
        return {name: [[(cid, score) for cid, score, _ in query] for query in per_query] for name, per_query in hits.items()}

    def compute_metrics(self, query_hits: list[list[tuple[str, float]]]) -> dict[str, dict[int, float]]:
        results = {metric: {k: [] for k in ks} for metric, ks in (
            ("accuracy@k", self.accuracy_at_k), ("precision@k", self.precision_recall_at_k), ("recall@k", self.precision_recall_at_k),
            ("ndcg@k", self.ndcg_at_k), ("mrr@k", self.mrr_at_k), ("map@k", self.map_at_k),
        )}
        for query_id, hits in zip(self.queries_ids, query_hits, strict=True):
            relevant = self.relevant_docs[query_id]
            is_relevant = [cid in relevant for cid, _ in hits]
            for k in self.accuracy_at_k:
                results["accuracy@k"][k].append(float(any(is_relevant[:k])))
            for k in self.precision_recall_at_k:
                results["precision@k"][k].append(sum(is_relevant[:k]) / k)
                results["recall@k"][k].append(sum(is_relevant[:k]) / len(relevant))
            for k in self.mrr_at_k:
                first = next((rank for rank, hit in enumerate(is_relevant[:k]) if hit), None)
                results["mrr@k"][k].append(0.0 if first is None else 1.0 / (first + 1))
            for k in self.ndcg_at_k:
                ideal = sum(1 / np.log2(rank + 2) for rank in range(min(len(relevant), k)))
                results["ndcg@k"][k].append(sum(hit / np.log2(rank + 2) for rank, hit in enumerate(is_relevant[:k])) / ideal)
            for k in self.map_at_k:
                found, precision_sum = 0, 0.0
                for rank, hit in enumerate(is_relevant[:k]):
                    if hit:
                        found += 1
                        precision_sum += found / (rank + 1)
                results["map@k"][k].append(precision_sum / min(k, len(relevant)))
        return {metric: {k: float(np.mean(values)) for k, values in by_k.items()} for metric, by_k in results.items()}

    def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        scores = {name: self.compute_metrics(hits) for name, hits in self.top_hits(model).items()}
        if self.write_csv:
            header, row = ["epoch", "steps"], [epoch, steps]
            for name in sorted(scores):
                for k in self.accuracy_at_k:
                    header.append(f"{name}-Accuracy@{k}")
                    row.append(scores[name]["accuracy@k"][k])
                for k in self.precision_recall_at_k:
                    header += [f"{name}-Precision@{k}", f"{name}-Recall@{k}"]
                    row += [scores[name]["precision@k"][k], scores[name]["recall@k"][k]]
                for label, metric, ks in (("MRR", "mrr@k", self.mrr_at_k), ("NDCG", "ndcg@k", self.ndcg_at_k), ("MAP", "map@k", self.map_at_k)):
                    for k in ks:
                        header.append(f"{name}-{label}@{k}")
                        row.append(scores[name][metric][k])
            append_csv(output_path, self.csv_file, header, row)
        best_k = max(self.ndcg_at_k)
        self._last_best = max(sorted(scores), key=lambda name: scores[name]["ndcg@k"][best_k])
        metrics = {
            f"{function}_{metric.replace('@k', f'@{k}')}": value
            for function, by_metric in scores.items()
            for metric, by_k in by_metric.items()
            for k, value in by_k.items()
        }
        return prefixed(self.name, metrics)

    @classmethod
    def from_data(cls, dataset, detected, **kwargs) -> "InformationRetrievalEvaluator":
        """anchor-positive pairs: each anchor retrieves its positive(s) among all positives.
        sentences + class: odd rows query the even rows; the same class is relevant."""
        if detected.format.key == "sentence_class":
            texts, labels = dataset[detected.input_columns[0]], dataset[detected.label_column]
            corpus = {f"d{i}": texts[i] for i in range(0, len(texts), 2)}
            by_label: dict = {}
            for i in range(0, len(texts), 2):
                by_label.setdefault(labels[i], set()).add(f"d{i}")
            queries = {f"q{i}": texts[i] for i in range(1, len(texts), 2)}
            relevant = {f"q{i}": by_label.get(labels[i], set()) for i in range(1, len(texts), 2)}
            return cls(queries, corpus, relevant, **kwargs)
        anchors, positives = dataset[detected.input_columns[0]], dataset[detected.input_columns[1]]
        corpus_ids = {text: f"d{i}" for i, text in enumerate(dict.fromkeys(positives))}
        query_ids = {text: f"q{i}" for i, text in enumerate(dict.fromkeys(anchors))}
        relevant: dict = {}
        for anchor, positive in zip(anchors, positives, strict=True):
            relevant.setdefault(query_ids[anchor], set()).add(corpus_ids[positive])
        return cls({qid: text for text, qid in query_ids.items()}, {cid: text for text, cid in corpus_ids.items()}, relevant, **kwargs)

