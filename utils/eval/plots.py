"""Figures of the project: each function returns a matplotlib Figure and, when ``name`` is
given, saves it as ``results/images/<name>`` (PNG, 150 dpi) through ``paths.figure_path``.

Shared file: helpers append their functions at the end.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image
from sklearn.decomposition import PCA
from sklearn.metrics import ConfusionMatrixDisplay

from utils.core import paths
from utils.data.course import CLASSES, caption_lengths, split_table
from utils.data.images import open_rgb


def save_figure(fig: Figure, name: str | None) -> Figure:
    """Save ``fig`` to results/images/``name`` (PNG, 150 dpi) when a name is given."""
    if name:
        fig.savefig(paths.figure_path(name), dpi=150, bbox_inches="tight")
    return fig


def plot_class_split_counts(frame: pd.DataFrame, name: str | None = None) -> Figure:
    """Grouped bars: images per class in each split (frame: load_dataset() rows)."""

    counts = split_table(frame)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    counts.plot.bar(ax=ax, rot=0, width=0.8)
    for container in ax.containers:
        ax.bar_label(container, fontsize=7)
    ax.set(xlabel="classe", ylabel="images", title="Images par classe et par split")
    ax.legend(title="split", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, name)


def plot_caption_lengths(frame: pd.DataFrame, length: int = 32, name: str | None = None
                         ) -> Figure:
    """Histogram of caption lengths in words, with the text models' token length marked."""

    words = caption_lengths(frame)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bins = np.arange(0, max(int(words.max()), length) + 2) - 0.5
    ax.hist(words, bins=bins, color="tab:blue", alpha=0.8)
    ax.axvline(length, color="tab:red", linestyle="--", label=f"longueur des tokens = {length}")
    ax.axvline(words.mean(), color="black", linestyle=":", label=f"moyenne = {words.mean():.1f}")
    ax.set(xlabel="mots par légende", ylabel="légendes", title="Longueur des légendes")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, name)


def plot_image_grid(frame: pd.DataFrame, root: Path, per_class: int = 6, seed: int = 0,
                    name: str | None = None) -> Figure:
    """A grid with one row per class: ``per_class`` random images and their first caption."""

    images = frame.drop_duplicates("image_path")
    fig, axes = plt.subplots(len(CLASSES), per_class, figsize=(2.2 * per_class, 2.7 * len(CLASSES)),
                             squeeze=False)
    for row, label in zip(axes, CLASSES, strict=True):
        chosen = images[images["label"] == label]
        chosen = chosen.sample(min(per_class, len(chosen)), random_state=seed)
        for ax, item in zip(row, chosen.itertuples(), strict=False):
            ax.imshow(open_rgb(Path(root) / item.image_path))
            ax.set_title(textwrap.fill(item.caption, 30), fontsize=6.5)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(label, fontsize=12)
    fig.tight_layout()
    return save_figure(fig, name)


def plot_clip_history(history: list[dict], name: str | None = None) -> Figure:
    """CLIP training curves: losses, validation R@5 (both directions) and the logit scale."""
    frame = pd.DataFrame(history)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    frame.plot(x="epoch", y=["train_loss", "val_loss"], ax=axes[0], marker="o",
               title="Perte contrastive")
    frame.plot(x="epoch", y=["val_R@5_t2i", "val_R@5_i2t", "val_R@5"], ax=axes[1], marker="o",
               title="R@5 de validation")
    frame.plot(x="epoch", y="logit_scale", ax=axes[2], marker="o", legend=False,
               title="Échelle des logits (1/température)")
    best = frame.loc[frame["val_R@5"].idxmax(), "epoch"]
    axes[1].axvline(best, color="grey", linestyle=":", label=f"meilleure époque ({best})")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, name)


def plot_image_results(results: list[tuple[str, str, float]], query: str,
                       name: str | None = None) -> Figure:
    """The images found for a text query, in a row, each titled with its score."""

    # constrained layout leaves room for the suptitle (tight_layout let it overlap the titles)
    fig, axes = plt.subplots(1, len(results), figsize=(2.6 * len(results), 3.2), squeeze=False,
                             layout="constrained")
    for rank, (ax, (image_path, _, score)) in enumerate(zip(axes[0], results, strict=True), 1):
        ax.imshow(open_rgb(Path(image_path)))
        ax.set_title(f"#{rank}  score {score:.3f}\n{Path(image_path).stem}", fontsize=9)
        ax.axis("off")
    fig.suptitle(f"Requête : « {query} »", fontsize=11)
    return save_figure(fig, name)


def plot_text_results(results: list[tuple[str, str, float]], image, title: str = "",
                      name: str | None = None) -> Figure:
    """A query image (path or PIL) beside the captions found for it, with their scores."""

    picture = image if not isinstance(image, (str, Path)) else open_rgb(Path(image))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.4),
                                      gridspec_kw={"width_ratios": [1, 2.3]})
    left.imshow(picture)
    left.set_title(title or "Image requête", fontsize=9)
    left.axis("off")
    lines = [f"#{rank}  {score:.3f}   {textwrap.fill(caption, 70, subsequent_indent=' ' * 14)}"
             for rank, (caption, _, score) in enumerate(results, 1)]
    right.text(0, 1, "\n\n".join(lines), va="top", family="monospace", fontsize=8.5)
    right.set_title("Légendes les plus proches (score cosinus)", fontsize=10, loc="left")
    right.axis("off")
    fig.tight_layout()
    return save_figure(fig, name)


def skipped_without_labels(labels: list[int], figure: str) -> bool:
    """True, and a printed note, when some item has no class (NO_LABEL): the figure needs them."""
    if len(labels) and min(labels) >= 0:
        return False
    print(f"{figure}: skipped, the dataset has no class labels")
    return True


def plot_similarity_matrix(similarity: np.ndarray, text_labels: list[int],
                           image_labels: list[int], classes: tuple[str, ...],
                           name: str | None = None) -> Figure | None:
    """Heatmap of caption x image cosine similarities (T,N), both sorted by class (None and
    skipped without labels)."""
    if skipped_without_labels(image_labels, "similarity matrix sorted by class"):
        return None
    rows = np.argsort(np.asarray(text_labels), kind="stable")
    cols = np.argsort(np.asarray(image_labels), kind="stable")
    fig, ax = plt.subplots(figsize=(6.2, 5.2))
    shown = ax.imshow(np.asarray(similarity)[np.ix_(rows, cols)], cmap="viridis", vmin=-1,
                      vmax=1, aspect="auto", interpolation="nearest")
    fig.colorbar(shown, ax=ax, label="similarité cosinus")
    for labels, draw, set_ticks in ((text_labels, ax.axhline, ax.set_yticks),
                                    (image_labels, ax.axvline, ax.set_xticks)):
        counts = np.bincount(np.asarray(labels), minlength=len(classes))
        for edge in np.cumsum(counts)[:-1] - 0.5:
            draw(edge, color="white", linewidth=0.8)
        set_ticks(np.cumsum(counts) - counts / 2 - 0.5, classes)
    ax.set(xlabel="images (test)", ylabel="légendes (test)",
           title="Similarités légende x image, triées par classe")
    fig.tight_layout()
    return save_figure(fig, name)


def plot_embedding_projection(image_embeds: np.ndarray, text_embeds: np.ndarray,
                              image_labels: list[int], text_labels: list[int],
                              classes: tuple[str, ...], name: str | None = None
                              ) -> Figure | None:
    """PCA (fitted on images and texts together) of both embeddings, coloured by class (None
    and skipped without labels)."""
    if skipped_without_labels(image_labels, "PCA coloured by class"):
        return None

    points = PCA(n_components=2, random_state=0).fit_transform(
        np.concatenate([image_embeds, text_embeds]))
    image_points, text_points = points[:len(image_embeds)], points[len(image_embeds):]
    fig, ax = plt.subplots(figsize=(6.4, 5))
    colours = plt.get_cmap("tab10")
    for c, label in enumerate(classes):
        mask_i, mask_t = np.asarray(image_labels) == c, np.asarray(text_labels) == c
        ax.scatter(*image_points[mask_i].T, color=colours(c), marker="o", s=22, alpha=0.75,
                   label=f"{label} (image)")
        ax.scatter(*text_points[mask_t].T, color=colours(c), marker="x", s=22, alpha=0.75,
                   label=f"{label} (texte)")
    ax.set(xlabel="PC 1", ylabel="PC 2", title="Espace commun : projection ACP")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return save_figure(fig, name)


def plot_caption_outliers(worst: pd.DataFrame, root: Path, name: str | None = None) -> Figure:
    """Images whose caption is the least similar to them (rows: image_path, caption, score)."""

    columns = 5
    rows = int(np.ceil(len(worst) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.0 * columns, 3.6 * rows), squeeze=False)
    for ax, item in zip(axes.flat, worst.itertuples(), strict=False):
        ax.imshow(open_rgb(Path(root) / item.image_path))
        ax.set_title(f"{item.score:.3f}  ({item.label})\n{textwrap.fill(item.caption, 34)}",
                     fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("Légendes les moins similaires à leur image", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, name)


def plot_training_curves(histories: dict[str, list[dict]], name: str | None = None) -> Figure:
    """Loss and accuracy per epoch of ``utils.train.fit`` histories (train solid, val dashed)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for (label, history), colour in zip(histories.items(), plt.cm.tab10.colors, strict=False):
        epochs = [row["epoch"] for row in history]
        for ax, key in zip(axes, ("loss", "acc"), strict=True):
            ax.plot(epochs, [row[f"train_{key}"] for row in history], color=colour,
                    label=f"{label} (train)")
            ax.plot(epochs, [row[f"val_{key}"] for row in history], color=colour, ls="--",
                    label=f"{label} (val)")
    for ax, title in zip(axes, ("cross-entropy loss", "accuracy"), strict=True):
        ax.set(xlabel="epoch", title=title)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, name)


def plot_confusion_matrix(matrix, classes, title: str = "", name: str | None = None) -> Figure:
    """Confusion matrix (rows: true class, columns: predicted class) with the counts."""

    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    display = ConfusionMatrixDisplay(np.asarray(matrix), display_labels=list(classes))
    display.plot(ax=ax, cmap="Blues", colorbar=False)
    ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, name)


def plot_misclassified_images(files, y_true, y_pred, classes, name: str | None = None,
                              max_images: int = 8, columns: int = 4) -> Figure:
    """Grid of misclassified images (image ``files``), each titled "true -> predicted"."""

    items = list(zip(files, y_true, y_pred, strict=True))[:max_images]
    rows = max(1, -(-len(items) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.1 * columns, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (file, true, pred) in zip(axes.flat, items, strict=False):
        with Image.open(file) as image:
            image.thumbnail((256, 256))  # keeps the PNG small
            ax.imshow(image.convert("RGB"))
        ax.set_title(f"{classes[true]} -> {classes[pred]}", fontsize=9, color="firebrick")
    if not items:
        axes[0, 0].text(0.5, 0.5, "no error", ha="center", va="center")
    fig.suptitle("Misclassified test images (true -> predicted)")
    fig.tight_layout()
    return save_figure(fig, name)


def plot_misclassified_captions(captions, y_true, y_pred, classes, name: str | None = None,
                                max_rows: int = 12, width: int = 80) -> Figure:
    """Table of misclassified captions with their true and predicted classes."""
    items = list(zip(captions, y_true, y_pred, strict=True))[:max_rows]
    cells = [[textwrap.shorten(str(c), width), classes[t], classes[p]] for c, t, p in items]
    fig, ax = plt.subplots(figsize=(10, 0.35 * max(len(cells), 1) + 0.9))
    ax.axis("off")
    if cells:
        table = ax.table(cellText=cells, colLabels=["caption", "true", "predicted"],
                         colWidths=[0.78, 0.11, 0.11], loc="center", cellLoc="left")
        table.auto_set_font_size(False)
        table.set_fontsize(8)
        table.scale(1, 1.3)
    else:
        ax.text(0.5, 0.5, "no error", ha="center", va="center")
    ax.set_title("Misclassified test captions (true -> predicted)")
    fig.tight_layout()
    return save_figure(fig, name)


def plot_run_comparison(table: pd.DataFrame, columns: tuple[str, ...] = (
        "t2i_R@5", "i2t_R@5", "t2i_class_precision@5", "zero_shot_accuracy"),
        title: str = "", name: str | None = None) -> Figure:
    """Grouped horizontal bars: one group per run (table rows), one bar per metric column."""
    shown = [c for c in columns if c in table.columns]
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(table) * max(len(shown), 1) / 2 + 1.5))
    table[shown].astype(float).iloc[::-1].plot.barh(ax=ax, width=0.8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("score (test)")
    ax.set_title(title or "Comparaison des entraînements")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_yticklabels([textwrap.fill(str(t.get_text()), 38) for t in ax.get_yticklabels()],
                       fontsize=8)
    fig.tight_layout()
    return save_figure(fig, name)


def plot_caption_word_counts(counts: dict[str, list[int]], length: int | None = None,
                             name: str | None = None) -> Figure:
    """Histograms of words per caption for several caption sets (e.g. original vs enriched)."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    top = max(max(values) for values in counts.values())
    bins = np.arange(0, top + 2) - 0.5
    for label, values in counts.items():
        ax.hist(values, bins=bins, alpha=0.6, label=f"{label} (moyenne {np.mean(values):.1f})")
    if length:
        ax.axvline(length, color="black", linestyle=":", label=f"longueur du modèle ({length})")
    ax.set_xlabel("mots par légende")
    ax.set_ylabel("légendes")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, name)


def plot_roc_curves(curves: dict, title: str = "", name: str | None = None) -> Figure:
    """One-vs-rest ROC curves, one per class: ``curves`` name -> (fpr (M,), tpr (M,), auc)."""
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    for label, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", label="hasard")
    ax.set(xlabel="taux de faux positifs", ylabel="taux de vrais positifs", title=title,
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, name)


def plot_pair_prediction(image, sentence: str, probs: dict, classes=CLASSES,
                         name: str | None = None) -> Figure:
    """An image with the sentence, and the class probabilities (4,) of each model as bars."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8),
                                      gridspec_kw={"width_ratios": [1, 1.5]})
    left.imshow(open_rgb(image) if isinstance(image, (str, Path)) else image)
    left.axis("off")
    left.set_title(textwrap.fill(sentence, 45), fontsize=9)
    width = 0.8 / max(len(probs), 1)
    positions = np.arange(len(classes))
    for k, (label, values) in enumerate(probs.items()):
        guess = classes[int(np.argmax(values))]
        right.bar(positions + k * width, values, width, label=f"{label} -> {guess}")
    right.set_xticks(positions + width * (len(probs) - 1) / 2, list(classes))
    right.set(ylim=(0, 1), ylabel="probabilité")
    right.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, name)


def plot_tag_aucs(aucs: dict[str, dict], title: str = "", name: str | None = None) -> Figure:
    """Per-tag ROC-AUC of several models: ``aucs`` model -> {tag: auc or None}, grouped bars."""
    table = pd.DataFrame(aucs).astype(float)
    fig, ax = plt.subplots(figsize=(max(8.0, 0.12 * len(table) * (len(aucs) + 1)), 3.6))
    table.plot.bar(ax=ax, width=0.8)
    ax.set(ylim=(0.4, 1.0), ylabel="ROC-AUC (test)", title=title)
    ax.axhline(0.5, color="grey", ls=":")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, name)
