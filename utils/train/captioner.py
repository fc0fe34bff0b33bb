"""Notebook 06: the captioner's data (Flickr8k official splits, cached EfficientNet-Lite maps),
its GloVe start and its training through the project's loop (kept by validation BLEU-4).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader

from utils.core import paths
from utils.core.device import autocast
from utils.data.captions import CaptionDataset, Vocabulary, caption_table
from utils.data.datasets import make_loader
from utils.data.flickr8k import FLICKR_IMAGES, flickr8k_image_files, read_flickr8k
from utils.data.glove import embedding_matrix, load_glove
from utils.eval.captioning import caption_scores
from utils.models.captioner import (
    AttentionCaptioner,
    CaptionerConfig,
    caption_loss,
    generate_captions,
)
from utils.models.features import ImageFeatures, image_features
from utils.train.configs import CaptionerTrainConfig
from utils.train.loop import EarlyStopping, best_epoch, fit

SPLITS = ("train", "val", "test")  # Flickr8k's train / dev / test image lists


MONITOR = ("val_BLEU-4", "max")  # the epoch of the best greedy BLEU-4 on the dev images is kept


def split_limits(training: CaptionerTrainConfig) -> dict[str, int]:
    """Images kept per split (0: all)."""
    return {"train": training.train_images, "val": training.val_images,
            "test": training.test_images}


def check_glove(config: CaptionerConfig, training: CaptionerTrainConfig) -> None:
    """GloVe 6B-50d vectors need 50-value word embeddings: a ValueError naming both fields."""
    if training.glove and config.embed_dim != 50:
        raise ValueError(f"glove=True needs embed_dim=50 (GloVe 6B-50d vectors), not "
                         f"{config.embed_dim}. Fix: OVERRIDES embed_dim=50 or glove=False.")


def load_caption_frame(training: CaptionerTrainConfig, flickr8k: Path | None = None
                       ) -> pd.DataFrame:
    """Captions of the official splits (image, caption_index, caption, split), each split cut
    to its first images in file-name order when the config says so."""
    frame = read_flickr8k(flickr8k or paths.flickr8k_dir())
    frame = frame[frame["flickr_split"].isin(SPLITS)].rename(columns={"flickr_split": "split"})
    kept = []
    for split, count in split_limits(training).items():
        images = sorted(frame.loc[frame["split"] == split, "image"].unique())
        kept += images[:count] if count > 0 else images
    return frame[frame["image"].isin(set(kept))].reset_index(drop=True)


def feature_files(frame: pd.DataFrame, training: CaptionerTrainConfig,
                  flickr8k: Path | None = None) -> list[Path]:
    """The image set whose features are read: all 8,091 images (one cache shared with
    notebooks 07 and 08), or only the frame's images when the splits are cut (smoke mode)."""
    flickr8k = Path(flickr8k or paths.flickr8k_dir())
    if not any(split_limits(training).values()):
        return flickr8k_image_files(flickr8k)
    return sorted(flickr8k / FLICKR_IMAGES / name for name in frame["image"].unique())


def load_caption_features(frame: pd.DataFrame, config: CaptionerConfig,
                          training: CaptionerTrainConfig, flickr8k: Path | None = None
                          ) -> ImageFeatures:
    """The frozen encoder's maps (N,R,C) of the image set, from the cache or computed once."""
    return image_features(feature_files(frame, training, flickr8k), config.encoder)


def initial_embeddings(vocabulary: Vocabulary, config: CaptionerConfig,
                       training: CaptionerTrainConfig) -> tuple[torch.Tensor | None, list[str]]:
    """GloVe rows (V,50) for the vocabulary and the words GloVe lacks; (None, []) without."""
    check_glove(config, training)
    if not training.glove:
        return None, []
    return embedding_matrix(vocabulary.words, load_glove(), seed=training.seed)


def split_table(frame: pd.DataFrame, split: str) -> pd.DataFrame:
    """One row per image of ``split`` (image, captions), in file-name order."""
    rows = frame[frame["split"] == split].sort_values(["image", "caption_index"])
    return caption_table(rows)


def make_caption_loaders(frame: pd.DataFrame, features: ImageFeatures, vocabulary: Vocabulary,
                         training: CaptionerTrainConfig) -> dict[str, DataLoader]:
    """Seeded loaders of (maps (B,R,C), tokens (B,5,max_words + 2)) for train, val and test."""
    loaders = {}
    for split in SPLITS:
        table = split_table(frame, split)
        dataset = CaptionDataset(features.maps, features.rows(table["image"].tolist()),
                                 table["captions"].tolist(), vocabulary, training.max_words)
        loaders[split] = make_loader(dataset, training.batch_size, shuffle=split == "train",
                                     seed=training.seed)
    return loaders


def trim_padding(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Tokens (..., L) -> (..., L') without the trailing columns that are <pad> everywhere."""
    used = (tokens != pad_id).flatten(0, -2).any(dim=0)
    return tokens[..., :int(used.nonzero().max()) + 1]


def caption_step(model: AttentionCaptioner, batch, device: torch.device, alpha_c: float = 1.0
                 ) -> tuple[torch.Tensor, int, dict]:
    """Teacher-forced loss of (maps (B,R,C), tokens (B,K,L)) -> (loss, captions, {"ce": sum});
    ``alpha_c`` weighs the attention penalty."""
    maps, tokens = batch
    tokens = trim_padding(tokens, 0).to(device)
    with autocast(device):
        logits, weights = model(maps.to(device), tokens)
    targets = tokens[:, :, 1:].flatten(0, 1)
    loss, cross_entropy = caption_loss(logits, weights, targets, 0, alpha_c)
    n = (targets != 0).any(dim=1).sum()  # a tensor on the device: no host sync per batch
    return loss, n, {"ce": cross_entropy.detach() * n}


def dataset_maps(loader: DataLoader) -> torch.Tensor:
    """The feature maps (N,R,C) of a caption loader's images, in its dataset's order."""
    dataset = loader.dataset
    return dataset.maps[dataset.rows]


def references_of(frame: pd.DataFrame, split: str) -> list[list[str]]:
    """The human captions of each image of ``split``, in the loaders' image order."""
    return split_table(frame, split)["captions"].tolist()


@torch.no_grad()
def validate_captioner(model: AttentionCaptioner, loader: DataLoader, vocabulary: Vocabulary,
                       references: list[list[str]], device: torch.device) -> dict[str, float]:
    """Validation cross-entropy (teacher forcing) and greedy BLEU-4 / CIDEr of the images."""
    model.eval()
    total, count = 0.0, 0
    for batch in loader:
        _, n, extra = caption_step(model, batch, device)
        total, count = total + extra["ce"], count + n
    total, count = float(total), int(count)
    found = generate_captions(model, dataset_maps(loader), vocabulary, 1,
                              model.config.max_caption_length)
    scores, _ = caption_scores([vocabulary.decode(c.ids) for c in found], references,
                               meteor=False)
    return {"val_ce": total / max(count, 1), "val_BLEU-4": scores["BLEU-4"],
            "val_CIDEr": scores["CIDEr"]}


def clip_gradients(model: AttentionCaptioner, max_norm: float):
    """A hook for ``optimizer.register_step_pre_hook``: clip the global gradient norm."""
    params = [p for p in model.parameters() if p.requires_grad]

    def hook(optimizer, args, kwargs) -> None:
        torch.nn.utils.clip_grad_norm_(params, max_norm)

    return hook


def train_captioner(model: AttentionCaptioner, loaders: dict[str, DataLoader],
                    vocabulary: Vocabulary, references: list[list[str]],
                    training: CaptionerTrainConfig, device: torch.device) -> list[dict]:
    """Adam + StepLR + gradient clipping through ``utils.train.loop.fit``; the epoch of the
    best validation BLEU-4 is kept -> history rows."""
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=training.lr)
    optimizer.register_step_pre_hook(clip_gradients(model, training.grad_clip))
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, training.lr_step, training.lr_gamma)
    stopper = EarlyStopping(*MONITOR, patience=training.patience)
    step = functools.partial(caption_step, alpha_c=training.alpha_c)
    return fit(model, loaders["train"], step,
               lambda m: validate_captioner(m, loaders["val"], vocabulary, references, device),
               optimizer, scheduler, stopper, training.epochs, device,
               training.limit_batches)


def best_captioner_epoch(history: list[dict]) -> int:
    """The epoch whose weights train_captioner kept."""
    return best_epoch(history, *MONITOR)
