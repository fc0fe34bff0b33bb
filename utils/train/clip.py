"""Step 3: CLIP's data (one image per item, captions drawn per epoch), its optimiser groups,
and its training through the project's loop (kept by validation R@5, both directions)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from utils.core import paths
from utils.core.device import autocast, get_device
from utils.data.course import keep_first_images, load_dataset
from utils.data.datasets import ImageTextDataset, make_loader
from utils.data.fetch import dataset_folder, ensure_dataset
from utils.data.flickr8k import build_subset, flickr8k_frame, flickr8k_image_files
from utils.data.generic import load_table_dataset
from utils.eval.retrieval import first_relevant_rank, recall_at_k
from utils.models.clip import ClipModel, similarity
from utils.train.configs import ClipTrainConfig
from utils.train.distributed import distributed_loader, is_distributed, unwrap, wrap_ddp
from utils.train.features import (
    CachedFeatures,
    PrecomputedPairs,
    cached_text_features,
    trunk_features,
)
from utils.train.loop import EarlyStopping, best_epoch, fit


def clip_data_root(training: ClipTrainConfig) -> Path:
    """The dataset folder: the course subset (1 caption) or a 5-caption build of the same kind."""

    if training.captions_per_image == 1:
        return ensure_dataset()
    root = dataset_folder("course", training.captions_per_image)
    if not (root / "captions.csv").exists():
        build_subset(paths.flickr8k_dir(), root, captions_per_image=training.captions_per_image)
    return root


def load_clip_frame(training: ClipTrainConfig) -> tuple[pd.DataFrame, Path]:
    """(rows image_path, label, caption, split; dataset root) of ``training.dataset``: the
    course subset, Flickr8k's official split, or a table file (utils.data.generic; label ""
    when the dataset has none)."""

    if training.dataset == "course":
        root = clip_data_root(training)
        frame = load_dataset(root)
    elif training.dataset == "flickr8k":
        frame, root = flickr8k_frame(paths.flickr8k_dir())
    else:
        frame, root = load_table_dataset(Path(training.dataset))
    return keep_first_images(frame, training.max_images_per_split), root


def caches_image_features(training: ClipTrainConfig) -> bool:
    """True when training reads cached features of a frozen image encoder."""
    return training.freeze_image and training.cache_frozen_features


def shared_cache_files(training: ClipTrainConfig) -> list[Path] | None:
    """The image set cached as one: all of Flickr8k when it is trained on whole (the features
    notebooks 06, 07 and 08 share); None: the split's own images."""
    if training.dataset == "flickr8k" and training.max_images_per_split == 0:
        return flickr8k_image_files(paths.flickr8k_dir())
    return None


def frozen_image_features(model: ClipModel, training: ClipTrainConfig, tokenizer,
                          frame: pd.DataFrame, root: Path) -> torch.Tensor | None:
    """Features (N,F) of the frame's images (order of first appearance) as training reads them
    from a frozen, cached image tower; None when the tower trains or caching is off."""
    if not caches_image_features(training):
        return None
    dataset = ImageTextDataset(frame, root, tokenizer, model.config.image_size, False,
                               seed=training.seed)
    return dataset_image_features(model, training, dataset, root)


def dataset_image_features(model: ClipModel, training: ClipTrainConfig,
                           dataset: ImageTextDataset, root: Path) -> torch.Tensor | None:
    """Features (N,F) of a dataset's images from the frozen, cached image tower, or None."""
    if not caches_image_features(training):
        return None
    model.to(get_device())
    files = [Path(root) / path for path in dataset.image_paths]
    return trunk_features(model.image_encoder, model.config.image.trunk, files, dataset,
                          training.batch_size, shared_cache_files(training))


def frozen_text_features(model: ClipModel, training: ClipTrainConfig, tokenizer,
                         frame: pd.DataFrame) -> torch.Tensor | None:
    """Features (T,D) of every caption row of ``frame`` from a frozen pretrained text tower
    (cached on disk, keyed by the tower's config and the token ids), when the image tower's
    are cached too; None else (the text tower then runs on every batch)."""
    if not (caches_image_features(training) and training.freeze_text
            and model.config.text_tower == "hf"):
        return None
    name = json.dumps(asdict(model.text_encoder.config), sort_keys=True)
    tokens = tokenizer.encode(frame["caption"].tolist())
    return cached_text_features(model.text_encoder, tokens, name)


def make_clip_dataset(model: ClipModel, training: ClipTrainConfig, tokenizer,
                      frame: pd.DataFrame, root: Path, train: bool,
                      texts: torch.Tensor | None = None) -> Dataset:
    """One item per image: (image or cached features, tokens or cached caption features,
    index); captions drawn per epoch. ``texts``: the frozen text tower's features (T,D) of
    the frame's rows (``frozen_text_features``), read with cached image features."""

    augment = train and training.augment and not caches_image_features(training)
    dataset = ImageTextDataset(frame, root, tokenizer, model.config.image_size, augment,
                               seed=training.seed)
    images = dataset_image_features(model, training, dataset, root)
    if images is None:
        return dataset
    return CachedFeatures(dataset, images) if texts is None else \
        PrecomputedPairs(dataset, images, texts)


def make_clip_loaders(model: ClipModel, training: ClipTrainConfig, tokenizer,
                      frame: pd.DataFrame, root: Path) -> tuple[DataLoader, DataLoader]:
    """Seeded (train, val) loaders over the train and val images of ``frame``."""

    loaders, size, seed = [], training.batch_size, training.seed
    texts = frozen_text_features(model, training, tokenizer, frame)  # all rows: one cache file
    for split in ("train", "val"):
        mask = (frame["split"] == split).to_numpy()
        rows = frame[mask].reset_index(drop=True)
        train = split == "train"
        dataset = make_clip_dataset(model, training, tokenizer, rows, root, train,
                                    None if texts is None else texts[torch.tensor(mask)])
        # Training drops a ragged last batch: a pair alone in its batch has no negative.
        drop_last = train and len(dataset) > size
        if train and is_distributed():  # torchrun: this process's shard of the global batch
            loaders.append(distributed_loader(dataset, size, seed, drop_last))
        else:
            loaders.append(make_loader(dataset, size, shuffle=train, seed=seed,
                                       drop_last=drop_last))
    return loaders[0], loaders[1]


def parameter_groups(model: ClipModel, training: ClipTrainConfig) -> list[dict]:
    """AdamW groups: encoders at lr * encoder_lr_scale (HF: its spec's encoder_lr), the rest
    at lr; weight decay on matrices only (not on biases, norms or the logit scale)."""
    config = model.config
    encoder_lr = training.lr * training.encoder_lr_scale
    hf_lr = config.pretrained_text.encoder_lr if config.text_tower == "hf" else encoder_lr
    lrs = [(model.image_encoder, encoder_lr), (model.text_encoder, hf_lr), (model, training.lr)]
    groups, seen = [], set()
    for module, lr in lrs:
        params = [p for p in module.parameters() if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in params)
        for decay in (True, False):
            chosen = [p for p in params if (p.dim() >= 2) == decay]
            if chosen:
                groups.append({"params": chosen, "lr": lr,
                               "weight_decay": training.weight_decay if decay else 0.0})
    return groups


MONITOR = ("val_R@5", "max")  # CLIP keeps the epoch of the best validation R@5 (both ways)


def clip_step(model: ClipModel, batch, device: torch.device) -> tuple[torch.Tensor, int, dict]:
    """The contrastive loss of one (images or features, tokens, index) batch -> (loss, n, {})."""
    images, tokens = batch[0], batch[1]
    with autocast(device):
        loss = model(images.to(device), tokens.to(device))["loss"]
    return loss, len(images), {}


@torch.no_grad()
def validate_clip(model: ClipModel, loader: DataLoader, device: torch.device
                  ) -> dict[str, float]:
    """Validation loss and R@5 of each direction, one caption per image (as drawn at epoch 0),
    and the logit scale."""
    model.eval()
    images, texts, loss = [], [], 0.0
    for batch_images, tokens, _ in loader:
        with autocast(device):
            out = model(batch_images.to(device), tokens.to(device))
        images.append(out["image_embeds"].float())
        texts.append(out["text_embeds"].float())
        loss = loss + out["loss"] * len(tokens)  # summed on the device, read once
    image_embeds, text_embeds = torch.cat(images).cpu(), torch.cat(texts).cpu()
    relevant = torch.eye(len(image_embeds), dtype=torch.bool)
    scores = similarity(image_embeds, text_embeds).T  # (T, N): the one cosine of the project
    t2i = recall_at_k(first_relevant_rank(scores, relevant), 5)
    i2t = recall_at_k(first_relevant_rank(scores.T, relevant), 5)
    return {"val_loss": float(loss) / len(image_embeds), "val_R@5": (t2i + i2t) / 2,
            "val_R@5_t2i": t2i, "val_R@5_i2t": i2t, "logit_scale": model.logit_scale.item()}


def feature_inputs(loader: DataLoader) -> tuple[bool, bool]:
    """(image, text): which towers a loader feeds with cached encoder features."""
    return getattr(loader.dataset, "feature_inputs", (False, False))


def train_clip(model: ClipModel, train_loader: DataLoader, val_loader: DataLoader,
               training: ClipTrainConfig) -> list[dict]:
    """AdamW + cosine schedule; the epoch with the best validation R@5 (mean of both
    directions) is kept; stops after ``patience`` epochs without progress -> history rows.
    Loaders of cached features train ``model`` through its feature-input view."""
    device = get_device()
    model.to(device)
    view = model.with_feature_inputs(*feature_inputs(train_loader))
    optimizer = torch.optim.AdamW(parameter_groups(view, training))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=training.epochs)
    stopper = EarlyStopping(*MONITOR, patience=training.patience)
    trained = wrap_ddp(view)  # several processes (torchrun): DDP; one process: the model
    return fit(trained, train_loader, clip_step,
               lambda m: validate_clip(unwrap(m), val_loader, device),
               optimizer, scheduler, stopper, training.epochs, device)


def best_clip_epoch(history: list[dict]) -> int:
    """The epoch whose weights train_clip kept (first best validation R@5)."""
    return best_epoch(history, *MONITOR)
