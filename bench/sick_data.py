"""The shipped benchmark data in each of its formats: SICK as score pairs, pairs + class, 1/0 pairs,
anchor-positive pairs and triplets; TREC as sentences + class. Shared by the bench scripts."""

from pathlib import Path

import datasets
import pyarrow.csv

from embedlab.config import ConversionConfig
from embedlab.conversions import convert
from embedlab.formats import detect_format

ROOT = Path(__file__).resolve().parents[1]


def sick_split(split: str, limit: int | None = None) -> datasets.Dataset:
    """SICK rows of one SemEval split (TRAIN / TRIAL / TEST)."""
    options = pyarrow.csv.ParseOptions(delimiter="\t", quote_char=False)
    table = pyarrow.csv.read_csv(ROOT / "experiments/data/sick/SICK.txt", parse_options=options)
    rows = datasets.Dataset(table).filter(lambda row: row["SemEval_set"].strip() == split)
    return rows.select(range(min(limit, len(rows)))) if limit else rows


def sick_formats(rows: datasets.Dataset) -> dict:
    """format key -> (dataset, detected format)."""
    labels = [label.strip() for label in rows["entailment_label"]]
    scores = datasets.Dataset.from_dict({"sentence1": rows["sentence_A"], "sentence2": rows["sentence_B"], "score": [s / 5.0 for s in rows["relatedness_score"]]})
    classes = datasets.Dataset.from_dict({"premise": rows["sentence_A"], "hypothesis": rows["sentence_B"], "label": labels})
    decided = [i for i, label in enumerate(labels) if label != "NEUTRAL"]  # ENTAILMENT 1, CONTRADICTION 0
    binary = datasets.Dataset.from_dict(
        {"sentence1": [rows["sentence_A"][i] for i in decided], "sentence2": [rows["sentence_B"][i] for i in decided], "label": [int(labels[i] == "ENTAILMENT") for i in decided]}
    )
    return {
        "pair_score": (scores, detect_format(scores)),
        "pair_class": (classes, detect_format(classes)),
        "pair_binary": (binary, detect_format(binary)),
        "anchor_positive_pairs": convert(binary, detect_format(binary), ConversionConfig(to="anchor_positive_pairs")),
        "triplets": convert(classes, detect_format(classes), ConversionConfig(to="triplets", positive_label="ENTAILMENT", negative_label="CONTRADICTION")),
    }


def trec(file_name: str = "TREC_10.label") -> datasets.Dataset:
    """TREC questions with their coarse class (`DESC`, `ENTY`, ...), as sentences + class."""
    texts, labels = [], []
    for line in (ROOT / "experiments/data/trec" / file_name).read_text(encoding="latin-1").splitlines():
        label, _, question = line.partition(" ")
        texts.append(question.strip())
        labels.append(label.split(":")[0])
    return datasets.Dataset.from_dict({"text": texts, "label": labels})
