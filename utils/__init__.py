"""Shared code of the HAI923 CLIP project: data, models, training, metrics, plots, hand-in.

Submodules are imported explicitly (``from utils.data import ...``) so that importing
``utils`` stays cheap and never pulls torch in by itself.
"""

__version__ = "0.1.0"
