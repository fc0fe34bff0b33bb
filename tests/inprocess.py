"""Run a notebook's code cells in this Python process (not in a Jupyter kernel), so that what
the test installs around it (a simulated GPU, a recorder) sees every operation the notebook
does. The ``parameters`` cell runs first, then the given values replace its own, as papermill
would inject them."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import matplotlib
import nbformat

matplotlib.use("Agg")  # figures are written to files; no window


def notebook_cells(path: Path) -> list[tuple[bool, str]]:
    """(is the parameters cell, source) of every code cell of a notebook."""
    notebook = nbformat.read(path, as_version=4)
    return [("parameters" in cell.metadata.get("tags", []), cell.source)
            for cell in notebook.cells if cell.cell_type == "code"]


def run_notebook(path: Path, parameters: dict, quiet: bool = True) -> dict:
    """Execute the code cells of ``path`` in order in a fresh namespace -> that namespace.
    An error names the notebook and the cell (its first line)."""
    from IPython.display import display

    namespace = {"__name__": "__notebook__", "display": display}
    output = io.StringIO()
    for number, (is_parameters, source) in enumerate(notebook_cells(path)):
        try:
            with contextlib.redirect_stdout(output) if quiet else contextlib.nullcontext():
                exec(compile(source, f"{path.name}, code cell {number}", "exec"), namespace)
        except Exception as error:
            first = source.strip().splitlines()[0] if source.strip() else ""
            raise AssertionError(f"{path.name}, code cell {number} ({first[:70]!r}) failed: "
                                 f"{type(error).__name__}: {error}") from error
        if is_parameters:
            namespace.update(parameters)
    matplotlib.pyplot.close("all")
    return namespace
