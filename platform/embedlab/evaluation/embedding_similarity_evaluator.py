import csv
from pathlib import Path

from scipy.stats import pearsonr, spearmanr

from embedlab.evaluation.common import encode_unique
from embedlab.similarity import PAIRWISE_SIMILARITIES


class EmbeddingSimilarityEvaluator:
    """Correlation between the model's similarities and gold scores for sentence pairs (STS tasks).

    Embeds both sides of every pair, computes their similarity with each requested function and reports
    the Pearson and Spearman correlation with the gold scores. Spearman of the cosine similarity is the
    usual headline number (e.g. `sts-test_spearman_cosine`).

    Args:
        sentences1, sentences2: the two sides of the pairs.
        scores: gold similarity per pair (any scale; only correlation matters).
        batch_size: encoding batch size.
        main_similarity: the similarity whose Spearman is the primary metric; default: the only one, or
            the max over several.
        similarity_fn_names: any of ``cosine``, ``euclidean``, ``manhattan``, ``dot``; default: the model's
            similarity function (cosine).
        name: prefix of every metric name, e.g. ``sts-dev``.
        show_progress_bar: show encoding progress.
        write_csv: append results to ``similarity_evaluation_{name}_results.csv`` in the output folder.
        truncate_dim: evaluate embeddings cut to this many dimensions (Matryoshka models).

    When all gold scores (or all similarities) are equal, the correlation is undefined: the metric is NaN
    and scipy warns (ConstantInputWarning), as in sentence-transformers.

    References:
        - SemEval STS tasks, and the STS Benchmark: https://ixa2.si.ehu.eus/stswiki

    Inputs:
        +--------------------------------+-------------+------------+
        | Inputs                         | Labels      | Format     |
        +================================+=============+============+
        | (sentence_A, sentence_B) pairs | float score | pair_score |
        +--------------------------------+-------------+------------+

    Example:
        evaluator = EmbeddingSimilarityEvaluator(["A cat."], ["A kitten."], [0.9], name="sts-dev")
        results = evaluator(model)  # {"sts-dev_pearson_cosine": ..., "sts-dev_spearman_cosine": ...}
    """

    greater_is_better = True
    formats = ("pair_score",)

    def __init__(
        self,
        sentences1: list[str],
        sentences2: list[str],
        scores: list[float],
        batch_size: int = 16,
        main_similarity: str | None = None,
        similarity_fn_names: list[str] | None = None,
        name: str = "",
        show_progress_bar: bool = False,
        write_csv: bool = True,
        truncate_dim: int | None = None,
    ):
        if not len(sentences1) == len(sentences2) == len(scores):
            raise ValueError(
                f"sentences1, sentences2 and scores must have equal lengths, got "
                f"{len(sentences1)}, {len(sentences2)} and {len(scores)}"
            )
        self.sentences1 = list(sentences1)
        self.sentences2 = list(sentences2)
        self.scores = list(scores)
        self.batch_size = batch_size
        self.main_similarity = main_similarity
        self.similarity_fn_names = list(similarity_fn_names or ([main_similarity] if main_similarity else []))
        self.name = name
        self.show_progress_bar = show_progress_bar
        self.write_csv = write_csv
        self.truncate_dim = truncate_dim
        self.csv_file = f"similarity_evaluation{'_' + name if name else ''}_results.csv"

    @property
    def primary_metric(self) -> str:
        if self.main_similarity:
            metric = f"spearman_{self.main_similarity}"
        elif len(self.similarity_fn_names) > 1:
            metric = "spearman_max"
        else:
            metric = f"spearman_{(self.similarity_fn_names or ['cosine'])[0]}"
        return self._prefixed(metric)

    def _prefixed(self, metric: str) -> str:
        return f"{self.name}_{metric}" if self.name else metric

    def __call__(self, model, output_path: str | Path | None = None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        function_names = self.similarity_fn_names or [model.similarity_fn_name]
        embeddings1, embeddings2 = encode_unique(
            model, self.sentences1, self.sentences2,
            batch_size=self.batch_size, show_progress_bar=self.show_progress_bar, truncate_dim=self.truncate_dim,
        )
        metrics = {}
        for function_name in function_names:
            similarities = PAIRWISE_SIMILARITIES[function_name](embeddings1, embeddings2).numpy()
            metrics[f"pearson_{function_name}"] = float(pearsonr(self.scores, similarities)[0])
            metrics[f"spearman_{function_name}"] = float(spearmanr(self.scores, similarities)[0])
        if output_path is not None and self.write_csv:
            self._append_csv(Path(output_path), function_names, metrics, epoch, steps)
        if len(function_names) > 1:
            metrics["pearson_max"] = max(metrics[f"pearson_{name}"] for name in function_names)
            metrics["spearman_max"] = max(metrics[f"spearman_{name}"] for name in function_names)
        return {self._prefixed(metric): value for metric, value in metrics.items()}

    def _append_csv(self, folder: Path, function_names: list[str], metrics: dict, epoch: int, steps: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / self.csv_file
        columns = [f"{name}_{kind}" for name in function_names for kind in ("pearson", "spearman")]
        new_file = not path.exists()
        with path.open("a", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            if new_file:
                writer.writerow(["epoch", "steps", *columns])
            writer.writerow([epoch, steps, *(metrics[f"{kind}_{name}"] for name in function_names for kind in ("pearson", "spearman"))])

    @classmethod
    def from_data(cls, dataset, detected, **kwargs) -> "EmbeddingSimilarityEvaluator":
        first, second = detected.input_columns
        return cls(dataset[first], dataset[second], dataset[detected.label_column], **kwargs)
