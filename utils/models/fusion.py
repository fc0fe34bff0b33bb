"""Notebook 07: a fusion classifier (image + caption) and a multi-task image network.

* ``LstmTextEncoder``: word embeddings (GloVe 6B-50d to start with) then a bidirectional LSTM,
  averaged over the real tokens: token ids (B,L) -> a sentence vector (B,2H).
* ``FusionClassifier``: an image branch on frozen image features (B,F) (EfficientNet-Lite0 or
  the step-1 CNN trunk, computed once) and/or a text branch (the LSTM, or frozen SmallBERT
  sentence vectors); early fusion concatenates both branches before one MLP head.
  ``modality`` says which branches exist: "image", "text" or "early" (both).
* ``MultiTaskNet``: one trainable MLP trunk on image features with two heads, the 4 course
  classes and the multi-label tags.

Everything is rebuilt from ``FusionConfig`` plus a small ``spec`` dict (modality, input sizes),
so a checkpoint (``save_fusion``) reloads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from utils.core.checkpoint import load_checkpoint, save_checkpoint
from utils.core.common import config_from_dict
from utils.data.tokenizers import TextVectorizer
from utils.models.cnn import EFFICIENTNET_LITE
from utils.models.features import PrecomputedFeatures, compute_features
from utils.models.pooling import masked_mean

NUM_CLASSES = 4  # ball, bike, dog, water (utils.data.course.CLASSES)


MODALITIES = ("image", "text", "early")


FUSION_CHECKPOINT = "07_fusion.pt"


@dataclass
class FusionConfig:
    """The architecture of notebook 07's networks (fusion classifiers, multi-task net): what
    rebuilds them (stored in the checkpoint). How they are trained, and on which tags, is
    ``utils.train.configs.FusionTrainConfig``."""

    encoder: str = "efficientnet_lite0"  # frozen ImageNet encoder of the image features
    embed_dim: int = 50  # word-vector size (GloVe 6B-50d: 50)
    lstm_hidden: int = 64  # hidden size of each LSTM direction
    bidirectional: bool = True  # read the caption in both directions
    text_length: int = 32  # tokens per caption (padded / cut)
    image_hidden: int = 256  # image branch: Linear from the image features to this size
    hidden: int = 128  # hidden size of the fusion MLP head
    dropout: float = 0.3  # dropout on the branch inputs and in the head
    modality_dropout: float = 0.3  # early fusion, training only: share of items whose image
    # or text vector (one of the two, at random) is zeroed, so neither branch is ignored
    trunk_hidden: int = 256  # multi-task: size of the shared trunk


class LstmTextEncoder(nn.Module):
    """Embeddings + (bi)LSTM, mean over real tokens: ids (B,L) -> (B,out_features)."""

    pad_id = 0

    def __init__(self, vocab_size: int, config: FusionConfig,
                 embeddings: torch.Tensor | None = None):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, config.embed_dim, padding_idx=self.pad_id)
        if embeddings is not None:
            with torch.no_grad():
                self.embedding.weight.copy_(embeddings)
                self.embedding.weight[self.pad_id].zero_()
        self.dropout = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(config.embed_dim, config.lstm_hidden, batch_first=True,
                            bidirectional=config.bidirectional)
        self.out_features = config.lstm_hidden * (2 if config.bidirectional else 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (B,L), 0 = padding -> sentence vectors (B,out_features)."""
        lengths = (tokens != self.pad_id).sum(dim=1).clamp(min=1)
        packed = pack_padded_sequence(self.dropout(self.embedding(tokens)), lengths.cpu(),
                                      batch_first=True, enforce_sorted=False)
        hidden, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True)  # (B,L',D)
        mask = torch.arange(hidden.shape[1], device=tokens.device)[None] < lengths[:, None]
        return masked_mean(hidden, mask)


class FusionClassifier(nn.Module):
    """Image features (B,F) and/or text (B,L) ids or (B,D) vectors -> logits (B,K)."""

    def __init__(self, image_features: int, text_encoder: nn.Module | None, outputs: int,
                 config: FusionConfig):
        super().__init__()
        self.image_branch = None
        width = 0
        if image_features:
            self.image_branch = nn.Sequential(nn.Dropout(config.dropout),
                                              nn.Linear(image_features, config.image_hidden),
                                              nn.ReLU())
            width += config.image_hidden
        self.text_encoder = text_encoder
        width += text_encoder.out_features if text_encoder is not None else 0
        self.modality_dropout = config.modality_dropout
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(width, config.hidden),
                                  nn.ReLU(), nn.Dropout(config.dropout),
                                  nn.Linear(config.hidden, outputs))

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Image features (B,F), text input (B,L) or (B,D) -> logits (B,K); an absent branch
        ignores its input."""
        parts = []
        if self.image_branch is not None:
            parts.append(self.image_branch(image))
        if self.text_encoder is not None:
            parts.append(self.text_encoder(text))
        if self.training and len(parts) == 2 and self.modality_dropout > 0:
            parts = drop_modality(parts, self.modality_dropout)
        return self.head(torch.cat(parts, dim=1))


def drop_modality(parts: list[torch.Tensor], rate: float) -> list[torch.Tensor]:
    """Zero, for a share ``rate`` of the items, one of the two branch vectors (B,D1), (B,D2),
    picked at random per item."""
    batch = parts[0].shape[0]
    dropped = torch.rand(batch, device=parts[0].device) < rate
    which = torch.rand(batch, device=parts[0].device) < 0.5  # True: the image, else the text
    keep_image = ~(dropped & which)
    keep_text = ~(dropped & ~which)
    return [parts[0] * keep_image[:, None], parts[1] * keep_text[:, None]]


def fusion_spec(modality: str, image_features: int = 0, text: str = "lstm", vocab_size: int = 0,
                text_features: int = 0, outputs: int = NUM_CLASSES) -> dict:
    """What a FusionClassifier is built from besides the config (stored in checkpoints)."""
    if modality not in MODALITIES:
        raise ValueError(f"modality={modality!r}: choose one of {MODALITIES}")
    if text not in ("lstm", "features"):
        raise ValueError(f"text={text!r}: choose 'lstm' or 'features'")
    return {"modality": modality, "image_features": image_features, "text": text,
            "vocab_size": vocab_size, "text_features": text_features, "outputs": outputs}


def build_text_branch(spec: dict, config: FusionConfig, embeddings: torch.Tensor | None
                      ) -> nn.Module | None:
    """The text branch a spec asks for: the LSTM, precomputed vectors, or None."""
    if spec["modality"] == "image":
        return None
    if spec["text"] == "features":
        return PrecomputedFeatures(spec["text_features"])
    return LstmTextEncoder(spec["vocab_size"], config, embeddings)


def build_fusion(spec: dict, config: FusionConfig, embeddings: torch.Tensor | None = None
                 ) -> FusionClassifier:
    """A FusionClassifier from its spec (fusion_spec); ``embeddings`` (V,E): first word vectors."""
    image = spec["image_features"] if spec["modality"] != "text" else 0
    return FusionClassifier(image, build_text_branch(spec, config, embeddings), spec["outputs"],
                            config)


class MultiTaskNet(nn.Module):
    """Image features (B,F) -> shared MLP trunk -> (class logits (B,4), tag logits (B,T))."""

    def __init__(self, features: int, tags: int, config: FusionConfig):
        super().__init__()
        self.trunk = nn.Sequential(nn.Dropout(config.dropout),
                                   nn.Linear(features, config.trunk_hidden), nn.ReLU(),
                                   nn.Dropout(config.dropout))
        self.class_head = nn.Linear(config.trunk_hidden, NUM_CLASSES)
        self.tag_head = nn.Linear(config.trunk_hidden, tags)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,F) -> class logits (B,4), tag logits (B,T)."""
        shared = self.trunk(features)
        return self.class_head(shared), self.tag_head(shared)


@dataclass
class FusionBundle:
    """The three course models notebook 07 saves: image-only, text-only and early fusion,
    with the vectoriser of the LSTM and the encoder of the image features."""

    models: dict[str, FusionClassifier]  # "image", "text", "early"
    specs: dict[str, dict]
    vectorizer: TextVectorizer
    config: FusionConfig

    @torch.no_grad()
    def probabilities(self, image_features: torch.Tensor, sentences: list[str]
                      ) -> dict[str, np.ndarray]:
        """Class probabilities (N,4) of each model (and late fusion, their average) for image
        features (N,F) paired with ``sentences`` (N)."""
        tokens = self.vectorizer.encode(list(sentences))
        probs = {}
        for name, model in self.models.items():
            device = next(model.parameters()).device
            logits = model.eval()(image_features.to(device), tokens.to(device))
            probs[name] = logits.float().softmax(dim=1).cpu().numpy()
        probs["late"] = (probs["image"] + probs["text"]) / 2
        return probs

    def predict_pair(self, image_path: str | Path, sentence: str) -> dict[str, np.ndarray]:
        """Probabilities (4,) of each model for one image file and one sentence."""
        features = image_file_features([Path(image_path)], self.config.encoder)
        return {name: p[0] for name, p in self.probabilities(features, [sentence]).items()}


def image_file_features(files: list[Path], encoder: str = "efficientnet_lite0") -> torch.Tensor:
    """Pooled features (N,F) of image files with the frozen encoder (no cache: a few files)."""
    return compute_features(files, encoder, EFFICIENTNET_LITE[encoder][2], batch_size=8)[1]


def save_fusion(path: str | Path, bundle: FusionBundle, metrics: dict, training=None) -> Path:
    """One file: the three models' CPU weights, their specs, architecture config, vocabulary,
    metrics and, as metadata, the run settings they were trained with (``training``)."""
    states = {name: {k: v.detach().cpu() for k, v in model.state_dict().items()}
              for name, model in bundle.models.items()}
    return save_checkpoint(path, states.pop("early"), dataclasses.asdict(bundle.config),
                           kind="fusion", other_states=states, specs=bundle.specs,
                           vectorizer=bundle.vectorizer.to_dict(), metrics=metrics,
                           training=dataclasses.asdict(training) if training else {})


def load_fusion(path: str | Path) -> FusionBundle:
    """Rebuild the saved bundle (models in eval mode) from its file alone."""
    checkpoint = load_checkpoint(path, kind="fusion")
    config = config_from_dict(FusionConfig, checkpoint["config"])
    states = {"early": checkpoint["state_dict"], **checkpoint["other_states"]}
    models = {}
    for name, state in states.items():
        models[name] = build_fusion(checkpoint["specs"][name], config)
        models[name].load_state_dict(state)
        models[name].eval()
    return FusionBundle(models, checkpoint["specs"],
                        TextVectorizer.from_dict(checkpoint["vectorizer"]), config)
