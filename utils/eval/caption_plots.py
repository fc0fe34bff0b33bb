"""Figures of notebook 06 (the captioner): training curves, captioned test images, and the
attention over the image for each generated word. Saved like every figure of the project
(``utils.eval.plots.save_figure``: results/images/<name>, PNG, 150 dpi)."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from utils.data.images import open_rgb
from utils.eval.plots import save_figure


def plot_caption_history(history: list[dict], name: str | None = None) -> Figure:
    """Cross-entropy (train, validation) and greedy validation BLEU-4 / CIDEr per epoch."""
    frame = pd.DataFrame(history)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    frame.plot(x="epoch", y=["train_ce", "val_ce"], ax=axes[0], marker="o",
               title="Entropie croisée par mot")
    frame.plot(x="epoch", y=["val_BLEU-4", "val_CIDEr"], ax=axes[1], marker="o",
               title="Validation (décodage glouton)")
    best = frame.loc[frame["val_BLEU-4"].idxmax(), "epoch"]
    axes[1].axvline(best, color="grey", linestyle=":", label=f"époque gardée ({best})")
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, name)


def wrap(text: str, width: int = 42) -> str:
    """Text cut into lines of at most ``width`` characters."""
    return "\n".join(textwrap.wrap(text, width))


def plot_captioned_images(files: Sequence[Path], generated: Sequence[str],
                          references: Sequence[Sequence[str]], name: str | None = None
                          ) -> Figure:
    """Each image with its generated caption (bold title) and its human references in a
    panel of their own below it (two images per row: readable in the PDF export)."""
    columns = 2
    rows = math.ceil(len(files) / columns)
    fig = plt.figure(figsize=(10, 7.4 * rows))
    grid = fig.add_gridspec(2 * rows, columns, height_ratios=[3.2, 2.0] * rows, hspace=0.22,
                            wspace=0.08)
    for k, (file, text, refs) in enumerate(zip(files, generated, references, strict=True)):
        row, column = divmod(k, columns)
        image_ax = fig.add_subplot(grid[2 * row, column])
        image_ax.imshow(open_rgb(file))
        image_ax.set_title(wrap(f"« {text} »", 40), fontsize=12, fontweight="bold")
        text_ax = fig.add_subplot(grid[2 * row + 1, column])
        lines = "\n".join(wrap(f"{i}. {r}", 55) for i, r in enumerate(refs))
        text_ax.text(0.0, 1.0, lines, transform=text_ax.transAxes, va="top", fontsize=10)
        for ax in (image_ax, text_ax):
            ax.axis("off")
    return save_figure(fig, name)


def attention_overlay(weights: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Weights (R,) over a square grid of regions -> (H,W) map upsampled bilinearly."""
    side = math.isqrt(weights.numel())
    grid = weights.float().reshape(1, 1, side, side)
    return F.interpolate(grid, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def plot_attention(file: Path, words: Sequence[str], weights: torch.Tensor,
                   name: str | None = None, columns: int = 6) -> Figure:
    """The image, then one small panel per generated word (and <end>): the image lit by that
    step's attention weights (T,R) upsampled over it (dark = not looked at); word as title."""
    image = np.asarray(open_rgb(file))
    labels = [*words, "<end>"][:len(weights)]
    rows = math.ceil((len(labels) + 1) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.0 * columns, 2.15 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].imshow(image)
    axes.flat[0].set_title("image", fontsize=9)
    for ax, label, alpha in zip(axes.flat[1:], labels, weights, strict=False):
        overlay = attention_overlay(alpha, image.shape[:2])
        light = 0.15 + 0.85 * overlay / max(overlay.max(), 1e-8)  # unattended regions go dark
        ax.imshow((image / 255.0 * light[..., None]).clip(0, 1))
        ax.set_title(label, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, name)
