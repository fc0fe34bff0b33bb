"""Zero-shot classification with CLIP (each class described by prompts) and the test-split
evaluation of a CLIP model (retrieval both ways, zero-shot, chance levels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score

from utils.data.course import CLASSES
from utils.eval.index import GalleryIndex, embed_texts
from utils.models.clip import ClipModel

PROMPT_TEMPLATES = ("a photo of {}", "a picture of {}", "{}", "an image showing {}")


CLASS_PHRASES = {"ball": "a ball", "bike": "a bike", "dog": "a dog", "water": "water"}


def class_prompt_embeddings(model: ClipModel, tokenizer,
                            templates: tuple[str, ...] = PROMPT_TEMPLATES) -> torch.Tensor:
    """One unit vector per class (C,E): the mean of its prompts' embeddings, renormalised."""

    prompts = [t.format(CLASS_PHRASES.get(c, c)) for c in CLASSES for t in templates]
    embeds = embed_texts(model, tokenizer, prompts).view(len(CLASSES), len(templates), -1)
    return F.normalize(embeds.mean(dim=1), dim=-1)


def zero_shot_predict(model: ClipModel, tokenizer, image_embeds: torch.Tensor) -> torch.Tensor:
    """Class of each image (N,) = the class whose prompt embedding is the most similar."""
    return (image_embeds @ class_prompt_embeddings(model, tokenizer).T).argmax(dim=1)


def zero_shot_accuracy(model: ClipModel, tokenizer, index: GalleryIndex) -> float:
    """Zero-shot accuracy on the images of a (split of a) gallery index."""

    predictions = zero_shot_predict(model, tokenizer, index.image_embeds)
    return float(accuracy_score(index.image_labels, predictions.numpy()))


def evaluate_clip(model: ClipModel, tokenizer, index: GalleryIndex, split: str = "test") -> dict:
    """Retrieval metrics of both directions, zero-shot accuracy, and their chance levels."""

    part = index.split(split)
    result = part.evaluate()
    result["zero_shot_accuracy"] = zero_shot_accuracy(model, tokenizer, part)
    result["chance"]["zero_shot_accuracy"] = 1 / len(CLASSES)  # balanced classes
    return {key: result[key] for key in ("text_to_image", "image_to_text",
                                         "zero_shot_accuracy", "chance")}
