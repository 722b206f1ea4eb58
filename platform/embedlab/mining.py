"""Hard-negative mining: (anchor, positive) pairs -> (anchor, positive, negative) triplets or n-tuples.

Hard negatives are passages that look relevant to an anchor but are not its positive; for in-batch
negative losses they are the largest quality lever on pair data. `mine()` follows sentence-transformers'
`mine_hard_negatives`: the same parameters, defaults and, with `sampling_strategy="top"`, the same
negatives (`tests/integration/test_mining_parity.py`). What it adds is what large corpora need:

- Embeddings are cached on disk, keyed by the model's weights fingerprint, the prompt and a digest of
  the texts: a rerun (another sweep trial, another margin) does not encode again.
- Texts are encoded in blocks written straight into the cache file, and the search runs over chunks of
  anchors x chunks of corpus, keeping a merged top-k per anchor: peak memory grows with the corpus size x
  embedding size (not even that: the cache file is memory-mapped), never with anchors x corpus.
- With `workers`, a Ray Data actor pool embeds the texts (`map_batches`, GPU actors with `use_gpu`);
  the search is the same, so the output is the same as in one process.

An anchor's own positives (all of them, when it has several) are never its negatives. Anchors left
with fewer than `num_negatives` candidates are counted and reported, never silently dropped.
"""

import hashlib
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch

from embedlab.config import MiningConfig
from embedlab.errors import EmbedlabError

OUTPUT_FORMATS = {"triplets": "triplet", "n_tuples": "n-tuple"}  # convert.to -> output_format
ENCODE_BLOCK = 16384  # texts encoded per block before they go to the cache file: bounds encoding memory
QUERY_CHUNK = 1024  # anchors scored at once ...
CORPUS_CHUNK = 16384  # ... against this many corpus rows: a 64 MiB float32 score block
CACHE_VERSION = "embedlab-mining-1"  # part of every cache key: change it when the stored embeddings change meaning


@dataclass
class MiningResult:
    """The mined data set and what the log says about it (also returned for tests and benchmarks)."""

    dataset: datasets.Dataset
    summary: dict


# --- settings and inputs, all checked before any encoding ---------------------------------------------
def mining_model_path(name: str) -> str:
    """A model folder, hub id or a run's output folder (its `model/`) -> what EmbeddingModel loads."""
    from embedlab.model import resolve_model_path

    path = Path(name).expanduser()
    if path.is_dir() and not (path / "modules.json").exists() and not (path / "config.json").exists() and (path / "model").is_dir():
        path = path / "model"  # an embedlab run folder
    return str(resolve_model_path(str(path) if path.exists() else name))


def setting_name(where: str, key: str) -> str:
    """A setting as the user wrote it: the config key under `where`, or the command-line flag when `where` is ""."""
    return f"{where}.{key}" if where else "--gpu" if key == "use_gpu" else f"--{key.replace('_', '-')}"


def check_settings(settings: MiningConfig, where: str = "mine") -> None:
    """Checks what does not depend on the data: one-line errors naming the setting and a fix."""
    for key in ("num_negatives", "batch_size", "workers"):
        value = getattr(settings, key)
        if value is not None and value < 1:
            raise EmbedlabError(f"{setting_name(where, key)} must be at least 1, got {value}")
    if settings.range_min < 0:
        raise EmbedlabError(f"{setting_name(where, 'range_min')} must be 0 or more, got {settings.range_min}")
    if settings.range_max is not None and settings.range_min >= settings.range_max:
        raise EmbedlabError(
            f"{setting_name(where, 'range_min')} ({settings.range_min}) must be smaller than {setting_name(where, 'range_max')} "
            f"({settings.range_max}): candidates are ranks range_min .. range_max - 1"
        )
    if settings.use_gpu and not settings.workers:
        raise EmbedlabError(f"{setting_name(where, 'use_gpu')} needs {setting_name(where, 'workers')} N: GPU embedding runs on Ray Data actors")
    if settings.corpus is not None and not Path(settings.corpus).expanduser().is_file():
        raise EmbedlabError(f"{setting_name(where, 'corpus')} file '{settings.corpus}' does not exist: give a file of passages (.txt: one per line)")


def resolve_range_max(settings: MiningConfig, max_positives: int, where: str = "mine") -> int:
    """sentence-transformers' default: room for the skipped ranks, the negatives and an anchor's positives;
    ten times the negatives when a margin or score bound will discard candidates."""
    range_max = settings.range_max
    if range_max is None:
        filtered = settings.absolute_margin is not None or settings.relative_margin is not None or settings.max_score is not None
        range_max = settings.range_min + settings.num_negatives * (10 if filtered else 1) + max_positives
    if settings.num_negatives > range_max - settings.range_min:
        raise EmbedlabError(
            f"{where or 'mine'}: cannot mine {settings.num_negatives} negatives per anchor from ranks {settings.range_min} .. {range_max - 1} "
            f"({range_max - settings.range_min} candidates): lower num_negatives or range_min, or raise range_max"
        )
    return range_max


def load_model(model_path: str, settings: MiningConfig):
    """The ranking model, loaded now so that a model that does not load fails before any encoding."""
    from embedlab.model import EmbeddingModel

    try:
        # In process: a GPU where there is one (EmbeddingModel's default). With workers the actors embed,
        # and the driver's copy only answers prompts and sizes: it stays off the GPUs they need.
        return EmbeddingModel(model_path, device="cpu" if settings.workers else None)
    except EmbedlabError:
        raise
    except Exception as error:  # a broken folder fails in transformers or safetensors, with long messages
        first = (str(error).strip().splitlines() or [""])[0]
        raise EmbedlabError(f"mining model '{settings.model}' does not load ({type(error).__name__}: {first}): give a sentence-transformers or transformers model folder") from None


def load_corpus(path: str) -> list[str]:
    """Passages from a .txt file (one per line, blank lines skipped) or a data file with one text column
    (or a column named `text`)."""
    from embedlab.config import DataSource
    from embedlab.data import load_data

    file = Path(path).expanduser()
    if file.suffix.lower() == ".txt":
        return [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    table = load_data(DataSource(path=str(file)))
    columns = table.column_names
    column = "text" if "text" in columns else columns[0] if len(columns) == 1 else None
    if column is None or not isinstance(table[0][column], str):
        raise EmbedlabError(f"corpus file '{path}' must hold one text column (or one named 'text'); its columns are {columns}")
    return list(table[column])


# --- embeddings: blocks, a cache on disk, Ray Data when asked -----------------------------------------
def texts_digest(texts: list[str]) -> str:
    """A digest of the texts in order (each one length-prefixed, so no two lists share a digest)."""
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def cache_folder(settings: MiningConfig) -> Path:
    return Path(settings.cache_folder or os.environ.get("EMBEDLAB_CACHE") or Path.home() / ".cache" / "embedlab" / "embeddings").expanduser()


class Embedder:
    """Normalized float32 embeddings of text lists, in blocks, cached by (model weights, prompt, texts)."""

    def __init__(self, model, model_path: str, settings: MiningConfig):
        from embedlab.identity import model_fingerprint

        self.model, self.model_path, self.settings = model, model_path, settings
        self.model_fingerprint = model_fingerprint(model_path)
        self.folder = cache_folder(settings)
        self.encoded_texts = 0  # texts encoded by this embedder (0 on a warm cache)

    def cache_path(self, texts: list[str], prompt: str | None) -> Path:
        key = hashlib.sha256(repr((CACHE_VERSION, self.model_fingerprint, self.model.max_seq_length, prompt, texts_digest(texts))).encode()).hexdigest()[:32]
        return self.folder / f"{key}.npy"

    def __call__(self, texts: list[str], prompt: str | None, what: str) -> np.ndarray:
        path = self.cache_path(texts, prompt)
        if path.exists():
            embeddings = np.load(path, mmap_mode="r")
            if embeddings.shape == (len(texts), self.model.embedding_dimension):
                print(f"Mining: {len(texts)} {what} embeddings from the cache ({path})")
                return embeddings
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial.npy")
        # Written in place block by block, then renamed: a crash leaves no half-written cache entry.
        out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=(len(texts), self.model.embedding_dimension))
        start_time = time.perf_counter()
        if self.settings.workers:
            embed_with_ray(self.model_path, texts, prompt, self.settings, out)
        else:
            for start in range(0, len(texts), ENCODE_BLOCK):
                block = texts[start : start + ENCODE_BLOCK]
                out[start : start + len(block)] = self.model.encode(block, batch_size=self.settings.batch_size, normalize_embeddings=True, prompt=prompt)
        out.flush()
        del out
        os.replace(partial, path)
        self.encoded_texts += len(texts)
        seconds = time.perf_counter() - start_time
        where = f"{self.settings.workers} Ray Data actors" if self.settings.workers else "this process"
        print(f"Mining: embedded {len(texts)} {what} texts in {seconds:.1f}s ({len(texts) / max(seconds, 1e-9):.0f}/s, {where}); cached in {path}")
        return np.load(path, mmap_mode="r")


class _RayEmbedder:
    """A Ray Data actor: loads the model once, embeds batches of rows {"index", "text"}."""

    def __init__(self, model_path: str, batch_size: int, prompt: str | None, use_gpu: bool):
        from embedlab.model import EmbeddingModel

        self.model = EmbeddingModel(model_path, device="cuda" if use_gpu else "cpu")
        self.batch_size, self.prompt = batch_size, prompt

    def __call__(self, batch: dict) -> dict:
        embeddings = self.model.encode(list(batch["text"]), batch_size=self.batch_size, normalize_embeddings=True, prompt=self.prompt)
        return {"index": batch["index"], "embedding": embeddings}


RAY_BLOCK = 4096  # texts per Ray Data block and per actor call: big enough for length-sorted batches inside


def embed_with_ray(model_path: str, texts: list[str], prompt: str | None, settings: MiningConfig, out: np.ndarray) -> None:
    """Embeds `texts` into `out` on a pool of `settings.workers` Ray Data actors. Rows carry their index,
    so the order Ray returns blocks in does not matter; results stream back to the driver block by block."""
    import pyarrow as pa
    import ray
    import ray.data

    from embedlab.ray_train import connect

    connect(None)
    table = pa.table({"index": np.arange(len(texts), dtype=np.int64), "text": texts})
    blocks = [table.slice(start, RAY_BLOCK) for start in range(0, len(texts), RAY_BLOCK)]
    dataset = ray.data.from_arrow(blocks).map_batches(
        _RayEmbedder,
        fn_constructor_kwargs={"model_path": model_path, "batch_size": settings.batch_size, "prompt": prompt, "use_gpu": settings.use_gpu},
        batch_size=RAY_BLOCK,
        concurrency=settings.workers,
        num_gpus=1 if settings.use_gpu else 0,
        batch_format="numpy",
    )
    filled = 0
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        out[batch["index"]] = batch["embedding"]
        filled += len(batch["index"])
    if filled != len(texts):
        raise RuntimeError(f"Ray Data returned {filled} embeddings for {len(texts)} texts")


# --- the search ---------------------------------------------------------------------------------------
def top_k(queries: np.ndarray, corpus: np.ndarray, k: int, query_chunk: int = QUERY_CHUNK, corpus_chunk: int = CORPUS_CHUNK, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The `k` highest dot products of each query with the corpus, best first: (scores, corpus indices),
    each [queries, k]; padded with -inf / -1 where the corpus has fewer than `k` rows.

    Scores one block of query_chunk x corpus_chunk at a time and merges each block's top-k into a running
    top-k, so memory is O(query_chunk x corpus_chunk + queries x k) whatever the corpus size."""
    all_scores = torch.full((len(queries), k), -float("inf"))
    all_indices = torch.full((len(queries), k), -1, dtype=torch.long)
    for q_start in range(0, len(queries), query_chunk):
        query_block = torch.from_numpy(np.array(queries[q_start : q_start + query_chunk], dtype=np.float32)).to(device)
        best_scores = torch.full((len(query_block), k), -float("inf"), device=device)
        best_indices = torch.full((len(query_block), k), -1, dtype=torch.long, device=device)
        for c_start in range(0, len(corpus), corpus_chunk):
            corpus_block = torch.from_numpy(np.array(corpus[c_start : c_start + corpus_chunk], dtype=np.float32)).to(device)
            scores, indices = torch.topk(query_block @ corpus_block.T, k=min(k, len(corpus_block)), dim=1)
            merged_scores = torch.cat([best_scores, scores], dim=1)
            merged_indices = torch.cat([best_indices, indices + c_start], dim=1)
            best_scores, positions = torch.topk(merged_scores, k=k, dim=1)
            best_indices = torch.gather(merged_indices, 1, positions)
        all_scores[q_start : q_start + len(query_block)] = best_scores.cpu()
        all_indices[q_start : q_start + len(query_block)] = best_indices.cpu()
    return all_scores, all_indices


# --- mining -------------------------------------------------------------------------------------------
def mine(
    dataset: datasets.Dataset,
    settings: MiningConfig,
    anchor_column: str | None = None,
    positive_column: str | None = None,
    output_format: str | None = None,
    where: str = "mine",
    model=None,
) -> MiningResult:
    """Adds hard negatives to (anchor, positive) pairs.

    Args:
        dataset: the pairs; anchors in `anchor_column` (default: the first column), positives in
            `positive_column` (default: the second).
        settings: sentence-transformers' `mine_hard_negatives` parameters (`MiningConfig`).
        output_format: "triplet" (a row per anchor, positive and negative; anchors with fewer candidates
            keep fewer rows) or "n-tuple" (a row per anchor and positive with `num_negatives` negative
            columns; rows of anchors without enough candidates are left out, and counted); default:
            `settings.output_format`, else "triplet".
        where: the settings' config key, named in errors.
        model: an already loaded EmbeddingModel for `settings.model` (default: load it).

    Returns:
        MiningResult: the dataset (columns anchor, positive, negative or negative_1 .. negative_n, named
        after the input columns as sentence-transformers does) and a summary: counts of anchors, rows,
        anchors with too few candidates, candidates each filter skipped, and score statistics.

    Example:
        pairs = datasets.Dataset.from_dict({"anchor": [...], "positive": [...]})
        triplets = mine(pairs, MiningConfig(num_negatives=1, range_min=10, relative_margin=0.05)).dataset
    """
    check_settings(settings, where)
    output_format = output_format or settings.output_format or "triplet"
    columns = dataset.column_names
    if len(columns) < 2:
        raise EmbedlabError(f"mining needs (anchor, positive) pairs: the data has one column ({columns[0]}); a second column of positives is missing")
    anchor_column, positive_column = anchor_column or columns[0], positive_column or columns[1]
    for name in (anchor_column, positive_column):
        if name not in columns or not isinstance(dataset[0][name], str):
            raise EmbedlabError(f"mining needs text columns for anchors and positives; '{name}' is not one of the data's text columns {columns}")
    all_queries, all_positives = list(dataset[anchor_column]), list(dataset[positive_column])
    rows_per_anchor: dict[str, int] = {}
    for query in all_queries:
        rows_per_anchor[query] = rows_per_anchor.get(query, 0) + 1
    max_positives = max(rows_per_anchor.values())  # as sentence-transformers counts them: rows per anchor
    range_max = resolve_range_max(settings, max_positives, where)
    corpus_texts = load_corpus(settings.corpus) if settings.corpus else all_positives
    model_path = mining_model_path(settings.model)
    if model is None:
        model = load_model(model_path, settings)
    query_prompt = model._prompt_for(settings.query_prompt, settings.query_prompt_name or _default_prompt(model, ("query",), settings.query_prompt))
    corpus_prompt = model._prompt_for(settings.corpus_prompt, settings.corpus_prompt_name or _default_prompt(model, ("document", "passage", "corpus"), settings.corpus_prompt))

    # Every positive is in the corpus; texts once each, in first-seen order.
    corpus = list(dict.fromkeys(corpus_texts + all_positives))
    corpus_index = {text: index for index, text in enumerate(corpus)}
    queries = list(dict.fromkeys(all_queries))
    query_index = {text: index for index, text in enumerate(queries)}
    positive_ids: list[list[int]] = [[] for _ in queries]
    for query, positive in zip(all_queries, all_positives, strict=True):
        ids = positive_ids[query_index[query]]
        if corpus_index[positive] not in ids:
            ids.append(corpus_index[positive])

    embed = Embedder(model, model_path, settings)
    # A separate corpus file and the positives it lacks are cached apart: another slice of the pairs (a
    # data limit, a smoke test) reuses the file's embeddings. Together they are `corpus`, in its order.
    own = list(dict.fromkeys(corpus_texts)) if settings.corpus else []
    extra = corpus[len(own) :]
    parts = [embed(part, corpus_prompt, what) for part, what in ((own, "corpus"), (extra, "positive" if own else "corpus")) if part]
    corpus_embeddings = parts[0] if len(parts) == 1 else np.concatenate(parts)
    query_embeddings = embed(queries, query_prompt, "anchor")
    k = range_max + max_positives  # room for the positives, which are masked out below
    scores, indices = top_k(query_embeddings, corpus_embeddings, k, device=model.device)

    pair_query = np.repeat(np.arange(len(queries)), [len(ids) for ids in positive_ids])
    pair_positive = np.concatenate([np.asarray(ids) for ids in positive_ids])
    positive_scores = torch.from_numpy(np.einsum("ij,ij->i", np.asarray(query_embeddings[pair_query]), np.asarray(corpus_embeddings[pair_positive])))
    # The weakest positive of each anchor sets its margins (the safe side with several positives).
    weakest = torch.full((len(queries),), float("inf")).scatter_reduce(0, torch.from_numpy(pair_query), positive_scores, reduce="amin")

    scores[indices == -1] = -float("inf")
    padded = torch.full((len(queries), max(len(ids) for ids in positive_ids)), -2, dtype=torch.long)
    for row, ids in enumerate(positive_ids):
        padded[row, : len(ids)] = torch.tensor(ids)
    scores[(indices.unsqueeze(-1) == padded.unsqueeze(1)).any(-1)] = -float("inf")
    skipped = {}
    retrieved = int((scores > -float("inf")).sum())  # the candidates the filters below look at
    thresholds = {
        "absolute_margin": None if settings.absolute_margin is None else scores + settings.absolute_margin > weakest[:, None],
        "relative_margin": None if settings.relative_margin is None else scores > (weakest - weakest.abs() * settings.relative_margin)[:, None],
    }
    for name, removed in thresholds.items():
        if removed is not None:
            skipped[name] = int((removed & (scores > -float("inf"))).sum())
            scores[removed] = -float("inf")
    for name, bound in (("max_score", settings.max_score), ("min_score", settings.min_score)):
        if bound is not None:
            removed = scores > bound if name == "max_score" else scores < bound
            skipped[name] = int((removed & (scores > -float("inf"))).sum())
            scores[removed] = -float("inf")

    negative_scores, positions = torch.topk(scores, k=range_max, dim=1)
    negative_ids = torch.gather(indices, 1, positions)[:, settings.range_min :]
    negative_scores = negative_scores[:, settings.range_min :]
    if settings.sampling_strategy == "top":
        negative_ids, negative_scores = negative_ids[:, : settings.num_negatives], negative_scores[:, : settings.num_negatives]
    else:
        negative_ids, negative_scores = _sample(negative_ids, negative_scores, settings.num_negatives, random.Random(settings.seed))
    found = (negative_scores > -float("inf")).sum(1)
    short = found < settings.num_negatives

    rows = _rows(queries, corpus, positive_ids, negative_ids, negative_scores, output_format, anchor_column, positive_column, settings.num_negatives)
    mined = datasets.Dataset.from_dict(rows)
    kept_negative_scores = negative_scores[negative_scores > -float("inf")]
    summary = {
        "anchors": len(queries),
        "pairs": len(pair_query),
        "corpus": len(corpus),
        "range_max": range_max,
        "rows": len(mined),
        "anchors_with_too_few_negatives": int(short.sum()),
        "pairs_dropped": int(sum(len(positive_ids[row]) for row in short.nonzero().flatten().tolist())) if output_format == "n-tuple" else 0,
        "skipped": skipped,
        "retrieved": retrieved,
        "positive_score_mean": float(positive_scores.mean()),
        "negative_score_mean": float(kept_negative_scores.mean()) if len(kept_negative_scores) else float("nan"),
        "encoded_texts": embed.encoded_texts,
        "model": settings.model,
    }
    _report(summary, settings, output_format)
    return MiningResult(mined, summary)


def _default_prompt(model, names: tuple[str, ...], raw: str | None) -> str | None:
    """sentence-transformers' encode_query / encode_document: the model's "query" prompt for anchors, its
    first of "document", "passage", "corpus" for the corpus, when no prompt is given."""
    if raw is not None:
        return None
    return next((name for name in names if name in model.prompts), None)


def _sample(ids: torch.Tensor, scores: torch.Tensor, num_negatives: int, rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """`num_negatives` random candidates per anchor among its remaining ones, best first."""
    options = (ids.size(1) - scores.isinf().sum(1)).clamp(min=num_negatives)
    picked = torch.tensor([rng.sample(range(count), k=num_negatives) for count in options.tolist()], dtype=torch.long)
    scores, order = torch.gather(scores, 1, picked).sort(dim=1, descending=True)
    return torch.gather(torch.gather(ids, 1, picked), 1, order), scores


def _rows(queries, corpus, positive_ids, negative_ids, negative_scores, output_format, anchor_column, positive_column, num_negatives) -> dict:
    valid = (negative_scores > -float("inf")).tolist()
    negative_ids = negative_ids.tolist()
    if output_format == "triplet":
        rows = {anchor_column: [], positive_column: [], "negative": []}
        for query, positives in enumerate(positive_ids):
            for positive in positives:
                for negative, ok in zip(negative_ids[query], valid[query], strict=True):
                    if ok:
                        rows[anchor_column].append(queries[query])
                        rows[positive_column].append(corpus[positive])
                        rows["negative"].append(corpus[negative])
        return rows
    rows = {anchor_column: [], positive_column: [], **{f"negative_{i}": [] for i in range(1, num_negatives + 1)}}
    for query, positives in enumerate(positive_ids):
        if not all(valid[query]):
            continue
        for positive in positives:
            rows[anchor_column].append(queries[query])
            rows[positive_column].append(corpus[positive])
            for i, negative in enumerate(negative_ids[query], start=1):
                rows[f"negative_{i}"].append(corpus[negative])
    return rows


def _report(summary: dict, settings: MiningConfig, output_format: str) -> None:
    print(
        f"Mining with {summary['model']}: {summary['anchors']} anchors ({summary['pairs']} pairs), corpus {summary['corpus']} texts, "
        f"candidates ranks {settings.range_min} .. {summary['range_max'] - 1}, {settings.sampling_strategy} {settings.num_negatives} -> "
        f"{summary['rows']} {output_format} rows; mean score positive {summary['positive_score_mean']:.4f}, negative {summary['negative_score_mean']:.4f}"
    )
    for name, count in summary["skipped"].items():
        print(f"Mining: {name} {getattr(settings, name)} skipped {count} of the {summary['retrieved']} candidates retrieved (the top {summary['range_max']} and room for the positives, per anchor)")
    short = summary["anchors_with_too_few_negatives"]
    if short:
        what = f"their {summary['pairs_dropped']} pairs are left out of the n-tuples" if output_format == "n-tuple" else "they have fewer triplet rows"
        print(
            f"Mining: {short} of {summary['anchors']} anchors have fewer than {settings.num_negatives} negatives among their candidates "
            f"({what}): raise range_max, or loosen range_min, the margins or score bounds"
        )


def write_dataset(dataset: datasets.Dataset, path: str) -> None:
    """Writes mined rows as Parquet, JSONL or CSV, by the file's suffix."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = target.suffix.lower()
    if suffix == ".parquet":
        dataset.to_parquet(str(target))
    elif suffix in (".jsonl", ".json"):
        dataset.to_json(str(target), lines=True, force_ascii=False)
    else:
        dataset.to_csv(str(target), index=False)


OUTPUT_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv")


def check_output_path(path: str) -> None:
    if Path(path).suffix.lower() not in OUTPUT_SUFFIXES:
        raise EmbedlabError(f"output file '{path}' has an unknown type: use {', '.join(OUTPUT_SUFFIXES)}")
