"""A search gallery of every Flickr8k image (8,091) for a saved CLIP, embedded by its image tower::

    python -m utils.app.index --flickr8k DIR --checkpoint models/03_clip.pt \\
        --out models/flickr8k_index.pt [--limit N] [--batch-size 64]

The file holds the gallery index (all five captions of each image, class from caption #0 or -1,
the official Flickr8k split), the folder its paths are relative to, and which checkpoint (name
and image-tower hash) embedded it; the search page offers it for that checkpoint only.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from utils.app.catalog import (
    FLICKR8K_GALLERY,
    CheckpointError,
    load_searcher,
)
from utils.core import paths
from utils.core.cli import positive_int, run_command
from utils.core.common import atomic_path
from utils.data.course import CLASSES, DataError, classify_caption
from utils.data.flickr8k import FLICKR_IMAGES, read_flickr8k
from utils.eval.index import GalleryIndex, build_index
from utils.models.clip import ClipModel


def flickr8k_rows(flickr8k: Path, limit: int = 0) -> pd.DataFrame:
    """One row per caption (image_path, caption, label: the class of caption #0 or "", split),
    images in name order; ``limit`` keeps the first images only (0: all)."""
    frame = read_flickr8k(flickr8k).sort_values(["image", "caption_index"], kind="stable")
    images = frame["image"].drop_duplicates()
    if limit:
        frame = frame[frame["image"].isin(set(images[:limit]))]
    first = frame.drop_duplicates("image").set_index("image")["caption"]
    label_of = {image: classify_caption(caption) or "" for image, caption in first.items()}
    return pd.DataFrame({
        "image_path": FLICKR_IMAGES + "/" + frame["image"],
        "caption": frame["caption"],
        "label": frame["image"].map(label_of),
        "split": frame["flickr_split"],
    }).reset_index(drop=True)


def embed_gallery(model: ClipModel, tokenizer, rows: pd.DataFrame, root: Path,
                  batch_size: int = 64) -> GalleryIndex:
    """Rows of flickr8k_rows -> GalleryIndex (utils.eval.index.build_index, the one builder),
    the class list always the course's (an image naming none of them is unlabelled)."""
    index = build_index(model, tokenizer, rows, root, model.config.image_size, batch_size,
                        progress=True)
    return dataclasses.replace(index, class_names=list(CLASSES))


def save_gallery(out: Path, index: GalleryIndex, root: Path, checkpoint: Path,
                 fingerprint: str, name: str = "Flickr8k") -> Path:
    """Write a gallery file (keys gallery, source, index) atomically."""
    data = {"gallery": {"name": name, "root": str(root.resolve()),
                        "images": len(index.image_paths)},
            "source": {"file": checkpoint.name, "fingerprint": fingerprint},
            "index": index.to_dict()}
    with atomic_path(out) as tmp:
        torch.save(data, tmp)
    return out


def build_flickr8k_gallery(flickr8k: Path, checkpoint: Path, out: Path, limit: int = 0,
                           batch_size: int = 64) -> GalleryIndex:
    """Embed Flickr8k with a saved CLIP and save the gallery file; returns its index."""
    searcher = load_searcher(checkpoint)
    rows = flickr8k_rows(flickr8k, limit)
    index = embed_gallery(searcher.model, searcher.tokenizer, rows, flickr8k, batch_size)
    save_gallery(out, index, flickr8k, checkpoint, searcher.fingerprint)
    return index


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Arguments of ``python -m utils.app.index``."""
    parser = argparse.ArgumentParser(prog="python -m utils.app.index",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--flickr8k", type=Path, default=None,
                        help="the unpacked Flickr8k folder (default: $FLICKR8K_DIR or data/)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a CLIP checkpoint (default: models/03_clip.pt)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"the gallery file to write (default: models/{FLICKR8K_GALLERY})")
    parser.add_argument("--limit", type=int, default=0, help="first N images only (0: all)")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="images per batch")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build the gallery file; a clear message and exit status 1 on bad input."""
    args = parse_args(argv)
    flickr8k = (args.flickr8k or paths.flickr8k_dir()).resolve()
    checkpoint = args.checkpoint or paths.models_dir() / "03_clip.pt"
    out = args.out or paths.model_path(FLICKR8K_GALLERY)
    start = time.perf_counter()

    def work() -> str:
        if not checkpoint.is_file():
            raise FileNotFoundError(f"{checkpoint}: not found. Fix: run `make run` first (it "
                                    "writes models/03_clip.pt) or give --checkpoint.")
        index = build_flickr8k_gallery(flickr8k, checkpoint, out, args.limit, args.batch_size)
        return (f"{out}: {len(index.image_paths)} images, {len(index.captions)} captions, "
                f"embedded with {checkpoint.name} in {time.perf_counter() - start:.0f} s")

    return run_command(work, (CheckpointError, DataError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())
