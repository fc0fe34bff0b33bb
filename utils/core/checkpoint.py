"""Checkpoints are plain dicts (weights, config, vocabulary, epoch, metrics), written atomically.

Everything stored is a tensor or a JSON-like value, so ``torch.load(weights_only=True)`` reads
it back: no pickled classes, no code execution when a team opens someone else's file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from utils.core.common import atomic_path, to_jsonable


def save_checkpoint(path: str | Path, state_dict: dict, config: dict, **extra: Any) -> Path:
    """Save ``{"state_dict", "config", **extra}`` to ``path`` atomically."""
    checkpoint = {"state_dict": state_dict, "config": to_jsonable(config)}
    checkpoint.update({k: v if isinstance(v, dict) and _has_tensor(v) else to_jsonable(v)
                       for k, v in extra.items()})
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint dict safely; a missing file gets an error that says how to make it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: checkpoint not found. Run the notebook that writes it first "
            "(the notebooks are numbered: run them in order, or `make run`)."
        )
    return torch.load(path, map_location=map_location, weights_only=True)


def _has_tensor(value: dict) -> bool:
    """True when a dict holds tensors (a state dict), which must not go through to_jsonable."""
    return any(isinstance(v, torch.Tensor) or isinstance(v, dict) and _has_tensor(v)
               for v in value.values())
