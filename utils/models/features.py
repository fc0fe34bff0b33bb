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
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from utils.core import paths
from utils.core.common import atomic_path
from utils.core.device import autocast, get_device, precision_for
from utils.core.progress import progress
from utils.data.datasets import ImageFiles, decode_image, imagenet_normalise, make_loader
from utils.models.cnn import EFFICIENTNET_LITE, load_efficientnet_lite

CACHE_VERSION = 1  # bump when the way features are computed changes


class PrecomputedFeatures(nn.Module):
    """Stands in for a frozen encoder whose outputs were computed once and cached: its input
    IS the encoder's output, features (B,F), passed through unchanged."""

    def __init__(self, out_features: int):
        super().__init__()
        self.out_features = out_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Cached encoder features (B,F) -> the same (B,F)."""
        return features


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


def precision_tag(device: torch.device | None = None) -> str:
    """'' on the CPU (float32, the key caches were always written under), else e.g.
    'cuda-bfloat16': features of a reduced-precision GPU run never pass for float32 ones."""
    precision = precision_for(device or get_device())
    if precision.device.type == "cpu":
        return ""
    return f"{precision.device.type}-{precision.name.split(' ')[0]}"


def image_set_key(files: list[Path], encoder: str, image_size: int, precision: str = "") -> str:
    """A short key of the encoder, the size, the device and precision (when not the CPU's
    float32) and the image set (names and byte sizes)."""
    listing = [[Path(f).name, Path(f).stat().st_size] for f in files]
    parts = [CACHE_VERSION, encoder, image_size, listing] + ([precision] if precision else [])
    return hashlib.sha1(json.dumps(parts).encode("utf-8")).hexdigest()[:12]


def cache_path(files: list[Path], encoder: str, image_size: int,
               device: torch.device | None = None) -> Path:
    """Where the features of this image set, encoder and device precision are cached."""
    precision = precision_tag(device)
    key = image_set_key(files, encoder, image_size, precision)
    suffix = f"_{precision}" if precision else ""
    return paths.data_dir() / "cache" / "features" / f"{encoder}_{image_size}_{key}{suffix}.pt"


def normalised_batch(files: list[Path], image_size: int) -> torch.Tensor:
    """Decode files -> float32 (B,3,S,S), ImageNet-normalised as the encoders expect."""
    return torch.stack([imagenet_normalise(decode_image(f, image_size)) for f in files])


@torch.inference_mode()
def compute_features(files: list[Path], encoder: str, image_size: int, batch_size: int = 32
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the frozen encoder over every file -> maps (N,R,C) float16, pooled (N,C) float32.
    Files are decoded by the project's loader (in worker processes on a GPU machine)."""
    device = get_device()
    network = load_efficientnet_lite(encoder).eval().to(device)
    network = network.to(memory_format=torch.channels_last)  # faster convolutions on CPU too
    loader = make_loader(ImageFiles(files, image_size, imagenet_normalise), batch_size,
                         shuffle=False)
    maps, pooled = [], []
    with progress(total=len(loader), desc=f"{encoder} features",
              mininterval=5.0) as bar:
        for (batch,) in loader:
            batch = batch.to(device, non_blocking=True)
            with autocast(device):
                fmap = network.extract_features(batch.contiguous(
                    memory_format=torch.channels_last))
            regions = fmap.float().flatten(2).transpose(1, 2)  # (B,C,H,W) -> (B,R,C)
            maps.append(regions.half())
            pooled.append(regions.mean(dim=1))
            bar.update(1)
    return torch.cat(maps).cpu(), torch.cat(pooled).cpu()


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
