"""Retrieval with a trained CLIP: metrics, the gallery index and the top-k search.

Conventions: embeddings are L2-normalised rows, so a dot product is a cosine similarity in
[-1, 1]. A *similarity matrix* has one row per query and one column per gallery item; the
*relevance matrix* (same shape, bool) marks the right answers of each query. Ranks are 1-based:
rank 1 means the first item returned is right.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

RECALL_KS = (1, 5, 10)
PRECISION_K = 5


# ---------------------------------------------------------------------------------------------
# Metrics on a similarity matrix
# ---------------------------------------------------------------------------------------------
def first_relevant_rank(similarity: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """Rank (1-based) of the best-placed relevant item: similarity (Q, G), relevant (Q, G) -> (Q,).

    Items are sorted by decreasing similarity (stable sort: ties keep gallery order).
    """
    if similarity.shape != relevant.shape:
        raise ValueError(f"similarity {tuple(similarity.shape)} and relevant "
                         f"{tuple(relevant.shape)} must have the same shape")
    if not bool(relevant.any(dim=1).all()):
        raise ValueError("every query needs at least one relevant gallery item")
    order = torch.argsort(similarity.float(), dim=1, descending=True, stable=True)
    hits = relevant.gather(1, order)
    return hits.float().argmax(dim=1) + 1  # argmax finds the first True


def recall_at_k(ranks: torch.Tensor, k: int) -> float:
    """Share of queries whose first relevant item is in the top k: ranks (Q,) -> float."""
    return float((ranks <= k).float().mean())


def class_precision_at_k(similarity: torch.Tensor, query_labels: Sequence[int],
                         gallery_labels: Sequence[int], k: int = PRECISION_K) -> float:
    """Mean share of the top k gallery items that have the query's class: similarity (Q, G)."""
    top = similarity.float().topk(min(k, similarity.shape[1]), dim=1).indices
    gallery = torch.as_tensor(list(gallery_labels))
    queries = torch.as_tensor(list(query_labels)).unsqueeze(1)
    return float((gallery[top] == queries).float().mean())


def retrieval_metrics(similarity: torch.Tensor, relevant: torch.Tensor,
                      query_labels: Sequence[int], gallery_labels: Sequence[int],
                      ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """R@k, median rank and class precision@5 of one retrieval direction (rates in [0, 1])."""
    ranks = first_relevant_rank(similarity, relevant)
    metrics = {f"R@{k}": recall_at_k(ranks, k) for k in ks}
    metrics["median_rank"] = float(np.median(ranks.numpy()))
    metrics[f"class_precision@{PRECISION_K}"] = class_precision_at_k(
        similarity, query_labels, gallery_labels)
    return metrics


def chance_recall(n_gallery: int, n_relevant: int, k: int) -> float:
    """Probability that a random ordering puts one of n_relevant items in its top k."""
    k = min(k, n_gallery)
    return 1.0 - math.comb(n_gallery - n_relevant, k) / math.comb(n_gallery, k)


def chance_median_rank(n_gallery: int, n_relevant: int) -> float:
    """Median of the first relevant rank under a random ordering (n_relevant among n_gallery)."""
    if n_relevant == 1:
        return (n_gallery + 1) / 2  # uniform rank on 1..G
    for rank in range(1, n_gallery + 1):
        if chance_recall(n_gallery, n_relevant, rank) >= 0.5:
            return float(rank)
    return float(n_gallery)


def chance_metrics(relevant: torch.Tensor, query_labels: Sequence[int],
                   gallery_labels: Sequence[int], ks: Sequence[int] = RECALL_KS
                   ) -> dict[str, float]:
    """What a random ranking scores on average, with the same keys as retrieval_metrics."""
    n_gallery = relevant.shape[1]
    n_relevant = relevant.sum(dim=1).tolist()
    metrics = {f"R@{k}": float(np.mean([chance_recall(n_gallery, r, k) for r in n_relevant]))
               for k in ks}
    metrics["median_rank"] = float(np.median([chance_median_rank(n_gallery, r)
                                              for r in n_relevant]))
    gallery = np.asarray(list(gallery_labels))
    shares = [(gallery == label).mean() for label in query_labels]
    metrics[f"class_precision@{PRECISION_K}"] = float(np.mean(shares))
    return metrics


def relevance_matrix(query_items: Sequence[int], gallery_items: Sequence[int]) -> torch.Tensor:
    """relevant[q, g] is True when query q and gallery item g belong to the same image: (Q, G)."""
    return torch.as_tensor(list(query_items)).unsqueeze(1) == \
        torch.as_tensor(list(gallery_items)).unsqueeze(0)


def evaluate_retrieval(image_embeds: torch.Tensor, text_embeds: torch.Tensor,
                       text_image: Sequence[int], image_labels: Sequence[int]) -> dict:
    """Both directions + their chance levels: image_embeds (N, E), text_embeds (T, E).

    text_image[t] is the row of caption t's image in image_embeds. Text -> image: the caption's
    own image is the one right answer. Image -> text: a hit is ANY caption of that image.
    """
    similarity = text_embeds.float() @ image_embeds.float().T  # (T, N)
    text_labels = [image_labels[i] for i in text_image]
    t2i_relevant = relevance_matrix(text_image, range(len(image_embeds)))
    i2t_relevant = t2i_relevant.T
    return {
        "text_to_image": retrieval_metrics(similarity, t2i_relevant, text_labels, image_labels),
        "image_to_text": retrieval_metrics(similarity.T, i2t_relevant, image_labels, text_labels),
        "chance": {
            "text_to_image": chance_metrics(t2i_relevant, text_labels, image_labels),
            "image_to_text": chance_metrics(i2t_relevant, image_labels, text_labels),
        },
    }


def mean_recall(metrics: dict, k: int = 5) -> float:
    """Mean of R@k over both directions of an evaluate_retrieval result (model selection)."""
    return (metrics["text_to_image"][f"R@{k}"] + metrics["image_to_text"][f"R@{k}"]) / 2


# ---------------------------------------------------------------------------------------------
# Embedding a dataset and the gallery index
# ---------------------------------------------------------------------------------------------
def image_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per image (first caption kept), in order of first appearance."""
    return frame.drop_duplicates("image_path").reset_index(drop=True)


@torch.no_grad()
def embed_images(model: torch.nn.Module, loader: torch.utils.data.DataLoader) -> torch.Tensor:
    """Image embeddings of every batch (images first in each batch): -> (N, E) float32 on CPU."""
    from utils.common import autocast

    model.eval()
    device = next(model.parameters()).device
    chunks = []
    for batch in loader:
        with autocast(device):
            chunks.append(model.encode_image(batch[0].to(device)).float().cpu())
    return torch.cat(chunks)


@torch.no_grad()
def embed_texts(model: torch.nn.Module, tokenizer, texts: Sequence[str],
                batch_size: int = 256) -> torch.Tensor:
    """Text embeddings: list of T strings -> (T, E) float32 on CPU."""
    from utils.common import autocast

    model.eval()
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer.encode(list(texts[start:start + batch_size])).to(device)
        with autocast(device):
            chunks.append(model.encode_text(tokens).float().cpu())
    return torch.cat(chunks)


def build_index(model: torch.nn.Module, tokenizer, frame: pd.DataFrame, root: Path,
                image_size: int, batch_size: int = 64) -> dict:
    """Gallery of every image and every caption of ``frame`` (rows: image_path, label, caption,
    split): normalised embeddings + what they point to. Tensors and lists only (checkpointable).
    """
    from utils.data import CLASSES
    from utils.datasets import ImageClassificationDataset, make_loader

    images = image_frame(frame)
    loader = make_loader(ImageClassificationDataset(images, root, image_size, augment=False),
                         batch_size, shuffle=False, seed=0)
    row_of = {path: i for i, path in enumerate(images["image_path"])}
    return {
        "image_embeds": embed_images(model, loader),
        "image_paths": images["image_path"].tolist(),
        "image_labels": [CLASSES.index(label) for label in images["label"]],
        "image_splits": images["split"].tolist(),
        "text_embeds": embed_texts(model, tokenizer, frame["caption"].tolist()),
        "captions": frame["caption"].tolist(),
        "caption_images": [row_of[path] for path in frame["image_path"]],
    }


def select_split(index: dict, split: str) -> dict:
    """The part of a gallery index whose images belong to ``split`` (captions follow images)."""
    keep = [i for i, s in enumerate(index["image_splits"]) if s == split]
    new_row = {old: new for new, old in enumerate(keep)}
    texts = [t for t, i in enumerate(index["caption_images"]) if i in new_row]
    return {
        "image_embeds": index["image_embeds"][keep],
        "image_paths": [index["image_paths"][i] for i in keep],
        "image_labels": [index["image_labels"][i] for i in keep],
        "image_splits": [split] * len(keep),
        "text_embeds": index["text_embeds"][texts],
        "captions": [index["captions"][t] for t in texts],
        "caption_images": [new_row[index["caption_images"][t]] for t in texts],
    }


def evaluate_index(index: dict) -> dict:
    """evaluate_retrieval on a (split of a) gallery index."""
    return evaluate_retrieval(index["image_embeds"], index["text_embeds"],
                              index["caption_images"], index["image_labels"])


def metrics_table(result: dict) -> pd.DataFrame:
    """evaluate_retrieval's result as a table: one row per metric, each direction beside its
    chance level."""
    columns = {}
    for direction in ("text_to_image", "image_to_text"):
        columns[direction] = pd.Series(result[direction])
        columns[f"{direction} (hasard)"] = pd.Series(result["chance"][direction])
    return pd.DataFrame(columns)


def results_table(results: list[tuple[str, str, float]], root: Path,
                  columns: tuple[str, str, str] = ("image", "caption", "score")) -> pd.DataFrame:
    """Search results as a table, image paths shown relative to the dataset root when inside."""
    def short(value):
        path = Path(value) if isinstance(value, str) and value.endswith(".jpg") else None
        return path.relative_to(root).as_posix() if path and path.is_relative_to(root) else value

    return pd.DataFrame([[short(v) for v in row] for row in results], columns=list(columns))


def max_abs_difference(index: dict, other: dict) -> float:
    """Largest absolute difference between the image and text embeddings of two indexes."""
    return max(float((index[key] - other[key]).abs().max())
               for key in ("image_embeds", "text_embeds"))


def least_similar_captions(index: dict, n: int = 10) -> pd.DataFrame:
    """The n captions least similar to their own image (candidates for data cleaning)."""
    from utils.data import CLASSES

    images = index["caption_images"]
    scores = (index["text_embeds"] * index["image_embeds"][images]).sum(dim=1)
    frame = pd.DataFrame({
        "image_path": [index["image_paths"][i] for i in images],
        "label": [CLASSES[index["image_labels"][i]] for i in images],
        "caption": index["captions"],
        "score": scores.numpy(),
    })
    return frame.nsmallest(n, "score").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Search
# ---------------------------------------------------------------------------------------------
def image_pixels(image: str | Path | Image.Image, size: int) -> torch.Tensor:
    """A path or a PIL image -> uint8 (3,size,size), decoded like the training images."""
    from utils.datasets import decode_image

    if not isinstance(image, Image.Image):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: image not found (give an existing image file "
                                    "or a PIL image)")
        return decode_image(path, size)
    image = image.convert("RGB")
    if image.size != (size, size):  # same resampling as utils.datasets.decode_image
        image = image.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()


class ClipSearch:
    """Top-k search in a gallery index with a trained CLIP (text -> images, image -> texts)."""

    def __init__(self, model: torch.nn.Module, tokenizer, index: dict, root: Path,
                 image_size: int) -> None:
        from utils.datasets import build_transform

        self.model, self.tokenizer, self.index = model.eval(), tokenizer, index
        self.root, self.image_size = Path(root), image_size
        self.transform = build_transform(image_size, augment=False)

    @classmethod
    def from_checkpoint(cls, path: Path, root: Path) -> ClipSearch:
        """Search with a saved CLIP checkpoint (models/03_clip.pt) and its stored index."""
        from utils.clip import load_clip

        model, tokenizer, checkpoint = load_clip(path)
        return cls(model, tokenizer, checkpoint["index"], root, model.config.image_size)

    def _first_caption(self, image_row: int) -> str:
        """The first caption of an image of the index."""
        return self.index["captions"][self.index["caption_images"].index(image_row)]

    def _full_path(self, image_row: int) -> str:
        """Absolute path of an indexed image."""
        return str(self.root / self.index["image_paths"][image_row])

    @torch.no_grad()
    def embed_image(self, image: str | Path | Image.Image) -> torch.Tensor:
        """One image (path or PIL) -> its normalised embedding (E,)."""
        batch = self.transform(image_pixels(image, self.image_size)).unsqueeze(0)
        return embed_images(self.model, [(batch,)])[0]

    def search_images(self, text: str, k: int = 5) -> list[tuple[str, str, float]]:
        """Top-k images for a text: [(image_path, its caption, cosine score)], best first."""
        query = embed_texts(self.model, self.tokenizer, [text])[0]
        scores = self.index["image_embeds"] @ query
        top = scores.topk(min(k, len(scores)))
        return [(self._full_path(i), self._first_caption(i), float(s))
                for s, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)]

    def search_texts(self, image: str | Path | Image.Image, k: int = 5
                     ) -> list[tuple[str, str, float]]:
        """Top-k captions for an image: [(caption, its image_path, cosine score)], best first."""
        scores = self.index["text_embeds"] @ self.embed_image(image)
        top = scores.topk(min(k, len(scores)))
        return [(self.index["captions"][t], self._full_path(self.index["caption_images"][t]),
                 float(s)) for s, t in zip(top.values.tolist(), top.indices.tolist(), strict=True)]


# ---------------------------------------------------------------------------------------------
# A query image from outside the dataset
# ---------------------------------------------------------------------------------------------
def outside_image(flickr8k: Path, label: str = "dog", per_class: int = 150) -> Path:
    """A Flickr8k image of class ``label`` (by its first caption) that the course subset does
    not hold: not among the ``per_class`` images utils.data.build_subset picks, and from the
    official Flickr8k test split."""
    from utils.data import FLICKR_IMAGES, classify_caption, read_flickr8k, select_images

    captions = read_flickr8k(flickr8k)
    chosen = set(select_images(captions, per_class)["image"])
    first = captions[(captions["caption_index"] == 0) & ~captions["image"].isin(chosen)]
    first = first[first["flickr_split"] == "test"].sort_values("image")
    matches = first[first["caption"].map(classify_caption) == label]
    if matches.empty:
        raise ValueError(f"{flickr8k}: no test image of class {label!r} outside the subset")
    return Path(flickr8k) / FLICKR_IMAGES / matches["image"].iloc[0]


def write_synthetic_image(path: Path, size: int = 256) -> Path:
    """A drawn picture (sky, sea, a red ball) for when no image outside the dataset exists."""
    from PIL import ImageDraw

    image = Image.new("RGB", (size, size), (135, 190, 235))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, size // 2, size, size], fill=(20, 80, 160))
    draw.ellipse([size // 3, size // 4, size // 3 + size // 4, size // 2], fill=(210, 30, 30))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
