from torch import nn

from embedlab.losses.multiple_negatives_ranking_loss import MultipleNegativesRankingLoss
from embedlab.similarity import cos_sim


class MultipleNegativesSymmetricRankingLoss(MultipleNegativesRankingLoss):
    """MultipleNegativesRankingLoss in both directions: find the positive given the anchor, and the
    anchor given the positive, each with its own softmax, averaged.

    Useful where the relation is symmetric (paraphrases, question-answer retrieval in both ways).

    Args:
        model: the EmbeddingModel to train.
        scale: inverse temperature. Default 20.0.
        similarity_fct: similarity matrix function. Default ``cos_sim``.
        gather_across_devices: gather embeddings across workers with gradients. Default False.

    References:
        - ParaNMT-50M, Wieting and Gimpel, 2018: https://aclanthology.org/P18-1042

    Requirements:
        - The no-duplicates batch sampler (chosen by `sampler: auto`).

    Inputs:
        +---------------------------------------+--------+-----------------------+
        | Inputs                                | Labels | Format                |
        +=======================================+========+=======================+
        | (anchor, positive) pairs              | none   | anchor_positive_pairs |
        +---------------------------------------+--------+-----------------------+

    Relations:
        - It is MultipleNegativesRankingLoss with directions (query_to_doc, doc_to_query) and
          partition_mode per_direction.

    Example:
        loss = MultipleNegativesSymmetricRankingLoss(model)
        loss([model.tokenize(["How old is Paris?"]), model.tokenize(["Paris is 2000 years old."])], None)
    """

    formats = ("anchor_positive_pairs",)
    group_by_length = False  # unmeasured for this loss: random batches unless asked (see MultipleNegativesRankingLoss)
    # The sweep's default search space (embedlab addition): the parameters worth tuning, and where.
    search_space = {"scale": {"loguniform": [5.0, 50.0]}}

    def __init__(self, model: nn.Module, scale: float = 20.0, similarity_fct=cos_sim, gather_across_devices: bool = False):
        super().__init__(
            model,
            scale=scale,
            similarity_fct=similarity_fct,
            gather_across_devices=gather_across_devices,
            directions=("query_to_doc", "doc_to_query"),
            partition_mode="per_direction",
        )

    def get_config_dict(self) -> dict:
        return {"scale": self.scale, "similarity_fct": self.similarity_fct.__name__, "gather_across_devices": self.gather_across_devices}

    @property
    def citation(self) -> str:
        return PARANMT_CITATION


PARANMT_CITATION = """
@inproceedings{wieting-gimpel-2018-paranmt,
    title = "{P}ara{NMT}-50{M}: Pushing the Limits of Paraphrastic Sentence Embeddings with Millions of Machine Translations",
    author = "Wieting, John and Gimpel, Kevin",
    booktitle = "Proceedings of the 56th Annual Meeting of the Association for Computational Linguistics (Volume 1: Long Papers)",
    year = "2018",
    publisher = "Association for Computational Linguistics",
    url = "https://aclanthology.org/P18-1042",
}
"""
