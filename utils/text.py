"""Captions -> token ids with the ``tokenizers`` library (a word-level vocabulary, like Keras's
TextVectorization in the course): lower-case, punctuation stripped, split on whitespace,
id 0 = padding, id 1 = unknown word, every sequence padded or cut to ``length`` tokens.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from tokenizers.trainers import WordLevelTrainer

PAD_TOKEN, UNK_TOKEN = "[PAD]", "[UNK]"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN)  # their position is their id: [PAD] = 0, [UNK] = 1


def make_normalizer() -> normalizers.Normalizer:
    """Lower-case; drop apostrophes ("dog's" -> "dogs", as Keras does) and turn the other
    punctuation into spaces ("black-and-white" -> "black and white", not one rare word)."""
    return normalizers.Sequence([
        normalizers.Lowercase(),
        normalizers.Replace(Regex(r"['’`]"), ""),
        normalizers.Replace(Regex(r"[^\w\s]|_"), " "),
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
