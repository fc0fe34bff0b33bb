"""Search in a gallery without Streamlit: embeddings normalised once when the gallery is made,
then each query is one matrix product and one ``topk``; class and split filters are masks."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from utils.data.course import CLASSES, SPLITS
from utils.data.datasets import build_transform, image_pixels, open_rgb
from utils.eval.index import GalleryIndex, embed_texts

UPLOAD_FORMATS = ("JPEG", "PNG", "MPO")  # MPO: the JPEG variant many phones write


class UploadError(ValueError):
    """An uploaded file that is not a readable JPEG or PNG image (message says what to do)."""


@dataclass
class Gallery:
    """A gallery ready to search: unit-norm contiguous float32 embeddings, the folder its image
    paths are relative to, and per image its first caption and class name."""

    index: GalleryIndex
    root: Path
    name: str
    caption_rows: torch.Tensor = field(init=False)  # (T,) image row of each caption
    first_captions: list[str] = field(init=False)  # (N,) the first caption of each image

    def __post_init__(self) -> None:
        """Normalise once here so that every query is a plain dot product."""
        index = self.index = dataclasses.replace(
            self.index,
            image_embeds=F.normalize(self.index.image_embeds.float(), dim=-1).contiguous(),
            text_embeds=F.normalize(self.index.text_embeds.float(), dim=-1).contiguous())
        self.root = Path(self.root)
        self.caption_rows = torch.as_tensor(index.caption_images, dtype=torch.long)
        first: dict[int, str] = {}
        for caption, row in zip(index.captions, index.caption_images, strict=True):
            first.setdefault(row, caption)
        self.first_captions = [first.get(row, "") for row in range(len(index.image_paths))]

    def __len__(self) -> int:
        return len(self.index.image_paths)

    def label_name(self, row: int) -> str:
        """Class name of an image ("—" for a Flickr8k image that names none of CLASSES)."""
        label = self.index.image_labels[row]
        return CLASSES[label] if 0 <= label < len(CLASSES) else "—"

    def image_file(self, row: int) -> Path:
        """Absolute path of an image of the gallery."""
        return self.root / self.index.image_paths[row]


@dataclass(frozen=True)
class Hit:
    """One search result: rank from 1, row in the gallery (image row or caption row), score."""

    rank: int
    row: int
    score: float
    image_path: Path
    caption: str
    label: str
    split: str


def image_mask(gallery: Gallery, classes: Sequence[str] = (), splits: Sequence[str] = ()
               ) -> torch.Tensor:
    """Images kept by the filters: (N,) bool; an empty filter keeps everything."""
    unknown = sorted(set(classes) - set(CLASSES)) + sorted(set(splits) - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown filter value(s) {unknown}: classes are {CLASSES}, "
                         f"splits are {SPLITS}")
    keep = torch.ones(len(gallery), dtype=torch.bool)
    if classes:
        wanted = {CLASSES.index(name) for name in classes}
        keep &= torch.tensor([label in wanted for label in gallery.index.image_labels])
    if splits:
        keep &= torch.tensor([split in splits for split in gallery.index.image_splits])
    return keep


def top_k(scores: torch.Tensor, k: int, keep: torch.Tensor | None = None
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (N,), k, mask (N,) bool -> (values (k',), rows (k',)) best first, k' <= k kept."""
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
        k = min(k, int(keep.sum()))
    top = scores.topk(min(k, scores.numel()))
    return top.values, top.indices


def score_images(gallery: Gallery, query: torch.Tensor) -> torch.Tensor:
    """Cosine score of every image for one unit-norm query: (E,) -> (N,)."""
    return gallery.index.image_embeds @ query


def search_images(gallery: Gallery, query: torch.Tensor, k: int,
                  keep: torch.Tensor | None = None) -> tuple[list[Hit], torch.Tensor]:
    """Query (E,) -> (top-k image hits best first, scores (N,) of the whole gallery)."""
    scores = score_images(gallery, query)
    values, rows = top_k(scores, k, keep)
    index = gallery.index
    hits = [Hit(rank, row, score, gallery.image_file(row), gallery.first_captions[row],
                gallery.label_name(row), index.image_splits[row])
            for rank, (score, row) in enumerate(zip(values.tolist(), rows.tolist(),
                                                    strict=True), start=1)]
    return hits, scores


def search_texts(gallery: Gallery, query: torch.Tensor, k: int,
                 keep_images: torch.Tensor | None = None) -> list[Hit]:
    """Query (E,) -> top-k caption hits best first (captions of the kept images only)."""
    scores = gallery.index.text_embeds @ query
    keep = None if keep_images is None else keep_images[gallery.caption_rows]
    values, rows = top_k(scores, k, keep)
    index = gallery.index
    hits = []
    for rank, (score, row) in enumerate(zip(values.tolist(), rows.tolist(), strict=True), 1):
        image = index.caption_images[row]
        hits.append(Hit(rank, row, score, gallery.image_file(image), index.captions[row],
                        gallery.label_name(image), index.image_splits[image]))
    return hits


def embed_query_text(model: torch.nn.Module, tokenizer, text: str) -> torch.Tensor:
    """One query text -> its unit-norm embedding (E,)."""
    if not text.strip():
        raise ValueError("empty query: type a few words, e.g. 'A group of cyclists'")
    return F.normalize(embed_texts(model, tokenizer, [text])[0], dim=-1)


@torch.no_grad()
def embed_query_image(model: torch.nn.Module, image: Image.Image) -> torch.Tensor:
    """One RGB PIL image -> its unit-norm embedding (E,), decoded like the training images."""
    size = model.config.image_size
    pixels = build_transform(size, augment=False)(image_pixels(image, size)).unsqueeze(0)
    device = next(model.parameters()).device
    return F.normalize(model.encode_image(pixels.to(device)).float().cpu()[0], dim=-1)


def read_upload(data: bytes, name: str) -> Image.Image:
    """Uploaded bytes -> RGB PIL image (any mode: RGBA, L, P, CMYK); UploadError otherwise."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            kind = probe.format
        if kind not in UPLOAD_FORMATS:
            raise UploadError(f"{name}: a {kind} image; upload a JPEG or PNG file instead")
        return open_rgb(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise UploadError(f"{name}: not a readable image ({error}); upload a JPEG or PNG file"
                          ) from error
