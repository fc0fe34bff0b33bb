"""The one search engine of the project: a gallery of unit-norm embeddings, then each query is
one matrix product (``utils.models.clip.similarity``) and one ``topk``; class and split filters
are masks. Notebooks use it through ``ClipSearch`` (a trained CLIP + its gallery, top-k lists of
(item, ..., score)), the search page (``utils.app``) through ``Gallery`` and the functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from utils.core import paths
from utils.data.course import CLASSES, SPLITS, DataError
from utils.data.datasets import build_transform, image_pixels, write_synthetic_image
from utils.data.flickr8k import outside_image
from utils.data.images import ImageError, image_from_bytes
from utils.eval.index import GalleryIndex, embed_texts
from utils.models.clip import load_clip, similarity

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
    return similarity(gallery.index.image_embeds, query.unsqueeze(0)).squeeze(1)


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
    scores = similarity(query.unsqueeze(0), gallery.index.text_embeds).squeeze(0)
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
def embed_query_image(model: torch.nn.Module, image: str | Path | Image.Image) -> torch.Tensor:
    """One image (PIL, or a file) -> its unit-norm embedding (E,), decoded like the evaluation
    images."""
    size = model.config.image_size
    pixels = build_transform(size, augment=False)(image_pixels(image, size)).unsqueeze(0)
    device = next(model.parameters()).device
    return F.normalize(model.encode_image(pixels.to(device)).float().cpu()[0], dim=-1)


def read_upload(data: bytes, name: str) -> Image.Image:
    """Uploaded bytes -> RGB PIL image (any mode: RGBA, L, 16-bit, P, CMYK), by the project's
    one loader; UploadError (its message says what to upload) otherwise, oversized included."""
    try:
        return image_from_bytes(data, name, UPLOAD_FORMATS)
    except ImageError as error:
        raise UploadError(str(error).replace("give a", "upload a")) from error


def results_table(results: list[tuple[str, str, float]], root: Path,
                  columns: tuple[str, str, str] = ("image", "caption", "score")) -> pd.DataFrame:
    """Search results as a table, image paths shown relative to the dataset root when inside."""
    def short(value):
        path = Path(value) if isinstance(value, str) and value.endswith(".jpg") else None
        return path.relative_to(root).as_posix() if path and path.is_relative_to(root) else value

    return pd.DataFrame([[short(v) for v in row] for row in results], columns=list(columns))


class ClipSearch:
    """A trained CLIP and its gallery: top-k text -> images and image -> texts, each result
    with its cosine score (the engine above, as tuples for the notebooks' tables)."""

    def __init__(self, model: torch.nn.Module, tokenizer, index: GalleryIndex, root: Path,
                 image_size: int | None = None) -> None:
        self.model, self.tokenizer = model.eval(), tokenizer
        self.gallery = Gallery(index, Path(root), "gallery")
        self.image_size = image_size or model.config.image_size

    @classmethod
    def from_checkpoint(cls, path: Path, root: Path) -> ClipSearch:
        """Search with a saved CLIP checkpoint (models/03_clip.pt) and its stored index."""
        model, tokenizer, checkpoint = load_clip(path)
        return cls(model, tokenizer, GalleryIndex.from_dict(checkpoint["index"]), root)

    def embed_image(self, image: str | Path | Image.Image) -> torch.Tensor:
        """One image (path or PIL) -> its unit embedding (E,), on the CPU."""
        return embed_query_image(self.model, image)

    def search_images(self, text: str, k: int = 5) -> list[tuple[str, str, float]]:
        """Top-k images for a text: [(image_path, its caption, cosine score)], best first."""
        hits, _ = search_images(self.gallery, embed_query_text(self.model, self.tokenizer,
                                                                text), k)
        return [(str(hit.image_path), hit.caption, hit.score) for hit in hits]

    def search_texts(self, image: str | Path | Image.Image, k: int = 5
                     ) -> list[tuple[str, str, float]]:
        """Top-k captions for an image: [(caption, its image_path, cosine score)], best first."""
        hits = search_texts(self.gallery, self.embed_image(image), k)
        return [(hit.caption, str(hit.image_path), hit.score) for hit in hits]


def query_image(label: str, fallback: Path) -> Path:
    """An image to query with that no gallery of the course holds: a Flickr8k test image of
    class ``label`` outside the course subset, else a drawn picture written at ``fallback``."""
    try:
        found = outside_image(paths.flickr8k_dir(), label=label)
    except (DataError, ValueError) as error:
        print(f"Flickr8k not available ({error}): a drawn image instead")
        return write_synthetic_image(fallback)
    print("image from Flickr8k, not in the course subset:", found)
    return found
