"""Multi-label tags of the Flickr8k images, derived from their captions (notebook 07).

The rule, written once here and shown in the notebook:

* each image has 5 captions; one of them (``held_out``, caption #0 by default) is the text
  the models read, so it takes NO part in the rule: the tags come from the 4 other captions;
* a caption *mentions* a noun when the noun is one of the words of its lemmatised form
  (``Flickr8k.lemma.token.txt``: "dogs" -> "dog", "children" -> "child"), lower-case;
* a tag is on for an image when at least ``min_mentions`` (2) of its 4 rule captions mention it;
* the tags are the ``n_tags`` nouns of ``VISUAL_NOUNS`` that are on for the most images of the
  official TRAINING split (ties: alphabetical), so no validation or test image chooses them.

``VISUAL_NOUNS`` is a hand-written list of concrete, visible nouns among the ~150 most frequent
lemmas of the training captions (no POS tagger is needed, and the choice can be read and
changed): people, animals, objects and places; no verbs, colours, numbers or abstract words.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from utils.data.course import CLASSES, classify_caption
from utils.data.flickr8k import FLICKR_TEXT, read_flickr8k
from utils.data.words import split_words

LEMMA_FILE = "Flickr8k.lemma.token.txt"


VISUAL_NOUNS = (
    "dog", "man", "boy", "girl", "woman", "person", "water", "child", "shirt", "ball", "grass",
    "snow", "field", "mouth", "beach", "rock", "street", "dress", "bike", "player", "hat",
    "jacket", "camera", "tree", "mountain", "pool", "toy", "stick", "park", "face",
    "skateboard", "wall", "building", "kid", "dirt", "crowd", "hill", "car", "bicycle", "sand",
    "football", "helmet", "people", "baby", "ocean", "road", "hair", "bench", "fence",
    "sidewalk", "horse", "uniform", "basketball", "frisbee", "lake", "boat", "city", "rope",
    "motorcycle", "table", "bird", "sunglasses", "river", "flower", "ice",
)




@dataclass
class TagTable:
    """One row per image: ``frame`` (image, split, caption = the held-out original caption,
    label = its course class or None) and ``targets`` (N,T) float 0/1 of ``tags``."""

    tags: list[str]
    frame: pd.DataFrame
    targets: torch.Tensor

    def split(self, name: str) -> tuple[pd.DataFrame, torch.Tensor]:
        """Rows and targets (K,T) of one official split ("train", "val", "test")."""
        keep = (self.frame["split"] == name).to_numpy()
        return self.frame[keep].reset_index(drop=True), self.targets[torch.tensor(keep)]


def lemma_words(caption: str) -> set[str]:
    """The lower-case words of a (lemmatised) caption."""
    return set(split_words(caption))


def tag_vector(captions: Sequence[str], tags: Sequence[str], min_mentions: int = 2
               ) -> np.ndarray:
    """0/1 (T,): tag t is on when at least ``min_mentions`` of ``captions`` mention it."""
    words = [lemma_words(c) for c in captions]
    counts = np.array([sum(tag in w for w in words) for tag in tags])
    return (counts >= min_mentions).astype(np.float32)


def rule_captions(lemmas: pd.DataFrame, held_out: int = 0) -> dict[str, list[str]]:
    """image -> its lemmatised captions except caption #``held_out`` (columns of read_flickr8k)."""
    kept = lemmas[lemmas["caption_index"] != held_out].sort_values(["image", "caption_index"])
    return kept.groupby("image", sort=True)["caption"].agg(list).to_dict()


def rank_tags(captions: dict[str, list[str]], nouns: Sequence[str], n_tags: int,
              min_mentions: int = 2) -> list[str]:
    """The ``n_tags`` nouns on for the most images of ``captions`` (ties: alphabetical)."""
    on = np.stack([tag_vector(c, nouns, min_mentions) for c in captions.values()])
    counts = dict(zip(nouns, on.sum(axis=0), strict=True))
    return sorted(nouns, key=lambda noun: (-counts[noun], noun))[:n_tags]


def held_out_frame(captions: pd.DataFrame, held_out: int = 0) -> pd.DataFrame:
    """One row per image with an official split: image, split, caption (#held_out), label."""
    rows = captions[(captions["caption_index"] == held_out) & (captions["flickr_split"] != "")]
    rows = rows.sort_values("image").reset_index(drop=True)
    return pd.DataFrame({"image": rows["image"], "split": rows["flickr_split"],
                         "caption": rows["caption"],
                         "label": rows["caption"].map(classify_caption)})


def first_images(frame: pd.DataFrame, per_split: int) -> pd.DataFrame:
    """The first ``per_split`` images of each split (0: all), e.g. for smoke runs."""
    if per_split <= 0:
        return frame
    return frame.groupby("split", sort=False).head(per_split).reset_index(drop=True)


def build_tag_table(flickr8k: Path, n_tags: int = 30, held_out: int = 0, min_mentions: int = 2,
                    per_split: int = 0, nouns: Sequence[str] = VISUAL_NOUNS) -> TagTable:
    """The tags of the Flickr8k images with an official split (rule: see the module text)."""
    lemma_path = Path(flickr8k) / FLICKR_TEXT / LEMMA_FILE
    if not lemma_path.is_file():
        raise FileNotFoundError(f"{lemma_path}: not found. Fix: unzip Flickr8k_text.zip (it "
                                f"holds the lemmatised captions) into {flickr8k}.")
    frame = first_images(held_out_frame(read_flickr8k(flickr8k), held_out), per_split)
    with warnings.catch_warnings():  # the stray key was already reported for the token file
        warnings.simplefilter("ignore", UserWarning)
        rules = rule_captions(read_flickr8k(flickr8k, LEMMA_FILE), held_out)
    train = frame.loc[frame["split"] == "train", "image"]
    tags = rank_tags({image: rules[image] for image in train}, nouns, n_tags, min_mentions)
    targets = np.stack([tag_vector(rules[image], tags, min_mentions) for image in frame["image"]])
    return TagTable(tags, frame, torch.from_numpy(targets))


def class_ids(labels: pd.Series) -> torch.Tensor:
    """Course class names (None allowed) -> LongTensor (N,), -1 where an image has no class."""
    return torch.tensor([CLASSES.index(x) if isinstance(x, str) else -1 for x in labels],
                        dtype=torch.long)
