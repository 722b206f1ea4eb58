import torch
from torch import Tensor, nn

from embedlab.distributed import gather_columns_with_offset
from embedlab.similarity import cos_sim

DIRECTIONS = ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")


class MultipleNegativesRankingLoss(nn.Module):
    """InfoNCE with in-batch negatives, for (anchor, positive) pairs with optional hard negatives.

    For each anchor a_i, its positive p_i must score higher than every other document in the batch (the
    other anchors' positives and all hard negatives): a cross-entropy over the scaled similarities. The
    bigger the batch, the more negatives and usually the better the model. The standard loss for
    retrieval and paraphrase data that has no labels.

    Args:
        model: the EmbeddingModel to train.
        scale: inverse temperature for the similarities. Default 20.0 (temperature 0.05).
        similarity_fct: similarity matrix between embeddings. Default ``cos_sim``.
        gather_across_devices: gather embeddings from every worker (with gradients), so N workers sharing
            a global batch B see its negatives; shards may differ in size, and with the trainer's shard
            weights the averaged loss and gradients equal one worker's on B. Default False.
        directions: which similarities enter the softmax: ``query_to_doc`` (always), ``query_to_query``,
            ``doc_to_query``, ``doc_to_doc``. Default only ``query_to_doc``.
        partition_mode: ``joint`` (one softmax over all directions) or ``per_direction`` (one each,
            averaged). Default ``joint``.
        hardness_mode: add ``hardness_strength * similarity`` (no gradient) to the logits of
            ``in_batch_negatives``, ``hard_negatives`` or ``all_negatives``, weighting hard ones up. Default None.
        hardness_strength: the weight for `hardness_mode`. Default 0.0.

    References:
        - Efficient Natural Language Response Suggestion for Smart Reply, Henderson et al., 2017:
          https://arxiv.org/abs/1705.00652
        - Representation Learning with Contrastive Predictive Coding, van den Oord et al., 2018:
          https://arxiv.org/abs/1807.03748

    Requirements:
        - The no-duplicates batch sampler (chosen by `sampler: auto`): a repeated text in a batch would be
          a false negative.

    Inputs:
        +-------------------------------------------------+--------+-----------------------+
        | Inputs                                          | Labels | Format                |
        +=================================================+========+=======================+
        | (anchor, positive) pairs                        | none   | anchor_positive_pairs |
        +-------------------------------------------------+--------+-----------------------+
        | (anchor, positive, negative) triplets           | none   | triplets              |
        +-------------------------------------------------+--------+-----------------------+
        | (anchor, positive, negative_1, ..., negative_n) | none   | n_tuples              |
        +-------------------------------------------------+--------+-----------------------+

    Relations:
        - CachedMultipleNegativesRankingLoss computes the same loss with constant memory in the batch size.
        - MultipleNegativesSymmetricRankingLoss also ranks anchors given each positive.
        - GISTEmbedLoss uses a guide model to drop likely false negatives.

    Example:
        model = EmbeddingModel("sentence-transformers/all-MiniLM-L6-v2")
        loss = MultipleNegativesRankingLoss(model)
        anchors, positives = ["What is the capital of France?"], ["Paris is the capital of France."]
        loss([model.tokenize(anchors), model.tokenize(positives)], None).backward()
    """

    formats = ("anchor_positive_pairs", "triplets", "n_tuples")
    batch_sampler = "no_duplicates"
    # Length-grouped batches under `training.group_by_length: auto` (embedlab addition): on SICK triplets they
    # scored +0.0065 test Spearman over random batches (3 seeds, BENCHMARKS.md), so they cost nothing here.
    group_by_length = True
    # The sweep's default search space (embedlab addition): the parameters worth tuning, and where.
    search_space = {"scale": {"loguniform": [5.0, 50.0]}}

    def __init__(
        self,
        model: nn.Module,
        scale: float = 20.0,
        similarity_fct=cos_sim,
        gather_across_devices: bool = False,
        directions: tuple[str, ...] = ("query_to_doc",),
        partition_mode: str = "joint",
        hardness_mode: str | None = None,
        hardness_strength: float = 0.0,
    ):
        super().__init__()
        directions = tuple(directions)
        if "query_to_doc" not in directions or any(d not in DIRECTIONS for d in directions):
            raise ValueError(f"directions must include 'query_to_doc' and come from {DIRECTIONS}, got {directions}")
        if partition_mode not in ("joint", "per_direction"):
            raise ValueError(f"partition_mode must be 'joint' or 'per_direction', got {partition_mode!r}")
        if partition_mode == "per_direction" and {"query_to_query", "doc_to_doc"} & set(directions):
            raise ValueError(
                "partition_mode='per_direction' needs every direction to contain the positive pair; "
                "'query_to_query' and 'doc_to_doc' do not: use partition_mode='joint' with them"
            )
        if hardness_mode not in (None, "in_batch_negatives", "hard_negatives", "all_negatives"):
            raise ValueError("hardness_mode must be None, 'in_batch_negatives', 'hard_negatives' or 'all_negatives'")
        self.model = model
        self.scale = scale
        self.similarity_fct = similarity_fct
        self.gather_across_devices = gather_across_devices
        self.directions = directions
        self.partition_mode = partition_mode
        self.hardness_mode = hardness_mode
        self.hardness_strength = hardness_strength

    def forward(self, sentence_features: list[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        embeddings = self.model.embed(sentence_features)
        return self.compute_loss_from_embeddings(embeddings)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor]) -> Tensor:
        queries, docs = embeddings[0], list(embeddings[1:])
        local_queries, local_positives = queries, docs[0]
        batch_size = queries.size(0)
        offset = 0
        if self.gather_across_devices:
            # Each worker scores only its own queries, against every worker's documents (and, for the
            # directions that need them, every worker's queries). Workers' batches may differ in size:
            # this worker's rows start at `offset`, the rows of the lower ranks.
            needs_queries = bool({"query_to_query", "doc_to_query"} & set(self.directions))
            gathered, offset = gather_columns_with_offset([*docs, queries] if needs_queries else docs)
            docs = gathered[: len(docs)]
            queries = gathered[-1] if needs_queries else None
        world_batch_size = docs[0].size(0)
        all_docs = torch.cat(docs, dim=0)  # positives first, then each column of hard negatives
        local = torch.arange(offset, offset + batch_size, device=local_queries.device)
        rows = torch.arange(batch_size, device=local_queries.device)

        similarities = {"query_to_doc": self.similarity_fct(local_queries, all_docs)}
        if "query_to_query" in self.directions:
            similarities["query_to_query"] = self.similarity_fct(local_queries, queries)
            similarities["query_to_query"][rows, local] = -torch.inf  # a query is not its own negative
        if "doc_to_query" in self.directions:
            similarities["doc_to_query"] = self.similarity_fct(queries, local_positives).T
        if "doc_to_doc" in self.directions:
            similarities["doc_to_doc"] = self.similarity_fct(all_docs, local_positives).T
            own_docs = torch.eye(world_batch_size, device=local_queries.device)[local].repeat(1, len(docs)).bool()
            similarities["doc_to_doc"].masked_fill_(own_docs, -torch.inf)

        penalty = None
        if self.hardness_mode is not None and self.hardness_strength > 0.0:
            # Computed on the raw similarities (before scale), without gradient: Lan et al. 2025, Eq. 5.
            penalty = self.hardness_strength * similarities["query_to_doc"].detach()
            own_docs = torch.eye(world_batch_size, device=local_queries.device, dtype=torch.bool)[local].repeat(1, len(docs))
            if self.hardness_mode == "hard_negatives":
                excluded = ~own_docs
                excluded[:, :world_batch_size] = True
            elif self.hardness_mode == "in_batch_negatives":
                excluded = own_docs
            else:  # all_negatives: everything but the positives
                excluded = own_docs
                excluded[:, world_batch_size:] = False
            penalty[excluded] = 0.0

        scaled = {name: matrix * self.scale for name, matrix in similarities.items()}
        if penalty is not None:
            scaled["query_to_doc"] = scaled["query_to_doc"] + penalty
        positive_scores = scaled["query_to_doc"][rows, local]
        if self.partition_mode == "joint":
            log_partition = torch.logsumexp(torch.cat(list(scaled.values()), dim=1), dim=1)
        else:
            log_partition = sum(torch.logsumexp(matrix, dim=1) for matrix in scaled.values()) / len(scaled)
        return -(positive_scores - log_partition).mean()

    def get_config_dict(self) -> dict:
        return {
            "scale": self.scale,
            "similarity_fct": self.similarity_fct.__name__,
            "gather_across_devices": self.gather_across_devices,
            "directions": self.directions,
            "partition_mode": self.partition_mode,
            "hardness_mode": self.hardness_mode,
            "hardness_strength": self.hardness_strength,
        }

    @property
    def temperature(self) -> float:
        return 1.0 / self.scale

    @property
    def citation(self) -> str:
        return """
@misc{oord2019representationlearningcontrastivepredictive,
      title={Representation Learning with Contrastive Predictive Coding},
      author={Aaron van den Oord and Yazhe Li and Oriol Vinyals},
      year={2019},
      eprint={1807.03748},
      archivePrefix={arXiv},
      primaryClass={cs.LG},
      url={https://arxiv.org/abs/1807.03748},
}
"""
