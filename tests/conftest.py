"""Shared fixtures: the real Flickr8k copy, the course subset built from it, smoke runs.

Without Flickr8k (a fresh clone, no data) the tests that need the real corpus skip, saying so,
and the course subset is a generated one (tests/synthetic.py), so the fast tests still run.

Owned by the lead; helpers append fixtures at the end, never rewrite this file.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from synthetic import make_synthetic_flickr8k, make_synthetic_subset

from utils.core import paths
from utils.data.flickr8k import build_subset, has_flickr8k

# Tests and CI read the shared read-only Flickr8k copy beside the checkout unless told otherwise.
if "FLICKR8K_DIR" not in os.environ and paths.SHARED_FLICKR8K.exists():
    os.environ["FLICKR8K_DIR"] = str(paths.SHARED_FLICKR8K)


def has_real_flickr8k() -> bool:
    """True when the Flickr8k corpus is where paths.flickr8k_dir() looks."""
    return has_flickr8k(paths.flickr8k_dir())


@pytest.fixture(scope="session")
def flickr8k_dir() -> Path:
    """The real Flickr8k corpus; the tests that need it skip, naming the fix, without it."""
    root = paths.flickr8k_dir()
    if not has_flickr8k(root):
        pytest.skip(f"needs the Flickr8k corpus, not found at {root}: set FLICKR8K_DIR to the "
                    "unpacked corpus (Flicker8k_Dataset/, Flickr8k_text/)")
    return root


@pytest.fixture(scope="session")
def course_subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The course subset (4 x 150 images, 1 caption each) built once from Flickr8k, or a
    generated dataset of the same layout and size when Flickr8k is absent."""
    out = tmp_path_factory.mktemp("data") / paths.SUBSET_NAME
    if has_real_flickr8k():
        return build_subset(paths.flickr8k_dir(), out, per_class=150, captions_per_image=1)
    return make_synthetic_subset(out, per_class=150)


@pytest.fixture(scope="session")
def smoke_env(course_subset: Path, tmp_path_factory: pytest.TempPathFactory):
    """Environment of a smoke run: data, models and results all in a temporary folder; the
    real Flickr8k when it is there, else a generated one (a fresh clone runs every notebook)."""
    base = tmp_path_factory.mktemp("smoke")
    shutil.copytree(course_subset, base / "data" / paths.SUBSET_NAME)
    env = {"DATA_DIR": str(base / "data"), "MODELS_DIR": str(base / "models"),
           "RESULTS_DIR": str(base / "results"), "SMOKE": "1"}
    if not has_real_flickr8k():
        env["FLICKR8K_DIR"] = str(make_synthetic_flickr8k(base / "flickr8k"))
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield base
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def smoke_run(smoke_env: Path) -> Path:
    """Execute every notebook in order in smoke mode once; returns the results folder."""
    from utils.handin.execute import execute_notebooks

    execute_notebooks(parameters={"SMOKE": True})
    return paths.results_dir()  # the smoke folder: results/smoke/


@pytest.fixture(scope="session")
def course_split(course_subset: Path):
    """The course subset's captions with the shared train/val/test split column (classifiers)."""
    from utils.data.course import load_dataset

    return load_dataset(course_subset)


@pytest.fixture(scope="session")
def course_subset_5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small subset keeping all five captions per image (20 images per class), built once
    (generated when Flickr8k is absent)."""
    out = tmp_path_factory.mktemp("data5") / paths.SUBSET_NAME
    if has_real_flickr8k():
        return build_subset(paths.flickr8k_dir(), out, per_class=20, captions_per_image=5)
    return make_synthetic_subset(out, per_class=20, captions_per_image=5)


# --- hand-in helper -------------------------------------------------------------------------

FILLED_TEAM = """group = 7
[[members]]
name = "Dupont-Leclerc"
first_name = "Éloïse"
student_card = "21904567"

[[members]]
name = "N'Diaye"
first_name = "Mamadou"
student_card = "22001234"

[[members]]
name = "Martin"
first_name = "Zoé"
student_card = "21812345"
"""


@pytest.fixture
def team_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A filled team file (accents, hyphen, apostrophe; group 7) set as ``$TEAM_FILE``."""
    path = tmp_path / "team.toml"
    path.write_text(FILLED_TEAM, encoding="utf-8")
    monkeypatch.setenv("TEAM_FILE", str(path))
    return path


@pytest.fixture
def needs_tex() -> None:
    """Fail (never skip) when the TeX tools of the hand-in chain are missing."""
    missing = [t for t in ("xelatex", "latexmk", "bibtex", "pandoc", "pdftoppm", "pdftotext")
               if shutil.which(t) is None]
    if missing:
        pytest.fail(f"{missing} not found: install TeX Live and poppler (apt-get install "
                    "texlive-xetex texlive-fonts-recommended texlive-plain-generic latexmk "
                    "pandoc poppler-utils; .ci/run does it)")
