"""What the setup cell of every notebook does once the project is found (or cloned).

The cell itself only finds the repository from the working directory (else clones ``REPO_URL``
beside the notebook: a fresh Colab runtime starts in ``/content``), runs
``python -m utils.handin.install`` (the packages this Python lacks, its torch kept) and calls
``setup_notebook``, which:

* with ``PERSIST="drive"`` (Colab), mounts Google Drive and keeps ``models/`` and ``results/``
  there, so a notebook opened in a later runtime finds what the earlier ones saved (and reads
  the team's ``team.toml`` from there when it is);
* makes the data ready: the course zip uploaded beside the notebook or on Drive,
  ``$DATA_DIR``, else ``python -m utils.data fetch`` (built from Flickr8k or downloaded);
* sets the recipe and the deterministic switch, prints the runtime once (device, GPU,
  precision, recipe, versions) and any GPU torch cannot use, and shows the team.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

from utils.core import paths
from utils.core.common import resolve_smoke
from utils.core.device import (
    describe_runtime,
    resolve_recipe,
    runtime_info,
    set_deterministic,
    unused_gpu_message,
)
from utils.core.paths import env_flag
from utils.handin.display import enable_pdf_tables
from utils.handin.team import show_team

COURSE_ZIP = "flickr_subset2.zip"
DRIVE_MOUNT = Path("/content/drive")
DRIVE_FOLDER = "MyDrive/projet_clip_hai923"  # where PERSIST="drive" keeps models/ and results/
PERSIST_MODES = ("", "drive")
DATA_KINDS = ("course", "flickr8k", "none")


def in_colab() -> bool:
    """True inside a Google Colab runtime."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def drive_folder() -> Path:
    """The project's folder on Drive: ``$PERSIST_DIR``, else MyDrive/projet_clip_hai923."""
    return Path(os.environ.get("PERSIST_DIR", DRIVE_MOUNT / DRIVE_FOLDER))


def persist_on_drive() -> Path:
    """Mount Google Drive and point MODELS_DIR and RESULTS_DIR at the project's folder there."""
    if not in_colab() and "PERSIST_DIR" not in os.environ:
        raise RuntimeError("PERSIST='drive' keeps models and results on Google Drive and works "
                           "on Colab only. Elsewhere leave PERSIST='' (they stay in the "
                           "repository) or set MODELS_DIR and RESULTS_DIR.")
    if in_colab() and not (DRIVE_MOUNT / "MyDrive").is_dir():
        from google.colab import drive  # exists on Colab only

        drive.mount(str(DRIVE_MOUNT))
    base = drive_folder()
    os.environ["PERSIST_DIR"] = str(base)  # the chain copies the hand-in zip there too
    for name, variable in (("models", "MODELS_DIR"), ("results", "RESULTS_DIR")):
        os.environ[variable] = str(base / name)
        (base / name).mkdir(parents=True, exist_ok=True)
    if (base / "team.toml").is_file() and "TEAM_FILE" not in os.environ:
        os.environ["TEAM_FILE"] = str(base / "team.toml")  # the team's identity, kept on Drive
    print(f"[setup] models and results kept in {base}")
    return base


def course_zip_candidates() -> list[Path]:
    """Where an uploaded or Drive copy of the course zip may be, in order."""
    places = [Path.cwd(), paths.ROOT, paths.ROOT.parent, paths.data_dir()]
    if in_colab() or "PERSIST_DIR" in os.environ:
        places += [drive_folder(), DRIVE_MOUNT / "MyDrive"]
    return [place / COURSE_ZIP for place in dict.fromkeys(places)]


def has_course_data() -> bool:
    """True when the course subset is unpacked where the notebooks read it."""
    return (paths.subset_dir() / "captions.csv").is_file()


def has_flickr8k() -> bool:
    """True when the Flickr8k corpus is where the notebooks read it."""
    root = paths.flickr8k_dir()
    return (root / "Flickr8k_text" / "Flickr8k.token.txt").is_file()


def fetch_command(data: str) -> list[str]:
    """The ``python -m utils.data fetch`` command line for the data this notebook needs."""
    command = [sys.executable, "-m", "utils.data", "fetch"]
    found = [zip_path for zip_path in course_zip_candidates() if zip_path.is_file()]
    if found and not has_course_data():
        command += ["--zip", str(found[0])]
    if data == "flickr8k":
        command.append("--flickr8k")
    return command


def ensure_data(data: str) -> None:
    """Make the notebook's data ready (quietly when it already is)."""
    if data not in DATA_KINDS:
        raise ValueError(f"data={data!r}: choose one of {DATA_KINDS}")
    ready = has_course_data() and (data != "flickr8k" or has_flickr8k())
    if data == "none" or ready:
        return
    command = fetch_command(data)
    print(f"[setup] data: {' '.join(command[1:])}", flush=True)
    done = subprocess.run(command, cwd=paths.ROOT, check=False)
    if done.returncode:
        raise RuntimeError(
            f"the data is not ready (`{' '.join(command[1:])}` failed, see above). Fix: upload "
            f"{COURSE_ZIP} beside this notebook (Colab: the Files panel, /content) or to "
            f"{drive_folder()}, or set DATA_DIR to a folder holding flickr_subset2/, or "
            "FLICKR8K_DIR to an unpacked Flickr8k.")


def setup_notebook(recipe: str | None = None, persist: str = "", smoke: bool | None = None,
                   data: str = "course", deterministic: bool | None = None) -> dict:
    """Persistence, SMOKE mode, data, recipe and determinism for this notebook; print the
    runtime once and show the team -> runtime_info (what the metrics file records).

    ``smoke`` (the notebook's SMOKE parameter; None reads $SMOKE) also decides where models
    and results go: a SMOKE run writes into their ``smoke/`` folders, never over a full run."""
    start = time.perf_counter()
    # Libraries that import tqdm.auto (transformers, huggingface_hub) warn in a kernel without
    # ipywidgets; the project's own bars are plain text (utils.core.progress): nothing is lost.
    warnings.filterwarnings("ignore", message="IProgress not found")
    if persist not in PERSIST_MODES:
        raise ValueError(f"PERSIST={persist!r}: choose '' (keep models/ and results/ in the "
                         "repository) or 'drive' (Colab: on Google Drive)")
    if persist == "drive":
        persist_on_drive()
    os.environ["SMOKE"] = "1" if resolve_smoke(smoke) else "0"
    if resolve_smoke(smoke):
        print(f"[setup] SMOKE run: tiny data and epochs; models and results go to "
              f"{paths.models_dir()} and {paths.results_dir()}")
    ensure_data(data)
    os.environ["RECIPE"] = resolve_recipe(recipe)  # later calls (and subprocesses) agree
    set_deterministic(env_flag("DETERMINISTIC") if deterministic is None else deterministic)
    print(describe_runtime(), flush=True)
    message = unused_gpu_message()
    if message:
        print(f"WARNING: {message}", flush=True)
    if time.perf_counter() - start > 5:
        print(f"[setup] ready in {time.perf_counter() - start:.0f} s")
    enable_pdf_tables()
    show_team()
    return runtime_info()
