import numpy as np
from torch import Tensor, nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer


def delete_words(text: str, del_ratio: float = 0.6) -> str:
    """TSDAE's noise: drop each word with probability `del_ratio`, keeping at least one."""
    words = text.split()
    if not words:
        return text
    keep = np.random.rand(len(words)) > del_ratio
    if not keep.any():
        keep[np.random.choice(len(words))] = True
    return " ".join(word for word, kept in zip(words, keep, strict=True) if kept)


def tie_encoder_to_decoder(encoder: nn.Module, decoder: nn.Module) -> None:
    """Makes each encoder parameter the decoder's parameter of the same name (shared storage), so
    encoder and decoder train as one set of weights; decoder-only ones (cross-attention) stay its own."""
    encoder_modules = dict(encoder.named_modules())
    for name, parameter in decoder.named_parameters():
        module_name, _, attribute = name.rpartition(".")
        module = encoder_modules.get(module_name)
        if module is not None and hasattr(module, attribute):
            setattr(module, attribute, parameter)


class DenoisingAutoEncoderLoss(nn.Module):
    """TSDAE: encode a damaged sentence into one embedding, and train a decoder to rebuild the original
    sentence from that embedding alone. Unsupervised domain adaptation from plain sentences.

    Given (damaged, original) pairs it uses them as they are; given single sentences it damages them
    itself (deleting 60% of the words by default). The decoder is a causal-LM head of the same
    architecture whose weights are tied to the encoder's, as in the paper; it is discarded after training.

    Args:
        model: the EmbeddingModel to train (the encoder).
        decoder_name_or_path: the decoder's model; with tied weights, the encoder's own (default None).
        tie_encoder_decoder: share the encoder's and decoder's weights. Default True.
        del_ratio: the share of words deleted from single sentences. Default 0.6, the paper's best.

    References:
        - TSDAE, Wang et al., 2021: https://arxiv.org/abs/2104.06979

    Requirements:
        - A transformer whose architecture has a causal-LM head (BERT, RoBERTa, ...), CLS pooling in the
          paper's recipe; with tied weights, the same tokenizer for encoder and decoder.

    Inputs:
        +-----------------------------+--------+------------------------+
        | Inputs                      | Labels | Format                 |
        +=============================+========+========================+
        | (damaged, original) pairs   | none   | damaged_original_pairs |
        +-----------------------------+--------+------------------------+
        | single sentences            | none   | single_sentences       |
        +-----------------------------+--------+------------------------+

    Relations:
        - ContrastiveTensionLoss is the other unsupervised loss for single sentences.

    Example:
        loss = DenoisingAutoEncoderLoss(model)
        loss([model.tokenize(["cat on mat"]), model.tokenize(["The cat sat on the mat."])], None)
    """

    formats = ("damaged_original_pairs", "single_sentences")
    batch_sampler = "random"
    # The sweep's default search space (embedlab addition): the parameters worth tuning, and where.
    search_space = {"del_ratio": {"uniform": [0.3, 0.8]}}

    def __init__(self, model: nn.Module, decoder_name_or_path: str | None = None, tie_encoder_decoder: bool = True, del_ratio: float = 0.6):
        super().__init__()
        self.encoder = model
        self.del_ratio = del_ratio
        encoder_path = model.transformer.auto_model.config._name_or_path
        if decoder_name_or_path is None and not tie_encoder_decoder:
            raise ValueError("decoder_name_or_path is needed when tie_encoder_decoder is False")
        decoder_path = encoder_path if tie_encoder_decoder else decoder_name_or_path
        self.tokenizer_decoder = AutoTokenizer.from_pretrained(decoder_path)
        self.need_retokenization = not isinstance(model.transformer.tokenizer, type(self.tokenizer_decoder))
        config = AutoConfig.from_pretrained(decoder_path)
        config.is_decoder = True
        config.add_cross_attention = True
        self.decoder = AutoModelForCausalLM.from_pretrained(decoder_path, config=config).to(model.device)
        if config.hidden_size != model.transformer.auto_model.config.hidden_size:
            raise ValueError("the decoder's hidden size differs from the encoder's")
        if self.tokenizer_decoder.pad_token is None:
            self.tokenizer_decoder.pad_token = self.tokenizer_decoder.eos_token
            self.decoder.config.pad_token_id = self.decoder.config.eos_token_id
        if tie_encoder_decoder:
            if self.need_retokenization:
                raise ValueError("tied encoder and decoder need the same tokenizer")
            tie_encoder_to_decoder(model.transformer.auto_model, self.decoder._modules[self.decoder.base_model_prefix])

    @property
    def model(self) -> nn.Module:
        return self.encoder

    def _damaged(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        tokenizer = self.encoder.transformer.tokenizer
        texts = tokenizer.batch_decode(features["input_ids"], skip_special_tokens=True)
        damaged = self.encoder.tokenize([delete_words(text, self.del_ratio) for text in texts])
        return {key: value.to(features["input_ids"].device) for key, value in damaged.items()}

    def _retokenized(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        texts = self.encoder.transformer.tokenizer.batch_decode(features["input_ids"], skip_special_tokens=True)
        return self.tokenizer_decoder(texts, padding=True, truncation="longest_first", return_tensors="pt").to(features["input_ids"].device)

    def forward(self, sentence_features: list[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        sentence_features = list(sentence_features)
        if len(sentence_features) == 1:
            source, target = self._damaged(sentence_features[0]), sentence_features[0]
        else:
            source, target = sentence_features
        if self.need_retokenization:
            target = self._retokenized(target)
        embeddings = self.encoder(dict(source))["sentence_embedding"]
        target_ids = target["input_ids"]
        logits = self.decoder(
            input_ids=target_ids[:, :-1].clone(),
            encoder_hidden_states=embeddings[:, None],  # the whole sentence as one "token" to attend to
            encoder_attention_mask=source["attention_mask"][:, 0:1],
            use_cache=False,
        )[0]
        loss_fct = nn.CrossEntropyLoss(ignore_index=self.tokenizer_decoder.pad_token_id)
        return loss_fct(logits.reshape(-1, logits.shape[-1]), target_ids[:, 1:].reshape(-1))

    def get_config_dict(self) -> dict:
        return {"decoder_name_or_path": self.decoder.config._name_or_path, "need_retokenization": self.need_retokenization, "del_ratio": self.del_ratio}

    @property
    def citation(self) -> str:
        return """
@inproceedings{wang-2021-TSDAE,
    title = "TSDAE: Using Transformer-based Sequential Denoising Auto-Encoder for Unsupervised Sentence Embedding Learning",
    author = "Wang, Kexin and Reimers, Nils and Gurevych, Iryna",
    booktitle = "Findings of the Association for Computational Linguistics: EMNLP 2021",
    month = nov,
    year = "2021",
    publisher = "Association for Computational Linguistics",
    pages = "671--688",
    url = "https://arxiv.org/abs/2104.06979",
}
"""
