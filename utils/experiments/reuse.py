"""Notebook 03's comparison: is reusing the towers of steps 1 and 2 worth it?

Same split, epochs and evaluation for four ways of building the towers; each variant is step
3's config with a few fields changed, run through ``utils.experiments.runs``.
"""

from __future__ import annotations

from utils.experiments.runs import RunSpec, derive_config
from utils.models.clip import ClipConfig

REUSE = "reuse (steps 1-2)"
VARIANTS = {
    REUSE: {},
    "scratch": {"image_source": "scratch", "text_source": "scratch"},
    "frozen towers": {"freeze_image": True, "freeze_text": True},
    "EfficientNet-Lite0 (frozen) + SmallBERT": {"image_source": "efficientnet_lite0",
                                                "freeze_image": True},
}


def reuse_specs(base: ClipConfig) -> list[RunSpec]:
    """The variants of VARIANTS as run specs derived from step 3's config."""
    return [RunSpec(name, derive_config(base, **changes)) for name, changes in VARIANTS.items()]
