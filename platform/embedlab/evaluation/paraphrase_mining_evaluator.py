import heapq
from collections import defaultdict

import torch

from embedlab.evaluation.common import append_csv, prefixed
from embedlab.similarity import cos_sim


def mine_paraphrases(embeddings: torch.Tensor, query_chunk_size=5000, corpus_chunk_size=100000, max_pairs=500000, top_k=100) -> list[tuple[float, int, int]]:
    """The most similar pairs (score, i, j), i < j, best first: each sentence's `top_k` neighbours,
    the best `max_pairs` overall. Chunked, so all-pairs scores never sit in memory at once."""
    pairs: list[tuple[float, int, int]] = []  # a min-heap holding the best max_pairs
    queued: set[tuple[int, int]] = set()
    min_score = float("-inf")
    for query_start in range(0, len(embeddings), query_chunk_size):
        queries = embeddings[query_start : query_start + query_chunk_size]
        best_values = best_indices = None
        for corpus_start in range(0, len(embeddings), corpus_chunk_size):
            scores = cos_sim(queries, embeddings[corpus_start : corpus_start + corpus_chunk_size])
            values, indices = torch.topk(scores, min(top_k + 1, scores.shape[1]), dim=1)  # +1: the sentence itself
            indices = indices + corpus_start
            if best_values is not None:
                values, indices = torch.cat([best_values, values], dim=1), torch.cat([best_indices, indices], dim=1)
                values, positions = torch.topk(values, min(top_k + 1, values.shape[1]), dim=1)
                indices = torch.gather(indices, 1, positions)
            best_values, best_indices = values, indices
        for offset, (row_indices, row_values) in enumerate(zip(best_indices.tolist(), best_values.tolist(), strict=True)):
            i = query_start + offset
            neighbours = [(j, score) for j, score in zip(row_indices, row_values, strict=True) if j != i][:top_k]
            for j, score in neighbours:
                if score <= min_score:
                    continue
                pair = (i, j) if i < j else (j, i)
                if pair in queued:
                    continue
                queued.add(pair)
                if len(pairs) < max_pairs:
                    heapq.heappush(pairs, (score, *pair))
                else:
                    evicted = heapq.heappushpop(pairs, (score, *pair))
                    queued.discard(evicted[1:])
                    min_score = evicted[0]
    return sorted(pairs, key=lambda pair: pair[0], reverse=True)


class ParaphraseMiningEvaluator:
    """Paraphrase mining: mine the most similar sentence pairs of a collection and score them against
    the known duplicates: average precision (primary), and the best F1 with its precision, recall and
    similarity threshold.

    Args:
        sentences_map: sentence id -> text.
        duplicates_list: (id, id) pairs that are duplicates; or
        duplicates_dict: id -> {id: True} for duplicates.
        add_transitive_closure: if a ~ b and b ~ c, count a ~ c too. Default False.
        query_chunk_size, corpus_chunk_size: how many sentences are scored at once.
        max_pairs: the most pairs mined. Default 500000.
        top_k: neighbours per sentence. Default 100.
        show_progress_bar: show encoding progress.
        batch_size: encoding batch size.
        name: prefix of every metric name.
        write_csv: append results to ``paraphrase_mining_evaluation_{name}_results.csv``.
        truncate_dim: evaluate embeddings cut to this many dimensions.

    References:
        - Quora duplicate questions mining: https://sbert.net/examples/sentence_transformer/applications/paraphrase-mining

    Inputs:
        +--------------------------+--------------------------+--------------------+
        | Inputs                   | Labels                   | Format             |
        +==========================+==========================+====================+
        | sentences with ids       | duplicate id pairs       | (built in code)    |
        +--------------------------+--------------------------+--------------------+

    Example:
        evaluator = ParaphraseMiningEvaluator({"1": "A cat.", "2": "A kitten.", "3": "A car."}, [("1", "2")], name="quora")
        evaluator(model)["quora_average_precision"]
    """

    greater_is_better = True
    formats = ()

    def __init__(
        self,
        sentences_map: dict[str, str],
        duplicates_list: list[tuple[str, str]] | None = None,
        duplicates_dict: dict[str, dict[str, bool]] | None = None,
        add_transitive_closure: bool = False,
        query_chunk_size: int = 5000,
        corpus_chunk_size: int = 100000,
        max_pairs: int = 500000,
        top_k: int = 100,
        show_progress_bar: bool = False,
        batch_size: int = 16,
        name: str = "",
        write_csv: bool = True,
        truncate_dim: int | None = None,
    ):
        self.ids, self.sentences = list(sentences_map), list(sentences_map.values())
        self.duplicates = defaultdict(lambda: defaultdict(bool))
        for first, seconds in (duplicates_dict or {}).items():
            for second, is_duplicate in seconds.items():
                self.duplicates[first][second] = is_duplicate
        for first, second in duplicates_list or []:
            if first in sentences_map and second in sentences_map:
                self.duplicates[first][second] = self.duplicates[second][first] = True
        if add_transitive_closure:
            self._close_transitively()
        self.total_duplicates = len(
            {tuple(sorted((a, b))) for a in self.duplicates for b in self.duplicates[a] if a in sentences_map and b in sentences_map and (self.duplicates[a][b] or self.duplicates[b][a])}
        )
        self.query_chunk_size, self.corpus_chunk_size = query_chunk_size, corpus_chunk_size
        self.max_pairs, self.top_k = max_pairs, top_k
        self.show_progress_bar = show_progress_bar
        self.batch_size = batch_size
        self.name = name
        self.write_csv = write_csv
        self.truncate_dim = truncate_dim
        self.csv_file = f"paraphrase_mining_evaluation{'_' + name if name else ''}_results.csv"

    def _close_transitively(self) -> None:
        seen = set()
        for start in list(self.duplicates):
            if start in seen:
                continue
            component, queue = {start}, [node for node, linked in self.duplicates[start].items() if linked]
            while queue:
                node = queue.pop(0)
                if node not in component:
                    component.add(node)
                    queue.extend(other for other, linked in self.duplicates[node].items() if linked)
            for a in component:
                for b in component:
                    if a != b:
                        self.duplicates[a][b] = True
            seen |= component

    @property
    def primary_metric(self) -> str:
        return f"{self.name}_average_precision" if self.name else "average_precision"

    def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        embeddings = model.encode(self.sentences, batch_size=self.batch_size, show_progress_bar=self.show_progress_bar, convert_to_tensor=True, truncate_dim=self.truncate_dim).float().cpu()
        pairs = mine_paraphrases(embeddings, self.query_chunk_size, self.corpus_chunk_size, self.max_pairs, self.top_k)
        extracted = correct = previous_correct = 0
        best_f1 = best_precision = best_recall = threshold = average_precision = 0.0
        for index, (score, i, j) in enumerate(pairs):
            extracted += 1
            first, second = self.ids[i], self.ids[j]
            correct += int(self.duplicates[first][second] or self.duplicates[second][first])
            if index + 1 < len(pairs) and pairs[index + 1][0] == score:
                continue  # tied pairs count together
            if correct > previous_correct:
                precision = correct / extracted
                recall = correct / self.total_duplicates if self.total_duplicates else 0.0
                f1 = 2 * precision * recall / (precision + recall)
                average_precision += precision * (correct - previous_correct)
                if f1 > best_f1:
                    best_f1, best_precision, best_recall = f1, precision, recall
                    threshold = (score + pairs[min(index + 1, len(pairs) - 1)][0]) / 2
            previous_correct = correct
        average_precision = average_precision / self.total_duplicates if self.total_duplicates else 0.0
        metrics = {"average_precision": average_precision, "f1": best_f1, "precision": best_precision, "recall": best_recall, "threshold": threshold}
        if self.write_csv:
            append_csv(output_path, self.csv_file, ["epoch", "steps", *metrics], [epoch, steps, *metrics.values()])
        return prefixed(self.name, metrics)
