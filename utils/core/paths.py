"""Every path of the project, derived from the repository root.

Environment overrides (read at call time, so tests and notebooks can set them late):
``DATA_DIR`` (where datasets live), ``FLICKR8K_DIR`` (the Flickr8k corpus as it unpacks),
``MODELS_DIR`` and ``RESULTS_DIR`` (where checkpoints and results go). A SMOKE run (``SMOKE=1``:
tiny data, one or two epochs) writes into ``models/smoke/`` and ``results/smoke/`` instead, so
it never replaces what a full run saved.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


NOTEBOOKS_DIR = ROOT / "notebooks"


REPORT_DIR = ROOT / "rapport_latex"


TEAM_FILE = ROOT / "team.toml"


SUBSET_NAME = "flickr_subset2"


SMOKE_FOLDER = "smoke"  # a SMOKE run's models and results live in this sub-folder


TRUE_WORDS = {"1", "true", "yes", "on"}


def env_flag(name: str, default: bool = False) -> bool:
    """Read a boolean environment variable such as ``SMOKE=1``."""
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in TRUE_WORDS


def smoke_active() -> bool:
    """True during a SMOKE run (``$SMOKE``; a notebook's SMOKE parameter sets it)."""
    return env_flag("SMOKE")


# The shared read-only Flickr8k copy that sits beside a developer's or CI's checkout.
SHARED_FLICKR8K = ROOT.parent / "shared" / "data" / "flickr8k"


def data_dir() -> Path:
    """Folder holding the datasets (``$DATA_DIR`` or ``<root>/data``)."""
    return Path(os.environ.get("DATA_DIR", ROOT / "data")).expanduser().resolve()


def subset_dir() -> Path:
    """Folder of the course subset in its original layout (captions.csv, images/, captions/)."""
    return data_dir() / SUBSET_NAME


def flickr8k_dir() -> Path:
    """Flickr8k folder: ``$FLICKR8K_DIR``, else ``<data>/flickr8k``, else the shared copy."""
    if "FLICKR8K_DIR" in os.environ:
        return Path(os.environ["FLICKR8K_DIR"]).expanduser().resolve()
    local = data_dir() / "flickr8k"
    if local.exists() or not SHARED_FLICKR8K.exists():
        return local
    return SHARED_FLICKR8K


def models_dir() -> Path:
    """Folder of the checkpoints (``$MODELS_DIR`` or ``<root>/models``; its ``smoke/`` during a
    SMOKE run)."""
    base = Path(os.environ.get("MODELS_DIR", ROOT / "models")).expanduser().resolve()
    return base / SMOKE_FOLDER if smoke_active() else base


def results_dir() -> Path:
    """Folder of the results (``$RESULTS_DIR`` or ``<root>/results``; its ``smoke/`` during a
    SMOKE run)."""
    base = Path(os.environ.get("RESULTS_DIR", ROOT / "results")).expanduser().resolve()
    return base / SMOKE_FOLDER if smoke_active() else base


def figures_dir() -> Path:
    """Folder of the figures, ``results/images/``."""
    return results_dir() / "images"


def metrics_dir() -> Path:
    """Folder of the metrics files, ``results/metrics/``."""
    return results_dir() / "metrics"


def executed_notebooks_dir() -> Path:
    """Folder of the executed notebook copies and their PDFs, ``results/notebooks/``."""
    return results_dir() / "notebooks"


def figure_path(name: str) -> Path:
    """Path of a figure in ``results/images/`` (folder created on demand)."""
    figures_dir().mkdir(parents=True, exist_ok=True)
    return figures_dir() / name


def metrics_path(name: str) -> Path:
    """Path of a metrics file in ``results/metrics/`` (folder created on demand)."""
    metrics_dir().mkdir(parents=True, exist_ok=True)
    return metrics_dir() / name


def model_path(name: str) -> Path:
    """Path of a checkpoint in ``models/`` (folder created on demand)."""
    models_dir().mkdir(parents=True, exist_ok=True)
    return models_dir() / name
