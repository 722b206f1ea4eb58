"""Explicit conversions between data formats, asked for in config (`data.train.convert`) and logged.

- (sentence_A, sentence_B) pairs + class  -> (anchor, positive, negative) triplets, sampled with a seed
- (sentence_A, sentence_B) pairs + score  -> (anchor, positive) pairs: the pairs at or above a threshold
- (anchor, positive/negative) pairs + 1/0 -> (anchor, positive) pairs: the pairs labelled 1
- (anchor, positive) pairs (or the score / 1-0 pairs above, kept as such first) -> triplets or n_tuples with
  mined hard negatives (`mine: {...}`, embedlab.mining)
"""

import dataclasses
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


def _anchor_positive_rows(dataset: datasets.Dataset, detected: DetectedFormat, conversion: ConversionConfig) -> dict | None:
    """The (anchor, positive) pairs of score pairs (at or above the threshold) or 1/0 pairs (labelled 1);
    None for other formats."""
    source = detected.format.key
    first, second = detected.input_columns[:2]
    if source == "pair_score":
        if conversion.threshold is None:
            raise EmbedlabError("converting score pairs to anchor-positive pairs needs `threshold` (embedlab mine: --threshold), e.g. 0.8")
        keep = [i for i, score in enumerate(dataset[detected.label_column]) if score >= conversion.threshold]
    elif source == "pair_binary":
        keep = [i for i, label in enumerate(dataset[detected.label_column]) if label == 1]
    else:
        return None
    return {"anchor": [dataset[first][i] for i in keep], "positive": [dataset[second][i] for i in keep]}


def mine_pairs(dataset: datasets.Dataset, detected: DetectedFormat, conversion: ConversionConfig, where: str = "data.train.convert.mine"):
    """(anchor, positive) pairs (or score pairs at or above `threshold`, or 1/0 pairs labelled 1) mined into
    `conversion.to` (triplets or n_tuples); `where` names the mining settings in errors ("" for flags)."""
    from embedlab.mining import OUTPUT_FORMATS, mine

    source = detected.format.key
    if conversion.to not in OUTPUT_FORMATS:
        raise EmbedlabError(f"mining makes triplets or n_tuples: set convert.to to one of {', '.join(OUTPUT_FORMATS)}, not {conversion.to}")
    wanted = OUTPUT_FORMATS[conversion.to]
    if conversion.mine.output_format not in (None, wanted):
        raise EmbedlabError(f"{where}.output_format {conversion.mine.output_format} contradicts convert.to {conversion.to}: leave it out (convert.to decides)")
    if len(detected.input_columns) < 2:
        raise EmbedlabError(
            f"mining needs (anchor, positive) pairs, and this data has no positive column: its one input column is "
            f"'{detected.input_columns[0]}' ({detected.describe()}): give a file with a second text column of positives"
        )
    if source == "anchor_positive_pairs":
        pairs = dataset.select_columns(list(detected.input_columns))
    else:
        rows = _anchor_positive_rows(dataset, detected, conversion)
        if rows is None:
            raise EmbedlabError(
                f"mining needs (anchor, positive) pairs, and this data is {detected.describe()}: give pairs, or score pairs with "
                "`threshold` or 1/0 pairs, which are kept as pairs first"
            )
        if not rows["anchor"]:
            raise EmbedlabError(f"converting {source} to anchor-positive pairs for mining left no rows: check the threshold or labels")
        pairs = datasets.Dataset.from_dict(rows)
        print(f"Converted {source} ({len(dataset)} rows) -> anchor_positive_pairs ({len(pairs)} rows) for mining")
    return mine(pairs, conversion.mine, output_format=wanted, where=where)


def convert(dataset: datasets.Dataset, detected: DetectedFormat, conversion: ConversionConfig) -> tuple[datasets.Dataset, DetectedFormat]:
    source = detected.format.key
    counts = {}
    if conversion.mine is not None:
        mined = mine_pairs(dataset, detected, conversion)
        rows = mined.dataset.to_dict()
        counts = {f"mining_{key}": value for key, value in mined.summary.items() if isinstance(value, int | float) and not isinstance(value, bool)}
    elif conversion.to == "triplets" and source == "pair_class":
        rows = _pairs_to_triplets(dataset, detected, conversion)
    elif conversion.to == "anchor_positive_pairs" and source in ("pair_score", "pair_binary"):
        rows = _anchor_positive_rows(dataset, detected, conversion)
    else:
        raise EmbedlabError(
            f"no conversion from {source} to {conversion.to}: embedlab converts pair_class -> triplets, "
            "pair_score -> anchor_positive_pairs (threshold), pair_binary -> anchor_positive_pairs, and mines "
            "anchor_positive_pairs -> triplets / n_tuples (`mine: {...}`)"
        )
    if not next(iter(rows.values())):
        raise EmbedlabError(f"converting {source} to {conversion.to} left no rows: check the threshold, labels or mining settings")
    converted = datasets.Dataset.from_dict(rows)
    converted_format = dataclasses.replace(detect_format(converted, format_key=conversion.to), conversion_counts=counts)
    print(f"Converted {source} ({len(dataset)} rows) -> {conversion.to} ({len(converted)} rows)")
    return converted, converted_format
