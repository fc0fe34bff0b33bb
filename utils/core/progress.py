"""The project's one progress bar: tqdm's plain-text bar on standard output.

The same bar in a terminal, in Jupyter and in a notebook's PDF: ``tqdm.auto`` would draw a
widget in Jupyter (with a warning when ipywidgets is absent, and nothing in the PDF), and tqdm's
default stream, stderr, reads as an error in an executed notebook.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm import tqdm


def progress(iterable: Iterable | None = None, **options) -> tqdm:
    """A text progress bar on stdout (``options``: tqdm's, e.g. total, desc, disable)."""
    options.setdefault("file", sys.stdout)
    options.setdefault("mininterval", 1.0)
    return tqdm(iterable, **options)


def note(text: str) -> None:
    """Print a line on stdout without breaking a progress bar being drawn."""
    tqdm.write(text, file=sys.stdout)
