"""Classification metrics (scikit-learn): accuracy, macro-F1, per-class report, confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score


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
