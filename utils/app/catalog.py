"""What ``models/`` holds for the search page: CLIP checkpoints (keys state_dict, config,
tokenizer, index), gallery files made by ``python -m utils.app.index``, and anything else, each
with the reason it cannot be searched. Probing maps tensors lazily (``mmap``), so listing a
folder of large checkpoints stays cheap; a model is loaded only when it is picked."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from utils.core import paths
from utils.core.checkpoint import stored_training, weights_fingerprint
from utils.data.fetch import dataset_folder
from utils.eval.index import GalleryIndex
from utils.eval.search import Gallery
from utils.models.clip import ClipModel, load_clip

CLIP_KEYS = ("state_dict", "config", "tokenizer", "index")
GALLERY_KEYS = ("gallery", "source", "index")
FLICKR8K_GALLERY = "flickr8k_index.pt"  # the default output of python -m utils.app.index


class CheckpointError(ValueError):
    """A file of models/ that cannot be searched; the message names the file and the fix."""


@dataclass(frozen=True)
class Entry:
    """One .pt file of models/: kind "clip", "gallery" or "other", and why it is not usable."""

    path: Path
    kind: str
    problem: str = ""  # empty when the file can be searched
    metrics: dict = field(default_factory=dict)  # a CLIP's checkpoint["metrics"]["test"]
    source: str = ""  # a gallery file: the CLIP checkpoint whose image tower embedded it
    images: int = 0  # images in the file's gallery index

    @property
    def name(self) -> str:
        """The file name without .pt: what the page's ``?model=`` names."""
        return self.path.stem


@dataclass
class Searcher:
    """A loaded CLIP checkpoint: model (eval mode), tokenizer, its own gallery, and the hash
    of its image tower (gallery files built with another tower do not match)."""

    path: Path
    model: ClipModel
    tokenizer: object
    gallery: Gallery
    fingerprint: str
    metrics: dict


def load_lazily(path: Path):
    """torch.load mapping tensors lazily (mmap); files in torch's legacy (non-zip) format,
    which cannot be mapped but load_clip reads, are loaded whole instead."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as error:
        if "mmap" not in str(error) and "zipfile" not in str(error):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def read_checkpoint(path: Path) -> dict:
    """torch.load with lazily mapped tensors; CheckpointError naming the file when unreadable."""
    try:
        data = load_lazily(path)
    except Exception as error:  # corrupt files fail in many ways (zip, pickle, EOF, mmap)
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
        raise CheckpointError(
            f"{path.name}: not a readable PyTorch checkpoint ({type(error).__name__}: {reason}). "
            "Fix: re-run the notebook that writes it (`make run`) or remove the file."
        ) from error
    if not isinstance(data, dict):
        raise CheckpointError(f"{path.name}: holds a {type(data).__name__}, not a checkpoint "
                              "dict. Fix: remove it from models/ or re-run `make run`.")
    return data


def read_test_metrics(checkpoint: dict) -> dict:
    """checkpoint["metrics"]["test"] when it is there (evaluate_clip's nested dict), else {}."""
    metrics = checkpoint.get("metrics")
    test = metrics.get("test") if isinstance(metrics, dict) else None
    return test if isinstance(test, dict) else {}


def probe_file(path: Path) -> Entry:
    """What one .pt file is, read without loading a model."""
    try:
        data = read_checkpoint(path)
    except CheckpointError as error:
        return Entry(path, "other", str(error))
    if all(key in data for key in GALLERY_KEYS):
        return Entry(path, "gallery", source=str(data["source"].get("file", "")),
                     images=len(data["index"].get("image_paths", [])))
    missing = [key for key in CLIP_KEYS if key not in data]
    if missing:
        return Entry(path, "other", f"{path.name}: not a CLIP checkpoint (no key "
                     f"{', '.join(missing)}; it holds {', '.join(sorted(map(str, data)))}). "
                     "Pick a CLIP checkpoint such as 03_clip.pt.")
    if not data["index"]:
        return Entry(path, "other", f"{path.name}: a CLIP checkpoint without gallery index. "
                     "Fix: re-run notebook 03 (`make run`), which stores the index in it.",
                     metrics=read_test_metrics(data))
    return Entry(path, "clip", metrics=read_test_metrics(data),
                 images=len(data["index"].get("image_paths", [])))


def scan_models(folder: Path | None = None) -> list[Entry]:
    """Every .pt file of models/ (``$MODELS_DIR``), probed, in name order."""
    folder = folder or paths.models_dir()
    return [probe_file(path) for path in sorted(folder.glob("*.pt")) if path.is_file()]


def format_metric(metrics: dict, direction: str, name: str) -> str:
    """One figure of evaluate_clip's nested dict to 3 decimals, "—" when absent."""
    value = metrics.get(direction, {}).get(name) if isinstance(metrics, dict) else None
    return f"{value:.3f}" if isinstance(value, (int, float)) else "—"


def describe_entry(entry: Entry) -> str:
    """Label of a model in the selector: name, test R@5 and class-P@5 (text -> image)."""
    if entry.kind != "clip":
        return f"{entry.name} · cannot be searched"
    r5 = format_metric(entry.metrics, "text_to_image", "R@5")
    p5 = format_metric(entry.metrics, "text_to_image", "class_precision@5")
    return f"{entry.name} · R@5 {r5} · P@5 {p5}"


def dataset_root(training: dict) -> Path:
    """Folder the index's image paths are relative to, from a checkpoint's run settings (the
    folder its training read: utils.data.fetch.dataset_folder)."""
    return dataset_folder(training.get("dataset") or "course",
                          int(training.get("captions_per_image") or 1))


def image_tower_fingerprint(state_dict: dict) -> str:
    """Short hash of the image tower's weights: a gallery is valid only for this tower."""
    return weights_fingerprint(state_dict, "image_")


def load_searcher(path: Path) -> Searcher:
    """Load a CLIP checkpoint and its stored gallery (not re-encoded); CheckpointError else."""
    entry = probe_file(path)
    if entry.kind != "clip":
        raise CheckpointError(entry.problem or f"{path.name}: a gallery file, not a model")
    try:
        model, tokenizer, checkpoint = load_clip(path)
        index = GalleryIndex.from_dict(checkpoint["index"])
    except Exception as error:  # an odd config or state dict: say which file, not a traceback
        raise CheckpointError(f"{path.name}: the CLIP model does not load ({type(error).__name__}"
                              f": {str(error).splitlines()[0][:200]}). Fix: re-run the notebook "
                              "that writes it (`make run`).") from error
    root = dataset_root(stored_training(checkpoint))
    gallery = Gallery(index, root, f"{path.stem}'s gallery ({len(index.image_paths)} images)")
    fingerprint = image_tower_fingerprint(checkpoint["state_dict"])
    return Searcher(path, model, tokenizer, gallery, fingerprint, read_test_metrics(checkpoint))


def load_gallery_file(path: Path, searcher: Searcher) -> Gallery:
    """A gallery file built for ``searcher``'s image tower; CheckpointError when it is not."""
    data = read_checkpoint(path)
    if not all(key in data for key in GALLERY_KEYS):
        raise CheckpointError(f"{path.name}: not a gallery file (python -m utils.app.index).")
    source = data["source"]
    if source.get("fingerprint") != searcher.fingerprint:
        raise CheckpointError(
            f"{path.name} was embedded with another image tower than {searcher.path.name} "
            f"(built from {source.get('file')}). Fix: python -m utils.app.index --checkpoint "
            f"{searcher.path} --out {path}")
    info = data["gallery"]
    root = Path(info.get("root", ""))
    if not root.is_dir():  # built on another machine: use this machine's Flickr8k copy
        root = paths.flickr8k_dir()
    index = GalleryIndex.from_dict(data["index"])
    return Gallery(index, root, f"{info.get('name', path.stem)} ({len(index.image_paths)} images)")


def galleries_for(entry: Entry, entries: list[Entry]) -> list[Entry]:
    """Gallery files of models/ built from this CLIP checkpoint's file."""
    return [e for e in entries if e.kind == "gallery" and e.source == entry.path.name]
