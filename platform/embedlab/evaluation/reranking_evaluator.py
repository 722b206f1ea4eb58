import numpy as np
import torch

from embedlab.evaluation.common import append_csv, prefixed
from embedlab.similarity import cos_sim


class RerankingEvaluator:
    """Re-ranking: for each query, its positive and negative candidates are ranked by similarity;
    reports MAP, MRR@k and NDCG@k (primary) over the queries.

    Args:
        samples: a list of ``{"query": str, "positive": [str, ...], "negative": [str, ...]}``; queries
            without positives or negatives are skipped.
        at_k: the cut-off of MRR and NDCG. Default 10.
        name: prefix of every metric name.
        write_csv: append results to ``RerankingEvaluator_{name}_results_@{k}.csv``.
        similarity_fct: similarity matrix function. Default ``cos_sim``.
        batch_size: encoding batch size.
        show_progress_bar: show encoding progress.
        truncate_dim: evaluate embeddings cut to this many dimensions.

    References:
        - AskUbuntu, SciDocs and StackOverflow re-ranking (MTEB): https://arxiv.org/abs/2210.07316

    Inputs:
        +------------------------------------------------+----------------+--------------------+
        | Inputs                                         | Labels         | Format             |
        +================================================+================+====================+
        | query with positive and negative candidates    | which is which | samples (in code)  |
        +------------------------------------------------+----------------+--------------------+

    Example:
        evaluator = RerankingEvaluator([{"query": "q", "positive": ["p"], "negative": ["n1", "n2"]}], name="askubuntu")
        evaluator(model)["askubuntu_ndcg@10"]
    """

    greater_is_better = True
    formats = ()

    def __init__(self, samples, at_k=10, name="", write_csv=True, similarity_fct=cos_sim, batch_size=64, show_progress_bar=False, truncate_dim=None):
        samples = list(samples.values()) if isinstance(samples, dict) else list(samples)
        as_list = lambda value: [value] if isinstance(value, str) else list(value)  # noqa: E731
        samples = [{"query": s["query"], "positive": as_list(s["positive"]), "negative": as_list(s["negative"])} for s in samples]
        self.samples = [s for s in samples if s["positive"] and s["negative"]]
        if not self.samples:
            raise ValueError("no sample has both positive and negative candidates")
        self.at_k = at_k
        self.name = name
        self.write_csv = write_csv
        self.similarity_fct = similarity_fct
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar
        self.truncate_dim = truncate_dim
        self.csv_file = f"RerankingEvaluator{'_' + name if name else ''}_results_@{at_k}.csv"

    @property
    def primary_metric(self) -> str:
        return f"{self.name}_ndcg@{self.at_k}" if self.name else f"ndcg@{self.at_k}"

    def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        # sklearn takes most of a second to import: only runs that use this evaluator pay for it.
        from sklearn.metrics import average_precision_score, ndcg_score

        encode = dict(batch_size=self.batch_size, show_progress_bar=self.show_progress_bar, convert_to_tensor=True, truncate_dim=self.truncate_dim)
        queries = model.encode([s["query"] for s in self.samples], **encode).float().cpu()
        documents = model.encode([doc for s in self.samples for doc in s["positive"] + s["negative"]], **encode).float().cpu()
        average_precisions, reciprocal_ranks, ndcgs = [], [], []
        start = 0
        for query, sample in zip(queries, self.samples, strict=True):
            relevant = [1] * len(sample["positive"]) + [0] * len(sample["negative"])
            scores = self.similarity_fct(query, documents[start : start + len(relevant)])[0]
            start += len(relevant)
            ranking = torch.argsort(-scores)[: self.at_k].tolist()
            reciprocal_ranks.append(next((1 / (rank + 1) for rank, index in enumerate(ranking) if relevant[index]), 0))
            scores = scores.tolist()
            ndcgs.append(ndcg_score([relevant], [scores], k=self.at_k))
            average_precisions.append(average_precision_score(relevant, scores))
        metrics = {"map": float(np.mean(average_precisions)), f"mrr@{self.at_k}": float(np.mean(reciprocal_ranks)), f"ndcg@{self.at_k}": float(np.mean(ndcgs))}
        if self.write_csv:
            append_csv(output_path, self.csv_file, ["epoch", "steps", "MAP", f"MRR@{self.at_k}", f"NDCG@{self.at_k}"], [epoch, steps, *metrics.values()])
        return prefixed(self.name, metrics)
