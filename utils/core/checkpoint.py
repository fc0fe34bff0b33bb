"""Checkpoints are plain dicts (weights, config, vocabulary, epoch, metrics), written atomically.

Everything stored is a tensor or a JSON-like value, so ``torch.load(weights_only=True)`` reads
it back: no pickled classes, no code execution when a team opens someone else's file. Each
checkpoint names its ``kind``, so a loader given the wrong file (another stage's checkpoint, a
truncated or empty file, a text file) says what the file is, what was expected and which
notebook writes the right one, instead of a raw torch or pickle traceback.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from utils.core.common import atomic_path, to_jsonable

# kind -> (what it is, the notebook that writes it)
KINDS = {
    "image_classifier": ("step-1 image classifier (CNN)", "01_cnn_image_classifier"),
    "text_classifier": ("step-2 SmallBERT text classifier", "02_smallbert_text_classifier"),
    "clip": ("CLIP model", "03_clip"),
    "captioner": ("captioning model", "06_captioning"),
    "fusion": ("fusion classifier", "07_fusion_multitask"),
}


# Keys of CLIP checkpoints written before the typed sub-configs (project 0.1): old -> new field.
LEGACY_CLIP_KEYS = {"image_config": "image", "text_config": "text", "hf_spec": "pretrained_text"}


def upgrade_clip_config(values: dict) -> dict:
    """A CLIP checkpoint's or metrics file's ``config`` in today's layout.

    Checkpoints of project 0.1 stored the towers as ``image_config``/``text_config`` dicts (the
    pretrained tower as ``text_config={"hf_spec": ...}`` plus ``hf_spec``): they load as well.
    """
    values = dict(values)
    for old, new in LEGACY_CLIP_KEYS.items():
        value = values.pop(old, None)
        if old == "text_config" and isinstance(value, dict) and "hf_spec" in value:
            old, new, value = "hf_spec", "pretrained_text", value["hf_spec"]
        if value and values.get(new) is None:
            values[new] = value
    if values.get("text_tower") != "hf":
        values["pretrained_text"] = None
    return values


def stored_training(checkpoint: dict) -> dict:
    """The run settings a checkpoint was trained with: its ``training`` metadata; files written
    before architecture and run settings were split kept both in ``config``."""
    return checkpoint.get("training") or checkpoint["config"]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and the fix."""


def describe(kind: str) -> str:
    """'step-1 image classifier (CNN) (notebooks/01_cnn_image_classifier.ipynb)'."""
    what, notebook = KINDS.get(kind, (f"'{kind}' checkpoint", ""))
    return f"{what} (notebooks/{notebook}.ipynb)" if notebook else what


def save_checkpoint(path: str | Path, state_dict: dict, config: dict, kind: str | None = None,
                    **extra: Any) -> Path:
    """Save ``{"state_dict", "config", "kind", **extra}`` to ``path`` atomically."""
    checkpoint = {"state_dict": state_dict, "config": to_jsonable(config)}
    if kind is not None:
        checkpoint["kind"] = kind
    checkpoint.update({k: v if isinstance(v, dict) and _has_tensor(v) else to_jsonable(v)
                       for k, v in extra.items()})
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    return Path(path)


def checkpoint_kind(checkpoint: dict) -> str:
    """The stored kind; for files written before kinds existed, inferred from their keys."""
    if "kind" in checkpoint:
        return str(checkpoint["kind"])
    if "index" in checkpoint and "tokenizer" in checkpoint:
        return "clip"
    if "specs" in checkpoint and "other_states" in checkpoint:
        return "fusion"
    if "vocabulary" in checkpoint and "attention_dim" in (checkpoint.get("config") or {}):
        return "captioner"
    if "vectorizer" in checkpoint:
        return "text_classifier"
    if isinstance(checkpoint.get("config"), dict) and "trunk" in checkpoint["config"]:
        return "image_classifier"
    return "unknown"


def read_checkpoint_file(path: Path, map_location, hint: str) -> dict:
    """torch.load with every way a file can be broken turned into a CheckpointError."""
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), probably an interrupted save. "
                              f"Fix: delete it and {hint}.")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError, KeyError...
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(error).__name__}: "
                              f"{str(error)[:120]}): truncated or not a .pt file. Fix: {hint}."
                              ) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: a PyTorch file, but not a checkpoint of this project (no "
                              f"state_dict/config). Fix: {hint}.")
    return checkpoint


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    kind: str | None = None) -> dict:
    """Load a checkpoint dict safely; with ``kind``, refuse a checkpoint of another kind."""
    path = Path(path)
    hint = (f"re-run notebooks/{KINDS[kind][1]}.ipynb" if kind in KINDS
            else "re-run the notebook that writes it")
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: checkpoint not found. Run the notebook that writes it first "
            "(the notebooks are numbered: run them in order, or `make run`).")
    checkpoint = read_checkpoint_file(path, map_location, hint)
    found = checkpoint_kind(checkpoint)
    if kind is not None and found != kind:
        raise CheckpointError(f"{path} is a {describe(found)}, but a {describe(kind)} was "
                              f"expected. Fix: give the right file, or {hint}.")
    return checkpoint


def load_weights(model: nn.Module, checkpoint: dict, path: str | Path) -> nn.Module:
    """``model.load_state_dict`` whose mismatch error names the file and the fix."""
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        first = str(error).splitlines()[0][:160]
        raise CheckpointError(f"{path}: its weights do not fit the architecture of its own "
                              f"config ({first}). The file was edited or written by other code. "
                              "Fix: re-run the notebook that writes it.") from error
    return model


def weights_fingerprint(state_dict: dict, prefix: str = "") -> str:
    """Short hash of the weights under ``prefix`` (keys and bytes): equal weights, equal hash."""
    digest = hashlib.sha1()
    for key in sorted(k for k in state_dict if k.startswith(prefix)):
        digest.update(key.encode())
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def _has_tensor(value: dict) -> bool:
    """True when a dict holds tensors (a state dict), which must not go through to_jsonable."""
    return any(isinstance(v, torch.Tensor) or isinstance(v, dict) and _has_tensor(v)
               for v in value.values())
