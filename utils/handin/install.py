"""Install what ``requirements.txt`` asks for and this Python lacks, never replacing its torch.

``python -m utils.handin.install`` is what a notebook's setup cell runs first (it imports nothing
but the standard library, so it works before torch or pandas exist): on Colab it adds the few
packages Colab lacks and keeps Colab's own CUDA build of torch; in the project's ``.venv``
everything is already there and it does nothing. An installed torch/torchvision is pinned as a
pip constraint, so no requirement can pull a multi-gigabyte torch of another CUDA build.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tempfile
from pathlib import Path

try:  # the PyPA's parser; every pip carries a copy of it when the package itself is absent
    from packaging.requirements import Requirement
except ImportError:  # a bare Python: pip's vendored copy
    from pip._vendor.packaging.requirements import Requirement

from utils.core import paths

KEPT = ("torch", "torchvision")  # the runtime's own builds: pinned, never replaced


def requirement_lines(requirements: Path) -> list[str]:
    """The requirement specifiers of a requirements file (comments and blank lines dropped)."""
    lines = []
    for raw in requirements.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


NO_DEPS = "# no-deps:"  # a requirement installed without its dependencies (pip -r has no flag)


def no_deps_lines(requirements: Path) -> list[str]:
    """The specifiers written ``# no-deps: <spec>`` in a requirements file (pip -r skips them)."""
    return [raw.strip()[len(NO_DEPS):].strip()
            for raw in requirements.read_text(encoding="utf-8").splitlines()
            if raw.strip().startswith(NO_DEPS)]


def unsatisfied(lines: list[str]) -> list[str]:
    """The specifiers this Python does not satisfy (absent or too old)."""
    missing = []
    for line in lines:
        requirement = Requirement(line)
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(line)
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            missing.append(line)
    return missing


def missing_requirements(requirements: Path) -> list[str]:
    """The requirements (``# no-deps:`` ones excluded) this Python does not satisfy."""
    return unsatisfied(requirement_lines(requirements))


def kept_constraints() -> list[str]:
    """'torch==2.5.1+cu121'-style pins of the installed torch and torchvision (if any)."""
    pins = []
    for name in KEPT:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return pins


def install_requirements(requirements: Path | None = None) -> list[str]:
    """pip-install the missing requirements (the runtime's torch pinned), then the missing
    ``# no-deps:`` ones without their dependencies -> what was asked."""
    requirements = requirements or paths.ROOT / "requirements.txt"
    missing = missing_requirements(requirements)
    bare = unsatisfied(no_deps_lines(requirements))
    if missing:
        run_pip(missing)
    if bare:
        run_pip(bare, "--no-deps")
    return missing + bare


def run_pip(specifiers: list[str], *flags: str) -> None:
    """pip install ``specifiers`` with the runtime's torch and torchvision pinned."""
    print(f"[setup] installing {len(specifiers)} package(s): {', '.join(specifiers)}", flush=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as constraints:
        constraints.write("\n".join(kept_constraints()) + "\n")
    command = [sys.executable, "-m", "pip", "install", "-q", *flags, *specifiers,
               "-c", constraints.name]
    try:
        subprocess.run(command, check=True)
    except subprocess.CalledProcessError as error:
        raise SystemExit(f"[setup] pip failed ({error.returncode}) installing {specifiers}. Fix: "
                         f"run `{' '.join(command[:-2])}` in a terminal to see why, or install "
                         "requirements.txt by hand (keep the runtime's own torch).") from error
    finally:
        Path(constraints.name).unlink(missing_ok=True)


def main() -> int:
    """``python -m utils.handin.install``: install what is missing; silent when nothing is."""
    install_requirements()
    return 0


if __name__ == "__main__":
    sys.exit(main())
