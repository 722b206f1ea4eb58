from embedlab.evaluation.common import append_csv, check_lengths, encode_unique, prefixed
from embedlab.similarity import PAIRWISE_SIMILARITIES


class TripletEvaluator:
    """The share of (anchor, positive, negative) triplets where the anchor is more similar to the
    positive than to the negative (by `margin`), per similarity function.

    Args:
        anchors, positives, negatives: the triplets' three sides.
        main_similarity_function: the function whose accuracy is primary; default: the only one, or the max.
        margin: how much more similar the positive must be: one number, or one per function. Default 0.
        name: prefix of every metric name.
        batch_size: encoding batch size.
        show_progress_bar: show encoding progress.
        write_csv: append results to ``triplet_evaluation_{name}_results.csv``.
        truncate_dim: evaluate embeddings cut to this many dimensions.
        similarity_fn_names: any of ``cosine``, ``dot``, ``euclidean``, ``manhattan``; default the model's.

    References:
        - The standard evaluation for triplet data, e.g. AllNLI (anchor, entailed, contradicted).

    Inputs:
        +---------------------------------------+--------+----------+
        | Inputs                                | Labels | Format   |
        +=======================================+========+==========+
        | (anchor, positive, negative) triplets | none   | triplets |
        +---------------------------------------+--------+----------+

    Example:
        evaluator = TripletEvaluator(["A cat."], ["A kitten."], ["A car."], name="nli-dev")
        evaluator(model)["nli-dev_cosine_accuracy"]
    """

    greater_is_better = True
    formats = ("triplets",)

    def __init__(
        self,
        anchors: list[str],
        positives: list[str],
        negatives: list[str],
        main_similarity_function: str | None = None,
        margin: float | dict[str, float] | None = None,
        name: str = "",
        batch_size: int = 16,
        show_progress_bar: bool = False,
        write_csv: bool = True,
        truncate_dim: int | None = None,
        similarity_fn_names: list[str] | None = None,
    ):
        check_lengths(anchors=anchors, positives=positives, negatives=negatives)
        self.anchors, self.positives, self.negatives = list(anchors), list(positives), list(negatives)
        self.main_similarity_function = main_similarity_function
        self.similarity_fn_names = list(similarity_fn_names or ([main_similarity_function] if main_similarity_function else []))
        unknown = sorted(set(self.similarity_fn_names) - set(PAIRWISE_SIMILARITIES))
        if unknown:
            raise ValueError(f"unknown similarity functions {unknown}: choose from {', '.join(PAIRWISE_SIMILARITIES)}")
        if margin is None or isinstance(margin, (int, float)):
            self.margin = dict.fromkeys(PAIRWISE_SIMILARITIES, margin or 0)
        else:
            unknown = sorted(set(margin) - set(PAIRWISE_SIMILARITIES))
            if unknown:
                raise ValueError(f"margin has unknown keys {unknown}: choose from {', '.join(PAIRWISE_SIMILARITIES)}")
            self.margin = {**dict.fromkeys(PAIRWISE_SIMILARITIES, 0), **margin}
        self.name = name
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar
        self.write_csv = write_csv
        self.truncate_dim = truncate_dim
        self.csv_file = f"triplet_evaluation{'_' + name if name else ''}_results.csv"

    @property
    def primary_metric(self) -> str:
        if self.main_similarity_function:
            metric = f"{self.main_similarity_function}_accuracy"
        elif len(self.similarity_fn_names) > 1:
            metric = "max_accuracy"
        else:
            metric = f"{(self.similarity_fn_names or ['cosine'])[0]}_accuracy"
        return f"{self.name}_{metric}" if self.name else metric

    def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        anchors, positives, negatives = encode_unique(
            model, self.anchors, self.positives, self.negatives,
            batch_size=self.batch_size, show_progress_bar=self.show_progress_bar, truncate_dim=self.truncate_dim,
        )
        if not self.similarity_fn_names:
            self.similarity_fn_names = [model.similarity_fn_name]
        metrics = {}
        for function_name in self.similarity_fn_names:
            similarity = PAIRWISE_SIMILARITIES[function_name]
            wins = similarity(anchors, positives) > similarity(anchors, negatives) + self.margin[function_name]
            metrics[f"{function_name}_accuracy"] = wins.float().mean().item()
        if self.write_csv:
            append_csv(output_path, self.csv_file, ["epoch", "steps", *metrics], [epoch, steps, *metrics.values()])
        if len(self.similarity_fn_names) > 1:
            metrics["max_accuracy"] = max(metrics.values())
        return prefixed(self.name, metrics)

    @classmethod
    def from_data(cls, dataset, detected, **kwargs) -> "TripletEvaluator":
        anchor, positive, negative = detected.input_columns
        return cls(dataset[anchor], dataset[positive], dataset[negative], **kwargs)
