"""Steps 1 and 2: train the image and the text classifier with the project's training loop.

Batches are ``(inputs, labels)``: images (B,3,S,S), token ids (B,L) or cached features (B,F),
with integer labels (B,). AdamW, ReduceLROnPlateau on the validation loss, early stopping on it.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from utils.core import paths
from utils.core.checkpoint import save_checkpoint
from utils.core.common import seed_everything
from utils.core.device import autocast, get_device
from utils.data.course import take_per_class
from utils.data.datasets import ImageClassificationDataset, TextClassificationDataset, make_loader
from utils.data.glove import embedding_matrix, load_glove
from utils.models.cnn import MONITORS, CnnConfig, ImageClassifier, build_image_classifier
from utils.models.smallbert import SmallBertConfig, build_text_classifier
from utils.train.features import trunk_features
from utils.train.loop import EarlyStopping, TrainedRun, batch_count, best_epoch, fit


def monitor_of(config) -> tuple[str, str]:
    """(history key, "min" | "max") of the epoch a classifier keeps: its config's ``monitor``,
    else the lowest validation loss (SmallBERT)."""
    key = getattr(config, "monitor", "val_loss")
    return key, MONITORS[key]


def classifier_step(model: nn.Module, batch, device: torch.device, label_smoothing: float = 0.0
                    ) -> tuple[torch.Tensor, int, dict]:
    """Cross-entropy of one (inputs, labels) batch -> (loss, n, {"acc": correct count})."""
    inputs, labels = (t.to(device, non_blocking=True) for t in batch[:2])
    with autocast(device):
        logits = model(inputs)
    loss = nn.functional.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
    return loss, len(labels), {"acc": (logits.argmax(dim=1) == labels).sum()}


def make_scheduler(optimizer, config, steps_per_epoch: int):
    """One-cycle (warm-up then cosine decay, stepped per batch) or halve-on-plateau."""
    if getattr(config, "schedule", "plateau") == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, total_steps=config.epochs * max(steps_per_epoch, 1),
            pct_start=config.warmup)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode=monitor_of(config)[1], factor=0.5, patience=max(1, config.patience // 2))


@torch.no_grad()
def validate_classifier(model: nn.Module, loader: DataLoader, device: torch.device) -> dict:
    """Mean validation loss and accuracy -> {"val_loss", "val_acc"} (summed on the device,
    read once)."""
    model.eval()
    loss, correct, count = 0.0, 0, 0
    for batch in loader:
        batch_loss, n, extra = classifier_step(model, batch, device)
        loss, correct, count = loss + batch_loss * n, correct + extra["acc"], count + n
    count = max(count, 1)
    return {"val_loss": float(loss) / count, "val_acc": float(correct) / count}


def fit_classifier(model: nn.Module, train_loader: DataLoader, val_loader: DataLoader, config,
                   device: torch.device | None = None) -> list[dict]:
    """Train a classifier (``config``: epochs, lr, weight_decay, patience, limit_batches) ->
    history rows; the weights of the lowest validation loss are restored."""
    device = device or get_device()
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = make_scheduler(optimizer, config, batch_count(train_loader, config.limit_batches))
    stopper = EarlyStopping(*monitor_of(config), patience=config.patience)
    step = functools.partial(classifier_step,
                             label_smoothing=getattr(config, "label_smoothing", 0.0))
    return fit(model, train_loader, step,
               lambda m: validate_classifier(m, val_loader, device), optimizer, scheduler,
               stopper, config.epochs, device, config.limit_batches)


def image_loaders(frame, root: Path, config: CnnConfig, batch_size: int | None = None) -> dict:
    """Loaders of the shared split: "train" (shuffled, augmented if asked), "val", "test"."""

    batch_size = batch_size or config.batch_size
    loaders = {}
    for split in ("train", "val", "test"):
        part = frame[frame["split"] == split]
        train = split == "train"
        dataset = ImageClassificationDataset(part, root, config.image_size,
                                             config.augment and train, config=config)
        # Training drops a ragged last batch: a batch of 4 images gives a noisy BatchNorm step.
        loaders[split] = make_loader(dataset, batch_size, shuffle=train, seed=config.seed,
                                     drop_last=train and len(dataset) > batch_size)
    return loaders


def fit_head_on_features(model: ImageClassifier, loaders: dict, config: CnnConfig,
                         device: torch.device) -> list[dict]:
    """Frozen trunk: its features (B,F) computed once (the shared disk cache for an ImageNet
    EfficientNet-Lite), then only the head trains on them."""
    model.trunk.to(device)
    splits = []
    for split in ("train", "val"):
        dataset = loaders[split].dataset
        files = [dataset.cache.root / path for path in dataset.image_paths]
        features = trunk_features(model.trunk, config.trunk, files, dataset,
                                  config.feature_batch_size)
        splits.append(make_loader(TensorDataset(features, dataset.labels), config.batch_size,
                                  split == "train", config.seed, num_workers=0))
    return fit_classifier(model.head, *splits, config, device)


def train_image_classifier(config: CnnConfig, frame, root: Path | None = None,
                           device: torch.device | None = None) -> TrainedRun:
    """Build the classifier of ``config`` and train it on the train split (val: early stopping)."""
    seed_everything(config.seed)
    device = device or get_device()
    frame = take_per_class(frame, config.per_class_limit)
    model = build_image_classifier(config)
    batch_size = config.feature_batch_size if model.trunk_frozen else config.batch_size
    loaders = image_loaders(frame, Path(root or paths.subset_dir()), config, batch_size)
    start = time.perf_counter()
    if model.trunk_frozen:
        history = fit_head_on_features(model, loaders, config, device)
    else:
        history = fit_classifier(model, loaders["train"], loaders["val"], config, device)
    return TrainedRun(model, config, history, time.perf_counter() - start,
                      best_epoch(history, *monitor_of(config)), loaders)


def text_loaders(frame, vectorizer, config: SmallBertConfig) -> dict:
    """Loaders of the shared split, one item per caption: "train" (shuffled), "val", "test"."""

    return {split: make_loader(TextClassificationDataset(frame[frame["split"] == split],
                                                         vectorizer),
                               config.batch_size, shuffle=split == "train", seed=config.seed)
            for split in ("train", "val", "test")}


def train_text_classifier(config: SmallBertConfig, frame, vectorizer,
                          device: torch.device | None = None) -> TrainedRun:
    """Build SmallBERT + head for ``vectorizer``'s vocabulary and train it (val: early stopping)."""
    config = dataclasses.replace(config, vocab_size=vectorizer.vocab_size, length=vectorizer.length)
    seed_everything(config.seed)
    device = device or get_device()
    loaders = text_loaders(take_per_class(frame, config.per_class_limit), vectorizer, config)
    model = build_text_classifier(config)
    if config.glove_dim:
        start_from_glove(model.encoder.bert, vectorizer, config.seed)
    start = time.perf_counter()
    history = fit_classifier(model, loaders["train"], loaders["val"], config, device)
    return TrainedRun(model, config, history, time.perf_counter() - start,
                      best_epoch(history, *monitor_of(config)), loaders, vectorizer)


def start_from_glove(bert: nn.Module, vectorizer, seed: int) -> list[str]:
    """Word embeddings (V,50) of a GloVe-sized SmallBERT set to the GloVe 6B-50d vectors of
    the vocabulary (small random ones for the words GloVe lacks) -> those missing words."""
    matrix, missing = embedding_matrix(vectorizer.vocabulary(), load_glove(), seed)
    with torch.no_grad():
        bert.token_embedding.weight.copy_(matrix)
        bert.token_embedding.weight[bert.pad_id] = 0.0
    return missing


def run_summary(run: TrainedRun, metrics: dict) -> dict:
    """JSON-ready record of one variant: config, test metrics, epochs and wall time."""
    return {"config": dataclasses.asdict(run.config), "test": metrics,
            "best_epoch": run.best_epoch, "epochs_run": len(run.history),
            "seconds": round(run.seconds, 1), "history": run.history}


def save_classifier(path: str | Path, run: TrainedRun, metrics: dict, **extra) -> Path:
    """Checkpoint of a trained classifier: CPU weights, config, best epoch, metrics, history."""
    state = {k: v.detach().cpu() for k, v in run.model.state_dict().items()}
    kind = "image_classifier" if isinstance(run.config, CnnConfig) else "text_classifier"
    return save_checkpoint(path, state, dataclasses.asdict(run.config), kind=kind,
                           epoch=run.best_epoch, metrics=metrics,
                           history=run.history, **extra)
