"""The project's one word rule, written once: how every part of the package splits a caption
into words (SmallBERT's tokenizer, the captioner's vocabulary and metrics, the enrichment
guards, the Flickr8k tags).

Lower-case; apostrophes dropped ("dog's" -> "dogs", as Keras's TextVectorization does in the
course); every other character that is not a letter or a digit separates words
("black-and-white" -> "black and white", "tennis_ball" -> "tennis ball"). Letters include
accented ones ("café" stays one word).
"""

from __future__ import annotations

import re

APOSTROPHES = r"['’`]"  # dropped: "dog's" -> "dogs"
SEPARATORS = r"[^\w\s]|_"  # every other non-letter, non-digit: a space


def split_words(text: str) -> list[str]:
    """'A dog's ball, black-and-white.' -> ['a', 'dogs', 'ball', 'black', 'and', 'white']."""
    text = re.sub(APOSTROPHES, "", text.lower())
    return re.sub(SEPARATORS, " ", text).split()


def normalize_caption(text: str) -> str:
    """A caption as its words joined by single spaces (matching keys, metric references)."""
    return " ".join(split_words(text))
