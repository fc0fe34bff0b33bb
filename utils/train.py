"""One training loop for every classifier: AdamW, ReduceLROnPlateau, early stopping, tqdm.

Batches are ``(inputs, labels)``: images (B,3,S,S), token ids (B,L) or cached features (B,F),
with integer labels (B,). ``fit`` restores the weights of the epoch with the best validation
loss and returns the history, one dict per epoch.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from utils.checkpoint import save_checkpoint
from utils.common import autocast, get_device, make_generator
from utils.metrics import classification_metrics


def limit(loader: Iterable, batches: int) -> Iterable:
    """The first ``batches`` batches of ``loader`` (all of them when ``batches`` is 0)."""
    return itertools.islice(loader, batches) if batches > 0 else loader


def batch_count(loader: DataLoader, batches: int) -> int:
    """Number of batches an epoch will see, for the progress bar."""
    return min(len(loader), batches) if batches > 0 else len(loader)


def step_batch(model: nn.Module, batch, device: torch.device, optimizer=None
               ) -> tuple[float, int, int]:
    """Forward (and backward when ``optimizer`` is given) one batch -> (summed loss, correct, n)."""
    inputs, labels = (t.to(device, non_blocking=True) for t in batch[:2])
    with autocast(device):
        logits = model(inputs)
    loss = nn.functional.cross_entropy(logits.float(), labels)
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    correct = (logits.argmax(dim=1) == labels).sum().item()
    return loss.item() * len(labels), correct, len(labels)


def run_epoch(model: nn.Module, batches: Iterable, device: torch.device, optimizer=None,
              bar: tqdm | None = None) -> tuple[float, float]:
    """One pass over ``batches`` (training when ``optimizer`` is given) -> (mean loss, accuracy);
    ``bar`` advances by one per batch and shows the running loss and accuracy."""
    model.train(optimizer is not None)
    totals = np.zeros(3)
    with torch.set_grad_enabled(optimizer is not None):
        for batch in batches:
            totals += step_batch(model, batch, device, optimizer)
            if bar is not None:
                bar.set_postfix(loss=f"{totals[0] / totals[2]:.3f}",
                                acc=f"{totals[1] / totals[2]:.3f}", refresh=False)
                bar.update(1)
    count = max(totals[2], 1)
    return float(totals[0] / count), float(totals[1] / count)


def fit(model: nn.Module, train_loader: DataLoader, val_loader: DataLoader, config,
        device: torch.device | None = None) -> list[dict]:
    """Train with early stopping on validation loss; the best weights are restored at the end.

    ``config`` gives epochs, lr, weight_decay, patience and limit_batches (0 = whole epochs).
    """
    device = device or get_device()
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=0.5, patience=max(1, config.patience // 2))
    history, best = [], {"loss": float("inf"), "state": None, "epoch": 0}
    for epoch in range(1, config.epochs + 1):
        row = train_one_epoch(model, train_loader, val_loader, optimizer, device, config, epoch)
        scheduler.step(row["val_loss"])
        history.append(row)
        if row["val_loss"] < best["loss"]:
            best = {"loss": row["val_loss"], "state": copy.deepcopy(model.state_dict()),
                    "epoch": epoch}
        elif epoch - best["epoch"] >= config.patience:
            print(f"early stop at epoch {epoch}: best val_loss at epoch {best['epoch']}")
            break
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    return history


def train_one_epoch(model, train_loader, val_loader, optimizer, device, config, epoch) -> dict:
    """Train then validate once, with one progress bar -> the history row of this epoch."""
    lr = optimizer.param_groups[0]["lr"]
    # A manual bar (see extract_features), on stdout like the early-stop line: one stream,
    # where Jupyter keeps one line per epoch.
    bar = tqdm(total=batch_count(train_loader, config.limit_batches), file=sys.stdout,
               desc=f"epoch {epoch}/{config.epochs}", mininterval=1.0)
    batches = limit(train_loader, config.limit_batches)
    train_loss, train_acc = run_epoch(model, batches, device, optimizer, bar)
    val_loss, val_acc = run_epoch(model, val_loader, device)
    bar.set_postfix({"loss": f"{train_loss:.3f}", "acc": f"{train_acc:.3f}",
                     "val_loss": f"{val_loss:.3f}", "val_acc": f"{val_acc:.3f}", "lr": f"{lr:.1e}"})
    bar.close()
    return {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
            "val_loss": val_loss, "val_acc": val_acc, "lr": lr}


def best_epoch(history: list[dict]) -> int:
    """The epoch whose weights ``fit`` kept (lowest validation loss)."""
    return min(history, key=lambda row: row["val_loss"])["epoch"]


@torch.no_grad()
def predict_logits(model: nn.Module, loader: DataLoader, device: torch.device | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N,C) float32 on CPU and labels (N,) for every batch of ``loader``, in order."""
    device = device or get_device()
    model.to(device).eval()
    logits, labels = [], []
    for batch in loader:
        with autocast(device):
            logits.append(model(batch[0].to(device)).float().cpu())
        labels.append(batch[1])
    return torch.cat(logits), torch.cat(labels)


def predict(model: nn.Module, loader: DataLoader, device: torch.device | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y_true (N,), y_pred (N,), probabilities (N,C)) as numpy arrays."""
    logits, labels = predict_logits(model, loader, device)
    probs = logits.softmax(dim=1)
    return labels.numpy(), probs.argmax(dim=1).numpy(), probs.numpy()


@torch.no_grad()
def extract_features(trunk: nn.Module, loader: DataLoader, device: torch.device | None = None,
                     batches: int = 0) -> TensorDataset:
    """Run a frozen trunk once over ``loader`` -> TensorDataset(features (N,F), labels (N,))."""
    device = device or get_device()
    trunk.to(device).eval()
    features, labels = [], []
    # A manual bar: tqdm.auto wrapping a DataLoader calls iter() on it once more, which would
    # spend a draw of its seeded generator (and start workers for nothing).
    with tqdm(total=batch_count(loader, batches), desc="features", leave=False,
              file=sys.stdout, mininterval=1.0) as bar:
        for batch in limit(loader, batches):
            with autocast(device):
                features.append(trunk(batch[0].to(device)).float().cpu())
            labels.append(batch[1])
            bar.update(1)
    return TensorDataset(torch.cat(features), torch.cat(labels))


def feature_loader(dataset: TensorDataset, batch_size: int, shuffle: bool, seed: int
                   ) -> DataLoader:
    """A seeded DataLoader over cached features."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                      generator=make_generator(seed))


@dataclass
class TrainedClassifier:
    """A trained model and what the notebooks report about its run."""

    model: nn.Module
    config: Any  # the stage config dataclass it was built and trained with
    history: list[dict]  # one row per epoch (see fit)
    seconds: float  # wall time of the training, feature caching included
    loaders: dict[str, DataLoader]  # "train", "val", "test"


def take_per_class(frame, per_class: int):
    """At most ``per_class`` rows of each (split, label) pair (0: all rows); smoke mode uses it."""
    if per_class <= 0:
        return frame
    return frame.groupby(["split", "label"], sort=False).head(per_class)


def evaluate(model: nn.Module, loader: DataLoader, classes: Sequence[str],
             device: torch.device | None = None) -> tuple[dict, np.ndarray]:
    """Metrics of ``model`` on ``loader`` (utils.metrics) and its predictions (N,)."""
    y_true, y_pred, _ = predict(model, loader, device)
    return classification_metrics(y_true, y_pred, classes), y_pred


def run_summary(run: TrainedClassifier, metrics: dict) -> dict:
    """JSON-ready record of one variant: config, test metrics, epochs and wall time."""
    return {"config": dataclasses.asdict(run.config), "test": metrics,
            "best_epoch": best_epoch(run.history), "epochs_run": len(run.history),
            "seconds": round(run.seconds, 1), "history": run.history}


def save_classifier(path: str | Path, run: TrainedClassifier, metrics: dict, **extra) -> Path:
    """Checkpoint of a trained classifier: CPU weights, config, best epoch, metrics, history."""
    state = {k: v.detach().cpu() for k, v in run.model.state_dict().items()}
    return save_checkpoint(path, state, dataclasses.asdict(run.config),
                           epoch=best_epoch(run.history), metrics=metrics,
                           history=run.history, **extra)
