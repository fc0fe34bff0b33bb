"""Zero-shot classification with CLIP (each class described by prompts) and the test-split
evaluation of a CLIP model (retrieval both ways, zero-shot, chance levels).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score

from utils.data.course import CLASSES
from utils.eval.index import GalleryIndex, embed_texts
from utils.models.clip import ClipModel, similarity

PROMPT_TEMPLATES = ("a photo of {}", "a picture of {}", "{}", "an image showing {}")


CLASS_PHRASES = {"ball": "a ball", "bike": "a bike", "dog": "a dog", "water": "water"}


def class_prompt_embeddings(model: ClipModel, tokenizer,
                            templates: tuple[str, ...] = PROMPT_TEMPLATES,
                            classes: Sequence[str] = CLASSES) -> torch.Tensor:
    """One unit vector per class (C,E): the mean of its prompts' embeddings, renormalised."""

    prompts = [t.format(CLASS_PHRASES.get(c, c)) for c in classes for t in templates]
    embeds = embed_texts(model, tokenizer, prompts).view(len(classes), len(templates), -1)
    return F.normalize(embeds.mean(dim=1), dim=-1)


def zero_shot_predict(model: ClipModel, tokenizer, image_embeds: torch.Tensor,
                      classes: Sequence[str] = CLASSES) -> torch.Tensor:
    """Class of each image (N,) = the class whose prompt embedding is the most similar."""
    prompts = class_prompt_embeddings(model, tokenizer, classes=classes)
    return similarity(image_embeds, prompts).argmax(dim=1)


def zero_shot_accuracy(model: ClipModel, tokenizer, index: GalleryIndex) -> float | None:
    """Zero-shot accuracy on the images of a (split of a) gallery index; None if unlabelled."""

    if not index.is_labelled():
        return None
    predictions = zero_shot_predict(model, tokenizer, index.image_embeds, index.class_names)
    return float(accuracy_score(index.image_labels, predictions.numpy()))


def evaluate_clip(model: ClipModel, tokenizer, index: GalleryIndex, split: str = "test") -> dict:
    """Retrieval metrics of both directions, zero-shot accuracy, and their chance levels (class
    precision and zero-shot are None for an unlabelled dataset)."""

    part = index.split(split)
    result = part.evaluate()
    result["zero_shot_accuracy"] = zero_shot_accuracy(model, tokenizer, part)
    labelled = part.is_labelled()  # balanced classes: chance 1/C
    result["chance"]["zero_shot_accuracy"] = 1 / len(part.class_names) if labelled else None
    return {key: result[key] for key in ("text_to_image", "image_to_text",
                                         "zero_shot_accuracy", "chance")}
