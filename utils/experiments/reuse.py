"""Notebook 03's comparison: is reusing the towers of steps 1 and 2 worth it, and which step-1
image model makes the better CLIP?

Same split, epochs and evaluation for four ways of building the towers; each variant is step
3's config with a few fields changed, run through ``utils.experiments.runs``: CLIP on each of
step 1's two image models (the CNN from scratch; EfficientNet-Lite0 + the team's head), both
with step 2's SmallBERT; both towers from random weights; steps 1-2 frozen.
"""

from __future__ import annotations

from utils.experiments.runs import RunSpec, derive_configs
from utils.models.clip import ClipConfig
from utils.train.configs import ClipTrainConfig
from utils.train.towers import image_tower_overrides

STEP1_VARIANTS = {"scratch": "step-1 CNN from scratch + SmallBERT",
                  "pretrained": "step-1 EfficientNet-Lite0 + SmallBERT"}


def reuse_variants(recipe: str | None = None) -> dict[str, dict]:
    """Variant name -> the config fields it changes."""
    return {
        **{name: image_tower_overrides(tower, recipe) for tower, name in STEP1_VARIANTS.items()},
        "random towers": {"image_source": "scratch", "text_source": "scratch",
                          "freeze_image": False},
        "frozen towers (steps 1-2)": {"freeze_image": True, "freeze_text": True},
    }


def reuse_specs(config: ClipConfig, training: ClipTrainConfig, recipe: str | None = None
                ) -> list[RunSpec]:
    """The variants as run specs derived from step 3's configs."""
    return [RunSpec(name, *derive_configs(config, training, **changes))
            for name, changes in reuse_variants(recipe).items()]
