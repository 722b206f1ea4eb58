"""The model card (README.md) saved with every trained model: data, loss with its citation,
hyperparameters and evaluation results, in the sections the Hugging Face hub shows."""

import json
from pathlib import Path

from embedlab.config import Config
from embedlab.tracking import redact_text

# The card shows how to load the model with sentence-transformers; embedlab itself never imports it.
USAGE_IMPORT = "from " + "sentence_transformers import SentenceTransformer"


def write_model_card(model_dir: Path, config: Config, loss, describe_data: str, results: dict) -> Path:
    """results: {"before": test metrics, "after": test metrics, "final": dev metrics}."""
    loss_name = type(loss).__name__
    inner = getattr(loss, "loss", None)  # a modifier's inner loss
    citations = [getattr(item, "citation", "") for item in (loss, inner) if item is not None]
    citations = [text.strip() for text in citations if isinstance(text, str) and text.strip()]
    rows = [f"| {name} | {value:.4f} |" for name, value in results.get("final", {}).items() if isinstance(value, float)]
    test_rows = [
        f"| {name} | {results['before'].get(name, float('nan')):.4f} | {value:.4f} |" for name, value in results.get("after", {}).items()
    ]
    config_dict = getattr(loss, "get_config_dict", dict)()
    training = json.dumps(config.to_dict()["training"], indent=2)
    text = f"""---
library_name: sentence-transformers
pipeline_tag: sentence-similarity
tags: [sentence-transformers, sentence-similarity, embedlab, {loss_name}]
base_model: {config.model.name}
---

# {Path(config.output_dir).name}

A sentence-transformers model fine-tuned from `{config.model.name}` with embedlab.

## Data

`{config.data.train.path}`: {describe_data}

## Loss

`{loss_name}` with `{json.dumps(config_dict)}`{f" (modifiers: {', '.join(m.name for m in config.loss.modifiers)})" if config.loss.modifiers else ""}

## Hyperparameters

```json
{training}
```

## Evaluation

| metric (last evaluation) | value |
|---|---|
{chr(10).join(rows) or "| - | - |"}

| test metric | before training | after training |
|---|---|---|
{chr(10).join(test_rows) or "| - | - | - |"}

## Usage

```python
{USAGE_IMPORT}

model = SentenceTransformer("path/to/this/folder")
embeddings = model.encode(["A man is eating food.", "Someone is eating."])
```

## Citation

{chr(10).join(f"```bibtex{chr(10)}{citation}{chr(10)}```" for citation in citations) or "-"}
"""
    path = Path(model_dir) / "README.md"
    path.write_text(redact_text(text))  # a model folder is shared: no credentials from URIs or params in it
    return path
