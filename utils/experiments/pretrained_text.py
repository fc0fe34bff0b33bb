"""Notebook 04: CLIP with a pretrained BERT-family text tower instead of SmallBERT.

Only what changes from step 3 is configured here; every run is step 3's configs with another
text tower, trained and evaluated through ``utils.experiments.runs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from utils.core.checkpoint import load_checkpoint, stored_training
from utils.core.common import config_from_dict, load_json
from utils.core.paths import metrics_path, model_path
from utils.core.pretrained import HF_POOLINGS, PretrainedTextConfig
from utils.experiments.runs import derive_configs, flatten_clip_metrics
from utils.models.clip import CLIP_CHECKPOINT, ClipConfig, clip_config_from_dict
from utils.train.configs import ClipTrainConfig

ClipConfigs = tuple[ClipConfig, ClipTrainConfig]


@dataclass
class PretrainedTowerConfig:
    """Settings of notebook 04 (the rest of CLIP's settings come from step 3's checkpoint)."""

    seed: int = 0  # seeds weights, caption draws and shuffling of every run
    model: str = "minilm-l6-packaged"  # hub name, local folder or packaged alias
    max_length: int = 32  # wordpieces per caption ([CLS] + text + [SEP] + padding)
    poolings: tuple[str, ...] = ("cls", "masked_mean")  # compared with the encoder frozen
    train_last_n_layers: int = 1  # partly trained run: top N transformer blocks trainable
    encoder_lr: float = 5e-5  # lr of those N blocks (CLIP's heads keep step 3's lr, 20x more)
    epochs: int = 8  # maximum epochs per run (early stopping on validation R@5 as in step 3)
    freeze_image: bool = True  # step 3's image tower, frozen (features computed once): isolates
    # the text tower's effect and keeps CPU runs to minutes; False retrains it as step 3 did
    max_images_per_split: int = 0  # 0: every image; smoke mode keeps a few per split
    clip_overrides: dict = field(default_factory=dict)  # other CLIP config fields to change

    SMOKE: ClassVar[dict] = {"epochs": 1, "max_images_per_split": 24, "max_length": 16}

    def __post_init__(self) -> None:
        """Check the poolings early (a JSON round trip gives a list back)."""
        self.poolings = tuple(self.poolings)
        for pooling in self.poolings:
            if pooling not in HF_POOLINGS:
                raise ValueError(f"PretrainedTowerConfig.poolings: {pooling!r} not in "
                                 f"{HF_POOLINGS}")


def step3_clip_configs(path: str | Path | None = None) -> ClipConfigs:
    """Step 3's architecture and run settings (models/03_clip.pt): same image tower, split, lr
    and embed_dim."""

    path = Path(path) if path is not None else model_path(CLIP_CHECKPOINT)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run notebooks/03_clip.ipynb first (this "
                                "notebook keeps step 3's image tower and settings).")
    checkpoint = load_checkpoint(path, kind="clip")
    return (clip_config_from_dict(checkpoint["config"]),
            config_from_dict(ClipTrainConfig, stored_training(checkpoint)))


def run_clip_configs(base: ClipConfigs, config: PretrainedTowerConfig, **tower) -> ClipConfigs:
    """Step 3's configs with this notebook's protocol (epochs, image tower) and ``tower``."""
    values = {"freeze_text": False, "epochs": config.epochs, "seed": config.seed,
              "freeze_image": config.freeze_image,
              "max_images_per_split": config.max_images_per_split, "compare_variants": False}
    return derive_configs(*base, **{**values, **tower, **config.clip_overrides})


def tower_config(config: PretrainedTowerConfig, pooling: str | None = None,
                 freeze: str = "all") -> PretrainedTextConfig:
    """The pretrained text tower of this notebook's config, with a pooling and a freeze mode."""
    last_n = config.train_last_n_layers if freeze == "last_n" else 0
    return PretrainedTextConfig(model=config.model, pooling=pooling or HF_POOLINGS[-1],
                                max_length=config.max_length, freeze=freeze,
                                encoder_lr=config.encoder_lr, train_last_n_layers=last_n)


def tower_clip_configs(base: ClipConfigs, config: PretrainedTowerConfig, pooling: str,
                       freeze: str) -> ClipConfigs:
    """CLIP configs with the pretrained text tower (from this notebook's config)."""
    return run_clip_configs(base, config, text_tower="hf",
                            pretrained_text=tower_config(config, pooling, freeze))


def smallbert_clip_configs(base: ClipConfigs, config: PretrainedTowerConfig) -> ClipConfigs:
    """Step 3's SmallBERT tower under this notebook's protocol (the fair reference row)."""
    return run_clip_configs(base, config, text_tower="smallbert")


def step3_row(path: str | Path | None = None) -> dict:
    """Step 3's SmallBERT CLIP as a table row, read from results/metrics/03_clip.json."""

    path = Path(path) if path is not None else metrics_path("03_clip.json")
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run notebooks/03_clip.ipynb first.")
    metrics = load_json(path)
    row = flatten_clip_metrics(metrics["test"])
    reuse = metrics.get("comparison", {}).get("reuse (steps 1-2)", {})
    row.update({key: reuse[key] for key in ("train_time_s", "epochs_run", "best_epoch",
                                            "trainable_parameters") if key in reuse})
    return row
