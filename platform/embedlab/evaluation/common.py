"""What every evaluator shares: metric names prefixed with the evaluator's name, and results appended
to a CSV file in the output folder, as sentence-transformers writes them."""

import csv
from pathlib import Path


def prefixed(name: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{name}_{metric}" if name else metric: value for metric, value in metrics.items()}


def append_csv(folder: str | Path | None, file_name: str, header: list[str], row: list) -> None:
    if folder is None:
        return
    path = Path(folder) / file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    new_file = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        if new_file:
            writer.writerow(header)
        writer.writerow(row)


def check_lengths(**columns) -> None:
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{', '.join(lengths)} must have equal lengths, got {', '.join(map(str, lengths.values()))}")


def encode_unique(model, *text_lists: list[str], **encode_kwargs) -> list:
    """Embeddings for several text lists, each distinct text embedded once, in one length-sorted pass.

    Evaluation data repeats texts (a premise with several hypotheses, a sentence in many pairs), so
    this embeds less than list by list, and gives the same embeddings.
    """
    unique = list(dict.fromkeys(text for texts in text_lists for text in texts))
    embeddings = model.encode(unique, convert_to_tensor=True, **encode_kwargs).float().cpu()
    index = {text: i for i, text in enumerate(unique)}
    return [embeddings[[index[text] for text in texts]] for texts in text_lists]
