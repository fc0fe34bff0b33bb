"""The proof that a saved model comes back identical: the same outputs before and after reload.

Every notebook saves its model, rebuilds a fresh one from the file alone and compares what both
compute on the same inputs. On the CPU (float32, the same kernels) the difference must be
exactly 0; under a GPU's bf16/float16 autocast kernels may round differently from one call to
the next, so a stated tolerance (``utils.core.device.reload_tolerance``) is accepted there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from utils.core.device import get_device, reload_tolerance


class ReloadMismatch(AssertionError):
    """The reloaded model does not compute what the saved one did."""


def as_arrays(value) -> list[np.ndarray]:
    """A tensor, an array, or a dict / list of them -> flat list of float64 arrays."""
    if isinstance(value, Mapping):
        return [a for key in sorted(value) for a in as_arrays(value[key])]
    if isinstance(value, torch.Tensor):
        return [value.detach().float().cpu().numpy().astype(np.float64)]
    if isinstance(value, np.ndarray):
        return [value.astype(np.float64)]
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [a for item in value for a in as_arrays(item)]
    return [np.asarray(value, dtype=np.float64)]


def largest_difference(before, after) -> float:
    """Largest absolute difference between two outputs of the same shape(s)."""
    pairs = list(zip(as_arrays(before), as_arrays(after), strict=True))
    for a, b in pairs:
        if a.shape != b.shape:
            raise ReloadMismatch(f"the outputs changed shape after reload: {a.shape} -> {b.shape}")
    return max((float(np.abs(a - b).max(initial=0.0)) for a, b in pairs), default=0.0)


def prove_reload(before, after, what: str = "outputs",
                 device: torch.device | None = None) -> float:
    """Print and return the largest difference of ``what`` before and after reload; raise
    ReloadMismatch beyond the device's tolerance (0 on the CPU)."""
    device = device or get_device()
    difference, tolerance = largest_difference(before, after), reload_tolerance(device)
    print(f"largest absolute difference of the {what} after reload: {difference:g} "
          f"(accepted on {device.type}: {tolerance:g})")
    if difference > tolerance:
        raise ReloadMismatch(f"the reloaded model's {what} differ by {difference:g} (more than "
                             f"{tolerance:g}): the file does not rebuild the model it saved. "
                             "Fix: re-run the notebook; if it persists, report it.")
    return difference


def same_results(before: Sequence[tuple], after: Sequence[tuple],
                 device: torch.device | None = None) -> bool:
    """Two top-k lists of (item, ..., score) tuples: same items in the same order, scores
    within the device's reload tolerance."""
    tolerance = reload_tolerance(device or get_device())
    if [row[:-1] for row in before] != [row[:-1] for row in after]:
        return False
    return all(abs(a[-1] - b[-1]) <= tolerance for a, b in zip(before, after, strict=True))
