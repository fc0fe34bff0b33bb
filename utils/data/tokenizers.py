"""Captions -> token ids with the ``tokenizers`` library (a word-level vocabulary, like Keras's
TextVectorization in the course): lower-case, punctuation stripped, split on whitespace,
id 0 = padding, id 1 = unknown word, every sequence padded or cut to ``length`` tokens.

The pretrained towers' own tokenizers (``HFTokenizerAdapter``) offer the same interface:
``encode(texts) -> LongTensor (N, length)``, ``to_dict()`` for checkpoints.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import pandas as pd
import torch
from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from tokenizers.trainers import WordLevelTrainer

from utils.core.pretrained import (
    PretrainedTextConfig,
    from_pretrained,
    load_hf_config,
    pretrained_text_config,
)
from utils.data.words import APOSTROPHES, SEPARATORS

PAD_TOKEN, UNK_TOKEN = "[PAD]", "[UNK]"


SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN)  # their position is their id: [PAD] = 0, [UNK] = 1


def make_normalizer() -> normalizers.Normalizer:
    """The project's word rule (utils.data.words) as a ``tokenizers`` normaliser: lower-case,
    apostrophes dropped, other separators turned into spaces."""
    return normalizers.Sequence([
        normalizers.Lowercase(),
        normalizers.Replace(Regex(APOSTROPHES), ""),
        normalizers.Replace(Regex(SEPARATORS), " "),
    ])


def make_tokenizer() -> Tokenizer:
    """An untrained word-level tokenizer with the project's normalisation."""
    tokenizer = Tokenizer(WordLevel(unk_token=UNK_TOKEN))
    tokenizer.normalizer = make_normalizer()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer


def set_length(tokenizer: Tokenizer, length: int) -> Tokenizer:
    """Pad (with id 0) and truncate every encoding to exactly ``length`` tokens."""
    tokenizer.enable_padding(pad_id=0, pad_token=PAD_TOKEN, length=length)
    tokenizer.enable_truncation(max_length=length)
    return tokenizer


class TextVectorizer:
    """Word-level vectoriser: ``encode(texts) -> LongTensor (N, length)``, fitted on training
    captions only, vocabulary ordered by decreasing frequency (ties alphabetical)."""

    pad_id = 0
    unk_id = 1

    def __init__(self, tokenizer: Tokenizer, length: int) -> None:
        self.tokenizer = set_length(tokenizer, length)
        self.length = length
        if tokenizer.token_to_id(PAD_TOKEN) != self.pad_id or \
                tokenizer.token_to_id(UNK_TOKEN) != self.unk_id:
            raise ValueError(f"tokenizer must map {PAD_TOKEN} to 0 and {UNK_TOKEN} to 1")

    @classmethod
    def fit(cls, texts: Iterable[str], max_tokens: int = 10_000, length: int = 32
            ) -> TextVectorizer:
        """Learn the ``max_tokens`` most frequent words (the 2 special tokens included)."""
        texts = list(texts)
        if not texts:
            raise ValueError("TextVectorizer.fit: no texts. Fix: pass the training captions.")
        tokenizer = make_tokenizer()
        trainer = WordLevelTrainer(vocab_size=max_tokens, special_tokens=list(SPECIAL_TOKENS),
                                   show_progress=False)
        tokenizer.train_from_iterator(texts, trainer=trainer)
        return cls(tokenizer, length)

    @property
    def vocab_size(self) -> int:
        """Number of ids (special tokens included): the embedding table's size."""
        return self.tokenizer.get_vocab_size()

    def vocabulary(self) -> list[str]:
        """Tokens in id order: [PAD], [UNK], then words by decreasing frequency."""
        vocab = self.tokenizer.get_vocab()
        return sorted(vocab, key=vocab.get)

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Token ids of each text: LongTensor (N, length), 0-padded on the right."""
        if isinstance(texts, str):
            raise TypeError("encode expects a list of texts; wrap one text as [text].")
        encodings = self.tokenizer.encode_batch(list(texts))
        return torch.tensor([e.ids for e in encodings], dtype=torch.long).reshape(-1, self.length)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """The words of one id sequence (L,), padding dropped: to show what the model sees."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return self.tokenizer.decode(ids, skip_special_tokens=False).replace(PAD_TOKEN, "").strip()

    def to_dict(self) -> dict:
        """JSON-like state for checkpoints: the tokenizer's JSON and the length."""
        return {"kind": "word_level", "tokenizer": self.tokenizer.to_str(), "length": self.length}

    @classmethod
    def from_dict(cls, state: dict) -> TextVectorizer:
        """Rebuild a vectoriser saved with ``to_dict``."""
        return cls(Tokenizer.from_str(state["tokenizer"]), int(state["length"]))


def load_hf_tokenizer(config: PretrainedTextConfig | dict, hf_config=None):
    """The model's own fast tokenizer: DistilBertTokenizerFast for DistilBERT, else Auto."""
    from transformers import AutoTokenizer, DistilBertTokenizerFast  # slow import: on use

    config = pretrained_text_config(config)
    hf_config = hf_config if hf_config is not None else load_hf_config(config)
    if hf_config.model_type == "distilbert":
        tokenizer = from_pretrained(DistilBertTokenizerFast, config.model)
    else:
        tokenizer = from_pretrained(AutoTokenizer, config.model, use_fast=True)
    check_tokenizer(tokenizer, hf_config, config.model)
    limit = getattr(hf_config, "max_position_embeddings", None)
    if limit is not None and int(config.max_length) > limit:
        raise ValueError(f"{config.model}: max_length={config.max_length} exceeds the model's "
                         f"{limit} positions; lower max_length")
    return tokenizer


def check_tokenizer(tokenizer, config, name: str = "model") -> None:
    """Raise when the tokenizer cannot belong to the model (wrong family or vocabulary)."""
    kind = type(tokenizer).__name__
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{name}: tokenizer {kind} is not a fast (Rust) tokenizer; "
                         "load it with use_fast=True.")
    if config.model_type == "distilbert" and not kind.startswith("DistilBertTokenizer"):
        raise ValueError(f"{name}: a DistilBERT model needs DistilBertTokenizerFast, got {kind}.")
    if len(tokenizer) > config.vocab_size or tokenizer.pad_token_id is None:
        raise ValueError(
            f"{name}: tokenizer {kind} (vocabulary {len(tokenizer)}, pad id "
            f"{tokenizer.pad_token_id}) does not match the {config.model_type} model (vocabulary "
            f"{config.vocab_size}): ids would point at the wrong embeddings. Load the tokenizer "
            "saved with the model (same name or folder)."
        )


class HFTokenizerAdapter:
    """The model's tokenizer behind TextVectorizer's interface: texts -> ids (N, max_length)."""

    def __init__(self, config: PretrainedTextConfig | dict, tokenizer=None):
        self.config = pretrained_text_config(config)
        self.tokenizer = tokenizer if tokenizer is not None else load_hf_tokenizer(self.config)
        self.length = int(self.config.max_length)

    @property
    def pad_id(self) -> int:
        """Padding id (0 for BERT-family vocabularies)."""
        return int(self.tokenizer.pad_token_id)

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can emit."""
        return len(self.tokenizer)

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Token ids (N, max_length): [CLS] text [SEP], truncated, right-padded with pad_id."""
        if isinstance(texts, str):
            raise TypeError("encode expects a list of strings, got one string")
        batch = self.tokenizer(list(texts), padding="max_length", truncation=True,
                               max_length=self.length, return_tensors="pt")
        return batch["input_ids"].long()

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Untruncated token counts, special tokens included (to choose max_length)."""
        return [len(ids) for ids in self.tokenizer(list(texts))["input_ids"]]

    def to_dict(self) -> dict:
        """JSON-like description stored in checkpoints (the spec, not the vocabulary)."""
        return {"kind": "hf", "spec": dataclasses.asdict(self.config)}

    @classmethod
    def from_dict(cls, data: dict) -> HFTokenizerAdapter:
        """Rebuild the adapter from ``to_dict()``'s output."""
        if data.get("kind") != "hf":
            raise ValueError(f"not an HF tokenizer dict (kind={data.get('kind')!r})")
        return cls(data["spec"])


def fit_tokenizer(frame: pd.DataFrame, length: int = 32, max_tokens: int = 10_000
                  ) -> TextVectorizer:
    """A TextVectorizer fitted on the TRAINING captions of ``frame`` only (no peeking at the
    val/test words)."""
    return TextVectorizer.fit(frame.loc[frame["split"] == "train", "caption"].tolist(),
                              max_tokens=max_tokens, length=length)


def tokenizer_from_dict(data: dict):
    """TextVectorizer or HF adapter, whichever wrote ``data``."""
    if data.get("kind") == "hf":

        return HFTokenizerAdapter.from_dict(data)

    return TextVectorizer.from_dict(data)
