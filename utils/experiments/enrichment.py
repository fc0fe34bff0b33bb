"""Notebook 05: CLIP trained on the original captions or on enriched ones (same protocol)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from utils.data.enrich import DEFAULT_MAX_WORDS
from utils.experiments.runs import derive_config
from utils.models.clip import ClipConfig


@dataclass
class EnrichConfig:
    """Settings of notebook 05 (CLIP's other settings come from step 3's checkpoint)."""

    seed: int = 0  # seeds weights, caption draws and shuffling of both runs
    max_words: int = DEFAULT_MAX_WORDS  # guard: longest accepted enriched caption (words)
    text_length: int = 0  # SmallBERT tokens; 0: from the enriched captions (max, up to 64)
    max_text_length: int = 64  # cap of the automatic text_length
    epochs: int = 10  # maximum epochs per run (early stopping on validation R@5)
    freeze_image: bool = True  # step 3's image tower frozen (features once): minutes on a CPU
    max_images_per_split: int = 0  # 0: every image; smoke mode keeps a few per split
    llm_model: str = ""  # optional local transformers instruction model (GPU), e.g. a Qwen
    llm_rows: int = 0  # LLM section: rows to enrich (0: all of them)
    clip_overrides: dict = field(default_factory=dict)  # other ClipConfig fields to change

    SMOKE: ClassVar[dict] = {"epochs": 1, "max_images_per_split": 24, "llm_rows": 8}


def enrichment_clip_config(base: ClipConfig, config: EnrichConfig) -> ClipConfig:
    """Step 3's ClipConfig for both runs: a fresh SmallBERT (the length changes), same protocol."""
    values = {"text_tower": "smallbert", "text_source": "scratch", "freeze_text": False,
              "epochs": config.epochs, "seed": config.seed, "freeze_image": config.freeze_image,
              "compare_variants": False, "max_images_per_split": config.max_images_per_split}
    return derive_config(base, **{**values, **config.clip_overrides})
