"""GISTEmbed: in-batch negatives filtered by a guide model, in a plain and a GradCache (cached) form."""

import torch
from torch import Tensor, nn

from embedlab.distributed import gather_columns_with_offset
from embedlab.losses.gradcache import cached_loss

GIST_CITATION = """
@misc{solatorio2024gistembed,
    title={GISTEmbed: Guided In-sample Selection of Training Negatives for Text Embedding Fine-tuning},
    author={Aivin V. Solatorio},
    year={2024},
    eprint={2402.16829},
    archivePrefix={arXiv},
    primaryClass={cs.LG}
}
"""


def _similarity_matrix(first: Tensor, second: Tensor) -> Tensor:
    return torch.nn.functional.cosine_similarity(first.unsqueeze(1), second.unsqueeze(0), dim=-1)


class GISTEmbedLoss(nn.Module):
    """MultipleNegativesRankingLoss whose in-batch negatives are checked by a guide model: a candidate
    the guide rates at least as similar to the anchor as the true positive is probably a false negative,
    and is left out of the softmax.

    Besides anchor-positive scores it also contrasts anchors with anchors and positives with positives
    (each filtered the same way), and hard negatives when given.

    Args:
        model: the EmbeddingModel to train.
        guide: the guide model (a path or hub id in configs), usually a strong pretrained embedder. It is
            frozen and kept in eval mode.
        temperature: softmax temperature. Default 0.01.
        margin_strategy: ``absolute`` (guide score > positive score - margin) or ``relative``
            (guide score > positive score * (1 - margin)) marks a false negative. Default ``absolute``.
        margin: the margin of `margin_strategy`. Default 0.0.
        contrast_anchors: add anchor-anchor scores. Default True.
        contrast_positives: add positive-positive scores. Default True.
        gather_across_devices: gather embeddings across workers with gradients. Default False.

    References:
        - GISTEmbed, Solatorio, 2024: https://arxiv.org/abs/2402.16829

    Requirements:
        - A guide model; the no-duplicates batch sampler (chosen by `sampler: auto`).

    Inputs:
        +---------------------------------------+--------+-----------------------+
        | Inputs                                | Labels | Format                |
        +=======================================+========+=======================+
        | (anchor, positive) pairs              | none   | anchor_positive_pairs |
        +---------------------------------------+--------+-----------------------+
        | (anchor, positive, negative) triplets | none   | triplets              |
        +---------------------------------------+--------+-----------------------+

    Relations:
        - MultipleNegativesRankingLoss without the guide; CachedGISTEmbedLoss for large batches.

    Example:
        loss = GISTEmbedLoss(model, guide=EmbeddingModel("sentence-transformers/all-MiniLM-L6-v2"))
    """

    formats = ("anchor_positive_pairs", "triplets")
    batch_sampler = "no_duplicates"
    # The sweep's default search space (embedlab addition): the parameters worth tuning, and where.
    search_space = {"temperature": {"loguniform": [0.005, 0.1]}}

    def __init__(
        self,
        model: nn.Module,
        guide: nn.Module,
        temperature: float = 0.01,
        margin_strategy: str = "absolute",
        margin: float = 0.0,
        contrast_anchors: bool = True,
        contrast_positives: bool = True,
        gather_across_devices: bool = False,
    ):
        super().__init__()
        if margin_strategy not in ("absolute", "relative"):
            raise ValueError("margin_strategy must be 'absolute' or 'relative'")
        self.model = model
        self.guide = guide.eval().requires_grad_(False)  # never trained, never dropped out
        self.temperature = temperature
        self.margin_strategy = margin_strategy
        self.margin = margin
        self.contrast_anchors = contrast_anchors
        self.contrast_positives = contrast_positives
        self.gather_across_devices = gather_across_devices
        # Same vocabulary and length limit: the model's tokens feed the guide as they are.
        model_tokenizer, guide_tokenizer = model.transformer.tokenizer, guide.transformer.tokenizer
        self.must_retokenize = model_tokenizer.get_vocab() != guide_tokenizer.get_vocab() or guide.max_seq_length < model.max_seq_length
        self.cross_entropy_loss = nn.CrossEntropyLoss()

    def train(self, mode: bool = True):
        super().train(mode)
        self.guide.eval()
        return self

    @torch.no_grad()
    def guide_embeddings(self, sentence_features: list[dict[str, Tensor]]) -> list[Tensor]:
        if self.must_retokenize:
            tokenizer = self.model.transformer.tokenizer
            sentence_features = [
                {key: value.to(self.guide.device) for key, value in self.guide.tokenize(tokenizer.batch_decode(features["input_ids"], skip_special_tokens=True)).items()}
                for features in sentence_features
            ]
        return self.guide.embed([dict(features) for features in sentence_features])

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], guides: list[Tensor]) -> Tensor:
        anchor, positive, *negatives = embeddings
        anchor_guide, positive_guide, *negative_guides = guides
        batch_size = anchor.size(0)
        offset = 0
        all_anchors, all_anchor_guides = anchor, anchor_guide
        if self.gather_across_devices:
            # Each worker scores only its own anchors, against every worker's candidates and guide
            # embeddings (and every worker's anchors, when anchors are contrasted with each other), so
            # the false-negative filter sees what one process with the whole batch sees. Workers' batches
            # may differ in size: this worker's rows start at `offset`, the rows of the lower ranks.
            columns = [positive, *negatives, positive_guide, *negative_guides]
            if self.contrast_anchors:
                columns += [anchor, anchor_guide]
            gathered, offset = gather_columns_with_offset(columns)
            count = 1 + len(negatives)
            positive, *negatives = gathered[:count]
            positive_guide, *negative_guides = gathered[count : 2 * count]
            if self.contrast_anchors:
                all_anchors, all_anchor_guides = gathered[2 * count :]
        guided_positive_score = _similarity_matrix(anchor_guide, positive_guide).diagonal(offset=offset).view(-1, 1)

        def without_false_negatives(guided: Tensor, scores: Tensor, keep: Tensor | None = None) -> Tensor:
            if self.margin_strategy == "absolute":
                suspicious = guided > (guided_positive_score - self.margin)
            else:
                suspicious = guided > (guided_positive_score - guided_positive_score.abs() * self.margin)
            if keep is not None:
                suspicious = suspicious & ~keep
            return scores.masked_fill(suspicious, -torch.inf)

        guided_ap = _similarity_matrix(anchor_guide, positive_guide)
        own_positive = torch.zeros_like(guided_ap, dtype=torch.bool)
        rows = torch.arange(batch_size, device=anchor.device)
        own_positive[rows, offset + rows] = True
        scores = [without_false_negatives(guided_ap, _similarity_matrix(anchor, positive), keep=own_positive)]
        if self.contrast_anchors:
            scores.append(without_false_negatives(_similarity_matrix(anchor_guide, all_anchor_guides), _similarity_matrix(anchor, all_anchors)))
        if self.contrast_positives:
            local = slice(offset, offset + batch_size)
            scores.append(
                without_false_negatives(_similarity_matrix(positive_guide[local], positive_guide), _similarity_matrix(positive[local], positive))
            )
        for negative, negative_guide in zip(negatives, negative_guides, strict=True):
            scores.append(without_false_negatives(_similarity_matrix(anchor_guide, negative_guide), _similarity_matrix(anchor, negative)))
        logits = torch.cat(scores, dim=1) / self.temperature
        return self.cross_entropy_loss(logits, torch.arange(offset, offset + batch_size, device=anchor.device))

    def forward(self, sentence_features: list[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        sentence_features = list(sentence_features)
        guides = self.guide_embeddings(sentence_features)
        return self.compute_loss_from_embeddings(self.model.embed([dict(f) for f in sentence_features]), guides)

    def get_config_dict(self) -> dict:
        return {
            "guide": getattr(self.guide, "name_or_path", None) or type(self.guide).__name__,
            "temperature": self.temperature,
            "margin_strategy": self.margin_strategy,
            "margin": self.margin,
            "contrast_anchors": self.contrast_anchors,
            "contrast_positives": self.contrast_positives,
            "gather_across_devices": self.gather_across_devices,
        }

    @property
    def citation(self) -> str:
        return GIST_CITATION


class CachedGISTEmbedLoss(GISTEmbedLoss):
    """GISTEmbedLoss with GradCache: same loss and gradients, memory flat in the batch size (see
    CachedMultipleNegativesRankingLoss for how). Takes any number of hard-negative columns.

    Args:
        model: the EmbeddingModel to train.
        guide: the guide model (a path or hub id in configs), frozen.
        temperature: softmax temperature. Default 0.01.
        mini_batch_size: rows per mini-batch. Default 32.
        mini_batch_num_tokens: a token budget per mini-batch instead. Default None.
        show_progress_bar: show mini-batch progress. Default False.
        margin_strategy: ``absolute`` or ``relative``. Default ``absolute``.
        margin: the margin of `margin_strategy`. Default 0.0.
        contrast_anchors: add anchor-anchor scores. Default True.
        contrast_positives: add positive-positive scores. Default True.
        gather_across_devices: gather embeddings across workers with gradients. Default False.

    References:
        - GISTEmbed, Solatorio, 2024: https://arxiv.org/abs/2402.16829
        - Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup, Gao et al., 2021:
          https://arxiv.org/abs/2101.06983

    Requirements:
        - A guide model; the no-duplicates batch sampler (chosen by `sampler: auto`).

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
        - Equivalent to GISTEmbedLoss; use that one while the batch fits in memory.

    Example:
        loss = CachedGISTEmbedLoss(model, guide=EmbeddingModel("sentence-transformers/all-MiniLM-L6-v2"), mini_batch_size=32)
    """

    formats = ("anchor_positive_pairs", "triplets", "n_tuples")
    # The sweep's default search space (embedlab addition): the parameters worth tuning, and where.
    search_space = {"temperature": {"loguniform": [0.005, 0.1]}, "mini_batch_size": {"choice": [16, 32, 64]}}

    def __init__(
        self,
        model: nn.Module,
        guide: nn.Module,
        temperature: float = 0.01,
        mini_batch_size: int = 32,
        mini_batch_num_tokens: int | None = None,
        show_progress_bar: bool = False,
        margin_strategy: str = "absolute",
        margin: float = 0.0,
        contrast_anchors: bool = True,
        contrast_positives: bool = True,
        gather_across_devices: bool = False,
    ):
        super().__init__(model, guide, temperature, margin_strategy, margin, contrast_anchors, contrast_positives, gather_across_devices)
        self.mini_batch_size = mini_batch_size
        self.mini_batch_num_tokens = mini_batch_num_tokens
        self.show_progress_bar = show_progress_bar

    @property
    def uses_gradient_cache(self) -> bool:
        return True

    def forward(self, sentence_features: list[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        sentence_features = list(sentence_features)
        guides = self.guide_embeddings(sentence_features)
        return cached_loss(
            self.model, sentence_features, lambda embeddings: self.compute_loss_from_embeddings(embeddings, guides),
            self.mini_batch_size, self.mini_batch_num_tokens, self.show_progress_bar,
        )

    def get_config_dict(self) -> dict:
        return {**super().get_config_dict(), "mini_batch_size": self.mini_batch_size, "mini_batch_num_tokens": self.mini_batch_num_tokens}
