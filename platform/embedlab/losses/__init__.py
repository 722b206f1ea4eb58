"""The loss catalogue: one module per loss, each class declaring the data formats it accepts.

`CATALOGUE` maps class names to classes; the format table, `embedlab losses` and the sweep's search
spaces all derive from it, so adding a loss is adding a module and one line here.
A user's own loss is named by dotted path (`my_package.losses.MyLoss`) and follows the same protocol:
constructor takes the model first, `forward(sentence_features, labels)` returns a scalar tensor.
"""

import difflib
import importlib
import inspect
import numbers
import types
import typing

from embedlab import similarity
from embedlab.errors import EmbedlabError
from embedlab.formats import DetectedFormat, losses_for
from embedlab.losses.adaptive_layer_loss import AdaptiveLayerLoss
from embedlab.losses.angle_loss import AnglELoss
from embedlab.losses.batch_triplet_losses import (
    BatchAllTripletLoss,
    BatchHardSoftMarginTripletLoss,
    BatchHardTripletLoss,
    BatchSemiHardTripletLoss,
)
from embedlab.losses.cached_multiple_negatives_ranking_loss import CachedMultipleNegativesRankingLoss
from embedlab.losses.cached_multiple_negatives_symmetric_ranking_loss import (
    CachedMultipleNegativesSymmetricRankingLoss,
)
from embedlab.losses.contrastive_loss import ContrastiveLoss
from embedlab.losses.contrastive_tension_loss import (
    ContrastiveTensionLoss,
    ContrastiveTensionLossInBatchNegatives,
)
from embedlab.losses.cosent_loss import CoSENTLoss
from embedlab.losses.cosine_similarity_loss import CosineSimilarityLoss
from embedlab.losses.denoising_auto_encoder_loss import DenoisingAutoEncoderLoss
from embedlab.losses.distances import (
    BatchHardTripletLossDistanceFunction,
    SiameseDistanceMetric,
    TripletDistanceMetric,
)
from embedlab.losses.gist_embed_loss import CachedGISTEmbedLoss, GISTEmbedLoss
from embedlab.losses.margin_mse_loss import MarginMSELoss
from embedlab.losses.matryoshka_2d_loss import Matryoshka2dLoss
from embedlab.losses.matryoshka_loss import MatryoshkaLoss
from embedlab.losses.mega_batch_margin_loss import MegaBatchMarginLoss
from embedlab.losses.mse_loss import MSELoss
from embedlab.losses.multiple_negatives_ranking_loss import MultipleNegativesRankingLoss
from embedlab.losses.multiple_negatives_symmetric_ranking_loss import MultipleNegativesSymmetricRankingLoss
from embedlab.losses.online_contrastive_loss import OnlineContrastiveLoss
from embedlab.losses.softmax_loss import SoftmaxLoss
from embedlab.losses.triplet_loss import TripletLoss

# In the order of the loss overview's table.
CATALOGUE = {
    loss_class.__name__: loss_class
    for loss_class in (
        BatchAllTripletLoss,
        BatchHardSoftMarginTripletLoss,
        BatchHardTripletLoss,
        BatchSemiHardTripletLoss,
        ContrastiveTensionLoss,
        DenoisingAutoEncoderLoss,
        ContrastiveTensionLossInBatchNegatives,
        SoftmaxLoss,
        MultipleNegativesRankingLoss,
        CachedMultipleNegativesRankingLoss,
        MultipleNegativesSymmetricRankingLoss,
        CachedMultipleNegativesSymmetricRankingLoss,
        MegaBatchMarginLoss,
        GISTEmbedLoss,
        CachedGISTEmbedLoss,
        ContrastiveLoss,
        OnlineContrastiveLoss,
        CoSENTLoss,
        AnglELoss,
        CosineSimilarityLoss,
        TripletLoss,
        MSELoss,
        MarginMSELoss,
    )
}

# Loss modifiers wrap any loss: `loss.modifiers: [{name: MatryoshkaLoss, params: {matryoshka_dims: [...]}}]`.
MODIFIERS = {modifier.__name__: modifier for modifier in (MatryoshkaLoss, AdaptiveLayerLoss, Matryoshka2dLoss)}

__all__ = [
    "CATALOGUE",
    "MODIFIERS",
    *MODIFIERS,
    "BatchHardTripletLossDistanceFunction",
    "SiameseDistanceMetric",
    "TripletDistanceMetric",
    "build_loss",
    "get_loss_class",
    *CATALOGUE,
]


def get_loss_class(name: str) -> type:
    if name in CATALOGUE:
        return CATALOGUE[name]
    if name in MODIFIERS:
        raise EmbedlabError(f"{name} is a loss modifier: name the inner loss in `loss.name` and put {name} in `loss.modifiers`")
    if "." in name:
        module_name, _, class_name = name.rpartition(".")
        try:
            return getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as error:
            raise EmbedlabError(
                f"custom loss '{name}' could not be imported ({error}): put its module beside the config file, in the "
                "working folder, or on PYTHONPATH"
            ) from None
    by_lower = {known.lower(): known for known in [*CATALOGUE, *MODIFIERS]}
    close = [by_lower[match] for match in difflib.get_close_matches(name.lower(), by_lower, n=3, cutoff=0.6)]
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise EmbedlabError(
        f"unknown loss '{name}': {hint}`embedlab losses` lists the catalogue "
        "(or give a dotted path to your own loss class)"
    )


def check_format(loss_class: type, detected: DetectedFormat) -> None:
    """A one-line error when the data's format is not one the loss declares."""
    accepted = getattr(loss_class, "formats", None)
    if accepted is None or detected.format.key in accepted:  # a custom loss without declarations: trust it
        return
    suitable = losses_for(detected.format.key)
    raise EmbedlabError(
        f"{loss_class.__name__} does not suit this data: the data is {detected.describe()}; "
        f"losses for it: {', '.join(suitable) or 'none in the catalogue yet'}"
    )


def _resolve_param(loss_class: type, name: str, value, model):
    """Objects are named in config files: a loss's own choices (e.g. `distance_metric: euclidean`), a
    similarity function of `embedlab.similarity` (e.g. `similarity_fct: pairwise_dot_score`), or a guide
    model by path or hub id (`guide: sentence-transformers/all-MiniLM-L6-v2`)."""
    if not isinstance(value, str):
        return value
    if name == "guide":
        from embedlab.model import EmbeddingModel

        return EmbeddingModel(value, device=str(model.device))
    choices = getattr(loss_class, "param_choices", {}).get(name)
    if choices is not None:
        key = value.lower()
        if key not in choices:
            raise EmbedlabError(f"{loss_class.__name__}: {name} '{value}' is unknown: choose from {', '.join(choices)}")
        return choices[key]
    if name.endswith("similarity_fct"):
        function = getattr(similarity, value, None)
        if not callable(function):
            raise EmbedlabError(f"{loss_class.__name__}: similarity_fct '{value}' is not a function of embedlab.similarity")
        return function
    return value


def check_param_types(loss_class: type, params: dict, where: str | None = None) -> None:
    """A one-line error for a parameter whose value its annotation rules out (`scale: abc`), which the loss
    would otherwise only trip over in its first step. Annotations other than numbers, booleans, text and lists
    of them (a module, a function) are not checked."""
    try:
        hints = typing.get_type_hints(loss_class.__init__)
    except Exception:  # a custom loss whose annotations do not resolve: its own checks apply
        return
    for name, value in params.items():
        expected = _describe_if_wrong(hints.get(name), value)
        if expected is not None:
            raise EmbedlabError(f"{where or loss_class.__name__}: {name} must be {expected}, got {value!r}")


def _describe_if_wrong(annotation, value) -> str | None:
    """What `annotation` asks for, in words, when `value` is not that; None when it is (or is not checked)."""
    if annotation is bool:
        return None if isinstance(value, bool) else "true or false"
    if annotation is int:
        return None if isinstance(value, numbers.Integral) and not isinstance(value, bool) else "a whole number"
    if annotation is float:
        return None if isinstance(value, numbers.Real) and not isinstance(value, bool) else "a number"
    if annotation is str:
        return None if isinstance(value, str) else "text"
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in arguments:
            return None
        wanted = [_describe_if_wrong(argument, value) for argument in arguments if argument is not type(None)]
        if None in wanted:
            return None
        return " or ".join(wanted) + (" (or null)" if type(None) in arguments else "")
    if origin in (list, tuple) and arguments:
        item = arguments[0]
        wrong = not isinstance(value, (list, tuple)) or any(_describe_if_wrong(item, entry) is not None for entry in value)
        items = _describe_if_wrong(item, object())  # what no value is: the item's description
        return f"a list of {PLURALS.get(items, 'values')}" if wrong else None
    return None


PLURALS = {"true or false": "true/false values", "a whole number": "whole numbers", "a number": "numbers", "text": "texts"}


def _defaults_from_context(loss_class: type, model, detected: DetectedFormat, accepted: list[str]) -> dict:
    """Parameters the data and model already know: e.g. SoftmaxLoss's embedding size and class count."""
    defaults = {}
    if "embedding_dimension" in accepted:
        defaults["embedding_dimension"] = model.embedding_dimension
    if "num_labels" in accepted and detected.num_classes is not None:
        defaults["num_labels"] = detected.num_classes
    return defaults


def _construct(loss_class: type, model, params: dict, detected: DetectedFormat | None, inner=None):
    skipped = 3 if inner is not None else 2  # self, model (and the inner loss for modifiers)
    accepted = list(inspect.signature(loss_class.__init__).parameters)[skipped:]
    unknown = [key for key in params if key not in accepted]
    if unknown:
        close = difflib.get_close_matches(unknown[0], accepted, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise EmbedlabError(f"{loss_class.__name__} has no parameter '{unknown[0]}'{hint}: its parameters are {', '.join(accepted)}")
    check_param_types(loss_class, params)
    resolved = _defaults_from_context(loss_class, model, detected, accepted) if detected is not None else {}
    resolved.update({key: _resolve_param(loss_class, key, value, model) for key, value in params.items()})
    try:
        return loss_class(model, inner, **resolved) if inner is not None else loss_class(model, **resolved)
    except (TypeError, ValueError) as error:
        raise EmbedlabError(f"{loss_class.__name__}: {error}") from None


def config_of(loss, configured: dict) -> dict:
    """The loss's `get_config_dict()`; for a user's loss without one, the parameters its config gave it."""
    return loss.get_config_dict() if hasattr(loss, "get_config_dict") else dict(configured)


LAYER_MODIFIERS = ("AdaptiveLayerLoss", "Matryoshka2dLoss")  # run the model's layers themselves: outermost only


def check_modifier_stack(names: list[str]) -> None:
    """The stacks that train: each modifier once, and one that runs the model's layers (AdaptiveLayerLoss,
    Matryoshka2dLoss, which already holds MatryoshkaLoss) only outermost, as sentence-transformers' own
    Matryoshka2dLoss = AdaptiveLayerLoss(MatryoshkaLoss(loss)). Anything else fails in its first step."""
    for name in names:
        if name not in MODIFIERS:
            raise EmbedlabError(f"unknown loss modifier '{name}': choose from {', '.join(MODIFIERS)}")
    layered = [name for name in names if name in LAYER_MODIFIERS]
    wrong = len(set(names)) < len(names) or len(layered) > 1 or (layered and names[-1] != layered[0])
    if wrong or ("Matryoshka2dLoss" in names and "MatryoshkaLoss" in names):
        raise EmbedlabError(
            f"loss modifiers {' -> '.join(names)} (inner to outer) do not stack: each at most once, AdaptiveLayerLoss or "
            "Matryoshka2dLoss last and only one of them (Matryoshka2dLoss already holds MatryoshkaLoss), e.g. "
            "[MatryoshkaLoss, AdaptiveLayerLoss]"
        )


def build_loss(name: str, model, params: dict, detected: DetectedFormat, modifiers: list = ()):
    """The configured loss, checked against the data's format, wrapped in its modifiers in order."""
    loss_class = get_loss_class(name)
    check_format(loss_class, detected)
    check_modifier_stack([modifier.name for modifier in modifiers])
    loss = _construct(loss_class, model, params, detected)
    for modifier in modifiers:
        loss = _construct(MODIFIERS[modifier.name], model, modifier.params, None, inner=loss)
    return loss
