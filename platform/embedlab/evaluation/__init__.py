"""Evaluators: called with a model, they return `{f"{name}_{metric}": float}` as sentence-transformers names
them, and declare `primary_metric` and `greater_is_better`. One module per evaluator."""

from embedlab.config import EvaluatorConfig
from embedlab.data import load_with_format
from embedlab.errors import EmbedlabError
from embedlab.evaluation.beir_evaluator import BEIREvaluator
from embedlab.evaluation.binary_classification_evaluator import BinaryClassificationEvaluator
from embedlab.evaluation.embedding_similarity_evaluator import EmbeddingSimilarityEvaluator
from embedlab.evaluation.information_retrieval_evaluator import InformationRetrievalEvaluator
from embedlab.evaluation.label_accuracy_evaluator import LabelAccuracyEvaluator
from embedlab.evaluation.mse_evaluator import MSEEvaluator
from embedlab.evaluation.paraphrase_mining_evaluator import ParaphraseMiningEvaluator
from embedlab.evaluation.reranking_evaluator import RerankingEvaluator
from embedlab.evaluation.sequential_evaluator import SequentialEvaluator
from embedlab.evaluation.translation_evaluator import TranslationEvaluator
from embedlab.evaluation.triplet_evaluator import TripletEvaluator

# Evaluators a config or `embedlab evaluate` can build from a data file. The others (LabelAccuracy,
# MSE, Reranking, ParaphraseMining, Sequential, BEIR) take inputs a table does not hold: built in code.
EVALUATORS = {
    evaluator.__name__: evaluator
    for evaluator in (EmbeddingSimilarityEvaluator, BinaryClassificationEvaluator, TripletEvaluator, InformationRetrievalEvaluator, TranslationEvaluator)
}
# The evaluator a data format gets when the config names none.
DEFAULT_EVALUATOR_FOR_FORMAT = {
    "pair_score": EmbeddingSimilarityEvaluator,
    "pair_binary": BinaryClassificationEvaluator,
    "triplets": TripletEvaluator,
    "anchor_positive_pairs": InformationRetrievalEvaluator,  # each anchor retrieves its positive among all positives
    "sentence_class": InformationRetrievalEvaluator,  # sentences retrieve others of their class
}

__all__ = [
    "EVALUATORS",
    *EVALUATORS,
    "BEIREvaluator",
    "LabelAccuracyEvaluator",
    "MSEEvaluator",
    "ParaphraseMiningEvaluator",
    "RerankingEvaluator",
    "SequentialEvaluator",
    "build_evaluator",
    "evaluator_for",
]


def build_evaluator(config: EvaluatorConfig, show_progress_bar: bool = False, where: str | None = None):
    """`where`: the entry's config key (evaluators.0), named in errors about its data's columns."""
    dataset, detected = load_with_format(config.data, where=where and f"{where}.data")
    return evaluator_for(dataset, detected, config.type, config.name, config.batch_size, config.params, show_progress_bar, where=config.data.path)


def evaluator_for(dataset, detected, type_name, name, batch_size, params, show_progress_bar=False, where=""):
    """The named evaluator (or the format's default) for a loaded data set, with a one-line error otherwise."""
    if type_name is None:
        if detected.format.key not in DEFAULT_EVALUATOR_FOR_FORMAT:
            raise EmbedlabError(
                f"no default evaluator for evaluation data '{where}' ({detected.describe()}): "
                f"name one with `type`: {', '.join(EVALUATORS)}"
            )
        evaluator_class = DEFAULT_EVALUATOR_FOR_FORMAT[detected.format.key]
    elif type_name in EVALUATORS:
        evaluator_class = EVALUATORS[type_name]
    else:
        raise EmbedlabError(f"unknown evaluator '{type_name}': known evaluators are {', '.join(EVALUATORS)}")
    if detected.format.key not in evaluator_class.formats:
        raise EmbedlabError(
            f"{evaluator_class.__name__} does not suit evaluation data '{where}': it is {detected.describe()}; "
            f"{evaluator_class.__name__} reads {', '.join(evaluator_class.formats)}"
        )
    try:
        dims = params.get("truncate_dim")
        if isinstance(dims, list):  # Matryoshka: one evaluator per size, all in one call
            return SequentialEvaluator(
                [
                    evaluator_class.from_data(dataset, detected, name=f"{name}_dim{dim}", batch_size=batch_size, show_progress_bar=show_progress_bar, **{**params, "truncate_dim": dim})
                    for dim in dims
                ],
                main_score_function=lambda scores: scores[0],  # the first size listed, usually the full one
            )
        return evaluator_class.from_data(dataset, detected, name=name, batch_size=batch_size, show_progress_bar=show_progress_bar, **params)
    except (TypeError, ValueError) as error:
        raise EmbedlabError(f"evaluator '{name}' ({evaluator_class.__name__}): {error}") from None
