"""PyTorch datasets over the course table (``utils.data.load_dataset``) and their loaders.

Images are decoded once per run by ``ImageCache`` (uint8 tensors in memory, about 150 KB per
224x224 image, 90 MB for the 600 images), so epochs only pay for the random augmentation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from utils.core.common import make_generator
from utils.core.device import loader_options
from utils.core.progress import progress
from utils.data.course import CLASSES
from utils.data.images import check_size, decode_image, resized, to_rgb

IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


CROP_SCALE = (0.7, 1.0)  # random crops keep >= 70% of the image: the class object stays in view


COLOR_JITTER = 0.2  # brightness, contrast and saturation +-20%: light, photos stay natural


def build_transform(image_size: int, augment: bool, config: Any = None) -> v2.Compose:
    """uint8 (3,H,W) -> normalised float32 (3,S,S); with ``augment``, random resized crop,
    horizontal flip and light colour jitter. ``config`` may override ``crop_scale`` and
    ``color_jitter`` through attributes of those names."""
    scale = tuple(getattr(config, "crop_scale", CROP_SCALE))
    jitter = getattr(config, "color_jitter", COLOR_JITTER)
    to_float = v2.ToDtype(torch.float32, scale=True)
    if augment:  # geometry on uint8 (less memory), colour on float (faster than on uint8)
        steps = [v2.RandomResizedCrop(image_size, scale=scale, antialias=True),
                 v2.RandomHorizontalFlip(), to_float,
                 v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter)]
    else:
        steps = [v2.Resize((image_size, image_size), antialias=True), to_float]
    return v2.Compose([*steps, v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def imagenet_normalise(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (3,S,S) -> float32 (3,S,S) in [0, 1], ImageNet-normalised (what the frozen
    encoders' feature cache was computed with, bit for bit)."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (pixels.float() / 255.0 - mean) / std


class ImageFiles(Dataset):
    """Image files decoded on demand, e.g. by DataLoader workers (a gallery of thousands of
    images does not fit the in-memory ImageCache): item = (float32 (3,S,S),)."""

    def __init__(self, files: Sequence[str | Path], image_size: int,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 cache: ImageCache | None = None) -> None:
        self.files, self.size = [Path(f) for f in files], image_size
        self.transform = transform or build_transform(image_size, augment=False)
        self.cache = cache  # files under cache.root are decoded once per run, in memory

    def __len__(self) -> int:
        return len(self.files)

    def pixels(self, path: Path) -> torch.Tensor:
        """uint8 (3,S,S) of a file, from the in-memory cache when there is one."""
        if self.cache is not None and path.is_relative_to(self.cache.root):
            return self.cache.get(path.relative_to(self.cache.root).as_posix())
        return decode_image(path, self.size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor]:
        return (self.transform(self.pixels(self.files[index])),)


class ImageCache:
    """Decode each image file once to uint8 (3,S,S) at ``size`` and keep it in memory."""

    _shared: ClassVar[dict[tuple[str, int], ImageCache]] = {}

    def __init__(self, root: Path, size: int) -> None:
        self.root = Path(root)
        self.size = size
        self.images: dict[str, torch.Tensor] = {}

    @classmethod
    def shared(cls, root: Path, size: int) -> ImageCache:
        """One cache per (folder, size) for the whole run: train/val/test datasets and
        several notebooks' datasets decode each file only once."""
        key = (str(Path(root).resolve()), size)
        if key not in cls._shared:
            cls._shared[key] = cls(root, size)
        return cls._shared[key]

    def get(self, image_path: str) -> torch.Tensor:
        """uint8 (3,S,S) of ``root/image_path``, decoded on first use."""
        if image_path not in self.images:
            self.images[image_path] = decode_image(self.root / image_path, self.size)
        return self.images[image_path]

    def preload(self, image_paths: list[str]) -> ImageCache:
        """Decode every image now (with a progress bar) instead of during the first epoch."""
        todo = [p for p in dict.fromkeys(image_paths) if p not in self.images]
        for image_path in progress(todo, desc="decode images", disable=None if todo else True):
            self.get(image_path)
        return self

    def __len__(self) -> int:
        return len(self.images)


NO_LABEL = -1  # the label id of an image of an unlabelled dataset


def has_label(label: Any) -> bool:
    """True for a real class name (not None, NaN or an empty string)."""
    return isinstance(label, str) and label.strip() != ""


def dataset_classes(labels: Sequence[Any]) -> tuple[str, ...]:
    """Class names of a label column: the course's CLASSES when they cover it, else its sorted
    distinct labels; () for an unlabelled dataset."""
    present = {label for label in labels if has_label(label)}
    if not present:
        return ()
    return CLASSES if present <= set(CLASSES) else tuple(sorted(present))


def label_ids(labels: pd.Series, classes: Sequence[str] = CLASSES) -> torch.Tensor:
    """Class names -> LongTensor (N,) of ``classes.index(label)``; no label -> NO_LABEL."""
    return torch.tensor([list(classes).index(label) if has_label(label) else NO_LABEL
                         for label in labels], dtype=torch.long)


class ImageClassificationDataset(Dataset):
    """One item per image: (image float (3,S,S), label int)."""

    def __init__(self, frame: pd.DataFrame, root: Path, image_size: int, augment: bool,
                 cache: ImageCache | None = None, config: Any = None) -> None:
        images = frame.drop_duplicates("image_path")
        self.image_paths = images["image_path"].tolist()
        self.labels = label_ids(images["label"])
        self.cache = cache or ImageCache.shared(root, image_size)
        self.transform = build_transform(image_size, augment, config)

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.transform(self.cache.get(self.image_paths[index]))
        return image, int(self.labels[index])


class TextClassificationDataset(Dataset):
    """One item per caption row: (tokens LongTensor (L,), label int)."""

    def __init__(self, frame: pd.DataFrame, vectorizer: Any) -> None:
        self.captions = frame["caption"].tolist()
        self.tokens = vectorizer.encode(self.captions)
        self.labels = label_ids(frame["label"])

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.tokens[index], int(self.labels[index])


class ImageTextDataset(Dataset):
    """One item per IMAGE: (image (3,S,S), tokens (L,), image index). With several captions per
    image, the caption is drawn from (seed, epoch, index), so a batch never holds the same image
    twice (two captions of one image would be false negatives of the contrastive loss) and each
    epoch sees other captions; call ``set_epoch(e)`` at the start of each epoch."""

    def __init__(self, frame: pd.DataFrame, root: Path, tokenizer: Any, image_size: int,
                 augment: bool, seed: int = 0, cache: ImageCache | None = None,
                 config: Any = None) -> None:
        frame = frame.reset_index(drop=True)
        groups = frame.groupby("image_path", sort=False).indices
        self.image_paths = list(groups)
        self.rows = [np.asarray(groups[p]) for p in self.image_paths]
        self.captions = [frame["caption"].iloc[r].tolist() for r in self.rows]
        firsts = frame["label"].iloc[[r[0] for r in self.rows]]
        self.labels = label_ids(firsts, dataset_classes(frame["label"]))
        self.tokens = tokenizer.encode(frame["caption"].tolist())
        self.cache = cache or ImageCache.shared(root, image_size)
        self.transform = build_transform(image_size, augment, config)
        self.seed = seed
        # In shared memory: persistent DataLoader workers (forked once) see every set_epoch.
        self._epoch = torch.zeros((), dtype=torch.long).share_memory_()

    @property
    def epoch(self) -> int:
        """The epoch whose captions ``__getitem__`` draws."""
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose captions ``__getitem__`` draws (workers included)."""
        self._epoch.fill_(epoch)

    def caption_row(self, index: int) -> int:
        """Row (of the frame) of the caption used for image ``index`` at the current epoch."""
        rows = self.rows[index]
        if len(rows) == 1:
            return int(rows[0])
        pick = np.random.default_rng([self.seed, self.epoch, index]).integers(len(rows))
        return int(rows[pick])

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image = self.transform(self.cache.get(self.image_paths[index]))
        return image, self.tokens[self.caption_row(index)], index


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int = 0,
                num_workers: int | None = None, drop_last: bool = False,
                sampler: Sampler | None = None) -> DataLoader:
    """The project's one DataLoader factory: its shuffling repeats for a given seed; workers
    and pinned memory follow the device policy (``utils.core.device.loader_options``): none
    on the CPU, where the images are already decoded in memory and a worker would copy them;
    persistent workers and pinned memory on a GPU, so the GPU never waits for augmentation or
    decoding. ``num_workers`` overrides the policy's count (0 for tensors already in memory);
    ``sampler`` (e.g. a DistributedSampler) replaces the seeded shuffling."""
    options = loader_options()
    if num_workers is not None:
        options["num_workers"] = num_workers
    options["persistent_workers"] = options["persistent_workers"] and options["num_workers"] > 0
    order = {"sampler": sampler} if sampler is not None else {
        "shuffle": shuffle, "generator": make_generator(seed)}
    return DataLoader(dataset, batch_size=batch_size, drop_last=drop_last, **order, **options)


def image_pixels(image: str | Path | Image.Image, size: int) -> torch.Tensor:
    """A path or a PIL image -> uint8 (3,size,size), decoded like the training images."""

    if not isinstance(image, Image.Image):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: image not found (give an existing image file "
                                    "or a PIL image)")
        return decode_image(path, size)
    check_size(image, "the image")
    image = resized(to_rgb(image), size)  # the same conversion and resampling as the files'
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()


def write_synthetic_image(path: Path, size: int = 256) -> Path:
    """A drawn picture (sky, sea, a red ball) for when no image outside the dataset exists."""

    image = Image.new("RGB", (size, size), (135, 190, 235))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, size // 2, size, size], fill=(20, 80, 160))
    draw.ellipse([size // 3, size // 4, size // 3 + size // 4, size // 2], fill=(210, 30, 30))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
