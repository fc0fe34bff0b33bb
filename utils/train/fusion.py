"""Notebook 07: the inputs of the fusion models (cached image features, caption tokens, frozen
SmallBERT vectors) and their training through the project's one loop (``utils.train.loop.fit``).

Fusion batches are ``(image features (B,F), text (B,L) ids or (B,D) vectors, target)``, the
target being class ids (B,) or 0/1 tags (B,T); multi-task batches are ``(image features (B,F),
class ids (B,), tags (B,T))``. Every model keeps the epoch of its lowest validation loss.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from utils.core.common import make_configs, seed_everything
from utils.core.device import autocast
from utils.data.course import take_per_class
from utils.data.datasets import ImageClassificationDataset, label_ids
from utils.data.flickr8k import FLICKR_IMAGES, flickr8k_image_files
from utils.data.glove import embedding_matrix, load_glove
from utils.data.tags import TagTable, class_ids
from utils.data.tokenizers import TextVectorizer, fit_tokenizer
from utils.models.cnn import load_image_classifier
from utils.models.features import ImageFeatures, image_features
from utils.models.fusion import FusionConfig, MultiTaskNet
from utils.models.losses import focal_loss, smoothed_cross_entropy
from utils.models.smallbert import SmallBertConfig, load_text_classifier
from utils.train.classifier import train_text_classifier
from utils.train.configs import FusionTrainConfig, SmallBertTrainConfig
from utils.train.features import encode_dataset
from utils.train.loop import EarlyStopping, Step, TrainedRun, best_epoch, fit

MONITOR = ("val_loss", "min")


@dataclass
class SplitInputs:
    """Named tensors of each split, rows aligned: split -> name -> (N,...)."""

    tensors: dict[str, dict[str, torch.Tensor]]
    vectorizer: TextVectorizer | None = None
    embeddings: torch.Tensor | None = None  # (V,E) first word vectors of the LSTM
    notes: dict = field(default_factory=dict)  # where each input came from

    def get(self, split: str, name: str) -> torch.Tensor:
        """The tensor ``name`` of ``split`` (a KeyError names the inputs there are)."""
        return self.tensors[split][name]

    def has(self, name: str) -> bool:
        """True when every split holds the input ``name``."""
        return all(name in part for part in self.tensors.values())


def course_images(frame: pd.DataFrame, per_class: int = 0) -> pd.DataFrame:
    """One row per course image (its first caption), ``per_class`` per class and split."""
    frame = take_per_class(frame.drop_duplicates("image_path"), per_class)
    return frame.reset_index(drop=True)


def glove_embeddings(vectorizer: TextVectorizer, seed: int = 0) -> torch.Tensor:
    """GloVe 6B-50d rows (V,50) of the vectoriser's vocabulary (random for unknown words)."""
    return embedding_matrix(vectorizer.vocabulary(), load_glove(), seed)[0]


def encoder_features(files: list[Path], encoder: str) -> torch.Tensor:
    """Pooled frozen-encoder features (N,F) of ``files``, from the on-disk cache when there."""
    return image_features(files, encoder).pooled.float()


def cnn_features(frame: pd.DataFrame, root: Path, checkpoint: Path) -> torch.Tensor:
    """Features (N,F) of the step-1 CNN trunk (frozen, no augmentation) for ``frame``'s images."""
    model, config = load_image_classifier(checkpoint)
    dataset = ImageClassificationDataset(frame, root, config.image_size, augment=False)
    return encode_dataset(model.trunk, dataset, batch_size=32)


def step2_text_encoder(frame: pd.DataFrame, checkpoint: Path, smoke: bool
                       ) -> tuple[nn.Module, TextVectorizer, str]:
    """SmallBERT's sentence encoder of step 2 and its vectoriser: from ``checkpoint``, else
    trained here with the step-2 defaults -> (encoder, vectoriser, where it came from)."""
    if checkpoint.is_file():
        model, _, vectorizer = load_text_classifier(checkpoint)
        return model.encoder, vectorizer, str(checkpoint)
    config, training = make_configs(SmallBertConfig, SmallBertTrainConfig, smoke)
    vectorizer = fit_tokenizer(frame, config.length, training.max_tokens)
    run = train_text_classifier(config, training, frame, vectorizer)
    return run.model.encoder, vectorizer, "trained here (no step-2 checkpoint)"


@torch.no_grad()
def sentence_vectors(encoder: nn.Module, vectorizer, captions: list[str]) -> torch.Tensor:
    """Frozen sentence vectors (N,D) float32 on the CPU of ``captions``, computed on the
    encoder's device (a GPU when step 2's SmallBERT was just trained there)."""
    encoder.eval()
    device = next(encoder.parameters()).device
    tokens = vectorizer.encode(list(captions))
    return torch.cat([encoder(chunk.to(device)).float() for chunk in tokens.split(256)]).cpu()


def split_rows(frame: pd.DataFrame, values: torch.Tensor) -> dict[str, torch.Tensor]:
    """Rows of ``values`` (N,...) aligned with ``frame``, cut by its ``split`` column."""
    return {s: values[torch.tensor((frame["split"] == s).to_numpy())]
            for s in ("train", "val", "test")}


def course_inputs(frame: pd.DataFrame, root: Path, config: FusionConfig,
                  training: FusionTrainConfig, models: Path, smoke: bool = False) -> SplitInputs:
    """Every input of the course variants, per split: "efficientnet" (N,1280), "cnn" (N,F)
    when the step-1 checkpoint exists, "lstm" ids (N,L), "smallbert" (N,D), "label" (N,)."""
    vectorizer = fit_tokenizer(frame, config.text_length, training.max_tokens)
    columns = {"efficientnet": encoder_features([root / p for p in frame["image_path"]],
                                                config.encoder),
               "lstm": vectorizer.encode(frame["caption"].tolist()),
               "label": label_ids(frame["label"])}
    notes = {"cnn": "no models/01_cnn.pt: skipped"}
    if (models / "01_cnn.pt").is_file():
        columns["cnn"], notes["cnn"] = cnn_features(frame, root, models / "01_cnn.pt"), "step 1"
    encoder, bert_vectorizer, notes["smallbert"] = step2_text_encoder(
        frame, models / "02_smallbert.pt", smoke)
    columns["smallbert"] = sentence_vectors(encoder, bert_vectorizer, frame["caption"].tolist())
    tensors = {s: {} for s in ("train", "val", "test")}
    for name, values in columns.items():
        for split, rows in split_rows(frame, values).items():
            tensors[split][name] = rows
    embeddings = glove_embeddings(vectorizer, training.seed) if training.glove else None
    return SplitInputs(tensors, vectorizer, embeddings, notes)


def tag_inputs(table: TagTable, features: ImageFeatures, config: FusionConfig,
               training: FusionTrainConfig) -> SplitInputs:
    """Inputs of the Flickr8k tasks, per official split: "efficientnet" (N,F) from the cached
    ImageFeatures, "lstm" ids (N,L) of the held-out caption, "tags" (N,T), "class" (N,)
    (-1: no course class)."""
    frame = table.frame
    vectorizer = fit_tokenizer(frame, config.text_length, training.max_tokens)
    columns = {"efficientnet": features.pooled[features.rows(frame["image"].tolist())].float(),
               "lstm": vectorizer.encode(frame["caption"].tolist()),
               "tags": table.targets.float(), "class": class_ids(frame["label"])}
    tensors = {s: {} for s in ("train", "val", "test")}
    for name, values in columns.items():
        for split, rows in split_rows(frame, values).items():
            tensors[split][name] = rows
    embeddings = glove_embeddings(vectorizer, training.seed) if training.glove else None
    return SplitInputs(tensors, vectorizer, embeddings)


def class_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits (B,C) against class ids (B,)."""
    return F.cross_entropy(logits, target)


def tag_loss(gamma: float | None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Multi-label loss of logits (B,T) vs 0/1 tags (B,T): BCE when gamma is None, else focal."""
    if gamma is None:
        return F.binary_cross_entropy_with_logits
    return lambda logits, target: focal_loss(logits, target, gamma)


def fusion_step(loss_fn: Callable) -> Step:
    """A fit step for (image, text, target) batches -> (loss, n, {"acc": right} for classes)."""
    def step(model: nn.Module, batch, device: torch.device):
        image, text, target = (t.to(device) for t in batch)
        with autocast(device):
            logits = model(image, text)
        loss = loss_fn(logits.float(), target)
        extra = {"acc": (logits.argmax(1) == target).sum()} if target.ndim == 1 else {}
        return loss, len(target), extra
    return step


def multitask_step(training: FusionTrainConfig, class_weight: float, tag_weight: float
                   ) -> Step:
    """A fit step for (features, class, tags) batches: L = w_c * CE_smoothed + w_t * focal."""
    def step(model: nn.Module, batch, device: torch.device):
        features, classes, tags = (t.to(device) for t in batch)
        class_logits, tag_logits = model(features)
        loss = tag_weight * focal_loss(tag_logits.float(), tags, training.focal_gamma)
        if class_weight:
            loss = loss + class_weight * smoothed_cross_entropy(
                class_logits.float(), classes, training.label_smoothing)
        return loss, len(classes), {"acc": (class_logits.argmax(1) == classes).sum()}
    return step


@torch.no_grad()
def validate_step(model: nn.Module, step: Step, loader: DataLoader, device: torch.device
                  ) -> dict:
    """Mean loss (and per-item extras) of ``step`` over ``loader`` -> {"val_loss", "val_..."}."""
    model.eval()
    totals, count = {"loss": 0.0}, 0
    for batch in loader:
        loss, n, extra = step(model, batch, device)
        totals["loss"] = totals["loss"] + loss * n  # summed on the device, read once
        for key, value in extra.items():
            totals[key] = totals.get(key, 0) + value
        count += n
    return {f"val_{key}": float(value) / max(count, 1) for key, value in totals.items()}


@contextlib.contextmanager
def cpu_threads(count: int) -> Iterator[None]:
    """Use ``count`` intra-op CPU threads inside the block (0: leave torch's setting)."""
    before = torch.get_num_threads()
    if count > 0:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_model(model: nn.Module, step: Step, loaders: dict, epochs: int, lr: float,
                training: FusionTrainConfig, device: torch.device) -> TrainedRun:
    """AdamW + ReduceLROnPlateau through ``fit`` on ``training.threads`` CPU threads; the
    lowest validation loss is kept."""
    with cpu_threads(training.threads):
        return fit_model(model, step, loaders, epochs, lr, training, device)


def fit_model(model: nn.Module, step: Step, loaders: dict, epochs: int, lr: float,
              training: FusionTrainConfig, device: torch.device) -> TrainedRun:
    """AdamW + ReduceLROnPlateau through ``fit``; the lowest validation loss is kept (the
    run's architecture is its bundle's FusionConfig: ``config`` stays None here)."""
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr,
                                  weight_decay=training.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=0.5, patience=max(1, training.patience // 2))
    start = time.perf_counter()
    history = fit(model, loaders["train"], step,
                  lambda m: validate_step(m, step, loaders["val"], device), optimizer, scheduler,
                  EarlyStopping(*MONITOR, patience=training.patience), epochs, device)
    return TrainedRun(model.cpu(), None, history, time.perf_counter() - start,
                      best_epoch(history, *MONITOR), loaders, training=training)


def build_multitask(features: int, tags: int, config: FusionConfig, seed: int) -> MultiTaskNet:
    """A seeded multi-task network: image features (B,F) -> (B,4), (B,T)."""
    seed_everything(seed)
    return MultiTaskNet(features, tags, config)


@torch.no_grad()
def predict_fusion(model: nn.Module, loader: DataLoader, device: torch.device) -> torch.Tensor:
    """Logits (N,K) float32 on CPU of a fusion model over (image, text, target) batches."""
    model.to(device).eval()
    return torch.cat([model(image.to(device), text.to(device)).float().cpu()
                      for image, text, _ in loader])


@torch.no_grad()
def predict_multitask(model: nn.Module, loader: DataLoader, device: torch.device
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(class logits (N,4), tag logits (N,T)) of a multi-task network, on CPU."""
    model.to(device).eval()
    outputs = [model(features.to(device)) for features, _, _ in loader]
    return (torch.cat([c for c, _ in outputs]).float().cpu(),
            torch.cat([t for _, t in outputs]).float().cpu())


def flickr8k_features(flickr8k: Path, images: list[str], encoder: str, whole: bool
                      ) -> ImageFeatures:
    """Cached features of the Flickr8k images: all 8,091 (``whole``: the one shared cache) or
    only ``images`` (a small set, e.g. smoke runs, cached under its own key)."""
    folder = Path(flickr8k) / FLICKR_IMAGES
    files = flickr8k_image_files(flickr8k) if whole else [folder / name for name in images]
    return image_features(files, encoder)
