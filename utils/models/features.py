"""Features of a frozen ImageNet encoder over a set of image files, computed once, cached on disk.

The captioner (notebook 06), the fusion classifier (07) and the Flickr8k benchmark (08) all read
the same EfficientNet-Lite features of the 8,091 Flickr8k images: the last convolutional map
(R = 7x7 = 49 regions of C = 1280 channels at 224 px for Lite0) and its average over the regions.
Computing them takes minutes on a CPU, so they are stored under ``<data>/cache/features/`` in
a file named by the encoder and a key of the image set (file names and sizes): a changed image
set or encoder gives another key, so the cache is rebuilt, never wrongly reused.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from utils.core import paths
from utils.core.common import atomic_path, autocast, get_device
from utils.data.datasets import IMAGENET_MEAN, IMAGENET_STD, decode_image
from utils.models.cnn import EFFICIENTNET_LITE, load_efficientnet_lite

CACHE_VERSION = 1  # bump when the way features are computed changes


@dataclass
class ImageFeatures:
    """Features of ``files`` in order: maps (N,R,C) float16, pooled (N,C) float32."""

    files: list[str]  # file names (no folder), in the order of the rows
    maps: torch.Tensor  # (N, R, C): the last convolutional map, one row per region
    pooled: torch.Tensor  # (N, C): the mean over the regions (computed in float32)
    encoder: str
    image_size: int

    def rows(self, names: list[str]) -> torch.Tensor:
        """Row numbers (K,) of the given file names (a KeyError names the first missing one)."""
        where = {name: i for i, name in enumerate(self.files)}
        return torch.tensor([where[name] for name in names], dtype=torch.long)


def image_set_key(files: list[Path], encoder: str, image_size: int) -> str:
    """A short key of the encoder, the size and the image set (names and byte sizes)."""
    listing = [[Path(f).name, Path(f).stat().st_size] for f in files]
    text = json.dumps([CACHE_VERSION, encoder, image_size, listing])
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def cache_path(files: list[Path], encoder: str, image_size: int) -> Path:
    """Where the features of this image set and encoder are cached."""
    key = image_set_key(files, encoder, image_size)
    return paths.data_dir() / "cache" / "features" / f"{encoder}_{image_size}_{key}.pt"


def normalised_batch(files: list[Path], image_size: int) -> torch.Tensor:
    """Decode files -> float32 (B,3,S,S), ImageNet-normalised as the encoders expect."""
    images = torch.stack([decode_image(f, image_size) for f in files]).float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


@torch.inference_mode()
def compute_features(files: list[Path], encoder: str, image_size: int, batch_size: int = 32
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the frozen encoder over every file -> maps (N,R,C) float16, pooled (N,C) float32."""
    device = get_device()
    network = load_efficientnet_lite(encoder).eval().to(device)
    network = network.to(memory_format=torch.channels_last)  # faster convolutions on CPU too
    maps, pooled = [], []
    starts = range(0, len(files), batch_size)
    for start in tqdm(starts, desc=f"{encoder} features", file=sys.stdout, mininterval=5.0):
        batch = normalised_batch(files[start:start + batch_size], image_size).to(device)
        with autocast(device):
            fmap = network.extract_features(batch.contiguous(memory_format=torch.channels_last))
        regions = fmap.float().flatten(2).transpose(1, 2)  # (B,C,H,W) -> (B,R,C)
        maps.append(regions.half().cpu())
        pooled.append(regions.mean(dim=1).cpu())
    return torch.cat(maps), torch.cat(pooled)


def image_features(files: list[Path], encoder: str = "efficientnet_lite0",
                   image_size: int | None = None, batch_size: int = 32) -> ImageFeatures:
    """The features of ``files``: read from the cache, else computed once and cached."""
    image_size = image_size or EFFICIENTNET_LITE[encoder][2]
    files = [Path(f) for f in files]
    path = cache_path(files, encoder, image_size)
    if path.is_file():
        stored = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    else:
        maps, pooled = compute_features(files, encoder, image_size, batch_size)
        stored = {"files": [f.name for f in files], "maps": maps, "pooled": pooled}
        with atomic_path(path) as tmp:
            torch.save(stored, tmp)
    return ImageFeatures(stored["files"], stored["maps"], stored["pooled"], encoder, image_size)
