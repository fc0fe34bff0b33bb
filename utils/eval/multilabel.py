"""Scores of notebook 07 (scikit-learn): ROC-AUC and ROC curves of a 4-class classifier
(one-vs-rest), and the multi-label tag metrics (micro/macro-F1, mAP, per-tag AUC, top-k).

Classes or tags that a split does not hold (or holds for every item) have no ROC curve: they
are left out of the macro averages, and their per-tag AUC is None.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score, roc_curve

THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.05), 2)  # candidate decision thresholds


def one_hot(y_true: Sequence[int], classes: int) -> np.ndarray:
    """Class ids (N,) -> 0/1 (N,C)."""
    return np.eye(classes, dtype=int)[np.asarray(y_true, dtype=int)]


def scorable(targets: np.ndarray) -> np.ndarray:
    """Columns of 0/1 targets (N,K) holding both values (an AUC exists): bool (K,)."""
    positives = targets.sum(axis=0)
    return (positives > 0) & (positives < len(targets))


def roc_auc_macro(y_true: Sequence[int], probs: np.ndarray) -> float | None:
    """One-vs-rest ROC-AUC averaged over the classes (N,) vs probabilities (N,C); None if none."""
    targets = one_hot(y_true, probs.shape[1])
    keep = scorable(targets)
    if not keep.any():
        return None
    return float(roc_auc_score(targets[:, keep], probs[:, keep], average="macro"))


def roc_curves(y_true: Sequence[int], probs: np.ndarray, classes: Sequence[str]) -> dict:
    """One-vs-rest ROC curve of each class present: name -> (fpr (M,), tpr (M,), auc)."""
    targets = one_hot(y_true, len(classes))
    curves = {}
    for k in np.flatnonzero(scorable(targets)):
        fpr, tpr, _ = roc_curve(targets[:, k], probs[:, k])
        curves[classes[k]] = (fpr, tpr, float(roc_auc_score(targets[:, k], probs[:, k])))
    return curves


def tag_aucs(targets: np.ndarray, scores: np.ndarray, tags: Sequence[str]) -> dict:
    """ROC-AUC of each tag from 0/1 targets (N,T) and scores (N,T); None where undefined."""
    keep = scorable(targets)
    return {tag: float(roc_auc_score(targets[:, t], scores[:, t])) if keep[t] else None
            for t, tag in enumerate(tags)}


def mean_average_precision(targets: np.ndarray, scores: np.ndarray) -> float | None:
    """mAP: average precision of each tag with positives, averaged (macro); None if none."""
    keep = targets.sum(axis=0) > 0
    if not keep.any():
        return None
    return float(average_precision_score(targets[:, keep], scores[:, keep], average="macro"))


def top_k_hit(targets: np.ndarray, scores: np.ndarray, k: int) -> float | None:
    """Share of items with at least one tag whose k best-scored tags hold a right one."""
    has_tag = targets.sum(axis=1) > 0
    if not has_tag.any():
        return None
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    hits = np.take_along_axis(targets, best, axis=1).max(axis=1) > 0
    return float(hits[has_tag].mean())


def best_threshold(targets: np.ndarray, scores: np.ndarray) -> float:
    """The threshold of THRESHOLDS with the best micro-F1 (choose it on the validation split)."""
    f1s = [f1_score(targets, scores >= t, average="micro", zero_division=0) for t in THRESHOLDS]
    return float(THRESHOLDS[int(np.argmax(f1s))])


def multilabel_metrics(targets: np.ndarray, scores: np.ndarray, tags: Sequence[str],
                       threshold: float = 0.5) -> dict:
    """Tag metrics of probabilities (N,T) vs 0/1 targets (N,T); a tag is predicted on when its
    probability reaches ``threshold``. JSON-ready dict."""
    predicted = scores >= threshold
    return {
        "micro_f1": float(f1_score(targets, predicted, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(targets, predicted, average="macro", zero_division=0)),
        "mAP": mean_average_precision(targets, scores),
        "top1": top_k_hit(targets, scores, 1),
        "top5": top_k_hit(targets, scores, 5),
        "threshold": threshold,
        "tag_auc": tag_aucs(targets, scores, tags),
        "n": len(targets),
    }
