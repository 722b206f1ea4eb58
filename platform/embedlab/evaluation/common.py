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
