"""The loss catalogue: one module per loss, each class declaring the data formats it accepts.

`CATALOGUE` maps class names to classes; the format table, `embedlab losses` and the sweep's search
spaces all derive from it, so adding a loss is adding a module and one line here.
A user's own loss is named by dotted path (`my_package.losses.MyLoss`) and follows the same protocol:
constructor takes the model first, `forward(sentence_features, labels)` returns a scalar tensor.
"""

import difflib
import importlib
import inspect

from embedlab import similarity
from embedlab.errors import EmbedlabError
from embedlab.formats import DetectedFormat, losses_for
from embedlab.losses.cosent_loss import CoSENTLoss
from embedlab.losses.multiple_negatives_ranking_loss import MultipleNegativesRankingLoss

CATALOGUE = {loss_class.__name__: loss_class for loss_class in (CoSENTLoss, MultipleNegativesRankingLoss)}

__all__ = ["CATALOGUE", "CoSENTLoss", "MultipleNegativesRankingLoss", "build_loss", "get_loss_class"]


def get_loss_class(name: str) -> type:
    if name in CATALOGUE:
        return CATALOGUE[name]
    if "." in name:
        module_name, _, class_name = name.rpartition(".")
        try:
            return getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as error:
            raise EmbedlabError(f"custom loss '{name}' could not be imported: {error}") from None
    close = difflib.get_close_matches(name, CATALOGUE, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise EmbedlabError(
        f"unknown loss '{name}': {hint}known losses are {', '.join(CATALOGUE)} "
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


def _resolve_param(value):
    """Similarity functions are named in config files by their function name, e.g. `pairwise_cos_sim`."""
    if isinstance(value, str) and hasattr(similarity, value) and callable(getattr(similarity, value)):
        return getattr(similarity, value)
    return value


def build_loss(name: str, model, params: dict, detected: DetectedFormat):
    loss_class = get_loss_class(name)
    check_format(loss_class, detected)
    accepted = list(inspect.signature(loss_class.__init__).parameters)[2:]  # after self and model
    unknown = [key for key in params if key not in accepted]
    if unknown:
        raise EmbedlabError(f"{loss_class.__name__} has no parameter {unknown}: its parameters are {', '.join(accepted)}")
    try:
        return loss_class(model, **{key: _resolve_param(value) for key, value in params.items()})
    except (TypeError, ValueError) as error:
        raise EmbedlabError(f"{loss_class.__name__}: {error}") from None
