"""embedlab: a Ray-based experimentation platform for sentence-embedding models."""

from embedlab.errors import EmbedlabError
from embedlab.model import EmbeddingModel

__version__ = "0.1.0"
__all__ = ["EmbedlabError", "EmbeddingModel", "__version__"]
