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
from utils.models.cnn import CnnConfig, ImageClassifier, build_image_classifier
from utils.models.smallbert import SmallBertConfig, build_text_classifier
from utils.train.configs import MONITORS, CnnTrainConfig, SmallBertTrainConfig
from utils.train.features import trunk_features
from utils.train.loop import EarlyStopping, TrainedRun, batch_count, best_epoch, fit


def monitor_of(training) -> tuple[str, str]:
    """(history key, "min" | "max") of the epoch a classifier keeps: its run settings'
    ``monitor``, else the lowest validation loss (SmallBERT)."""
    key = getattr(training, "monitor", "val_loss")
    return key, MONITORS[key]


def classifier_step(model: nn.Module, batch, device: torch.device, label_smoothing: float = 0.0
                    ) -> tuple[torch.Tensor, int, dict]:
    """Cross-entropy of one (inputs, labels) batch -> (loss, n, {"acc": correct count})."""
    inputs, labels = (t.to(device, non_blocking=True) for t in batch[:2])
    with autocast(device):
        logits = model(inputs)
    loss = nn.functional.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
    return loss, len(labels), {"acc": (logits.argmax(dim=1) == labels).sum()}


def make_scheduler(optimizer, training, steps_per_epoch: int):
    """One-cycle (warm-up then cosine decay, stepped per batch) or halve-on-plateau."""
    if getattr(training, "schedule", "plateau") == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=training.lr, total_steps=training.epochs * max(steps_per_epoch, 1),
            pct_start=training.warmup)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode=monitor_of(training)[1], factor=0.5,
        patience=max(1, training.patience // 2))


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


def fit_classifier(model: nn.Module, train_loader: DataLoader, val_loader: DataLoader,
                   training, device: torch.device | None = None) -> list[dict]:
    """Train a classifier (``training``: epochs, lr, weight_decay, patience, limit_batches) ->
    history rows; the weights of the best monitored validation epoch are restored."""
    device = device or get_device()
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=training.lr, weight_decay=training.weight_decay)
    scheduler = make_scheduler(optimizer, training,
                               batch_count(train_loader, training.limit_batches))
    stopper = EarlyStopping(*monitor_of(training), patience=training.patience)
    step = functools.partial(classifier_step,
                             label_smoothing=getattr(training, "label_smoothing", 0.0))
    return fit(model, train_loader, step,
               lambda m: validate_classifier(m, val_loader, device), optimizer, scheduler,
               stopper, training.epochs, device, training.limit_batches)


def image_loaders(frame, root: Path, config: CnnConfig, training: CnnTrainConfig,
                  batch_size: int | None = None) -> dict:
    """Loaders of the shared split: "train" (shuffled, augmented if asked), "val", "test"."""

    batch_size = batch_size or training.batch_size
    loaders = {}
    for split in ("train", "val", "test"):
        part = frame[frame["split"] == split]
        train = split == "train"
        dataset = ImageClassificationDataset(part, root, config.image_size,
                                             training.augment and train, config=training)
        # Training drops a ragged last batch: a batch of 4 images gives a noisy BatchNorm step.
        loaders[split] = make_loader(dataset, batch_size, shuffle=train, seed=training.seed,
                                     drop_last=train and len(dataset) > batch_size)
    return loaders


def fit_head_on_features(model: ImageClassifier, loaders: dict, config: CnnConfig,
                         training: CnnTrainConfig, device: torch.device) -> list[dict]:
    """Frozen trunk: its features (B,F) computed once (the shared disk cache for an ImageNet
    EfficientNet-Lite), then only the head trains on them."""
    model.trunk.to(device)
    splits = []
    for split in ("train", "val"):
        dataset = loaders[split].dataset
        files = [dataset.cache.root / path for path in dataset.image_paths]
        features = trunk_features(model.trunk, config.trunk, files, dataset,
                                  training.feature_batch_size)
        splits.append(make_loader(TensorDataset(features, dataset.labels), training.batch_size,
                                  split == "train", training.seed, num_workers=0))
    return fit_classifier(model.head, *splits, training, device)


def train_image_classifier(config: CnnConfig, training: CnnTrainConfig, frame,
                           root: Path | None = None, device: torch.device | None = None
                           ) -> TrainedRun:
    """Build the classifier of ``config`` and train it on the train split (val: early stopping)."""
    seed_everything(training.seed)
    device = device or get_device()
    frame = take_per_class(frame, training.per_class_limit)
    model = build_image_classifier(config, freeze_trunk=training.freeze_trunk)
    batch_size = training.feature_batch_size if model.trunk_frozen else training.batch_size
    loaders = image_loaders(frame, Path(root or paths.subset_dir()), config, training,
                            batch_size)
    start = time.perf_counter()
    if model.trunk_frozen:
        history = fit_head_on_features(model, loaders, config, training, device)
    else:
        history = fit_classifier(model, loaders["train"], loaders["val"], training, device)
    return TrainedRun(model, config, history, time.perf_counter() - start,
                      best_epoch(history, *monitor_of(training)), loaders, training=training)


def text_loaders(frame, vectorizer, training: SmallBertTrainConfig) -> dict:
    """Loaders of the shared split, one item per caption: "train" (shuffled), "val", "test"."""

    return {split: make_loader(TextClassificationDataset(frame[frame["split"] == split],
                                                         vectorizer),
                               training.batch_size, shuffle=split == "train", seed=training.seed)
            for split in ("train", "val", "test")}


def train_text_classifier(config: SmallBertConfig, training: SmallBertTrainConfig, frame,
                          vectorizer, device: torch.device | None = None) -> TrainedRun:
    """Build SmallBERT + head for ``vectorizer``'s vocabulary and train it (val: early stopping)."""
    config = dataclasses.replace(config, vocab_size=vectorizer.vocab_size, length=vectorizer.length)
    seed_everything(training.seed)
    device = device or get_device()
    loaders = text_loaders(take_per_class(frame, training.per_class_limit), vectorizer, training)
    model = build_text_classifier(config)
    if config.glove_dim:
        start_from_glove(model.encoder.bert, vectorizer, training.seed)
    start = time.perf_counter()
    history = fit_classifier(model, loaders["train"], loaders["val"], training, device)
    return TrainedRun(model, config, history, time.perf_counter() - start,
                      best_epoch(history, *monitor_of(training)), loaders, vectorizer,
                      training=training)


def start_from_glove(bert: nn.Module, vectorizer, seed: int) -> list[str]:
    """Word embeddings (V,50) of a GloVe-sized SmallBERT set to the GloVe 6B-50d vectors of
    the vocabulary (small random ones for the words GloVe lacks) -> those missing words."""
    matrix, missing = embedding_matrix(vectorizer.vocabulary(), load_glove(), seed)
    with torch.no_grad():
        bert.token_embedding.weight.copy_(matrix)
        bert.token_embedding.weight[bert.pad_id] = 0.0
    return missing


def run_summary(run: TrainedRun, metrics: dict) -> dict:
    """JSON-ready record of one variant: configs, test metrics, epochs and wall time."""
    return {"config": dataclasses.asdict(run.config),
            "training": dataclasses.asdict(run.training), "test": metrics,
            "best_epoch": run.best_epoch, "epochs_run": len(run.history),
            "seconds": round(run.seconds, 1), "history": run.history}


def save_classifier(path: str | Path, run: TrainedRun, metrics: dict, **extra) -> Path:
    """Checkpoint of a trained classifier: CPU weights, architecture config, best epoch,
    metrics, history and, as metadata, its run settings (``training``)."""
    state = {k: v.detach().cpu() for k, v in run.model.state_dict().items()}
    kind = "image_classifier" if isinstance(run.config, CnnConfig) else "text_classifier"
    return save_checkpoint(path, state, dataclasses.asdict(run.config), kind=kind,
                           epoch=run.best_epoch, metrics=metrics, history=run.history,
                           training=dataclasses.asdict(run.training), **extra)
