"""The notebooks: they import the package's small API only, their pointers to code are right,
their code fits a PDF page, and every one of them runs on a fresh clone (SMOKE, generated data
when Flickr8k is absent) without a warning or stray stderr in its outputs."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import nbformat
import pytest

from utils.core import paths
from utils.handin.execute import list_notebooks

NOTEBOOKS = sorted(paths.NOTEBOOKS_DIR.glob("*.ipynb"))
SUBPACKAGES = ("utils.core", "utils.data", "utils.models", "utils.eval", "utils.train",
               "utils.experiments", "utils.handin")
REFERENCE = re.compile(r"\butils(?:[/.]\w+)+(?:\.py)?")
# What an executed notebook must not show: a warning, a traceback, text on stderr.
NOISE = re.compile(r"Warning|warnings\.warn|Traceback|IProgress|DeprecationWarning")


def code_cells(path: Path) -> list[str]:
    """Sources of the code cells of a notebook."""
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def utils_imports(path: Path) -> set[str]:
    """Every ``utils`` module a notebook imports from."""
    found = set()
    for source in code_cells(path):
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("utils"):
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("utils")}
    return found


def resolves(reference: str) -> bool:
    """True when ``utils/x/y.py`` exists, or ``utils.x.y.name`` imports."""
    if "/" in reference:
        return (paths.ROOT / reference).exists()
    parts = reference.split(".")
    for end in range(len(parts), 1, -1):
        try:
            found = importlib.import_module(".".join(parts[:end]))
        except ImportError:
            continue
        for attribute in parts[end:]:
            if not hasattr(found, attribute):
                return False
            found = getattr(found, attribute)
        return True
    return False


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_every_name_a_subpackage_offers_imports(package) -> None:
    module = importlib.import_module(package)
    assert module.__all__ == sorted(module.__all__) and module.__all__
    missing = [name for name in module.__all__ if getattr(module, name, None) is None]
    assert not missing, f"{package}.__all__ names what it cannot give: {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_import_only_from_the_subpackages(path) -> None:
    modules = utils_imports(path)
    inside = sorted(modules - set(SUBPACKAGES))
    assert not inside, f"{path.name} imports from inside the subpackages: {inside}"
    for module in modules:
        exported = set(importlib.import_module(module).__all__)
        for source in code_cells(path):
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.ImportFrom) and node.module == module:
                    names = {a.name for a in node.names}
                    assert names <= exported, f"{path.name}: {sorted(names - exported)} are " \
                                              f"not in {module}.__all__"


def test_notebook_03_imports_from_at_most_six_places() -> None:
    places = utils_imports(next(paths.NOTEBOOKS_DIR.glob("03_*.ipynb")))
    assert len(places) <= 6, sorted(places)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_pointer_to_code_in_the_markdown_exists(path) -> None:
    wrong = []
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "markdown":
            for quoted in re.findall(r"`([^`]*)`", cell.source):
                wrong += [ref for ref in REFERENCE.findall(quoted) if not resolves(ref)]
    assert not wrong, f"{path.name} points to code that is not there: {wrong}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_code_lines_fit_the_pdf_page(path) -> None:
    long = [line for source in code_cells(path) for line in source.splitlines()
            if len(line) > 100]
    assert not long, f"{path.name}: {len(long)} code line(s) over 100 characters: {long[:2]}"


def noise_of(executed: Path) -> list[str]:
    """Outputs of an executed notebook that are warnings, tracebacks or stderr."""
    found = []
    for number, cell in enumerate(nbformat.read(executed, as_version=4).cells):
        for output in cell.get("outputs", []):
            text = output.get("text", "") or "".join(
                str(v) for k, v in output.get("data", {}).items() if k.startswith("text/"))
            if output.get("name") == "stderr" and text.strip():
                found.append(f"cell {number}, stderr: {text.strip()[:200]}")
            elif output.get("output_type") == "error" or NOISE.search(text):
                found.append(f"cell {number}: {(text or output.get('ename', ''))[:200]}")
    return found


@pytest.mark.slow
def test_every_notebook_runs_on_a_fresh_clone_without_warnings(smoke_run: Path) -> None:
    executed = {p.name for p in (smoke_run / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    assert executed == {p.name for p in list_notebooks()}
    noisy = {name: noise_of(smoke_run / "notebooks" / name) for name in sorted(executed)}
    noisy = {name: lines for name, lines in noisy.items() if lines}
    assert not noisy, "\n".join(f"{name}: {line}" for name, lines in noisy.items()
                                for line in lines)
