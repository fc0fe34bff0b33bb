"""The gallery index: normalised embeddings of a dataset's images and captions, and what they
point to. It is stored inside CLIP checkpoints (as a dict of tensors and lists, so
``torch.load(weights_only=True)`` reads it) and searched by ``utils.eval.search``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import pandas as pd
import torch

from utils.core.device import autocast
from utils.data.course import CLASSES
from utils.data.datasets import (
    NO_LABEL,
    ImageClassificationDataset,
    dataset_classes,
    label_ids,
    make_loader,
)
from utils.eval.retrieval import evaluate_retrieval


def image_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per image (first caption kept), in order of first appearance."""
    return frame.drop_duplicates("image_path").reset_index(drop=True)


@torch.no_grad()
def embed_images(model: torch.nn.Module, loader: torch.utils.data.DataLoader,
                 text: bool = False) -> torch.Tensor:
    """Image embeddings of every batch (images first in each batch): -> (N, E) float32 on CPU;
    ``text``: the batches hold precomputed text features, embedded by the text tower."""

    model.eval()
    device = next(model.parameters()).device
    encode = model.encode_text if text else model.encode_image
    chunks = []
    for batch in loader:
        with autocast(device):
            chunks.append(encode(batch[0].to(device)).float().cpu())
    return torch.cat(chunks)


@torch.no_grad()
def embed_texts(model: torch.nn.Module, tokenizer, texts: Sequence[str],
                batch_size: int = 256) -> torch.Tensor:
    """Text embeddings: list of T strings -> (T, E) float32 on CPU."""

    model.eval()
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer.encode(list(texts[start:start + batch_size])).to(device)
        with autocast(device):
            chunks.append(model.encode_text(tokens).float().cpu())
    return torch.cat(chunks)


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
        """True when every image has a class (class precision and zero-shot make sense)."""
        return bool(self.class_names) and NO_LABEL not in self.image_labels


def feature_batches(features: torch.Tensor, batch_size: int) -> list[tuple[torch.Tensor]]:
    """Precomputed encoder features (N,F) as batches [(features (B,F),), ...]."""
    return [(chunk,) for chunk in features.split(batch_size)]


def build_index(model: torch.nn.Module, tokenizer, frame: pd.DataFrame, root: Path,
                image_size: int, batch_size: int = 64, image_features: torch.Tensor | None = None,
                text_features: torch.Tensor | None = None) -> GalleryIndex:
    """Gallery of every image and every caption of ``frame`` (rows: image_path, label, caption,
    split), embedded by ``model``; ``image_features`` (one row per image, in order of first
    appearance) and ``text_features`` (one row per caption row) replace the frozen encoders."""
    images = image_frame(frame)
    loader = feature_batches(image_features, batch_size) if image_features is not None else \
        make_loader(ImageClassificationDataset(images, root, image_size, augment=False),
                    batch_size, shuffle=False, seed=0)
    row_of = {path: i for i, path in enumerate(images["image_path"])}
    classes = dataset_classes(frame["label"]) if "label" in frame else ()
    labels = images["label"] if "label" in images else [None] * len(images)
    return GalleryIndex(
        image_embeds=embed_images(model, loader),
        image_paths=images["image_path"].tolist(),
        image_labels=label_ids(labels, classes).tolist(),
        image_splits=images["split"].tolist(),
        text_embeds=embed_texts(model, tokenizer, frame["caption"].tolist()) if text_features
        is None else embed_images(model, feature_batches(text_features, 256), text=True),
        captions=frame["caption"].tolist(),
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
