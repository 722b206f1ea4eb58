"""embedlab: a Ray-based experimentation platform for sentence-embedding models."""

from embedlab.errors import EmbedlabError

__version__ = "0.1.0"
__all__ = ["EmbedlabError", "EmbeddingModel", "__version__"]


def __getattr__(name: str):
    # Imported on first use: a sweep's trial process imports embedlab.trial before torch (see there).
    if name == "EmbeddingModel":
        from embedlab.model import EmbeddingModel

        return EmbeddingModel
    raise AttributeError(f"module 'embedlab' has no attribute '{name}'")
