"""Sentence pooling shared by the text towers (SmallBERT and the pretrained encoders)."""

from __future__ import annotations

import torch


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the real tokens: hidden (B,L,D), mask (B,L) True = real token -> (B,D).

    Padded positions are zeroed (not multiplied) so a non-finite value there cannot leak in;
    an all-padding row divides by 1 and gives zeros.
    """
    keep = mask.unsqueeze(-1)
    total = hidden.masked_fill(~keep, 0.0).sum(dim=1)
    return total / keep.sum(dim=1).clamp(min=1).to(hidden.dtype)
