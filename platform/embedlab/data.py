"""Loading data sets, batch samplers and collation into tokenized batches.

Everything is a `datasets.Dataset` once loaded: files are read with pyarrow (no cache folder written),
saved `datasets` folders with `load_from_disk`, and anything else is tried as a hub data set name.
"""

import codecs
import hashlib
import json
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.csv
import pyarrow.json
import pyarrow.parquet
import torch
from torch import Tensor

from embedlab.config import DataSource
from embedlab.errors import EmbedlabError
from embedlab.formats import BINARY, CLASS, DetectedFormat, check_for_metadata_columns, detect_format

FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


def _read_file(path: Path) -> pa.Table:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pa.parquet.read_table(path)
    with path.open("rb") as file:
        head = file.read(HEAD_BYTES)
    _check_text_head(path, suffix, head)
    try:
        if suffix in (".csv", ".tsv"):
            # TSV files such as STSb hold unbalanced quotes inside sentences: tabs alone separate fields.
            parse = pa.csv.ParseOptions(delimiter="\t", quote_char=False) if suffix == ".tsv" else pa.csv.ParseOptions()
            table = pa.csv.read_csv(path, parse_options=parse)
        else:
            table = pa.json.read_json(path)
        # The JSON reader keeps invalid UTF-8 in string columns, which then fails deep inside `datasets`.
        table.validate(full=True)
    except pa.ArrowInvalid:
        _raise_if_not_utf8(path, head)  # a parse error on bytes past the head that are not UTF-8
        raise
    if any(pa.types.is_binary(field.type) for field in table.schema):  # the CSV reader's columns of non-UTF-8 bytes
        _raise_if_not_utf8(path, head)
    return table


HEAD_BYTES = 1 << 16  # enough to tell a file's encoding and separator


def _check_text_head(path: Path, suffix: str, head: bytes) -> None:
    """Fails before parsing on a head that is not UTF-8 text, or whose separator is not its suffix's."""
    try:
        codecs.getincrementaldecoder("utf-8-sig")().decode(head)  # incremental: the head may end inside a character
    except UnicodeDecodeError:
        _raise_if_not_utf8(path, head)
    if suffix not in (".csv", ".tsv"):
        return
    lines = head.decode("utf-8-sig", errors="replace").splitlines()[:6]  # the header and a few rows
    own, other, other_suffix = ("\t", ",", ".csv") if suffix == ".tsv" else (",", "\t", ".tsv")
    if lines and own not in lines[0] and other in lines[0] and all(other in line for line in lines[1:] if line):
        columns = ", ".join(name.strip().strip('"') for name in lines[0].split(other))
        raise EmbedlabError(
            f"data file '{path}' looks {SEPARATOR_NAMES[other]}-separated (columns {columns}), but a {suffix} file is read "
            f"as {SEPARATOR_NAMES[own]}-separated: rename it to {other_suffix}"
        )


SEPARATOR_NAMES = {",": "comma", "\t": "tab"}


def _raise_if_not_utf8(path: Path, head: bytes) -> None:
    """A one-line error saying what a file that is not UTF-8 looks like and how to re-save it."""
    decoder, lines = codecs.getincrementaldecoder("utf-8-sig")(), 1
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                start = error.start - (len(error.object) - len(chunk))  # the decoder may hold bytes of the last chunk
                bad, line = error.object[error.start], lines + chunk[: max(start, 0)].count(b"\n")
                break
            lines += chunk.count(b"\n")
        else:
            return  # it is UTF-8 after all
    fixed = path.with_name(f"{path.stem}.utf8{path.suffix}")
    prefix = f"data file '{path}' is not UTF-8 text"
    zeros = sorted((head[0::2].count(0), head[1::2].count(0)))  # UTF-16 ASCII: a NUL in every other byte, at one parity
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or zeros[1] > len(head) / 4 > 25 * zeros[0]:
        raise EmbedlabError(f"{prefix}: it is UTF-16 text: re-save it as UTF-8, e.g. `iconv -f utf-16 -t utf-8 {path} > {fixed}`")
    if head.startswith(b"PAR1"):
        raise EmbedlabError(f"{prefix}: it looks like a Parquet file: rename it to .parquet")
    control = sum(byte < 32 and byte not in b"\t\n\r\f" for byte in head)
    if control > len(head) / 100:  # text in any 8-bit encoding has next to no control bytes
        raise EmbedlabError(
            f"{prefix}: it looks binary ({control} control bytes in its first {len(head)}): a data file is UTF-8 text "
            f"({', '.join(FILE_SUFFIXES[:-1])}) or Parquet (.parquet); check that this is the file you meant"
        )
    raise EmbedlabError(
        f"{prefix} (byte 0x{bad:02x} on line {line} is invalid in UTF-8): it is likely Latin-1 or Windows-1252 text: "
        f"re-save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 {path} > {fixed}`"
    )


def _file_fingerprint(path: Path) -> str:
    """Names the file's version. Without it `datasets` hashes the whole table by pickling it, which is
    slow on large files and, inside Ray workers, prints dill's bytecode dumps into the job's log."""
    stat = path.stat()
    return hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]


def _load_raw(source: DataSource) -> datasets.Dataset:
    path = Path(source.path).expanduser()
    if path.is_file():
        if path.suffix.lower() not in FILE_SUFFIXES:
            raise EmbedlabError(f"data file '{path}' has an unknown type: use {', '.join(FILE_SUFFIXES)}")
        try:
            return datasets.Dataset(_read_file(path), fingerprint=_file_fingerprint(path))
        except (pa.ArrowInvalid, OSError) as error:
            raise EmbedlabError(f"data file '{path}' could not be read: {str(error).splitlines()[0]}") from None
    if path.is_dir():
        try:
            loaded = datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as error:
            raise EmbedlabError(f"data folder '{path}' is not a saved `datasets` folder: {error}") from None
        if isinstance(loaded, datasets.DatasetDict):
            if source.split not in loaded:
                raise EmbedlabError(f"data folder '{path}' has no split '{source.split}': it has {list(loaded)}")
            loaded = loaded[source.split]
        return loaded
    if path.suffix.lower() in FILE_SUFFIXES or source.path.startswith((".", "/", "~")) or path.parent.exists() and path.parent != Path("."):
        raise EmbedlabError(f"data file '{source.path}' does not exist: check the path (relative paths start from the working folder)")
    try:
        return datasets.load_dataset(source.path, source.subset, split=source.split)
    except Exception as error:  # any hub failure means the same thing to the user
        raise EmbedlabError(
            f"data '{source.path}' is not a local file or folder and could not be loaded from the hub "
            f"({type(error).__name__}): give a local path"
        ) from None


def load_data(source: DataSource) -> datasets.Dataset:
    """Loads a data source, applies its column selection, renaming and row limit."""
    dataset = _load_raw(source)
    if source.columns is not None:
        missing = [name for name in source.columns if name not in dataset.column_names]
        if missing:
            raise EmbedlabError(f"data '{source.path}' has no column(s) {missing}: its columns are {dataset.column_names}")
        dataset = dataset.select_columns(source.columns)
    if source.rename:
        dataset = dataset.rename_columns(source.rename)
    if source.limit is not None:
        dataset = dataset.select(range(min(source.limit, len(dataset))))
    if len(dataset) == 0:
        raise EmbedlabError(f"data '{source.path}' is empty: it has no rows")
    return dataset


def add_teacher_embeddings(dataset: datasets.Dataset, teacher_model: str, batch_size: int = 64) -> datasets.Dataset:
    """The `label` column for MSELoss: a teacher model's embeddings of the first column, computed once."""
    from embedlab.model import EmbeddingModel

    if "label" in dataset.column_names:
        raise EmbedlabError("the data already has a 'label' column: drop it, or leave out `teacher_model`")
    teacher = EmbeddingModel(teacher_model)
    first = dataset.column_names[0]
    embeddings = teacher.encode(dataset[first], batch_size=batch_size)
    print(f"Teacher {teacher_model} embedded column '{first}' ({len(dataset)} rows, dimension {embeddings.shape[1]}) as 'label'")
    return dataset.add_column("label", embeddings.tolist())


def load_with_format(source: DataSource, where: str | None = None) -> tuple[datasets.Dataset, DetectedFormat]:
    """`where`: the source's config key (data.train, evaluators.0.data), named in errors about its columns."""
    dataset = load_data(source)
    if source.columns is None:  # columns the user chose are theirs; all of a file's columns may include metadata
        check_for_metadata_columns(dataset, source.label_column, where, name=f"data '{source.path}'")
    if source.teacher_model is not None:
        dataset = add_teacher_embeddings(dataset, source.teacher_model)
    detected = detect_format(dataset, source.label_column, source.format)
    if source.convert is not None:
        from embedlab.conversions import convert

        dataset, detected = convert(dataset, detected, source.convert)
    return dataset, detected


class Collator:
    """Turns rows into (one tokenized batch per input column, label tensor), as losses expect.

    `prompts` (column -> prompt, from embedlab.prompts.resolve_prompts) puts a column's prompt before each
    of its texts, as `EmbeddingModel.encode(prompt=...)` does, and gives that column's batch a
    `prompt_length` (the prompt's tokens, without the [SEP] the prompt alone tokenizes to) so pooling
    with include_prompt false leaves them out. It is one value per row, so that it moves to a device, slices
    into mini-batches (cached losses) and joins other columns' rows like the other tensors.
    """

    def __init__(self, tokenize, detected: DetectedFormat, dataset: datasets.Dataset, prompts: dict[str, str] | None = None):
        self.tokenize = tokenize
        self.input_columns = detected.input_columns
        self.label_column = detected.label_column
        unknown = [column for column in prompts or {} if column not in self.input_columns]
        if unknown:
            raise EmbedlabError(f"prompts for {', '.join(unknown)}: not input columns of this data ({', '.join(self.input_columns)})")
        self.prompts = {column: prompt for column, prompt in (prompts or {}).items() if prompt}
        # Counted once, as encode counts them: [CLS] prompt [SEP], less the [SEP].
        self.prompt_lengths = {column: tokenize([prompt])["input_ids"].shape[-1] - 1 for column, prompt in self.prompts.items()}
        self.class_ids = None
        if detected.label_kind == CLASS and isinstance(dataset[0][self.label_column], str):
            # Class names become ids in sorted order, so the mapping is the same on every run.
            self.class_ids = {name: index for index, name in enumerate(sorted(set(dataset[self.label_column])))}

    def __call__(self, rows: dict[str, list]) -> tuple[list[dict[str, Tensor]], Tensor | None]:
        features = [self._tokenize_column(column, rows[column]) for column in self.input_columns]
        if self.label_column is None:
            return features, None
        labels = rows[self.label_column]
        if self.class_ids is not None:
            labels = [self.class_ids[label] for label in labels]
        labels = torch.tensor(labels)
        if labels.is_floating_point():
            labels = labels.float()
        return features, labels

    def _tokenize_column(self, column: str, texts: list[str]) -> dict[str, Tensor]:
        prompt = self.prompts.get(column)
        if prompt is None:
            return self.tokenize(texts)
        features = self.tokenize([prompt + text for text in texts])
        features["prompt_length"] = torch.full((len(texts),), self.prompt_lengths[column], dtype=torch.long)
        return features


# Rows per length-sorted group, in batches: as Hugging Face's LengthGroupedSampler, large enough that the
# rows of a batch are close in length, small enough that the batches of an epoch still mix all lengths.
LENGTH_GROUP_BATCHES = 50


def row_token_lengths(model, dataset: datasets.Dataset, detected: DetectedFormat, prompts: dict[str, str] | None = None) -> list[int]:
    """Each row's tokens over its input columns (with their prompts), truncated as training truncates them:
    the padding a batch of similar rows saves. Counted once per data set and tokenizer; kept by the data's
    `datasets` fingerprint, so another sampler (the pre-run check, a sweep's next trial) reuses them."""
    transformer = model.transformer
    tokenizer_digest = hashlib.sha256(json.dumps(transformer.tokenizer.get_vocab(), sort_keys=True).encode()).hexdigest()
    key = (
        dataset._fingerprint,
        type(transformer.tokenizer).__name__,
        tokenizer_digest,
        transformer.max_seq_length,
        transformer.do_lower_case,
        tuple(detected.input_columns),
        tuple(sorted((prompts or {}).items())),
    )
    if key not in _ROW_LENGTHS:
        lengths = [0] * len(dataset)
        for column in detected.input_columns:
            prompt = (prompts or {}).get(column, "")
            counts = model.token_counts([prompt + text for text in dataset[column]])
            lengths = [total + count for total, count in zip(lengths, counts, strict=True)]
        _ROW_LENGTHS[key] = lengths
    return _ROW_LENGTHS[key]


_ROW_LENGTHS: dict[tuple, list[int]] = {}


class RandomBatchSampler:
    """Shuffled batches; the order depends only on (seed, epoch), so a resumed run sees the same batches.

    With `lengths` (each row's token count; `training.group_by_length`), batches hold rows of similar
    length, so little of a batch is padding: the shuffled rows are sorted by length within groups of
    LENGTH_GROUP_BATCHES batches, cut into batches, and the batches shuffled. Every sampler keeps its
    own guarantee (no duplicates, label groups) within such batches.
    """

    def __init__(
        self,
        dataset: datasets.Dataset,
        detected: DetectedFormat,
        batch_size: int,
        seed: int,
        drop_last: bool = False,
        lengths: list[int] | None = None,
    ):
        self.num_rows = len(dataset)
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last
        self.lengths = lengths

    def _ordered(self, generator: torch.Generator) -> list[int]:
        """The rows in the order batches are cut from: shuffled, and sorted by length within groups."""
        order = torch.randperm(self.num_rows, generator=generator).tolist()
        if self.lengths is None:
            return order
        return _sorted_in_groups(order, lambda row: self.lengths[row], self.batch_size * LENGTH_GROUP_BATCHES)

    def _shuffled(self, batches: list[list[int]], generator: torch.Generator) -> list[list[int]]:
        """Length-grouped batches in a random order (else the epoch would run long to short in waves)."""
        if self.lengths is None:
            return batches
        return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]

    def batches(self, epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        order = self._ordered(generator)
        batches = [order[start : start + self.batch_size] for start in range(0, self.num_rows, self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return self._shuffled(batches, generator)


def _sorted_in_groups(items: list, length, group_size: int) -> list:
    """`items` with each consecutive group of `group_size` sorted longest first (a stable sort)."""
    grouped = []
    for start in range(0, len(items), group_size):
        grouped.extend(sorted(items[start : start + group_size], key=length, reverse=True))
    return grouped


class NoDuplicatesBatchSampler(RandomBatchSampler):
    """Shuffled batches in which no text appears twice, so in-batch negatives are never false negatives.

    Rows that would repeat a text in the current batch wait for a later batch, as in sentence-transformers.
    """

    def __init__(self, dataset, detected, batch_size, seed, drop_last=False, lengths=None):
        super().__init__(dataset, detected, batch_size, seed, drop_last, lengths)
        columns = [dataset[column] for column in detected.input_columns]
        self.row_texts = [set(texts) for texts in zip(*columns, strict=True)]

    def batches(self, epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        remaining = dict.fromkeys(self._ordered(generator))  # an ordered set
        batches = []
        while remaining:
            batch, seen = [], set()
            for index in remaining:
                if self.row_texts[index] & seen:
                    continue
                batch.append(index)
                seen |= self.row_texts[index]
                if len(batch) == self.batch_size:
                    break
            if len(batch) < self.batch_size and self.drop_last:
                break
            batches.append(batch)
            for index in batch:
                del remaining[index]
        return self._shuffled(batches, generator)


class GroupByLabelBatchSampler(RandomBatchSampler):
    """Batches of label pairs: two rows of a label at a time, from as many labels as fit, so that every
    batch holds at least two labels with at least two rows each (what the batch triplet losses mine).

    Rows of a label with a single row, and an odd row out per label, wait for the next epoch's shuffle.
    With `lengths`, a label's rows are paired with rows of similar length, the pairs of all labels are
    sorted by length within groups, and a batch takes them in that order, its last pair from another
    label when all others share one.
    """

    def __init__(self, dataset, detected, batch_size, seed, drop_last=False, lengths=None):
        super().__init__(dataset, detected, batch_size, seed, drop_last, lengths)
        if detected.label_kind not in (CLASS, BINARY):
            raise EmbedlabError(f"the group_by_label sampler needs class labels; this data has {detected.label_kind} labels: use sampler auto or random")
        if batch_size < 4 or batch_size % 2:
            raise EmbedlabError(f"the group_by_label sampler needs an even batch size of at least 4, got {batch_size}")
        self.rows_by_label: dict = {}
        for index, label in enumerate(dataset[detected.label_column]):
            self.rows_by_label.setdefault(label, []).append(index)
        if sum(len(rows) >= 2 for rows in self.rows_by_label.values()) < 2:
            raise EmbedlabError("the group_by_label sampler needs at least two labels with two rows each")

    def batches(self, epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        queues = []  # per label, its rows shuffled and cut into pairs
        for rows in self.rows_by_label.values():
            shuffled = [rows[i] for i in torch.randperm(len(rows), generator=generator).tolist()]
            if self.lengths is not None:  # pair rows of similar length
                shuffled = _sorted_in_groups(shuffled, lambda row: self.lengths[row], self.batch_size * LENGTH_GROUP_BATCHES)
            pairs = [shuffled[i : i + 2] for i in range(0, len(shuffled) - 1, 2)]
            if pairs:
                queues.append(pairs)
        if self.lengths is not None:
            return self._length_grouped(queues, generator)
        batches = []
        while sum(1 for queue in queues if queue) >= 2:
            batch = []
            # Labels in a fresh random order, one pair each, until the batch is full. The first round
            # alone visits two or more labels, and a batch holds at least two pairs.
            while len(batch) < self.batch_size and any(queues):
                for label_index in torch.randperm(len(queues), generator=generator).tolist():
                    if queues[label_index] and len(batch) < self.batch_size:
                        batch.extend(queues[label_index].pop())
            if len(batch) < self.batch_size and self.drop_last:
                break
            batches.append(batch)
        return batches

    def _length_grouped(self, queues: list[list[list[int]]], generator: torch.Generator) -> list[list[int]]:
        pairs = [(label, pair) for label, queue in enumerate(queues) for pair in queue]
        pairs = [pairs[i] for i in torch.randperm(len(pairs), generator=generator).tolist()]
        slots = self.batch_size // 2
        pairs = _sorted_in_groups(pairs, lambda item: sum(self.lengths[row] for row in item[1]), slots * LENGTH_GROUP_BATCHES)
        remaining = dict.fromkeys(range(len(pairs)))  # an ordered set of positions in `pairs`
        pairs_left = [len(queue) for queue in queues]  # per label
        batches = []
        while sum(1 for count in pairs_left if count) >= 2:
            taken, labels = [], set()
            for position in remaining:
                label = pairs[position][0]
                # The last slot goes to another label if all pairs so far share one; one is left, since
                # at least two labels have pairs left and the batch holds only one of them.
                if len(taken) == slots - 1 and labels == {label}:
                    continue
                taken.append(position)
                labels.add(label)
                if len(taken) == slots:
                    break
            batch = [row for position in taken for row in pairs[position][1]]
            if len(batch) < self.batch_size and self.drop_last:
                break
            batches.append(batch)
            for position in taken:
                del remaining[position]
                pairs_left[pairs[position][0]] -= 1
        return self._shuffled(batches, generator)


SAMPLERS = {"random": RandomBatchSampler, "no_duplicates": NoDuplicatesBatchSampler, "group_by_label": GroupByLabelBatchSampler}


class MixtureSampler:
    """Global batches from several data sets, each batch from one data set (so in-batch negatives stay
    within it), each data set batched by its own sampler (the one its loss needs). `batches(epoch)` is a
    list of (data set name, row indices), a function of (seed, epoch) only, so a resumed run continues
    the same stream. What an epoch is, per `training.mixture`:

    - proportional (as sentence-transformers): every batch of every data set once, in a seeded random
      order of data sets, so each data set's share of the steps is its share of the batches.
    - round_robin (as sentence-transformers): the data sets take turns in config order; the epoch ends
      when one runs out of batches, so each data set gets as many batches as the smallest has.
    - weights / temperature: each step's data set is drawn with probability weight / sum of weights
      (temperature T: weight = rows^(1/T); T = 1 is by size, a large T nearly uniform); an epoch has as
      many steps as a proportional one. A data set drawn more often than it has batches goes on into
      its next pass (its sampler's next epoch), so a small data set with a large weight is repeated,
      never exhausted, and one drawn less carries its unused batches over to the next epoch.
    """

    def __init__(self, samplers: dict, mixture, sizes: dict[str, int], seed: int):
        self.samplers = samplers
        self.names = list(samplers)
        self.seed = seed
        self.mode = mixture if isinstance(mixture, str) else "weights"
        if self.mode == "weights":
            if mixture.weights is not None:
                raw = [float(mixture.weights[name]) for name in self.names]
            else:
                raw = [sizes[name] ** (1.0 / mixture.temperature) for name in self.names]
            self.probabilities = torch.tensor(raw, dtype=torch.float64) / sum(raw)
        self._consumed = [dict.fromkeys(self.names, 0)]  # per epoch: each data set's batches used before it
        self._pass_lengths: dict[tuple[str, int], int] = {}  # (data set, pass) -> its number of batches

    def batches(self, epoch: int) -> list[tuple[str, list[int]]]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        if self.mode == "round_robin":
            own = {name: self.samplers[name].batches(epoch) for name in self.names}
            turns = min(len(batches) for batches in own.values())
            return [(name, own[name][turn]) for turn in range(turns) for name in self.names]
        if self.mode == "proportional":
            own = {name: self.samplers[name].batches(epoch) for name in self.names}
            order = [name for name in self.names for _ in own[name]]
            order = [order[i] for i in torch.randperm(len(order), generator=generator).tolist()]
            batches = {name: iter(own[name]) for name in self.names}
            return [(name, next(batches[name])) for name in order]
        order = self._draws(epoch)
        start = self._start(epoch)
        taken = {name: self._stream(name, start[name], order.count(name)) for name in self.names}
        return [(name, next(taken[name])) for name in order]

    def _draws(self, epoch: int) -> list[str]:
        steps = sum(self._pass_length(name, epoch) for name in self.names)
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return [self.names[i] for i in torch.multinomial(self.probabilities, steps, replacement=True, generator=generator).tolist()]

    def _start(self, epoch: int) -> dict[str, int]:
        """How many of each data set's batches the epochs before `epoch` used (weights mode)."""
        while len(self._consumed) <= epoch:
            previous, draws = self._consumed[-1], self._draws(len(self._consumed) - 1)
            self._consumed.append({name: previous[name] + draws.count(name) for name in self.names})
        return self._consumed[epoch]

    def _stream(self, name: str, start: int, count: int):
        """Batches start .. start + count of a data set's endless stream: its sampler's epochs 0, 1, 2, ..."""
        sampler, epoch = self.samplers[name], 0
        while count > 0:
            if start >= self._pass_length(name, epoch):  # a pass used up before: skipped by its length alone
                start -= self._pass_length(name, epoch)
            else:
                chunk = sampler.batches(epoch)[start : start + count]
                yield from chunk
                count -= len(chunk)
                start = 0
            epoch += 1

    def _pass_length(self, name: str, epoch: int) -> int:
        """The number of batches of a data set's pass `epoch`, batched once and remembered."""
        if (name, epoch) not in self._pass_lengths:
            self._pass_lengths[name, epoch] = len(self.samplers[name].batches(epoch))
            if not self._pass_lengths[name, epoch]:
                raise EmbedlabError(f"data set '{name}' gives no batch: use a smaller batch size")
        return self._pass_lengths[name, epoch]
