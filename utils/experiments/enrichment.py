"""Notebook 05: CLIP trained on the original captions or on enriched ones (same protocol)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import ClassVar

import pandas as pd
import torch

from utils.data.enrich import (
    DEFAULT_MAX_WORDS,
    ChatClient,
    EnrichmentUnavailable,
    LLMEnricher,
    SiblingCaptionEnricher,
)
from utils.eval.index import GalleryIndex
from utils.eval.retrieval import text_to_image_ranks
from utils.experiments.runs import derive_configs
from utils.models.clip import ClipConfig
from utils.models.llm import DEFAULT_LM, CausalLMGenerator
from utils.train.configs import ClipTrainConfig


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
    llm_model: str = DEFAULT_LM  # causal LM: packaged alias, HF name or local folder;
    # the ENRICH_MODEL variable overrides it (with ENRICH_BASE_URL: a server's model instead)
    llm_rows: int = 0  # LLM section: rows to enrich (0: all of them)
    llm_batch_size: int = 8  # captions generated together (left-padded batch)
    llm_max_new_tokens: int = 40  # longest answer in tokens (max_words words fit in ~35)
    llm_context: bool = False  # also show the model the image's Flickr8k sibling captions
    clip_overrides: dict = field(default_factory=dict)  # other CLIP config fields to change

    SMOKE: ClassVar[dict] = {"epochs": 1, "max_images_per_split": 24, "llm_rows": 4,
                             "llm_max_new_tokens": 12}


def enrichment_clip_configs(base: tuple[ClipConfig, ClipTrainConfig], config: EnrichConfig
                            ) -> tuple[ClipConfig, ClipTrainConfig]:
    """Step 3's configs for both runs: a fresh SmallBERT (the length changes), same protocol."""
    values = {"text_tower": "smallbert", "text_source": "scratch", "freeze_text": False,
              "epochs": config.epochs, "seed": config.seed, "freeze_image": config.freeze_image,
              "compare_variants": False, "max_images_per_split": config.max_images_per_split}
    return derive_configs(*base, **{**values, **config.clip_overrides})


def llm_model_name(config: EnrichConfig) -> str:
    """The model notebook 05 asks: ENRICH_MODEL when set, else ``config.llm_model``."""
    return os.environ.get("ENRICH_MODEL", "").strip() or config.llm_model


def make_llm_enricher(config: EnrichConfig, siblings: SiblingCaptionEnricher | None = None
                      ) -> LLMEnricher:
    """The LLM enricher of notebook 05: an OpenAI-compatible server when ENRICH_BASE_URL is set,
    else the causal LM ``llm_model_name`` loaded here; a ValueError saying what to set when
    both are empty (the LLM section needs a model: it is never skipped in silence)."""
    name = llm_model_name(config)
    if os.environ.get("ENRICH_BASE_URL", "").strip():
        generate = ChatClient.from_env()
    elif name:
        generate = CausalLMGenerator(name, config.llm_max_new_tokens, config.llm_batch_size)
    else:
        raise ValueError(f"EnrichConfig.llm_model is empty and ENRICH_BASE_URL is not set: "
                         f"notebook 05's LLM section has no model. Fix: remove llm_model from "
                         f"OVERRIDES (default {DEFAULT_LM!r}, offline), or set ENRICH_MODEL or "
                         f"ENRICH_BASE_URL.")
    context = siblings if config.llm_context else None
    return LLMEnricher(generate, context=context, max_words=config.max_words)


def human_captions(frame: pd.DataFrame, siblings: SiblingCaptionEnricher) -> dict[str, list]:
    """image_path -> the human captions of that image Flickr8k has besides the course one
    (an image Flickr8k lacks gets none: only its course caption then counts)."""
    references = {}
    for row in frame.itertuples(index=False):
        try:
            references[row.image_path] = siblings.siblings(row.image_path, row.caption)
        except EnrichmentUnavailable:
            references[row.image_path] = []
    return references


def ranks_on_test(index: GalleryIndex) -> torch.Tensor:
    """Rank of each test caption's image among the test images: (T,)."""
    test = index.split("test")
    return text_to_image_ranks(test.image_embeds, test.text_embeds, test.caption_images)
