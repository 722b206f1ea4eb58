"""Explicit conversions between data formats, asked for in config (`data.train.convert`) and logged.

- (sentence_A, sentence_B) pairs + class  -> (anchor, positive, negative) triplets, sampled with a seed
- (sentence_A, sentence_B) pairs + score  -> (anchor, positive) pairs: the pairs at or above a threshold
- (anchor, positive/negative) pairs + 1/0 -> (anchor, positive) pairs: the pairs labelled 1
"""

import random

import datasets

from embedlab.config import ConversionConfig
from embedlab.errors import EmbedlabError
from embedlab.formats import DetectedFormat, detect_format


def _pairs_to_triplets(dataset: datasets.Dataset, detected: DetectedFormat, conversion: ConversionConfig) -> dict:
    if conversion.positive_label is None:
        raise EmbedlabError("converting pairs + class to triplets needs `positive_label` (and usually `negative_label`)")
    first, second = detected.input_columns
    labels = dataset[detected.label_column]
    known = set(labels)
    for name in ("positive_label", "negative_label"):
        value = getattr(conversion, name)
        if value is not None and value not in known:
            raise EmbedlabError(f"{name} {value!r} is not a label of the data: its labels are {sorted(known, key=str)}")
    positives, negatives = {}, {}
    for anchor, other, label in zip(dataset[first], dataset[second], labels, strict=True):
        if label == conversion.positive_label:
            positives.setdefault(anchor, []).append(other)
        elif label == conversion.negative_label:
            negatives.setdefault(anchor, []).append(other)
    # An anchor without its own negative gets a random other-sentence of a non-positive row.
    pool = [other for other, label in zip(dataset[second], labels, strict=True) if label != conversion.positive_label]
    rng = random.Random(conversion.seed)
    rows = {"anchor": [], "positive": [], "negative": []}
    for anchor, anchor_positives in positives.items():
        for positive in anchor_positives:
            own = negatives.get(anchor)
            negative = rng.choice(own) if own else rng.choice(pool)
            rows["anchor"].append(anchor)
            rows["positive"].append(positive)
            rows["negative"].append(negative)
    return rows


def convert(dataset: datasets.Dataset, detected: DetectedFormat, conversion: ConversionConfig) -> tuple[datasets.Dataset, DetectedFormat]:
    source = detected.format.key
    first, second = detected.input_columns[:2]
    if conversion.to == "triplets" and source == "pair_class":
        rows = _pairs_to_triplets(dataset, detected, conversion)
    elif conversion.to == "anchor_positive_pairs" and source == "pair_score":
        if conversion.threshold is None:
            raise EmbedlabError("converting score pairs to anchor-positive pairs needs `threshold`, e.g. 0.8")
        keep = [i for i, score in enumerate(dataset[detected.label_column]) if score >= conversion.threshold]
        rows = {"anchor": [dataset[first][i] for i in keep], "positive": [dataset[second][i] for i in keep]}
    elif conversion.to == "anchor_positive_pairs" and source == "pair_binary":
        keep = [i for i, label in enumerate(dataset[detected.label_column]) if label == 1]
        rows = {"anchor": [dataset[first][i] for i in keep], "positive": [dataset[second][i] for i in keep]}
    else:
        raise EmbedlabError(
            f"no conversion from {source} to {conversion.to}: embedlab converts pair_class -> triplets, "
            "pair_score -> anchor_positive_pairs (threshold) and pair_binary -> anchor_positive_pairs"
        )
    if not rows["anchor"]:
        raise EmbedlabError(f"converting {source} to {conversion.to} left no rows: check the threshold or labels")
    converted = datasets.Dataset.from_dict(rows)
    converted_format = detect_format(converted, format_key=conversion.to)
    print(f"Converted {source} ({len(dataset)} rows) -> {conversion.to} ({len(converted)} rows)")
    return converted, converted_format
