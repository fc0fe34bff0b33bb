"""A pretrained BERT-family encoder (Hugging Face ``transformers``) as CLIP's text tower.

``build_hf_text_encoder(config)`` wraps the model named by a ``PretrainedTextConfig`` as token
ids (B,L) -> sentence vectors (B,D), pooled by its [CLS] vector or the masked mean, with all,
none or the top N transformer blocks frozen.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from utils.core.pretrained import (
    HF_POOLINGS,
    PretrainedTextConfig,
    from_pretrained,
    load_hf_config,
    pretrained_text_config,
)
from utils.data.tokenizers import HFTokenizerAdapter, load_hf_tokenizer
from utils.models.pooling import masked_mean


def pool_hidden(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool hidden states (B,L,D) with mask (B,L) -> (B,D): [CLS] vector or masked mean."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "masked_mean":
        return masked_mean(hidden, mask)
    raise ValueError(f"pooling={pooling!r}; choose one of {HF_POOLINGS}")


def find_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a BERT-family model (encoder.layer, transformer.layer, ...)."""
    lists = [m for name, m in model.named_modules()
             if isinstance(m, nn.ModuleList) and name.split(".")[-1] in {"layer", "layers"}]
    if not lists:
        raise ValueError(f"{type(model).__name__}: no transformer block list found")
    return max(lists, key=len)


class HFTextEncoder(nn.Module):
    """Pretrained transformer + pooling: token ids (B,L) -> sentence vectors (B,D).

    Two speed-ups that leave the outputs unchanged: batches are cut to their longest caption
    (padding is on the right and masked anyway), and a fully frozen encoder remembers the
    vector of each caption it has seen (its weights never change, dropout is off), so later
    epochs skip the transformer.
    """

    def __init__(self, model: nn.Module, config: PretrainedTextConfig, pad_id: int = 0):
        super().__init__()
        self.model = model
        self.config = pretrained_text_config(config)
        self.pooling = self.config.pooling
        self.pad_id = int(pad_id)
        self.out_features = int(model.config.hidden_size)
        self.memo: dict[bytes, torch.Tensor] = {}
        apply_freeze(self, self.config)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (B,L), pad = pad_id -> pooled hidden states (B,D)."""
        mask = tokens != self.pad_id
        width = max(int(mask.sum(dim=1).max()), 1)
        tokens, mask = tokens[:, :width], mask[:, :width]
        if self.config.freeze != "all":
            return self.encode(tokens, mask)
        keys = [row[row != self.pad_id].tobytes() for row in tokens.cpu().numpy()]
        missing = [i for i, key in enumerate(keys) if key not in self.memo]
        if missing:
            with torch.no_grad():
                vectors = self.encode(tokens[missing], mask[missing])
            self.memo.update(zip((keys[i] for i in missing), vectors, strict=True))
        return torch.stack([self.memo[key] for key in keys])

    def encode(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Run the transformer and pool: (B,L), (B,L) -> (B,D)."""
        hidden = self.model(input_ids=tokens, attention_mask=mask.long()).last_hidden_state
        return pool_hidden(hidden, mask, self.pooling)

    def train(self, mode: bool = True) -> HFTextEncoder:
        """A fully frozen encoder stays in eval mode: its dropout would only add noise."""
        super().train(mode)
        if self.config.freeze == "all":
            self.model.eval()
        return self

    def _apply(self, fn, *args, **kwargs):
        """Moving or casting the module (.to, .half) forgets the remembered vectors."""
        self.memo = {}
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        """New weights: the remembered vectors no longer hold."""
        self.memo = {}
        super()._load_from_state_dict(*args, **kwargs)


def apply_freeze(encoder: HFTextEncoder, config: PretrainedTextConfig) -> None:
    """Set requires_grad per config: all frozen, all trainable, or only the top N blocks."""
    mode = config.freeze
    for parameter in encoder.model.parameters():
        parameter.requires_grad = mode == "none"
    if mode == "last_n":
        layers = find_layers(encoder.model)
        n = int(config.train_last_n_layers)
        if n > len(layers):
            raise ValueError(f"train_last_n_layers={n} but the model has {len(layers)} layers")
        for layer in list(layers)[-n:]:
            layer.requires_grad_(True)
    pooler = getattr(encoder.model, "pooler", None)
    if pooler is not None:  # BERT's pooler is never used by our pooling: no gradient reaches it
        pooler.requires_grad_(False)
    if mode == "all":
        encoder.model.eval()


def build_hf_text_encoder(config: PretrainedTextConfig | dict, pretrained: bool = True
                          ) -> HFTextEncoder:
    """The model named in ``config`` wrapped as tokens (B,L) -> (B,D); ``pretrained=False``
    builds the same architecture with random weights (when a checkpoint's weights follow)."""
    from transformers import AutoModel  # imported on use: transformers takes seconds to load

    config = pretrained_text_config(config)
    hf_config = load_hf_config(config)
    tokenizer = load_hf_tokenizer(config, hf_config)
    if pretrained:
        model = from_pretrained(AutoModel, config.model)
    else:
        model = AutoModel.from_config(hf_config)
    return HFTextEncoder(model, config, pad_id=tokenizer.pad_token_id)


def sentence_embedder(model: str = "minilm-l6-packaged", batch_size: int = 64
                      ) -> Callable[[list[str]], torch.Tensor]:
    """texts -> unit sentence vectors (N,D): the encoder's masked mean, L2-normalised (the
    sentence-transformers recipe of all-MiniLM-L6-v2), on the CPU, in batches."""
    config = PretrainedTextConfig(model=model, pooling="masked_mean", max_length=128)
    encoder = build_hf_text_encoder(config).eval()
    tokenizer = HFTokenizerAdapter(config)

    @torch.no_grad()
    def embed(texts: list[str]) -> torch.Tensor:
        chunks = [encoder(tokenizer.encode(list(texts[start:start + batch_size])))
                  for start in range(0, len(texts), batch_size)]
        vectors = torch.cat(chunks) if chunks else torch.zeros(0, encoder.out_features)
        return torch.nn.functional.normalize(vectors, dim=-1)

    return embed
