"""The gallery index: normalised embeddings of a dataset's images and captions, and what they
point to. It is stored inside CLIP checkpoints (as a dict of tensors and lists, so
``torch.load(weights_only=True)`` reads it) and searched by ``utils.eval.search``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader

from utils.core.device import autocast
from utils.core.progress import progress as progress_bar
from utils.data.course import CLASSES
from utils.data.datasets import (
    NO_LABEL,
    ImageCache,
    ImageFiles,
    dataset_classes,
    label_ids,
    make_loader,
)
from utils.eval.retrieval import evaluate_retrieval


def image_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per image (first caption kept), in order of first appearance."""
    return frame.drop_duplicates("image_path").reset_index(drop=True)


IN_MEMORY_IMAGES = 2_000  # galleries up to this size decode each image once per run, in memory


@torch.no_grad()
def embed_batches(encode: Callable[[torch.Tensor], torch.Tensor], batches: Iterable,
                  device: torch.device) -> torch.Tensor:
    """Unit embeddings (N,E) float32 on the CPU of the first item of every batch, by ``encode``
    (a model's ``encode_image`` / ``encode_text``, or those of its feature-input view)."""
    chunks = []
    for batch in batches:
        with autocast(device):
            chunks.append(encode(batch[0].to(device, non_blocking=True)).float())
    return torch.cat(chunks).cpu()


def embed_images(model: torch.nn.Module, loader: Iterable) -> torch.Tensor:
    """Image embeddings of every batch (images first in each batch): -> (N, E) float32 on CPU."""
    model.eval()
    return embed_batches(model.encode_image, loader, next(model.parameters()).device)


@torch.no_grad()
def embed_texts(model: torch.nn.Module, tokenizer, texts: Sequence[str],
                batch_size: int = 256) -> torch.Tensor:
    """Text embeddings: list of T strings -> (T, E) float32 on CPU."""
    model.eval()
    device = next(model.parameters()).device
    batches = ((tokenizer.encode(list(texts[start:start + batch_size])),)
               for start in range(0, len(texts), batch_size))
    return embed_batches(model.encode_text, batches, device)


@dataclass
class GalleryIndex:
    """Images (N) and captions (T) of a dataset in the shared space; caption t describes image
    ``caption_images[t]``. Embeddings are L2-normalised float32 rows on the CPU."""

    image_embeds: torch.Tensor  # (N, E)
    image_paths: list[str]  # relative to the dataset root
    image_labels: list[int]  # index in class_names; NO_LABEL (-1): unlabelled
    image_splits: list[str]  # "train" | "val" | "test"
    text_embeds: torch.Tensor  # (T, E)
    captions: list[str]
    caption_images: list[int]  # row of each caption's image
    class_names: list[str] = field(default_factory=lambda: list(CLASSES))  # [] if unlabelled

    def split(self, name: str) -> GalleryIndex:
        """The part whose images belong to split ``name`` (captions follow their images)."""
        keep = [i for i, s in enumerate(self.image_splits) if s == name]
        new_row = {old: new for new, old in enumerate(keep)}
        texts = [t for t, i in enumerate(self.caption_images) if i in new_row]
        return GalleryIndex(
            image_embeds=self.image_embeds[keep],
            image_paths=[self.image_paths[i] for i in keep],
            image_labels=[self.image_labels[i] for i in keep],
            image_splits=[name] * len(keep),
            text_embeds=self.text_embeds[texts],
            captions=[self.captions[t] for t in texts],
            caption_images=[new_row[self.caption_images[t]] for t in texts],
            class_names=list(self.class_names),
        )

    def evaluate(self) -> dict:
        """Retrieval metrics of both directions and their chance levels (evaluate_retrieval)."""
        return evaluate_retrieval(self.image_embeds, self.text_embeds, self.caption_images,
                                  self.image_labels if self.is_labelled() else None)

    def caption_labels(self) -> list[int]:
        """The class of each caption (its image's)."""
        return [self.image_labels[i] for i in self.caption_images]

    def max_abs_difference(self, other: GalleryIndex) -> float:
        """Largest absolute difference between the embeddings of two indexes of one gallery."""
        return max(float((self.image_embeds - other.image_embeds).abs().max()),
                   float((self.text_embeds - other.text_embeds).abs().max()))

    def to_dict(self) -> dict:
        """Tensors and lists only: what a checkpoint stores."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GalleryIndex:
        """Rebuild from ``to_dict`` (or the 7 keys of a project 0.1 checkpoint: course classes)."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    def is_labelled(self) -> bool:
        """True when every image has a class and there are two classes or more (class
        precision and zero-shot mean something: with one class they are 1.0 whatever)."""
        return bool(self.class_names) and NO_LABEL not in self.image_labels and \
            len(set(self.image_labels)) >= 2


def feature_batches(features: torch.Tensor, batch_size: int) -> list[tuple[torch.Tensor]]:
    """Precomputed encoder features (N,F) as batches [(features (B,F),), ...]."""
    return [(chunk,) for chunk in features.split(batch_size)]


def image_loader(images: pd.DataFrame, root: Path, image_size: int, batch_size: int
                 ) -> DataLoader:
    """The gallery's images in order, decoded as evaluation images (no augmentation): in memory
    once per run for a small gallery (the course's), on demand (workers on a GPU) beyond."""
    cache = ImageCache.shared(root, image_size) if len(images) <= IN_MEMORY_IMAGES else None
    dataset = ImageFiles([root / p for p in images["image_path"]], image_size, cache=cache)
    return make_loader(dataset, batch_size, shuffle=False)


def build_index(model: torch.nn.Module, tokenizer, frame: pd.DataFrame, root: Path,
                image_size: int, batch_size: int = 64, image_features: torch.Tensor | None = None,
                text_features: torch.Tensor | None = None, progress: bool = False
                ) -> GalleryIndex:
    """The one gallery builder: every image and every caption of ``frame`` (rows: image_path,
    caption, split, optional label), embedded by ``model``. ``image_features`` (one row per
    image, in order of first appearance) and ``text_features`` (one row per caption row) are
    cached outputs of frozen encoders, read through the model's feature-input view;
    ``progress``: a progress bar over the image batches (a gallery of thousands)."""
    images = image_frame(frame)
    view = model.with_feature_inputs(image_features is not None, text_features is not None)
    loader = feature_batches(image_features, batch_size) if image_features is not None else \
        image_loader(images, root, image_size, batch_size)
    if progress:
        loader = progress_bar(loader, desc="images", unit="batch", mininterval=5.0)
    row_of = {path: i for i, path in enumerate(images["image_path"])}
    classes = dataset_classes(frame["label"]) if "label" in frame else ()
    labels = images["label"] if "label" in images else [None] * len(images)
    texts = frame["caption"].tolist()
    return GalleryIndex(
        image_embeds=embed_images(view, loader),
        image_paths=images["image_path"].tolist(),
        image_labels=label_ids(labels, classes).tolist(),
        image_splits=images["split"].tolist(),
        text_embeds=embed_texts(model, tokenizer, texts) if text_features is None else
        embed_batches(view.eval().encode_text, feature_batches(text_features, 256),
                      next(model.parameters()).device),
        captions=texts,
        caption_images=[row_of[path] for path in frame["image_path"]],
        class_names=list(classes),
    )


def least_similar_captions(index: GalleryIndex, n: int = 10) -> pd.DataFrame:
    """The n captions least similar to their own image (candidates for data cleaning)."""
    images = index.caption_images
    scores = (index.text_embeds * index.image_embeds[images]).sum(dim=1)
    frame = pd.DataFrame({
        "image_path": [index.image_paths[i] for i in images],
        "label": [index.class_names[index.image_labels[i]] if index.image_labels[i] >= 0
                  else "" for i in images],
        "caption": index.captions,
        "score": scores.numpy(),
    })
    return frame.nsmallest(n, "score").reset_index(drop=True)
