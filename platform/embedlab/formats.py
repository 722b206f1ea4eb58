"""Data formats: which columns are inputs, which is the label and what kind of label it is.

A format is one row of the table in DESIGN.md. `detect_format()` reads it off a data set: the label
column is the one named `label`, `labels`, `score` or `scores` (or the one the config names), every
other column is an input in column order, and the label's values decide its kind. The losses that suit
a format come from the losses' own declarations (`losses_for`), never from a hand-written list.
"""

import math
import shlex
from dataclasses import dataclass, field

from embedlab.errors import EmbedlabError, warn_once

LABEL_COLUMN_NAMES = ("label", "labels", "score", "scores")

# Label kinds. "binary" labels are also valid class labels (two classes).
NO_LABEL, CLASS, BINARY, SCORE, EMBEDDING = "none", "class", "1 / 0", "float score", "embedding"


@dataclass(frozen=True)
class DataFormat:
    key: str
    title: str
    min_inputs: int
    max_inputs: int | None  # None: no upper bound
    label: str

    def accepts(self, num_inputs: int, label_kind: str) -> bool:
        if num_inputs < self.min_inputs or (self.max_inputs is not None and num_inputs > self.max_inputs):
            return False
        return label_kind == self.label or (self.label == CLASS and label_kind == BINARY)


# In the order of the table in DESIGN.md.
FORMATS = (
    DataFormat("sentence_class", "single sentences, class", 1, 1, CLASS),
    DataFormat("single_sentences", "single sentences", 1, 1, NO_LABEL),
    DataFormat("anchor_anchor_pairs", "(anchor, anchor) pairs", 2, 2, NO_LABEL),
    DataFormat("damaged_original_pairs", "(damaged, original) pairs", 2, 2, NO_LABEL),
    DataFormat("pair_class", "(sentence_A, sentence_B) pairs + class", 2, 2, CLASS),
    DataFormat("anchor_positive_pairs", "(anchor, positive) pairs", 2, 2, NO_LABEL),
    DataFormat("pair_binary", "(anchor, positive/negative) pairs + 1 / 0", 2, 2, BINARY),
    DataFormat("pair_score", "(sentence_A, sentence_B) pairs + float score", 2, 2, SCORE),
    DataFormat("triplets", "(anchor, positive, negative) triplets", 3, 3, NO_LABEL),
    DataFormat("n_tuples", "(anchor, positive, negative_1, ..., negative_n)", 4, None, NO_LABEL),
    DataFormat("teacher_embedding", "sentence(s) -> teacher embedding", 1, None, EMBEDDING),
    DataFormat("query_passage_margin", "(query, passage_one, passage_two) + gold margin", 3, 3, SCORE),
)
FORMATS_BY_KEY = {data_format.key: data_format for data_format in FORMATS}


@dataclass(frozen=True)
class DetectedFormat:
    format: DataFormat
    input_columns: tuple[str, ...]
    label_column: str | None
    label_kind: str
    num_rows: int
    num_classes: int | None = None  # for class labels: ids 0..n-1 (class names count once each)
    # What the conversion that made this data counted (e.g. mining's anchors with too few negatives): MLflow metrics.
    conversion_counts: dict = field(default_factory=dict, compare=False)

    def describe(self) -> str:
        label = f" + {self.label_kind} label '{self.label_column}'" if self.label_column else ""
        return f"{self.format.title} [{self.format.key}]: inputs ({', '.join(self.input_columns)}){label}"


def get_format(key: str) -> DataFormat:
    if key not in FORMATS_BY_KEY:
        raise EmbedlabError(f"unknown data format '{key}': choose from {', '.join(FORMATS_BY_KEY)}")
    return FORMATS_BY_KEY[key]


def losses_for(format_key: str) -> list[str]:
    """Names of the catalogue's losses that declare this format."""
    from embedlab.losses import CATALOGUE

    return [name for name, loss_class in CATALOGUE.items() if format_key in loss_class.formats]


def _row_hint(index: int) -> str:
    return f"row {index + 1}"


def label_kind(column_name: str, values: list) -> str:
    """The kind of a label column, or a one-line error for values no format can use."""
    for index, value in enumerate(values):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            raise EmbedlabError(
                f"label column '{column_name}' has a missing or NaN value at {_row_hint(index)}: "
                "fill or drop those rows"
            )
    first = values[0]
    if isinstance(first, (list, tuple)):
        lengths = {len(value) for value in values}
        if len(lengths) != 1:
            raise EmbedlabError(f"label column '{column_name}' holds embeddings of different lengths {sorted(lengths)}")
        return EMBEDDING
    if isinstance(first, str):
        numeric = [_parses_as_number(value) for value in values]
        if any(numeric):
            bad = numeric.index(False) if not all(numeric) else 0
            raise EmbedlabError(
                f"label column '{column_name}' mixes numbers and text (e.g. {values[bad]!r} at {_row_hint(bad)}): "
                "labels must all be numbers, or all be class names"
            )
        return CLASS
    if isinstance(first, bool) or all(value in (0, 1) for value in values):
        return BINARY
    if all(isinstance(value, int) for value in values):
        return CLASS
    return SCORE


def _parses_as_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_subsequence(short: list[str], long: list[str]) -> bool:
    remaining = iter(long)
    return all(word in remaining for word in short)


def _unlabeled_pair_format(first: list[str], second: list[str]) -> DataFormat:
    """Same text twice: (anchor, anchor); first column a deletion-noised second: (damaged, original)."""
    sample = list(zip(first, second, strict=True))[:2000]  # enough rows to tell, cheap on large sets
    if all(a == b for a, b in sample):
        return FORMATS_BY_KEY["anchor_anchor_pairs"]
    if all(_is_subsequence(a.split(), b.split()) for a, b in sample) and any(a != b for a, b in sample):
        return FORMATS_BY_KEY["damaged_original_pairs"]
    return FORMATS_BY_KEY["anchor_positive_pairs"]


class MetadataColumnsError(EmbedlabError):
    """The inputs would include metadata (tags, ids, numbers) next to text columns. It carries the likely
    columns so that each caller names its own way to select them: the CLI its flags, a config its keys."""

    def __init__(self, problem: str, columns: list[str], label_column: str | None, name_label: bool, where: str | None = None):
        self.problem, self.columns, self.label_column, self.name_label = problem, columns, label_column, name_label
        super().__init__(self.with_config_key(where))

    def with_flags(self) -> str:
        label = f" --label-column {shlex.quote(self.label_column)}" if self.name_label else ""
        return f"{self.problem}: select the columns you train on with --columns {shlex.quote(','.join(self.columns))}{label}"

    def with_config_key(self, where: str | None = None) -> str:
        """`where` is the data source's config key; without it the message names data.train and evaluators."""
        key = where or "data.train"
        keys = f"`{key}.columns: [{', '.join(self.columns)}]`"
        if self.name_label:
            keys += f" and `{key}.label_column: {self.label_column}`"
        other = "" if where else " (`evaluators.N.data.columns` for an evaluator's data)"
        return f"{self.problem}: select the columns you train on with {keys}{other}"


TEXT, TAG, NUMBER, OTHER = "text", "tag", "number", "other"


def _column_kind(values: list) -> str:
    """TEXT: mostly several words; TAG: (nearly) all single tokens, like genre, source, filename or id;
    NUMBER; OTHER: lists, mixed types, or strings in between (short queries, say): left alone."""
    values = [value for value in values if value is not None]
    if values and all(isinstance(value, (int, float)) for value in values):
        return NUMBER
    if not values or not all(isinstance(value, str) for value in values):
        return OTHER
    if all(_parses_as_number(value) for value in values):
        return NUMBER
    several_words = sum(len(value.split()) > 1 for value in values) / len(values)
    return TEXT if several_words >= 0.5 else TAG if several_words <= 0.1 else OTHER


def _likely_labels(columns: list[str], kinds: dict[str, str], sample: dict) -> list[str]:
    """Label-named columns; else numeric ones that look like scores (floats) or class ids (small, repeated
    integers; not years, not row ids), scores first."""
    named = [name for name in columns if name in LABEL_COLUMN_NAMES]
    if named:
        return named
    numbers = {name: [float(value) for value in sample[name] if value is not None] for name in columns if kinds[name] == NUMBER}
    scores = [name for name, values in numbers.items() if not all(value.is_integer() for value in values)]
    classes = [
        name for name, values in numbers.items()
        if name not in scores and all(0 <= value < 1000 for value in values) and len(set(values)) < len(values)
    ]
    return scores + classes


def check_for_metadata_columns(dataset, label_column: str | None = None, where: str | None = None, name: str = "the data") -> None:
    """Stops when columns that would become inputs hold metadata (tags, ids, numbers) or a second label next to
    text columns, as STSb's genre and source: the error names the likely text and label columns to select.
    For data whose columns the user has not chosen; `where` is the data source's config key."""
    columns = list(dataset.column_names)
    if label_column is not None and label_column not in columns:
        return  # detect_format names the missing column
    sample = dataset[:200]  # a sample: columns are typed
    kinds = {column: _column_kind(sample[column]) for column in columns}
    labels = [label_column] if label_column else _likely_labels(columns, kinds, sample)
    label, other_labels = (labels[0], labels[1:]) if labels else (None, [])
    metadata = [column for column in columns if column not in labels and kinds[column] in (TAG, NUMBER)]
    text = [column for column in columns if column not in labels and column not in metadata]
    if not (metadata or other_labels) or not any(kinds[column] == TEXT for column in text):
        return
    found = []
    if metadata:
        found.append(f"columns that look like metadata (tags, ids or numbers), not text: {', '.join(metadata)}")
    if other_labels:
        found.append(f"more than one label column ({', '.join(labels)})")
    problem = f"{name} has {' and '.join(found)}; the likely text columns are {', '.join(text)}"
    if label:
        problem += f" and the label column {label}" + (f" (or {', '.join(other_labels)})" if other_labels else "")
    name_label = label is not None and label_column is None and label not in LABEL_COLUMN_NAMES
    raise MetadataColumnsError(problem, text + ([label] if label else []), label, name_label, where)


def _check_text_column(dataset, name: str, columns: list[str], label_column: str | None) -> None:
    """A one-line error for an input column with a missing value (a JSON null, an empty Parquet cell) or with
    values that are not text."""
    column = dataset.with_format("arrow")[name]  # every row, at arrow speed
    if column.null_count:
        index = column.is_null().index(True).as_py()
        raise EmbedlabError(f"input column '{name}' has a missing value at {_row_hint(index)}: fill or drop those rows")
    sample = dataset[:100][name]  # a sample: columns are typed
    if all(isinstance(value, str) for value in sample):
        empty = _empty_texts(column)
        if empty:
            warn_once(f"input column '{name}' has {empty} empty text(s): they train as empty strings (an empty CSV cell reads as one); drop those rows if they are gaps")
        return
    if label_column is None and all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in sample):
        raise EmbedlabError(
            f"input column '{name}' holds numbers, not text: if it is the label, name it as such (`--label-column "
            f"{shlex.quote(name)}` on the command line, `label_column: {name}` in the data source); columns are {columns}"
        )
    raise EmbedlabError(
        f"input column '{name}' does not hold text: select the text columns "
        f"(and the label) with the data source's `columns` key; columns are {columns}"
    )


def _empty_texts(column) -> int:
    import pyarrow.compute

    return pyarrow.compute.sum(pyarrow.compute.equal(pyarrow.compute.utf8_length(column), 0)).as_py() or 0


def detect_format(dataset, label_column: str | None = None, format_key: str | None = None) -> DetectedFormat:
    """Reads a `datasets.Dataset`'s format; `format_key` overrides detection where the structure allows."""
    columns = list(dataset.column_names)
    if label_column is None:
        label_column = next((name for name in columns if name in LABEL_COLUMN_NAMES), None)
    elif label_column not in columns:
        raise EmbedlabError(f"label column '{label_column}' is not in the data: its columns are {columns}")
    input_columns = tuple(name for name in columns if name != label_column)
    if not input_columns:
        raise EmbedlabError(f"the data has no input columns, only the label column '{label_column}'")
    for name in input_columns:
        _check_text_column(dataset, name, columns, label_column)
    kind = label_kind(label_column, dataset[label_column]) if label_column else NO_LABEL

    if format_key is not None:
        chosen = get_format(format_key)
        if not chosen.accepts(len(input_columns), kind):
            raise EmbedlabError(
                f"data format '{format_key}' needs {chosen.title}, but the data has {len(input_columns)} input "
                f"column(s) and a '{kind}' label"
            )
    elif len(input_columns) == 2 and kind == NO_LABEL:
        chosen = _unlabeled_pair_format(dataset[input_columns[0]], dataset[input_columns[1]])
    else:
        matches = [fmt for fmt in FORMATS if fmt.accepts(len(input_columns), kind)]
        if not matches:
            raise EmbedlabError(
                f"no data format has {len(input_columns)} input column(s) ({', '.join(input_columns)}) with a "
                f"'{kind}' label: select the columns you train on with the data source's `columns` key"
            )
        chosen = min(matches, key=lambda fmt: fmt.label != kind)  # an exact label match over "1/0 as class"
    num_classes = None
    if kind in (CLASS, BINARY):
        labels = dataset[label_column]
        num_classes = len(set(labels)) if isinstance(labels[0], str) else int(max(labels)) + 1
    return DetectedFormat(chosen, input_columns, label_column, kind, len(dataset), num_classes)
