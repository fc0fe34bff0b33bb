"""Top-k search with a trained CLIP in a gallery index: text -> images, image -> texts, each
result with its cosine score.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from PIL import Image

from utils.data.datasets import build_transform, image_pixels
from utils.eval.index import GalleryIndex, embed_images, embed_texts
from utils.models.clip import load_clip


def results_table(results: list[tuple[str, str, float]], root: Path,
                  columns: tuple[str, str, str] = ("image", "caption", "score")) -> pd.DataFrame:
    """Search results as a table, image paths shown relative to the dataset root when inside."""
    def short(value):
        path = Path(value) if isinstance(value, str) and value.endswith(".jpg") else None
        return path.relative_to(root).as_posix() if path and path.is_relative_to(root) else value

    return pd.DataFrame([[short(v) for v in row] for row in results], columns=list(columns))


class ClipSearch:
    """Top-k search in a gallery index with a trained CLIP (text -> images, image -> texts)."""

    def __init__(self, model: torch.nn.Module, tokenizer, index: GalleryIndex, root: Path,
                 image_size: int) -> None:

        self.model, self.tokenizer, self.index = model.eval(), tokenizer, index
        self.root, self.image_size = Path(root), image_size
        self.transform = build_transform(image_size, augment=False)

    @classmethod
    def from_checkpoint(cls, path: Path, root: Path) -> ClipSearch:
        """Search with a saved CLIP checkpoint (models/03_clip.pt) and its stored index."""

        model, tokenizer, checkpoint = load_clip(path)
        return cls(model, tokenizer, GalleryIndex.from_dict(checkpoint["index"]), root,
                   model.config.image_size)

    def _first_caption(self, image_row: int) -> str:
        """The first caption of an image of the index."""
        return self.index.captions[self.index.caption_images.index(image_row)]

    def _full_path(self, image_row: int) -> str:
        """Absolute path of an indexed image."""
        return str(self.root / self.index.image_paths[image_row])

    @torch.no_grad()
    def embed_image(self, image: str | Path | Image.Image) -> torch.Tensor:
        """One image (path or PIL) -> its normalised embedding (E,)."""
        batch = self.transform(image_pixels(image, self.image_size)).unsqueeze(0)
        return embed_images(self.model, [(batch,)])[0]

    def search_images(self, text: str, k: int = 5) -> list[tuple[str, str, float]]:
        """Top-k images for a text: [(image_path, its caption, cosine score)], best first."""
        query = embed_texts(self.model, self.tokenizer, [text])[0]
        scores = self.index.image_embeds @ query
        top = scores.topk(min(k, len(scores)))
        return [(self._full_path(i), self._first_caption(i), float(s))
                for s, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)]

    def search_texts(self, image: str | Path | Image.Image, k: int = 5
                     ) -> list[tuple[str, str, float]]:
        """Top-k captions for an image: [(caption, its image_path, cosine score)], best first."""
        scores = self.index.text_embeds @ self.embed_image(image)
        top = scores.topk(min(k, len(scores)))
        return [(self.index.captions[t], self._full_path(self.index.caption_images[t]),
                 float(s)) for s, t in zip(top.values.tolist(), top.indices.tolist(), strict=True)]
