"""SmallBERT of step 2: a small Transformer encoder over word ids, and its sentence poolers.

SmallBert maps token ids (B,L) to one vector per token (B,L,D): token + learned position
embeddings, N pre-norm encoder blocks (multi-head self-attention, ReLU feed-forward, dropout)
and a final layer norm. Padding (id 0) is masked out of the attention. There is NO <CLS> token,
so a sentence vector comes from a pooler: "first" (the first token's vector), "mean" (plain
mean over all L positions, padding included) or "masked_mean" (mean over real tokens only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from utils.core.checkpoint import load_checkpoint, load_weights
from utils.core.common import config_from_dict, require_positive
from utils.data.tokenizers import TextVectorizer
from utils.models.pooling import masked_mean

NUM_CLASSES = 4  # ball, bike, dog, water (utils.data.CLASSES)


POOLINGS = ("first", "mean", "masked_mean")


@dataclass
class SmallBertConfig:
    """The architecture of SmallBERT and its pooler: what rebuilds it (stored in checkpoints).
    How it is trained is ``utils.train.configs.SmallBertTrainConfig``."""

    length: int = 32  # tokens per caption (padded / truncated)
    vocab_size: int = 10_000  # embedding rows; set from the fitted vectoriser before building
    width: int = 128  # D: size of every token vector
    glove_dim: int = 50  # 50: GloVe-sized word vectors (started from GloVe 6B-50d) then a Linear
    # to D (chosen on validation, issue 23); 0: random word vectors of size D (course default)
    heads: int = 4  # attention heads (width must be divisible by heads)
    ff: int = 256  # hidden size of the feed-forward layer of each block
    layers: int = 2  # number of encoder blocks
    dropout: float = 0.1  # dropout in embeddings, attention, feed-forward and head
    pooling: str = "masked_mean"  # "first" | "mean" | "masked_mean"

    BEFORE: ClassVar[dict] = {"glove_dim": 0}  # checkpoints older than the field: random words

    def __post_init__(self) -> None:
        """Reject settings the model cannot build with, naming the field."""
        require_positive(self, ("length", "width", "heads", "ff", "layers"))
        if self.pooling not in POOLINGS:
            raise ValueError(f"SmallBertConfig.pooling={self.pooling!r}: choose one of {POOLINGS}")
        if self.width % self.heads:
            raise ValueError(f"SmallBertConfig: width={self.width} not divisible by "
                             f"heads={self.heads}")


class SmallBert(nn.Module):
    """Transformer encoder: token ids (B,L) -> hidden states (B,L,D); id 0 is padding."""

    pad_id = 0

    def __init__(self, config: SmallBertConfig, vocab_size: int | None = None):
        super().__init__()
        self.width = config.width
        size = config.glove_dim or config.width
        self.token_embedding = nn.Embedding(vocab_size or config.vocab_size, size,
                                            padding_idx=self.pad_id)
        # GloVe-sized word vectors are mapped to the model's width (no projection otherwise).
        self.token_projection = nn.Linear(size, config.width, bias=False) if \
            config.glove_dim else nn.Identity()
        self.position_embedding = nn.Embedding(config.length, config.width)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(encoder_block(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (B,L) -> one vector per token (B,L,D)."""
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        words = self.token_projection(self.token_embedding(tokens))
        hidden = self.dropout(words + self.position_embedding(positions))
        padding = attention_padding(tokens, self.pad_id)
        for block in self.blocks:
            hidden = block(hidden, src_key_padding_mask=padding)
        return self.norm(hidden)


def encoder_block(config: SmallBertConfig) -> nn.TransformerEncoderLayer:
    """One pre-norm block: x + MHA(LN(x)), then x + FF(LN(x)) with a ReLU feed-forward."""
    return nn.TransformerEncoderLayer(
        config.width, config.heads, dim_feedforward=config.ff, dropout=config.dropout,
        activation="relu", batch_first=True, norm_first=True,
    )


def attention_padding(tokens: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """Key padding mask (B,L), True where attention must ignore the position."""
    padding = tokens == pad_id
    # An all-padding row (empty caption) would make softmax over nothing = NaN: let it see itself.
    padding[:, 0] &= ~padding.all(dim=1)
    return padding


def pool_tokens(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Hidden (B,L,D) and real-token mask (B,L) (True = not padding) -> sentence vectors (B,D)."""
    if mode == "first":
        return hidden[:, 0]
    if mode == "mean":
        return hidden.mean(dim=1)
    if mode == "masked_mean":
        return masked_mean(hidden, mask)
    raise ValueError(f"pooling={mode!r}: choose one of {POOLINGS}")


class SentenceEncoder(nn.Module):
    """SmallBert + pooler: token ids (B,L) -> sentence vectors (B,D); ``out_features = D``."""

    def __init__(self, bert: SmallBert, pooling: str = "masked_mean"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r}: choose one of {POOLINGS}")
        self.bert = bert
        self.pooling = pooling
        self.out_features = bert.width

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (B,L) -> (B,D)."""
        return pool_tokens(self.bert(tokens), tokens != self.bert.pad_id, self.pooling)


class TextClassifier(nn.Module):
    """Sentence encoder then head: token ids (B,L) -> logits (B,4)."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (B,L) -> logits (B,4)."""
        return self.head(self.encoder(tokens))


def build_sentence_encoder(config: SmallBertConfig, vocab_size: int | None = None
                           ) -> SentenceEncoder:
    """SmallBert with the configured pooler: tokens (B,L) -> (B,width)."""
    return SentenceEncoder(SmallBert(config, vocab_size), config.pooling)


def build_text_classifier(config: SmallBertConfig, vocab_size: int | None = None
                          ) -> TextClassifier:
    """Encoder + head (Dropout, Linear to the 4 classes); vocab_size defaults to the config's."""
    encoder = build_sentence_encoder(config, vocab_size)
    head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(encoder.out_features, NUM_CLASSES))
    return TextClassifier(encoder, head)


def load_text_classifier(path: str | Path):
    """Rebuild ``(model in eval mode, config, TextVectorizer)`` from a checkpoint file."""

    checkpoint = load_checkpoint(path, kind="text_classifier")
    config = config_from_dict(SmallBertConfig, checkpoint["config"])
    model = build_text_classifier(config)
    load_weights(model, checkpoint, path)
    return model.eval(), config, TextVectorizer.from_dict(checkpoint["vectorizer"])
