"""The whole chain in one runtime, phase by phase, each timed (``notebooks/colab.ipynb``):

1. ``notebooks``: ``python -m utils.handin notebooks --only ...`` executes the notebooks the
   hand-in covers (00-05 and team.toml's extras; or all of them) into ``results/notebooks/``;
2. ``tex``: the TeX tools the PDFs and the report need (apt on Colab; skipped when present);
3. ``submit``: ``make submit GROUP=N`` exports the PDFs, builds the report and ``N.zip``, and
   checks it; with ``PERSIST="drive"`` the zip is copied to the Drive folder too.

Every phase prints its command, streams what it prints, and ends with its duration; a failed
phase stops the chain with the command to run again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from utils.core import paths
from utils.handin.team import load_team

TEX_TOOLS = ("xelatex", "latexmk", "pandoc", "pdftoppm", "pdftotext")
TEX_PACKAGES = ("texlive-xetex", "texlive-fonts-recommended", "texlive-plain-generic",
                "latexmk", "pandoc", "poppler-utils")
CHOICES = ("handin", "all")


class ChainError(RuntimeError):
    """A phase failed; the message names the command to run again."""


def run_phase(name: str, commands: list[list[str]], env: dict | None = None) -> float:
    """Run ``commands`` in order from the repository root, output streamed -> seconds."""
    start = time.perf_counter()
    print(f"[chain] {name}: started", flush=True)
    for command in commands:
        print(f"[chain] $ {' '.join(command)}", flush=True)
        done = subprocess.run(command, cwd=paths.ROOT, env={**os.environ, **(env or {})},
                              check=False)
        if done.returncode:
            raise ChainError(f"phase {name!r} failed ({done.returncode}): `{' '.join(command)}`"
                             ". Fix what it printed above, then run this cell again (phases "
                             "already done are quick: notebooks can be rerun with --only).")
    seconds = time.perf_counter() - start
    print(f"[chain] {name}: done in {seconds / 60:.1f} min", flush=True)
    return seconds


def notebook_numbers(choice: str) -> list[str]:
    """The notebooks to execute: those the hand-in covers ('handin') or every one ('all')."""
    if choice not in CHOICES:
        raise ValueError(f"NOTEBOOKS={choice!r}: choose one of {CHOICES}")
    if choice == "all":
        return sorted(p.stem[:2] for p in paths.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
    return list(load_team().handin_notebooks())


def tex_commands() -> list[list[str]]:
    """apt-get commands installing the missing TeX tools ([] when all are there)."""
    if all(shutil.which(tool) for tool in TEX_TOOLS):
        return []
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise ChainError(f"TeX tools missing ({', '.join(TEX_TOOLS)}) and no root apt-get to "
                         f"install them. Fix: install {' '.join(TEX_PACKAGES)} (Debian/Ubuntu "
                         "names) with your system's package manager.")
    return [["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *TEX_PACKAGES]]


def copy_to_drive(zip_path: Path) -> Path | None:
    """Copy the hand-in zip to the project's Drive folder (``$PERSIST_DIR``, which
    ``PERSIST="drive"`` sets) when results are kept there."""
    folder = os.environ.get("PERSIST_DIR")
    if not folder or not zip_path.is_file():
        return None
    target = Path(folder) / zip_path.name
    shutil.copy2(zip_path, target)
    return target


def run_chain(group: int | None = None, notebooks: str = "handin", smoke: bool = False,
              handin: bool = True) -> dict[str, float]:
    """Notebooks, TeX and the checked hand-in zip -> seconds of each phase."""
    numbers = notebook_numbers(notebooks)
    run = [sys.executable, "-m", "utils.handin", "notebooks", "--only", *numbers]
    times = {"notebooks": run_phase("notebooks", [run + (["--smoke"] if smoke else [])])}
    if handin:
        times["tex"] = run_phase("tex", tex_commands(), {"DEBIAN_FRONTEND": "noninteractive"})
        group = group or load_team().group
        submit = ["make", "submit", f"GROUP={group}", "SYSTEM_PYTHON=1", f"PY={sys.executable}"]
        times["submit"] = run_phase("submit", [submit])
        copied = copy_to_drive(paths.ROOT / f"{group}.zip")
        print(f"[chain] hand-in: {paths.ROOT / f'{group}.zip'}"
              + (f" (copied to {copied})" if copied else ""))
    print("[chain] " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in times.items()))
    return times
