"""Step 3: a CLIP model built from the step-1 image trunk and the step-2 SmallBERT.

Each tower is an encoder (features of size ``out_features``) followed by a Linear projection to
the shared space (no activation); embeddings are L2-normalised, so ``image @ text.T`` is a
cosine similarity. The contrastive loss lives INSIDE the model: ``forward`` returns embeddings,
logits and loss. A checkpoint stores the weights, the tokenizer, the config (with the towers'
own sub-configs, so the model is rebuilt from the file alone) and the gallery index.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from utils import paths
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.common import autocast, get_device, to_jsonable

IMAGE_SOURCES = ("checkpoint", "scratch", "efficientnet_lite0")
TEXT_SOURCES = ("checkpoint", "scratch")
TEXT_TOWERS = ("smallbert", "hf")
CNN_CHECKPOINT = "01_cnn.pt"
SMALLBERT_CHECKPOINT = "02_smallbert.pt"
CLIP_CHECKPOINT = "03_clip.pt"


@dataclass
class ClipConfig:
    """Everything that defines a CLIP run (stored in the checkpoint and the metrics file)."""

    seed: int = 0  # seeds weights, caption draws, augmentation and shuffling
    embed_dim: int = 128  # size of the shared image-text space (both projections end here)
    image_source: str = "checkpoint"  # "checkpoint" (01_cnn.pt) | "scratch" | "efficientnet_lite0"
    text_source: str = "checkpoint"  # "checkpoint" (02_smallbert.pt encoder) | "scratch"
    text_tower: str = "smallbert"  # "smallbert" | "hf" (pretrained transformer, see hf_spec)
    hf_spec: dict = field(default_factory=dict)  # text_tower="hf": utils.text_pretrained spec
    freeze_image: bool = False  # freeze the image encoder (its projection still trains)
    freeze_text: bool = False  # freeze the text encoder (its projection still trains)
    captions_per_image: int = 1  # 1: the course subset; 5: Flickr8k's five captions per image
    image_size: int | None = None  # None: the image tower's size (128 step-1 CNN, 224 pretrained)
    augment: bool = True  # crop/flip/colour jitter on training images (trainable image encoder)
    batch_size: int = 32  # image-text pairs per batch: each pair has batch_size - 1 negatives
    epochs: int = 6  # maximum epochs: validation R@5 levels off after 2-4 (2-core CPU: ~15 s)
    lr: float = 1e-3  # AdamW learning rate of the projections and the logit scale
    encoder_lr_scale: float = 0.3  # encoders train at lr * this (keeps what steps 1-2 learnt)
    weight_decay: float = 0.05  # AdamW weight decay (matrices only: no biases, norms, scale)
    patience: int = 3  # epochs without a better validation R@5 before stopping
    init_logit_scale: float = 1 / 0.07  # initial inverse temperature, as in CLIP
    max_logit_scale: float = 100.0  # the learnt scale is clamped here, as in CLIP
    cache_frozen_features: bool = True  # frozen image encoder: compute its features once
    max_images_per_split: int = 0  # 0: every image; smoke mode keeps a few per split
    compare_variants: bool = True  # also train the "is reuse worth it?" variants
    image_config: dict = field(default_factory=dict)  # image tower CnnConfig (filled by build_clip)
    text_config: dict = field(default_factory=dict)  # text tower SmallBertConfig (same)

    SMOKE: ClassVar[dict] = {"epochs": 1, "batch_size": 8, "max_images_per_split": 16}

    def __post_init__(self) -> None:
        """Reject unknown tower names, naming the field and the valid values."""
        for name, valid in (("image_source", IMAGE_SOURCES), ("text_source", TEXT_SOURCES),
                            ("text_tower", TEXT_TOWERS)):
            if getattr(self, name) not in valid:
                raise ValueError(f"ClipConfig.{name}={getattr(self, name)!r}: choose one of "
                                 f"{valid}")


# ---------------------------------------------------------------------------------------------
# Loss and model
# ---------------------------------------------------------------------------------------------
def scaled_similarity(image_embeds: torch.Tensor, text_embeds: torch.Tensor,
                      logit_scale: torch.Tensor | float) -> torch.Tensor:
    """logit_scale * cosine similarities: (B,E), (B,E) -> logits_per_image (B,B)."""
    return logit_scale * image_embeds @ text_embeds.T


class ClipLoss(nn.Module):
    """Symmetric cross-entropy: pair i is the right answer of row i AND of column i."""

    def forward(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor,
                logit_scale: torch.Tensor | float) -> torch.Tensor:
        """Normalised embeddings (B,E), (B,E) and the scale -> scalar loss."""
        return self.from_logits(scaled_similarity(image_embeds, text_embeds, logit_scale))

    @staticmethod
    def from_logits(logits_per_image: torch.Tensor) -> torch.Tensor:
        """logits (B,B) (rows: images, columns: texts) -> mean of both cross-entropies."""
        targets = torch.arange(len(logits_per_image), device=logits_per_image.device)
        image_to_text = F.cross_entropy(logits_per_image, targets)
        text_to_image = F.cross_entropy(logits_per_image.T, targets)
        return (image_to_text + text_to_image) / 2


class ClipModel(nn.Module):
    """Two towers (encoder + Linear projection) into one L2-normalised space, plus the loss."""

    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, config: ClipConfig):
        super().__init__()
        self.config = config
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_projection = nn.Linear(image_encoder.out_features, config.embed_dim)
        self.text_projection = nn.Linear(text_encoder.out_features, config.embed_dim)
        # Log-parameterised so the scale stays positive and its updates are relative.
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(config.init_logit_scale)))
        self.loss_fn = ClipLoss()
        self.image_encoder.requires_grad_(not config.freeze_image)
        if config.freeze_text:
            self.text_encoder.requires_grad_(False)

    @property
    def logit_scale(self) -> torch.Tensor:
        """The effective scale exp(log_scale), clamped at max_logit_scale (a scalar tensor)."""
        return self.log_logit_scale.clamp(max=math.log(self.config.max_logit_scale)).exp()

    def frozen_encoders(self) -> list[nn.Module]:
        """Encoders without any trainable weight (kept in eval mode while training)."""
        encoders = (self.image_encoder, self.text_encoder)
        return [e for e in encoders if not any(p.requires_grad for p in e.parameters())]

    def train(self, mode: bool = True) -> ClipModel:
        """Like nn.Module.train, but frozen encoders stay in eval mode (BatchNorm, dropout)."""
        super().train(mode)
        for encoder in self.frozen_encoders():
            encoder.eval()
        return self

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B,3,S,S) -> unit embeddings (B,E); precomputed encoder features (B,F) too."""
        features = images if images.dim() == 2 else self.image_encoder(images)
        return F.normalize(self.image_projection(features).float(), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (B,L) -> unit embeddings (B,E)."""
        return F.normalize(self.text_projection(self.text_encoder(tokens)).float(), dim=-1)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """A batch of B matching pairs -> embeddings (B,E), logits (B,B) and the loss."""
        image_embeds, text_embeds = self.encode_image(images), self.encode_text(tokens)
        with torch.autocast(image_embeds.device.type, enabled=False):  # loss in float32
            logits = scaled_similarity(image_embeds, text_embeds, self.logit_scale)
        return {"image_embeds": image_embeds, "text_embeds": text_embeds,
                "logits_per_image": logits, "loss": self.loss_fn.from_logits(logits)}


# ---------------------------------------------------------------------------------------------
# Building the towers (from the step-1/2 checkpoints, from scratch, or pretrained)
# ---------------------------------------------------------------------------------------------
def load_source_checkpoint(name: str) -> dict:
    """A step-1/2 checkpoint; its absence is an error that names the notebook to run."""
    path = paths.model_path(name)
    if not path.exists():
        notebook = "01_cnn_image_classifier" if name == CNN_CHECKPOINT else \
            "02_smallbert_text_classifier"
        raise FileNotFoundError(
            f"{path} is missing: CLIP reuses it (image_source/text_source='checkpoint'). Run "
            f"notebooks/{notebook}.ipynb first (MODELS_DIR={paths.models_dir()}), or choose "
            "'scratch' for that tower in OVERRIDES.")
    return load_checkpoint(path)


def resolve_image_config(config: ClipConfig) -> dict:
    """The image tower's CnnConfig as a dict: stored one, step 1's, or a fresh one."""
    from utils.cnn import CnnConfig

    if config.image_config:
        return dict(config.image_config)
    if config.image_source == "checkpoint":
        return dict(load_source_checkpoint(CNN_CHECKPOINT)["config"])
    return asdict(CnnConfig(trunk=config.image_source))


def build_image_encoder(config: ClipConfig, load_weights: bool) -> nn.Module:
    """The image trunk (B,3,S,S) -> (B,F), with step 1's weights when asked and available."""
    from utils.cnn import build_trunk, config_from_dict

    pretrained = load_weights and config.image_source == "efficientnet_lite0"
    trunk = build_trunk(config_from_dict(config.image_config), pretrained=pretrained)
    if load_weights and config.image_source == "checkpoint":
        trunk.load_state_dict(sub_state_dict(load_source_checkpoint(CNN_CHECKPOINT), "trunk."))
    return trunk


def sub_state_dict(checkpoint: dict, prefix: str) -> dict:
    """The weights of one sub-module of a stored model, without their prefix."""
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items()
             if k.startswith(prefix)}
    if not state:
        raise KeyError(f"checkpoint has no weights under {prefix!r}")
    return state


def fit_tokenizer(frame: pd.DataFrame, length: int = 32):
    """A TextVectorizer fitted on the training captions of ``frame``."""
    from utils.text import TextVectorizer

    return TextVectorizer.fit(frame.loc[frame["split"] == "train", "caption"].tolist(),
                              length=length)


def resolve_text_tower(config: ClipConfig, tokenizer, frame: pd.DataFrame | None):
    """(text sub-config dict, tokenizer) of a SmallBERT tower: stored, step 2's, or fresh."""
    from utils.smallbert import SmallBertConfig
    from utils.text import TextVectorizer

    if config.text_source == "checkpoint" and (tokenizer is None or not config.text_config):
        checkpoint = load_source_checkpoint(SMALLBERT_CHECKPOINT)
        tokenizer = tokenizer or TextVectorizer.from_dict(checkpoint["vectorizer"])
        text_config = dict(config.text_config or checkpoint["config"])
    else:
        if tokenizer is None:
            if frame is None:
                raise ValueError("text_source='scratch' needs the captions (frame) to fit its "
                                 "tokenizer, or a tokenizer")
            tokenizer = fit_tokenizer(frame)
        text_config = dict(config.text_config or asdict(SmallBertConfig()))
    # CLIP's text tower pools by masked mean whatever step 2 chose (padding carries no meaning).
    text_config.update(pooling="masked_mean", vocab_size=tokenizer.vocab_size,
                       length=tokenizer.length)
    return text_config, tokenizer


def build_smallbert_encoder(config: ClipConfig, load_weights: bool) -> nn.Module:
    """SmallBERT + masked-mean SentenceEncoder: tokens (B,L) -> (B,D)."""
    from utils.smallbert import build_sentence_encoder, config_from_dict

    encoder = build_sentence_encoder(config_from_dict(config.text_config))
    if load_weights and config.text_source == "checkpoint":
        checkpoint = load_source_checkpoint(SMALLBERT_CHECKPOINT)
        encoder.load_state_dict(sub_state_dict(checkpoint, "encoder."))
    return encoder


def build_hf_tower(config: ClipConfig, tokenizer):
    """The optional-work pretrained text tower and its tokenizer adapter."""
    from utils.text_pretrained import HFTokenizerAdapter, build_hf_text_encoder

    spec = dict(config.hf_spec)
    if config.freeze_text:
        spec["freeze"] = "all"
    return build_hf_text_encoder(spec), tokenizer or HFTokenizerAdapter(spec)


def build_clip(config: ClipConfig, tokenizer=None, frame: pd.DataFrame | None = None,
               load_weights: bool = True) -> tuple[ClipModel, object]:
    """A ClipModel and its tokenizer; ``model.config`` holds the resolved tower sub-configs.

    With sub-configs already filled (a saved config) the architecture comes from the config
    alone; ``load_weights=False`` skips the step-1/2 and pretrained weights (for reloading).
    ``frame`` is only needed by a scratch SmallBERT without tokenizer (fits the vocabulary).
    """
    torch.manual_seed(config.seed)  # same initial projections for the same seed
    image_config = to_jsonable(resolve_image_config(config))  # as a checkpoint gives it back
    config = dataclasses.replace(config, image_config=image_config,
                                 image_size=config.image_size or image_config["image_size"])
    if config.text_tower == "hf":
        text_encoder, tokenizer = build_hf_tower(config, tokenizer)
        config = dataclasses.replace(config, text_config={"hf_spec": dict(text_encoder.spec)})
    else:
        text_config, tokenizer = resolve_text_tower(config, tokenizer, frame)
        config = dataclasses.replace(config, text_config=to_jsonable(text_config))
        text_encoder = build_smallbert_encoder(config, load_weights)
    return ClipModel(build_image_encoder(config, load_weights), text_encoder, config), tokenizer


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable and total parameter counts."""
    return {"trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "total": sum(p.numel() for p in model.parameters())}


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
def clip_data_root(config: ClipConfig) -> Path:
    """The dataset folder: the course subset (1 caption) or a 5-caption build of the same kind."""
    from utils.data import build_subset, ensure_dataset

    if config.captions_per_image == 1:
        return ensure_dataset()
    root = paths.data_dir() / f"{paths.SUBSET_NAME}_{config.captions_per_image}captions"
    if not (root / "captions.csv").exists():
        build_subset(paths.flickr8k_dir(), root, captions_per_image=config.captions_per_image)
    return root


def keep_first_images(frame: pd.DataFrame, per_split: int) -> pd.DataFrame:
    """Rows of the first ``per_split`` images of each split (all of them when 0)."""
    if per_split <= 0:
        return frame
    firsts = frame.drop_duplicates("image_path").groupby("split").head(per_split)["image_path"]
    return frame[frame["image_path"].isin(set(firsts))].reset_index(drop=True)


def load_clip_frame(config: ClipConfig) -> tuple[pd.DataFrame, Path]:
    """(rows image_path, label, caption, split; dataset root) for this config."""
    from utils.data import load_dataset

    root = clip_data_root(config)
    return keep_first_images(load_dataset(root), config.max_images_per_split), root


class CachedFeatures(Dataset):
    """An ImageTextDataset whose images are replaced by precomputed encoder features (N,F)."""

    def __init__(self, dataset: Dataset, features: torch.Tensor):
        self.dataset, self.features = dataset, features

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        """-> (features (F,), tokens (L,), image index)."""
        _, tokens, image_index = self.dataset[index]
        return self.features[index], tokens, image_index

    def set_epoch(self, epoch: int) -> None:
        """Draw the captions of another epoch (forwarded to the wrapped dataset)."""
        self.dataset.set_epoch(epoch)


@torch.no_grad()
def encode_features(encoder: nn.Module, dataset: Dataset, batch_size: int) -> torch.Tensor:
    """Run a frozen encoder once over every image of ``dataset`` -> features (N,F) on CPU."""
    from utils.datasets import make_loader

    device = next(encoder.parameters()).device
    encoder.eval()
    chunks = []
    loader = make_loader(dataset, batch_size, shuffle=False, seed=0)
    for batch in tqdm(loader, desc="frozen image features", leave=False):
        with autocast(device):
            chunks.append(encoder(batch[0].to(device)).float().cpu())
    return torch.cat(chunks)


def make_clip_dataset(model: ClipModel, tokenizer, frame: pd.DataFrame, root: Path,
                      train: bool) -> Dataset:
    """One item per image: (image or cached features, tokens, index); captions drawn per epoch."""
    from utils.datasets import ImageTextDataset

    config = model.config
    cache = config.freeze_image and config.cache_frozen_features
    augment = train and config.augment and not cache
    dataset = ImageTextDataset(frame, root, tokenizer, config.image_size, augment,
                               seed=config.seed)
    if cache:
        model.to(get_device())
        return CachedFeatures(dataset, encode_features(model.image_encoder, dataset,
                                                       config.batch_size))
    return dataset


def make_clip_loaders(model: ClipModel, tokenizer, frame: pd.DataFrame, root: Path
                      ) -> tuple[DataLoader, DataLoader]:
    """Seeded (train, val) loaders over the train and val images of ``frame``."""
    from utils.datasets import make_loader

    config = model.config
    loaders = []
    for split in ("train", "val"):
        rows = frame[frame["split"] == split].reset_index(drop=True)
        dataset = make_clip_dataset(model, tokenizer, rows, root, train=split == "train")
        train = split == "train"
        # Training drops a ragged last batch: a pair alone in its batch has no negative.
        loaders.append(make_loader(dataset, config.batch_size, shuffle=train, seed=config.seed,
                                   drop_last=train and len(dataset) > config.batch_size))
    return loaders[0], loaders[1]


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
def parameter_groups(model: ClipModel) -> list[dict]:
    """AdamW groups: encoders at lr * encoder_lr_scale (HF: its spec's encoder_lr), the rest
    at lr; weight decay on matrices only (not on biases, norms or the logit scale)."""
    config = model.config
    encoder_lr = config.lr * config.encoder_lr_scale
    hf_lr = config.text_config.get("hf_spec", {}).get("encoder_lr", encoder_lr)
    lrs = [(model.image_encoder, encoder_lr), (model.text_encoder, hf_lr), (model, config.lr)]
    groups, seen = [], set()
    for module, lr in lrs:
        params = [p for p in module.parameters() if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in params)
        for decay in (True, False):
            chosen = [p for p in params if (p.dim() >= 2) == decay]
            if chosen:
                groups.append({"params": chosen, "lr": lr,
                               "weight_decay": config.weight_decay if decay else 0.0})
    return groups


def check_finite(loss: torch.Tensor, epoch: int, step: int, lr: float) -> None:
    """Stop training on a NaN/inf loss with what to change."""
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"CLIP loss is {loss.item()} at epoch {epoch}, batch {step}. Lower the learning rate "
            f"(lr={lr:g}: try OVERRIDES={{'lr': {lr / 10:g}}}), check the data (empty captions, "
            "unreadable images: python -m utils.data check), keep max_logit_scale <= 100 and "
            "use bf16 or float32, never fp16.")


def train_clip_epoch(model: ClipModel, loader: DataLoader, optimizer, device: torch.device,
                     epoch: int, desc: str) -> float:
    """One training pass -> mean loss."""
    model.train()
    total, count = 0.0, 0
    bar = tqdm(loader, desc=desc, leave=False)
    for step, (images, tokens, _) in enumerate(bar):
        with autocast(device):
            loss = model(images.to(device), tokens.to(device))["loss"]
        check_finite(loss, epoch, step, optimizer.param_groups[-1]["lr"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total, count = total + loss.item() * len(images), count + len(images)
        bar.set_postfix(loss=f"{total / count:.3f}")
    return total / max(count, 1)


@torch.no_grad()
def validate_clip(model: ClipModel, loader: DataLoader, device: torch.device
                  ) -> dict[str, float]:
    """Validation loss and R@5 of each direction, one caption per image (as drawn at epoch 0)."""
    from utils.retrieval import first_relevant_rank, recall_at_k

    model.eval()
    images, texts, losses = [], [], []
    for batch_images, tokens, _ in loader:
        with autocast(device):
            out = model(batch_images.to(device), tokens.to(device))
        images.append(out["image_embeds"].float().cpu())
        texts.append(out["text_embeds"].float().cpu())
        losses.append(out["loss"].item() * len(tokens))
    image_embeds, text_embeds = torch.cat(images), torch.cat(texts)
    relevant = torch.eye(len(image_embeds), dtype=torch.bool)
    similarity = text_embeds @ image_embeds.T
    t2i = recall_at_k(first_relevant_rank(similarity, relevant), 5)
    i2t = recall_at_k(first_relevant_rank(similarity.T, relevant), 5)
    return {"val_loss": sum(losses) / len(image_embeds), "val_R@5": (t2i + i2t) / 2,
            "val_R@5_t2i": t2i, "val_R@5_i2t": i2t}


def train_clip(model: ClipModel, train_loader: DataLoader, val_loader: DataLoader,
               config: ClipConfig | None = None) -> list[dict]:
    """AdamW + cosine schedule; the epoch with the best validation R@5 (mean of both
    directions) is kept; stops after ``patience`` epochs without progress -> history rows."""
    config = config or model.config
    device = get_device()
    model.to(device)
    optimizer = torch.optim.AdamW(parameter_groups(model))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    history, best = [], {"score": -1.0, "state": None, "epoch": 0}
    for epoch in range(1, config.epochs + 1):
        if hasattr(train_loader.dataset, "set_epoch"):
            train_loader.dataset.set_epoch(epoch)  # a new caption per image each epoch
        desc = f"epoch {epoch}/{config.epochs}"
        row = {"epoch": epoch, "lr": optimizer.param_groups[-1]["lr"],
               "train_loss": train_clip_epoch(model, train_loader, optimizer, device, epoch,
                                              desc)}
        scheduler.step()
        row.update(validate_clip(model, val_loader, device), logit_scale=model.logit_scale.item())
        history.append(row)
        tqdm.write(f"{desc}: loss {row['train_loss']:.3f} | val_loss {row['val_loss']:.3f} "
                   f"val R@5 {row['val_R@5']:.3f} | scale {row['logit_scale']:.1f}")
        if row["val_R@5"] > best["score"]:
            best = {"score": row["val_R@5"], "state": copy.deepcopy(model.state_dict()),
                    "epoch": epoch}
        elif epoch - best["epoch"] >= config.patience:
            tqdm.write(f"early stop at epoch {epoch}: best val R@5 at epoch {best['epoch']}")
            break
    model.load_state_dict(best["state"])
    return history


def best_epoch(history: list[dict]) -> int:
    """The epoch whose weights train_clip kept (first best validation R@5)."""
    return max(history, key=lambda row: (row["val_R@5"], -row["epoch"]))["epoch"]


# ---------------------------------------------------------------------------------------------
# Save and reload
# ---------------------------------------------------------------------------------------------
def save_clip(path: Path, model: ClipModel, tokenizer, epoch: int, metrics: dict,
              index: dict) -> Path:
    """One file: weights of both towers, tokenizer, config (with sub-configs), epoch, metrics,
    gallery index."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_checkpoint(path, state, asdict(model.config), tokenizer=tokenizer.to_dict(),
                           epoch=epoch, metrics=metrics, index=index)


def tokenizer_from_dict(data: dict):
    """TextVectorizer or HF adapter, whichever wrote ``data``."""
    if data.get("kind") == "hf":
        from utils.text_pretrained import HFTokenizerAdapter

        return HFTokenizerAdapter.from_dict(data)
    from utils.text import TextVectorizer

    return TextVectorizer.from_dict(data)


def load_clip(path: Path | None = None) -> tuple[ClipModel, object, dict]:
    """Rebuild (model in eval mode, tokenizer, checkpoint dict) from the file alone."""
    checkpoint = load_checkpoint(path or paths.model_path(CLIP_CHECKPOINT))
    config = ClipConfig(**checkpoint["config"])
    tokenizer = tokenizer_from_dict(checkpoint["tokenizer"])
    model, _ = build_clip(config, tokenizer=tokenizer, load_weights=False)
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(get_device()).eval(), tokenizer, checkpoint


# ---------------------------------------------------------------------------------------------
# Zero-shot classification and the "is reuse worth it?" comparison
# ---------------------------------------------------------------------------------------------
PROMPT_TEMPLATES = ("a photo of {}", "a picture of {}", "{}", "an image showing {}")
CLASS_PHRASES = {"ball": "a ball", "bike": "a bike", "dog": "a dog", "water": "water"}


def class_prompt_embeddings(model: ClipModel, tokenizer,
                            templates: tuple[str, ...] = PROMPT_TEMPLATES) -> torch.Tensor:
    """One unit vector per class (C,E): the mean of its prompts' embeddings, renormalised."""
    from utils.data import CLASSES
    from utils.retrieval import embed_texts

    prompts = [t.format(CLASS_PHRASES.get(c, c)) for c in CLASSES for t in templates]
    embeds = embed_texts(model, tokenizer, prompts).view(len(CLASSES), len(templates), -1)
    return F.normalize(embeds.mean(dim=1), dim=-1)


def zero_shot_predict(model: ClipModel, tokenizer, image_embeds: torch.Tensor) -> torch.Tensor:
    """Class of each image (N,) = the class whose prompt embedding is the most similar."""
    return (image_embeds @ class_prompt_embeddings(model, tokenizer).T).argmax(dim=1)


def zero_shot_accuracy(model: ClipModel, tokenizer, index: dict) -> float:
    """Zero-shot accuracy on the images of a (split of a) gallery index."""
    from sklearn.metrics import accuracy_score

    predictions = zero_shot_predict(model, tokenizer, index["image_embeds"])
    return float(accuracy_score(index["image_labels"], predictions.numpy()))


def evaluate_clip(model: ClipModel, tokenizer, index: dict, split: str = "test") -> dict:
    """Retrieval metrics of both directions, zero-shot accuracy, and their chance levels."""
    from utils.data import CLASSES
    from utils.retrieval import evaluate_index, select_split

    part = select_split(index, split)
    result = evaluate_index(part)
    result["zero_shot_accuracy"] = zero_shot_accuracy(model, tokenizer, part)
    result["chance"]["zero_shot_accuracy"] = 1 / len(CLASSES)  # balanced classes
    return {key: result[key] for key in ("text_to_image", "image_to_text",
                                         "zero_shot_accuracy", "chance")}


VARIANTS = {
    "reuse (steps 1-2)": {},
    "scratch": {"image_source": "scratch", "text_source": "scratch"},
    "frozen towers": {"freeze_image": True, "freeze_text": True},
    "EfficientNet-Lite0 (frozen) + SmallBERT": {"image_source": "efficientnet_lite0",
                                                "freeze_image": True},
}


def summarize_run(model: ClipModel, tokenizer, index: dict, history: list[dict],
                  seconds: float) -> dict:
    """One comparison row: test recalls of both directions, zero-shot, size, time."""
    from utils.retrieval import RECALL_KS

    metrics = evaluate_clip(model, tokenizer, index, "test")
    row = {f"{short}_R@{k}": metrics[name][f"R@{k}"] for name, short in
           (("text_to_image", "t2i"), ("image_to_text", "i2t")) for k in RECALL_KS}
    row.update(zero_shot_accuracy=metrics["zero_shot_accuracy"],
               best_epoch=best_epoch(history), epochs_run=len(history),
               trainable_parameters=count_parameters(model)["trainable"],
               train_time_s=round(seconds, 1))
    return row


def run_variant(base: ClipConfig, overrides: dict, frame: pd.DataFrame, root: Path) -> dict:
    """Train one variant on the same split and epochs, evaluate it on the test images."""
    from utils.common import seed_everything
    from utils.retrieval import build_index

    config = dataclasses.replace(base, image_config={}, text_config={}, image_size=None,
                                 **overrides)
    seed_everything(config.seed)
    start = time.perf_counter()
    model, tokenizer = build_clip(config, frame=frame)
    history = train_clip(model, *make_clip_loaders(model, tokenizer, frame, root))
    seconds = time.perf_counter() - start
    test_rows = frame[frame["split"] == "test"]
    index = build_index(model, tokenizer, test_rows, root, model.config.image_size)
    return summarize_run(model, tokenizer, index, history, seconds)


def compare_variants(base: ClipConfig, frame: pd.DataFrame, root: Path,
                     done: dict[str, dict] | None = None) -> pd.DataFrame:
    """Rows of VARIANTS (already trained ones passed in ``done``) -> a table, one row each."""
    rows = dict(done or {})
    for name, overrides in VARIANTS.items():
        if name not in rows:
            tqdm.write(f"--- variant: {name} {overrides}")
            rows[name] = run_variant(base, overrides, frame, root)
    return pd.DataFrame.from_dict(rows, orient="index")
