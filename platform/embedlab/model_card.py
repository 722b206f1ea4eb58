"""The model card (README.md) saved with every trained model: data, loss with its citation,
hyperparameters and evaluation results, in the sections the Hugging Face hub shows."""

import dataclasses
import json
from pathlib import Path

from embedlab.config import Config
from embedlab.losses import config_of
from embedlab.tracking import redact_text

# The card shows how to load the model with sentence-transformers; embedlab itself never imports it.
USAGE_IMPORT = "from " + "sentence_transformers import SentenceTransformer"


def write_model_card(model_dir: Path, config: Config, loss, detected, results: dict) -> Path:
    """`detected`: the data's format, or a mixture's by data set name; results: {"before": test metrics,
    "after": test metrics, "final": dev metrics}."""
    parts = config.per_data_set(loss).items()
    losses = [item for _, part in parts for item in (part, getattr(part, "loss", None)) if item is not None]  # with modifiers' inner losses
    citations = dict.fromkeys(text.strip() for text in (getattr(item, "citation", "") for item in losses) if isinstance(text, str) and text.strip())
    loss_names = list(dict.fromkeys(type(part).__name__ for _, part in parts))
    loss_name = ", ".join(loss_names)
    rows = [f"| {name} | {value:.4f} |" for name, value in results.get("final", {}).items() if isinstance(value, float)]
    test_rows = [
        f"| {name} | {results['before'].get(name, float('nan')):.4f} | {value:.4f} |" for name, value in results.get("after", {}).items()
    ]
    formats, sources = config.per_data_set(detected), config.train_sources()
    data_rows = []
    loss_rows = []
    for name, part in parts:
        spec = config.loss_for(name)
        modifiers = f" (modifiers: {', '.join(m.name for m in spec.modifiers)})" if spec.modifiers else ""
        data_rows.append(f"| {name} | `{sources[name].path}` | {formats[name].num_rows} | {formats[name].describe()} | {type(part).__name__}{modifiers} |")
        loss_rows.append(f"- {name}: `{type(part).__name__}` with `{json.dumps(config_of(part, spec.params))}`{modifiers}")
    mixture = config.training.mixture if isinstance(config.training.mixture, str) else dataclasses.asdict(config.training.mixture)
    data_section = "| data set | source | rows | format | loss |\n|---|---|---|---|---|\n" + "\n".join(data_rows)
    if config.is_mixture:
        data_section += f"\n\nMixture: `{json.dumps(mixture)}` (each batch from one data set; embedlab.data.MixtureSampler)."
    if config.training.prompts:
        data_section += f"\n\nPrompts: `{json.dumps(config.training.prompts)}`"
    loss_section = "\n".join(loss_rows)
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

{data_section}

## Loss

{loss_section}

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
