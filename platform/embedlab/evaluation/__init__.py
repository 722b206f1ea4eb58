"""Evaluators: called with a model, they return `{f"{name}_{metric}": float}` as sentence-transformers names
them, and declare `primary_metric` and `greater_is_better`. One module per evaluator."""

from embedlab.config import EvaluatorConfig
from embedlab.data import load_with_format
from embedlab.errors import EmbedlabError
from embedlab.evaluation.embedding_similarity_evaluator import EmbeddingSimilarityEvaluator

EVALUATORS = {evaluator.__name__: evaluator for evaluator in (EmbeddingSimilarityEvaluator,)}
# The evaluator a data format gets when the config names none.
DEFAULT_EVALUATOR_FOR_FORMAT = {"pair_score": EmbeddingSimilarityEvaluator}

__all__ = ["EVALUATORS", "EmbeddingSimilarityEvaluator", "build_evaluator"]


def build_evaluator(config: EvaluatorConfig, show_progress_bar: bool = False):
    dataset, detected = load_with_format(config.data)
    if config.type is None:
        if detected.format.key not in DEFAULT_EVALUATOR_FOR_FORMAT:
            raise EmbedlabError(
                f"no default evaluator for evaluation data '{config.data.path}' ({detected.describe()}): "
                f"name one with `type`: {', '.join(EVALUATORS)}"
            )
        evaluator_class = DEFAULT_EVALUATOR_FOR_FORMAT[detected.format.key]
    elif config.type in EVALUATORS:
        evaluator_class = EVALUATORS[config.type]
    else:
        raise EmbedlabError(f"unknown evaluator '{config.type}': known evaluators are {', '.join(EVALUATORS)}")
    try:
        return evaluator_class.from_data(
            dataset, detected, name=config.name, batch_size=config.batch_size,
            show_progress_bar=show_progress_bar, **config.params,
        )
    except (TypeError, ValueError) as error:
        raise EmbedlabError(f"evaluator '{config.name}' ({evaluator_class.__name__}): {error}") from None
