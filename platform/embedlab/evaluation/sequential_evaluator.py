class SequentialEvaluator:
    """Runs several evaluators in turn and merges their metrics; `sequential_score` combines their
    primary metrics (by default the last one's), and is the primary metric.

    Use it to evaluate on several data sets at once, or one data set at several Matryoshka sizes.

    Args:
        evaluators: the evaluators, in order.
        main_score_function: list of primary-metric values -> the sequential score. Default: the last.

    Example:
        evaluator = SequentialEvaluator([sts_dev, nli_dev])
        evaluator(model)["sequential_score"]
    """

    greater_is_better = True
    primary_metric = "sequential_score"

    def __init__(self, evaluators, main_score_function=lambda scores: scores[-1]):
        self.evaluators = list(evaluators)
        self.main_score_function = main_score_function

    def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        results, primary_scores = {}, []
        for evaluator in self.evaluators:
            metrics = evaluator(model, output_path, epoch, steps)
            primary_scores.append(metrics[evaluator.primary_metric])
            results.update(metrics)
        results["sequential_score"] = self.main_score_function(primary_scores) if primary_scores else 0.0
        return results
