"""embedlab's MLflow pyfunc flavour: a logged model that `mlflow.pyfunc.load_model` and `mlflow models serve` use.

The run's `model` artifact is the sentence-transformers folder itself with an `MLmodel` file (plus
`requirements.txt` and `python_env.yaml`) beside it. Its pyfunc flavour names this module as the loader
(`loader_module`), so nothing is pickled: loading imports embedlab and reads the folder's safetensors
weights with `EmbeddingModel`, and the same folder still loads in sentence-transformers.

    model = mlflow.pyfunc.load_model("models:/NAME@champion")
    model.predict(["a sentence", "another"], params={"normalize_embeddings": True, "truncate_dim": 64})

Signature: a list of strings in, a float32 array (one row per string) out. Params, as `encode` takes them:
`normalize_embeddings` (False), `prompt_name` (the model's default prompt, if any), `truncate_dim` (all
dimensions; a Matryoshka model's prefix sizes).
"""

import importlib.metadata
from pathlib import Path

import numpy as np

from embedlab.errors import EmbedlabError

FLAVOUR_FILES = ("MLmodel", "requirements.txt", "python_env.yaml")
PARAMS = {"normalize_embeddings": ("boolean", False), "prompt_name": ("string", None), "truncate_dim": ("long", None)}
REQUIREMENTS = ("embedlab", "torch", "transformers", "safetensors", "mlflow")  # what loading needs; not sentence-transformers


class EmbeddingPyfunc:
    """What MLflow's pyfunc wrapper calls: `predict(texts, params)` -> embeddings."""

    def __init__(self, path: str):
        from embedlab.model import EmbeddingModel

        self.model = EmbeddingModel(path)

    def predict(self, model_input, params: dict | None = None) -> np.ndarray:
        params = {name: value for name, value in (params or {}).items() if value is not None}
        unknown = sorted(set(params) - set(PARAMS))
        if unknown:
            raise EmbedlabError(f"unknown params {unknown}: the model takes {', '.join(PARAMS)}")
        truncate_dim = params.get("truncate_dim")
        if truncate_dim is not None and not 0 < int(truncate_dim) <= self.model.embedding_dimension:
            raise EmbedlabError(f"truncate_dim must be within 1..{self.model.embedding_dimension}, got {truncate_dim}")
        return self.model.encode(
            texts(model_input),
            normalize_embeddings=bool(params.get("normalize_embeddings", False)),
            prompt_name=params.get("prompt_name"),
            truncate_dim=None if truncate_dim is None else int(truncate_dim),
        )


def _load_pyfunc(path: str) -> EmbeddingPyfunc:
    """MLflow's entry point for `loader_module` flavours: `path` is the model folder."""
    return EmbeddingPyfunc(path)


def texts(model_input) -> list[str]:
    """The strings of what the pyfunc wrapper passes: a one-column DataFrame (a list of strings becomes one
    under a column schema), a Series, an array or a list."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        if model_input.shape[1] != 1:
            raise EmbedlabError(f"the model embeds one column of strings, got columns {list(model_input.columns)}")
        model_input = model_input.iloc[:, 0]
    values = [model_input] if isinstance(model_input, str) else list(np.asarray(model_input, dtype=object).ravel())
    if not all(isinstance(value, str) for value in values):
        raise EmbedlabError("the model embeds strings: send a list of strings")
    return values


def signature(dimension: int):
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([ColSpec("string")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, dimension))]),
        params=ParamSchema([ParamSpec(name, dtype, default) for name, (dtype, default) in PARAMS.items()]),
    )


def write_flavour(model_dir: Path, folder: Path, run_id: str | None = None) -> list[Path]:
    """Writes MLmodel, requirements.txt and python_env.yaml for the model in `model_dir` into `folder` (to be
    logged beside the model's own files); returns their paths."""
    import mlflow.pyfunc
    from mlflow.models import Model
    from mlflow.utils.environment import _PythonEnv

    from embedlab.model import EmbeddingModel

    dimension = EmbeddingModel(str(model_dir), device="cpu").embedding_dimension
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "requirements.txt").write_text("".join(f"{name}=={_version(name)}\n" for name in REQUIREMENTS))
    _PythonEnv.current().to_yaml(folder / "python_env.yaml")  # this Python, pip; dependencies: -r requirements.txt
    model = Model(artifact_path="model", run_id=run_id, signature=signature(dimension))
    mlflow.pyfunc.add_to_model(model, loader_module=__name__, python_env="python_env.yaml")
    model.save(folder / "MLmodel")
    return [folder / name for name in FLAVOUR_FILES]


def _version(name: str) -> str:
    return importlib.metadata.version(name).split("+")[0]  # torch 2.13.0+cpu: the index, not the version, picks the build
