"""Captions as word ids for the captioner (notebook 06): tokenisation, vocabulary, dataset.

One tokenisation serves training and evaluation: the project's word rule (``utils.data.words``:
lower-case, apostrophes dropped, words split on everything else that is not a letter or a
digit). The vocabulary keeps the
training words seen at least ``min_count`` times; the others read ``<unk>``. A dataset item is
one image (its row in a feature tensor) with ALL its captions, so the image's features are
projected once for its five captions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
import torch
from torch.utils.data import Dataset

from utils.data.words import split_words

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"


SPECIALS = (PAD, START, END, UNK)  # their position is their id: <pad> = 0, <start> = 1, ...




@dataclass
class Vocabulary:
    """Words by id (the four special tokens first) and the reverse map."""

    words: list[str]

    def __post_init__(self) -> None:
        if tuple(self.words[:len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a caption vocabulary starts with {SPECIALS}")
        self.ids = {word: i for i, word in enumerate(self.words)}

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 5) -> Vocabulary:
        """The words seen at least ``min_count`` times, most frequent first (ties: a-z)."""
        counts = Counter(w for caption in captions for w in split_words(caption))
        kept = sorted((w for w, n in counts.items() if n >= min_count),
                      key=lambda w: (-counts[w], w))
        return cls([*SPECIALS, *kept])

    def __len__(self) -> int:
        return len(self.words)

    @property
    def pad_id(self) -> int:
        return self.ids[PAD]

    @property
    def start_id(self) -> int:
        return self.ids[START]

    @property
    def end_id(self) -> int:
        return self.ids[END]

    def encode(self, caption: str, length: int) -> torch.Tensor:
        """A caption -> ids (length + 2,): <start> words (cut at ``length``) <end> <pad>..."""
        unk = self.ids[UNK]
        words = [self.ids.get(w, unk) for w in split_words(caption)[:length]]
        ids = [self.start_id, *words, self.end_id]
        return torch.tensor(ids + [self.pad_id] * (length + 2 - len(ids)), dtype=torch.long)

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> the words up to the first <end>, without <start> and <pad>."""
        words = []
        for i in ids:
            if int(i) == self.end_id:
                break
            if int(i) not in (self.start_id, self.pad_id):
                words.append(self.words[int(i)])
        return " ".join(words)

    def to_dict(self) -> dict:
        """What a checkpoint stores (JSON-like)."""
        return {"words": list(self.words)}

    @classmethod
    def from_dict(cls, state: dict) -> Vocabulary:
        """Rebuild from ``to_dict`` output."""
        return cls(list(state["words"]))


def caption_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows (image, caption_index, caption) -> one row per image, its captions in a list
    ordered by caption_index (column ``captions``), images in first-appearance order."""
    ordered = frame.sort_values(["image", "caption_index"], kind="stable")
    grouped = ordered.groupby("image", sort=False)["caption"].agg(list)
    order = frame.drop_duplicates("image")["image"]
    return grouped.loc[order].rename("captions").reset_index()


class CaptionDataset(Dataset):
    """Items (features (R,C) float32, caption ids (K, length + 2)) for images given by their
    row in ``maps`` (N,R,C) and their K captions each (images with fewer are padded with
    all-<pad> rows, which the loss ignores)."""

    def __init__(self, maps: torch.Tensor, rows: torch.Tensor, captions: list[list[str]],
                 vocabulary: Vocabulary, length: int) -> None:
        if len(rows) != len(captions):
            raise ValueError(f"{len(rows)} feature rows but {len(captions)} caption lists")
        self.maps, self.rows = maps, rows
        per_image = max(len(c) for c in captions)
        pad = torch.full((length + 2,), vocabulary.pad_id, dtype=torch.long)
        self.tokens = torch.stack([
            torch.stack([vocabulary.encode(c, length) for c in caps]
                        + [pad] * (per_image - len(caps))) for caps in captions])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.maps[self.rows[index]].float(), self.tokens[index]
