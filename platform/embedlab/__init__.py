"""embedlab: a Ray-based experimentation platform for sentence-embedding models."""

from embedlab.errors import EmbedlabError

__version__ = "0.1.0"
__all__ = ["EmbedlabError", "EmbeddingModel", "__version__"]


def __getattr__(name: str):
    # EmbeddingModel loads torch and transformers: only when asked for, so a process that needs one light
    # module (a Ray Train controller unpickling embedlab.tune_report's callback) does not pay for them.
    if name == "EmbeddingModel":
        from embedlab.model import EmbeddingModel

        return EmbeddingModel
    raise AttributeError(f"module 'embedlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "EmbeddingModel"])
