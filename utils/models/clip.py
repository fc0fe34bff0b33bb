"""Step 3: a CLIP model built from the step-1 image trunk and the step-2 SmallBERT.

Each tower is an encoder (features of size ``out_features``) followed by a Linear projection to
the shared space (no activation); embeddings are L2-normalised, so ``image @ text.T`` is a
cosine similarity. The contrastive loss lives INSIDE the model: ``forward`` returns embeddings,
logits and loss. A checkpoint stores the weights, the tokenizer, the config (with the towers'
own typed sub-configs, so the model is rebuilt from the file alone) and the gallery index.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import pandas as pd
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn.functional as F
from torch import nn

from utils.core import paths
from utils.core.checkpoint import load_checkpoint, load_weights, save_checkpoint
from utils.core.common import config_from_dict
from utils.core.device import get_device
from utils.core.pretrained import PretrainedTextConfig, pretrained_text_config
from utils.data.tokenizers import (
    HFTokenizerAdapter,
    TextVectorizer,
    fit_tokenizer,
    tokenizer_from_dict,
)
from utils.models.cnn import EFFICIENTNET_LITE, CnnConfig, build_trunk
from utils.models.smallbert import SmallBertConfig, build_sentence_encoder
from utils.models.text_pretrained import build_hf_text_encoder

IMAGE_SOURCES = ("checkpoint", "scratch", "efficientnet_lite0", "efficientnet_lite2")
TEXT_SOURCES = ("checkpoint", "scratch")
TEXT_TOWERS = ("smallbert", "hf")
CNN_CHECKPOINT = "01_cnn.pt"
SMALLBERT_CHECKPOINT = "02_smallbert.pt"
CLIP_CHECKPOINT = "03_clip.pt"
SOURCE_KINDS = {CNN_CHECKPOINT: "image_classifier", SMALLBERT_CHECKPOINT: "text_classifier"}
# Keys of checkpoints written before the typed sub-configs (project 0.1): old -> new field.
LEGACY_KEYS = {"image_config": "image", "text_config": "text", "hf_spec": "pretrained_text"}


@dataclass
class ClipConfig:
    """Everything that defines a CLIP run (stored in the checkpoint and the metrics file)."""

    seed: int = 0  # seeds weights, caption draws, augmentation and shuffling
    embed_dim: int = 128  # size of the shared image-text space (both projections end here)
    projection_hidden: int = 0  # 0: Linear projections (the course's); > 0: 2-layer GELU MLPs
    image_source: str = "checkpoint"  # "checkpoint" (01_cnn) | "scratch" | "efficientnet_lite0/2"
    text_source: str = "checkpoint"  # "checkpoint" (02_smallbert.pt encoder) | "scratch"
    text_tower: str = "smallbert"  # "smallbert" | "hf" (pretrained transformer: pretrained_text)
    freeze_image: bool = False  # freeze the image encoder (its projection still trains)
    freeze_text: bool = False  # freeze the text encoder (its projection still trains)
    captions_per_image: int = 1  # 1: the course subset; 5: Flickr8k's five captions per image
    dataset: str = "course"  # "course" | "flickr8k" (official split) | a CSV/TSV/JSONL file
    image_size: int | None = None  # None: the image tower's size (step 1 own, Lite0 224, Lite2 260)
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
    image: CnnConfig | None = None  # image tower; None: build_clip resolves it from image_source
    text: SmallBertConfig | None = None  # SmallBERT tower; None: resolved from text_source
    pretrained_text: PretrainedTextConfig | None = None  # text_tower="hf": the pretrained encoder

    # GPU recipe (T4, not measured): more negatives per pair, more epochs.
    GPU: ClassVar[dict] = {"batch_size": 64, "epochs": 15, "patience": 5}
    SMOKE: ClassVar[dict] = {"epochs": 1, "batch_size": 8, "max_images_per_split": 16}

    def __post_init__(self) -> None:
        """Reject unknown tower names, naming the field and the valid values."""
        for name, valid in (("image_source", IMAGE_SOURCES), ("text_source", TEXT_SOURCES),
                            ("text_tower", TEXT_TOWERS)):
            if getattr(self, name) not in valid:
                raise ValueError(f"ClipConfig.{name}={getattr(self, name)!r}: choose one of "
                                 f"{valid}")
        # Sub-configs arrive as dicts from JSON (a checkpoint, papermill OVERRIDES): type them.
        if isinstance(self.image, dict):
            self.image = config_from_dict(CnnConfig, self.image)
        if isinstance(self.text, dict):
            self.text = config_from_dict(SmallBertConfig, self.text)
        if self.text_tower == "hf" or self.pretrained_text is not None:
            self.pretrained_text = pretrained_text_config(self.pretrained_text)


def clip_config_from_dict(values: dict) -> ClipConfig:
    """A ClipConfig from a checkpoint's or a metrics file's ``config``, old layouts included.

    Checkpoints of project 0.1 stored the towers as ``image_config``/``text_config`` dicts (the
    pretrained tower as ``text_config={"hf_spec": ...}`` plus ``hf_spec``): they load as well.
    """
    values = dict(values)
    for old, new in LEGACY_KEYS.items():
        value = values.pop(old, None)
        if old == "text_config" and isinstance(value, dict) and "hf_spec" in value:
            old, new, value = "hf_spec", "pretrained_text", value["hf_spec"]
        if value and values.get(new) is None:
            values[new] = value
    if values.get("text_tower") != "hf":
        values["pretrained_text"] = None
    return config_from_dict(ClipConfig, values)


def scaled_similarity(image_embeds: torch.Tensor, text_embeds: torch.Tensor,
                      logit_scale: torch.Tensor | float) -> torch.Tensor:
    """logit_scale * cosine similarities: (B,E), (B,E) -> logits_per_image (B,B)."""
    return logit_scale * image_embeds @ text_embeds.T


def gather_embeddings(embeds: torch.Tensor) -> torch.Tensor:
    """Several processes (DDP): this process's (B,E) -> every process's (W*B,E) in rank order,
    the gradient flowing back to each process's own rows (as open_clip's gather_with_grad);
    one process: ``embeds`` unchanged."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return embeds
    with warnings.catch_warnings():  # torch 2.14 flags it deprecated; its successor is private
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(dist_nn.all_gather(embeds.contiguous()))


class ClipLoss(nn.Module):
    """Symmetric cross-entropy: pair i is the right answer of row i AND of column i. Under DDP
    the embeddings of every process are gathered first: each pair meets the negatives of the
    whole global batch, and every process computes the same loss as one process would."""

    def forward(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor,
                logit_scale: torch.Tensor | float) -> torch.Tensor:
        """Normalised embeddings (B,E), (B,E) and the scale -> scalar loss."""
        logits = scaled_similarity(*self.gather(image_embeds, text_embeds), logit_scale)
        return self.from_logits(logits)

    @staticmethod
    def gather(image_embeds: torch.Tensor, text_embeds: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both (B,E) -> (W*B,E) of all processes (unchanged in a single process)."""
        return gather_embeddings(image_embeds), gather_embeddings(text_embeds)

    @staticmethod
    def from_logits(logits_per_image: torch.Tensor) -> torch.Tensor:
        """logits (B,B) (rows: images, columns: texts) -> mean of both cross-entropies."""
        targets = torch.arange(len(logits_per_image), device=logits_per_image.device)
        image_to_text = F.cross_entropy(logits_per_image, targets)
        text_to_image = F.cross_entropy(logits_per_image.T, targets)
        return (image_to_text + text_to_image) / 2


def make_projection(in_features: int, config: ClipConfig) -> nn.Module:
    """Encoder features (B,F) -> (B,embed_dim): a Linear, or Linear-GELU-Linear when
    ``config.projection_hidden`` > 0."""
    if config.projection_hidden <= 0:
        return nn.Linear(in_features, config.embed_dim)
    return nn.Sequential(nn.Linear(in_features, config.projection_hidden), nn.GELU(),
                         nn.Linear(config.projection_hidden, config.embed_dim))


class ClipModel(nn.Module):
    """Two towers (encoder + Linear projection) into one L2-normalised space, plus the loss."""

    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, config: ClipConfig):
        super().__init__()
        self.config = config
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_projection = make_projection(image_encoder.out_features, config)
        self.text_projection = make_projection(text_encoder.out_features, config)
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
        """Token ids (B,L) -> unit embeddings (B,E); precomputed encoder features (B,D) (float)
        too."""
        features = tokens if tokens.is_floating_point() else self.text_encoder(tokens)
        return F.normalize(self.text_projection(features).float(), dim=-1)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """A batch of B matching pairs -> embeddings (B,E), logits (B,B) and the loss."""
        image_embeds, text_embeds = self.encode_image(images), self.encode_text(tokens)
        # Training under DDP: the logits of the global batch (evaluation stays per process).
        pairs = self.loss_fn.gather(image_embeds, text_embeds) if self.training else \
            (image_embeds, text_embeds)
        with torch.autocast(image_embeds.device.type, enabled=False):  # loss in float32
            logits = scaled_similarity(*pairs, self.logit_scale)
        return {"image_embeds": image_embeds, "text_embeds": text_embeds,
                "logits_per_image": logits, "loss": self.loss_fn.from_logits(logits)}


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
    return load_checkpoint(path, kind=SOURCE_KINDS[name])


def resolve_image_config(config: ClipConfig) -> CnnConfig:
    """The image tower's CnnConfig: the stored one, step 1's, or a fresh one."""
    if config.image is not None:
        return config.image
    if config.image_source == "checkpoint":
        return config_from_dict(CnnConfig, load_source_checkpoint(CNN_CHECKPOINT)["config"])
    return CnnConfig(trunk=config.image_source)


def build_image_encoder(config: ClipConfig, load_weights: bool) -> nn.Module:
    """The image trunk (B,3,S,S) -> (B,F), with step 1's weights when asked and available."""
    pretrained = load_weights and config.image_source in EFFICIENTNET_LITE
    trunk = build_trunk(config.image, pretrained=pretrained)
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


def resolve_text_tower(config: ClipConfig, tokenizer, frame: pd.DataFrame | None
                       ) -> tuple[SmallBertConfig, object]:
    """(SmallBERT sub-config, tokenizer) of the text tower: stored, step 2's, or fresh."""
    if config.text_source == "checkpoint" and (tokenizer is None or config.text is None):
        checkpoint = load_source_checkpoint(SMALLBERT_CHECKPOINT)
        tokenizer = tokenizer or TextVectorizer.from_dict(checkpoint["vectorizer"])
        text = config.text or config_from_dict(SmallBertConfig, checkpoint["config"])
    else:
        if tokenizer is None:
            if frame is None:
                raise ValueError("text_source='scratch' needs the captions (frame) to fit its "
                                 "tokenizer, or a tokenizer")
            tokenizer = fit_tokenizer(frame)
        text = config.text or SmallBertConfig()
    # CLIP's text tower pools by masked mean whatever step 2 chose (padding carries no meaning).
    text = dataclasses.replace(text, pooling="masked_mean", vocab_size=tokenizer.vocab_size,
                               length=tokenizer.length)
    return text, tokenizer


def build_smallbert_encoder(config: ClipConfig, load_weights: bool) -> nn.Module:
    """SmallBERT + masked-mean SentenceEncoder: tokens (B,L) -> (B,D)."""
    encoder = build_sentence_encoder(config.text)
    if load_weights and config.text_source == "checkpoint":
        checkpoint = load_source_checkpoint(SMALLBERT_CHECKPOINT)
        encoder.load_state_dict(sub_state_dict(checkpoint, "encoder."))
    return encoder


def build_hf_tower(config: ClipConfig, tokenizer, load_weights: bool = True):
    """The optional-work pretrained text tower and its tokenizer adapter."""
    tower = config.pretrained_text
    if config.freeze_text:
        tower = dataclasses.replace(tower, freeze="all")
    encoder = build_hf_text_encoder(tower, pretrained=load_weights)
    return encoder, tokenizer or HFTokenizerAdapter(tower)


def build_clip(config: ClipConfig, tokenizer=None, frame: pd.DataFrame | None = None,
               load_weights: bool = True) -> tuple[ClipModel, object]:
    """A ClipModel and its tokenizer; ``model.config`` holds the resolved tower sub-configs.

    With sub-configs already filled (a saved config) the architecture comes from the config
    alone; ``load_weights=False`` skips the step-1/2 and pretrained weights (for reloading).
    ``frame`` is only needed by a scratch SmallBERT without tokenizer (fits the vocabulary).
    """
    torch.manual_seed(config.seed)  # same initial projections for the same seed
    image = resolve_image_config(config)
    config = dataclasses.replace(config, image=image,
                                 image_size=config.image_size or image.image_size)
    if config.text_tower == "hf":
        text_encoder, tokenizer = build_hf_tower(config, tokenizer, load_weights)
        config = dataclasses.replace(config, text=None, pretrained_text=text_encoder.config)
    else:
        text, tokenizer = resolve_text_tower(config, tokenizer, frame)
        config = dataclasses.replace(config, text=text)
        text_encoder = build_smallbert_encoder(config, load_weights)
    return ClipModel(build_image_encoder(config, load_weights), text_encoder, config), tokenizer


def save_clip(path: Path, model: ClipModel, tokenizer, epoch: int, metrics: dict,
              index=None) -> Path:
    """One file: weights of both towers, tokenizer, config (with sub-configs), epoch, metrics,
    gallery index (a ``utils.eval.index.GalleryIndex``, stored as its dict; None: none)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_checkpoint(path, state, asdict(model.config), kind="clip",
                           tokenizer=tokenizer.to_dict(),
                           epoch=epoch, metrics=metrics,
                           index=index.to_dict() if index is not None else {})


def load_clip(path: Path | None = None) -> tuple[ClipModel, object, dict]:
    """Rebuild (model in eval mode, tokenizer, checkpoint dict) from the file alone."""
    path = path or paths.model_path(CLIP_CHECKPOINT)
    checkpoint = load_checkpoint(path, kind="clip")
    config = clip_config_from_dict(checkpoint["config"])
    tokenizer = tokenizer_from_dict(checkpoint["tokenizer"])
    model, _ = build_clip(config, tokenizer=tokenizer, load_weights=False)
    load_weights(model, checkpoint, path)
    return model.to(get_device()).eval(), tokenizer, checkpoint
