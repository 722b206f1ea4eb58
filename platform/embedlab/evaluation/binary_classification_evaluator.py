import numpy as np

from embedlab.evaluation.common import append_csv, check_lengths, encode_unique, prefixed
from embedlab.similarity import PAIRWISE_SIMILARITIES

METRICS = ("accuracy", "accuracy_threshold", "f1", "precision", "recall", "f1_threshold", "ap", "mcc")


def best_accuracy_and_threshold(scores: np.ndarray, labels: np.ndarray, higher_is_similar: bool) -> tuple[float, float]:
    """The threshold on the score that classifies pairs best, between two neighbouring scores."""
    rows = sorted(zip(scores, labels, strict=True), key=lambda row: row[0], reverse=higher_is_similar)
    score_dtype = np.result_type(np.asarray(scores).dtype, np.float16)
    remaining_negatives = int((labels == 0).sum())
    best_accuracy = remaining_negatives / len(labels)  # everything predicted negative
    best_threshold = np.nextafter(rows[0][0], np.inf if higher_is_similar else -np.inf, dtype=score_dtype)
    positives_so_far = 0
    for i, (score, label) in enumerate(rows):
        if label == 1:
            positives_so_far += 1
        else:
            remaining_negatives -= 1
        is_last = i == len(rows) - 1
        if not is_last and score == rows[i + 1][0]:
            continue  # ties fall on the same side of any threshold
        accuracy = (positives_so_far + remaining_negatives) / len(labels)
        if accuracy > best_accuracy:
            best_accuracy = accuracy
            best_threshold = score if is_last else (score + rows[i + 1][0]) / 2
            if not is_last and best_threshold == rows[i + 1][0]:
                best_threshold = score
    return best_accuracy, best_threshold


def best_f1_and_threshold(scores: np.ndarray, labels: np.ndarray, higher_is_similar: bool) -> tuple[float, float, float, float]:
    rows = sorted(zip(scores, labels, strict=True), key=lambda row: row[0], reverse=higher_is_similar)
    best = (0.0, 0.0, 0.0, 0.0)  # f1, precision, recall, threshold
    predicted = correct = 0
    total_positives = int(labels.sum())
    for i, (score, label) in enumerate(rows):
        predicted += 1
        correct += int(label == 1)
        is_last = i == len(rows) - 1
        if not is_last and score == rows[i + 1][0]:
            continue
        if correct:
            precision, recall = correct / predicted, correct / total_positives
            f1 = 2 * precision * recall / (precision + recall)
            if f1 > best[0]:
                threshold = score if is_last else (score + rows[i + 1][0]) / 2
                if not is_last and threshold == rows[i + 1][0]:
                    threshold = score
                best = (f1, precision, recall, threshold)
    return best


class BinaryClassificationEvaluator:
    """How well the model's similarity separates duplicate (1) from non-duplicate (0) pairs.

    For each similarity function it finds the best accuracy and best F1 (with precision and recall) over
    all thresholds, and reports those thresholds, the average precision and the Matthews correlation at
    the F1 threshold. Average precision is the primary metric: it needs no threshold.

    Args:
        sentences1, sentences2: the two sides of the pairs.
        labels: 1 for similar pairs, 0 for dissimilar ones.
        name: prefix of every metric name.
        batch_size: encoding batch size.
        show_progress_bar: show encoding progress.
        write_csv: append results to ``binary_classification_evaluation_{name}_results.csv``.
        truncate_dim: evaluate embeddings cut to this many dimensions.
        similarity_fn_names: any of ``cosine``, ``dot``, ``euclidean``, ``manhattan``; default the model's.

    References:
        - Quora duplicate questions, MRPC: the usual data for this evaluator.

    Inputs:
        +-----------------------------------+--------+-------------+
        | Inputs                            | Labels | Format      |
        +===================================+========+=============+
        | (anchor, positive/negative) pairs | 1 / 0  | pair_binary |
        +-----------------------------------+--------+-------------+

    Example:
        evaluator = BinaryClassificationEvaluator(["A cat."], ["A car."], [0], name="quora-dev")
        evaluator(model)["quora-dev_cosine_ap"]
    """

    greater_is_better = True
    formats = ("pair_binary",)

    def __init__(
        self,
        sentences1: list[str],
        sentences2: list[str],
        labels: list[int],
        name: str = "",
        batch_size: int = 32,
        show_progress_bar: bool = False,
        write_csv: bool = True,
        truncate_dim: int | None = None,
        similarity_fn_names: list[str] | None = None,
    ):
        check_lengths(sentences1=sentences1, sentences2=sentences2, labels=labels)
        if any(label not in (0, 1) for label in labels):
            raise ValueError("labels must be 0 or 1")
        self.sentences1, self.sentences2, self.labels = list(sentences1), list(sentences2), list(labels)
        self.name = name
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar
        self.write_csv = write_csv
        self.truncate_dim = truncate_dim
        self.similarity_fn_names = list(similarity_fn_names or [])
        self.csv_file = f"binary_classification_evaluation{'_' + name if name else ''}_results.csv"

    @property
    def primary_metric(self) -> str:
        names = self.similarity_fn_names or ["cosine"]
        metric = "max_ap" if len(names) > 1 else f"{names[0]}_ap"
        return f"{self.name}_{metric}" if self.name else metric

    def compute_metrics(self, model) -> dict[str, dict[str, float]]:
        # sklearn takes most of a second to import: only runs that use this evaluator pay for it.
        from sklearn.metrics import average_precision_score, matthews_corrcoef

        first, second = encode_unique(
            model, self.sentences1, self.sentences2,
            batch_size=self.batch_size, show_progress_bar=self.show_progress_bar, truncate_dim=self.truncate_dim,
        )
        labels = np.asarray(self.labels)
        results = {}
        for function_name in self.similarity_fn_names or [model.similarity_fn_name]:
            higher_is_similar = function_name in ("cosine", "dot")
            # Distances (not negated similarities) for euclidean and manhattan, as sentence-transformers reports thresholds.
            scores = PAIRWISE_SIMILARITIES[function_name](first, second).numpy() * (1 if higher_is_similar else -1)
            accuracy, accuracy_threshold = best_accuracy_and_threshold(scores, labels, higher_is_similar)
            f1, precision, recall, f1_threshold = best_f1_and_threshold(scores, labels, higher_is_similar)
            predicted = scores >= f1_threshold if higher_is_similar else scores <= f1_threshold
            results[function_name] = {
                "accuracy": accuracy,
                "accuracy_threshold": accuracy_threshold,
                "f1": f1,
                "f1_threshold": f1_threshold,
                "precision": precision,
                "recall": recall,
                "ap": average_precision_score(labels, scores * (1 if higher_is_similar else -1)),
                "mcc": matthews_corrcoef(labels, predicted),
            }
        return results

    def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        if not self.similarity_fn_names:
            self.similarity_fn_names = [model.similarity_fn_name]
        scores = self.compute_metrics(model)
        header = ["epoch", "steps", *(f"{fn}_{metric}" for fn in scores for metric in METRICS)]
        if self.write_csv:
            append_csv(output_path, self.csv_file, header, [epoch, steps, *(scores[fn][metric] for fn in scores for metric in METRICS)])
        metrics = {f"{fn}_{metric}": float(value) for fn, values in scores.items() for metric, value in values.items()}
        if len(scores) > 1:
            metrics.update({f"max_{metric}": max(float(scores[fn][metric]) for fn in scores) for metric in next(iter(scores.values()))})
        return prefixed(self.name, metrics)

    @classmethod
    def from_data(cls, dataset, detected, **kwargs) -> "BinaryClassificationEvaluator":
        first, second = detected.input_columns
        return cls(dataset[first], dataset[second], [int(label) for label in dataset[detected.label_column]], **kwargs)
