"""Classification metrics (scikit-learn): accuracy, macro-F1, per-class report, confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score
from torch import nn
from torch.utils.data import DataLoader

from utils.core.device import autocast, get_device


def image_files(loader, root: Path | None = None) -> list[Path]:
    """Files of an ImageClassificationDataset loader's images, in loader order."""
    root = Path(root or loader.dataset.cache.root)
    return [root / path for path in loader.dataset.image_paths]


def misclassified_images(loader, y_pred, root: Path | None = None) -> tuple[list[Path], list, list]:
    """(files, true labels, predicted labels) of the wrong predictions ``y_pred`` (N,) of a
    non-shuffled ImageClassificationDataset loader."""
    y_true = loader.dataset.labels.tolist()
    files = image_files(loader, root)
    wrong = interleave_by_class(misclassified(y_true, y_pred), y_true)
    return [files[i] for i in wrong], [y_true[i] for i in wrong], [int(y_pred[i]) for i in wrong]


def misclassified_captions(loader, y_pred) -> tuple[list[str], list, list]:
    """(captions, true labels, predicted labels) of the wrong predictions ``y_pred`` (N,) of a
    non-shuffled TextClassificationDataset loader."""
    y_true = loader.dataset.labels.tolist()
    wrong = interleave_by_class(misclassified(y_true, y_pred), y_true)
    captions = loader.dataset.captions
    return [captions[i] for i in wrong], [y_true[i] for i in wrong], [int(y_pred[i]) for i in wrong]


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int],
                           classes: Sequence[str]) -> dict:
    """Metrics of integer predictions (N,) against labels (N,); JSON-ready dict."""
    labels = list(range(len(classes)))
    report = classification_report(y_true, y_pred, labels=labels, target_names=list(classes),
                                   output_dict=True, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro",
                                   zero_division=0)),
        "report": report,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "n": len(y_true),
    }


def report_frame(metrics: dict, classes: Sequence[str]) -> pd.DataFrame:
    """The per-class part of a metrics dict as a table (precision, recall, f1, support)."""
    rows = {name: metrics["report"][name] for name in classes}
    return pd.DataFrame(rows).T.round(3)


def summary_frame(summaries: dict[str, dict]) -> pd.DataFrame:
    """One row per variant from ``utils.train.run_summary`` records: test accuracy, macro-F1,
    best and last epoch, training seconds."""
    rows = {name: {"accuracy": s["test"]["accuracy"], "macro_f1": s["test"]["macro_f1"],
                   "best_epoch": s["best_epoch"], "epochs_run": s["epochs_run"],
                   "seconds": s["seconds"]}
            for name, s in summaries.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


def misclassified(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Indices (K,) of the wrong predictions, in dataset order."""
    return np.flatnonzero(np.asarray(y_true) != np.asarray(y_pred))


def interleave_by_class(indices: np.ndarray, y_true) -> list[int]:
    """Reorder ``indices`` round-robin over their true class, so that the first few shown
    cover every class instead of the first class of a sorted test set."""
    y_true = np.asarray(y_true)
    groups = [[int(i) for i in indices if y_true[i] == label] for label in np.unique(y_true)]
    longest = max((len(g) for g in groups), default=0)
    return [g[k] for k in range(longest) for g in groups if k < len(g)]


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


def evaluate(model: nn.Module, loader: DataLoader, classes: Sequence[str],
             device: torch.device | None = None) -> tuple[dict, np.ndarray]:
    """Metrics of ``model`` on ``loader`` (utils.metrics) and its predictions (N,)."""
    y_true, y_pred, _ = predict(model, loader, device)
    return classification_metrics(y_true, y_pred, classes), y_pred
