"""Losses of notebook 07: binary focal loss (multi-label tags) and label-smoothed cross-entropy.

Focal loss (Lin et al., 2017, "Focal Loss for Dense Object Detection") multiplies each binary
cross-entropy term by (1 - p_t)^gamma, p_t being the probability given to the right answer:
an easy example (p_t near 1) weighs almost nothing, so the many easy negatives of a multi-label
task (most tags are off for most images) no longer drown the rare positives. gamma = 0 gives
back plain binary cross-entropy.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0,
               reduction: str = "mean") -> torch.Tensor:
    """Binary focal loss of logits (B,T) against 0/1 targets (B,T): mean (or "none": (B,T))."""
    bce = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    p_right = torch.exp(-bce)  # probability of the right answer, p_t
    loss = (1.0 - p_right).pow(gamma) * bce
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean()
    raise ValueError(f"reduction={reduction!r}: choose 'mean' or 'none'")


def smoothed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.1
                           ) -> torch.Tensor:
    """Mean cross-entropy of logits (B,C) against class ids (B,) with label smoothing: the
    target is 1 - smoothing on the right class plus smoothing spread evenly over all C."""
    log_probs = logits.log_softmax(dim=-1)
    right = -log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)  # (B,)
    uniform = -log_probs.mean(dim=-1)  # (B,): cross-entropy against the uniform distribution
    return ((1.0 - smoothing) * right + smoothing * uniform).mean()
