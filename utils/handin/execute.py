"""Run the notebooks in order with papermill into ``results/notebooks/`` (the sources stay
without outputs); stop at the first failing notebook, naming it and its failing cell.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import nbformat

from utils.core import paths
from utils.core.common import default_mode, remove_stale_temps

NOTEBOOK_NAME = re.compile(r"^\d{2}_[\w-]+\.ipynb$")


KERNEL_NAME = "hai923-venv"


class HandinError(RuntimeError):
    """A notebook failed or could not be exported; the message names the file and the fix."""


def list_notebooks(notebooks_dir: Path | None = None) -> list[Path]:
    """The course notebooks ``NN_name.ipynb`` in run order."""
    folder = notebooks_dir or paths.NOTEBOOKS_DIR
    return sorted(p for p in folder.glob("*.ipynb") if NOTEBOOK_NAME.match(p.name))


def select_notebooks(names: list[str] | None, notebooks_dir: Path | None = None) -> list[Path]:
    """Notebooks matching ``names`` ('03', '03_clip' or '03_clip.ipynb'); all when None."""
    available = list_notebooks(notebooks_dir)
    if not names:
        return available
    chosen = []
    for name in names:
        stem = Path(name).stem
        found = [p for p in available if p.stem == stem or p.stem.split("_")[0] == stem]
        if not found:
            raise HandinError(f"no notebook matches {name!r}: choose among "
                              f"{[p.stem for p in available]}")
        chosen += [p for p in found if p not in chosen]
    return sorted(chosen)


@contextlib.contextmanager
def venv_kernel() -> Iterator[str]:
    """A temporary Jupyter kernel spec running this very interpreter (the project's venv).

    A user-level 'python3' kernel (conda, system Jupyter) would otherwise run the notebooks
    with other packages than the ones installed here.
    """
    saved = os.environ.get("JUPYTER_PATH")
    with tempfile.TemporaryDirectory(prefix="hai923-kernel-") as tmp:
        spec_dir = Path(tmp) / "kernels" / KERNEL_NAME
        spec_dir.mkdir(parents=True)
        # --log-level=ERROR: the kernel warns on every start that its local TCP link is not
        # encrypted (ipykernel 7), which is noise in `make run` and alarms students.
        spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                         "--log-level=ERROR"],
                "display_name": "Python (HAI923 venv)", "language": "python"}
        (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
        os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [tmp, saved]))
        try:
            yield KERNEL_NAME
        finally:
            if saved is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = saved


def describe_failure(source: Path, failed: Path, error: Exception) -> str:
    """Name the notebook, the failing cell and the fix of a papermill execution error."""
    cell = getattr(error, "cell_index", None)
    count = getattr(error, "exec_count", None)
    ename, evalue = getattr(error, "ename", type(error).__name__), getattr(error, "evalue", error)
    cell_source = (getattr(error, "source", "") or "").strip().splitlines()
    first = f" (starts with: {cell_source[0][:80]!r})" if cell_source else ""
    where = f"cell {cell} [execution count {count}]{first}" if cell is not None else "startup"
    return (f"notebook {source.name} failed at {where}: {ename}: {evalue}\n"
            f"The executed copy with the full traceback is {failed}. Fix the cause, then rerun "
            f"`python -m utils.handin notebooks --only {source.stem[:2]}` (later notebooks "
            "were not run).")


def execute_notebook(source: Path, out_path: Path, parameters: dict, kernel: str) -> Path:
    """Execute one notebook with papermill (cwd = notebooks/) into ``out_path``, atomically.

    A failed run leaves ``NN_name.failed.ipynb`` (with the traceback) and never replaces the
    previous successful copy.
    """
    import papermill

    failed = out_path.with_suffix(".failed.ipynb")
    # papermill wants an output name ending in .ipynb, hence no utils.common.atomic_path here;
    # the name carries this process's id, so a run killed before its cleanup is removed next.
    remove_stale_temps(out_path.parent, f".{out_path.stem}.", ".ipynb")
    fd, name = tempfile.mkstemp(prefix=f".{out_path.stem}.{os.getpid()}.", suffix=".ipynb",
                                dir=out_path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        papermill.execute_notebook(
            str(source), str(tmp), parameters=parameters, kernel_name=kernel,
            cwd=str(source.parent), progress_bar=sys.stderr.isatty())
        restore_kernelspec(tmp, source)
        os.chmod(tmp, default_mode())
        os.replace(tmp, out_path)
    except Exception as error:  # papermill raises its own errors and the kernel's
        if tmp.exists() and tmp.stat().st_size:
            os.replace(tmp, failed)
        raise HandinError(describe_failure(source, failed, error)) from error
    finally:
        tmp.unlink(missing_ok=True)
    failed.unlink(missing_ok=True)
    return out_path


def restore_kernelspec(executed: Path, source: Path) -> None:
    """Give the executed copy the source's kernel spec instead of the temporary one."""
    nb = nbformat.read(executed, as_version=4)
    original = nbformat.read(source, as_version=4).metadata.get("kernelspec")
    if original:
        nb.metadata["kernelspec"] = original
    else:
        nb.metadata.pop("kernelspec", None)
    nbformat.write(nb, executed)


@contextlib.contextmanager
def smoke_environment(parameters: dict) -> Iterator[None]:
    """$SMOKE=1 while notebooks run with SMOKE=True: their kernels and the executed copies
    then use the smoke folders (results/smoke/notebooks/), never a full run's."""
    saved = os.environ.get("SMOKE")
    if parameters.get("SMOKE"):
        os.environ["SMOKE"] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("SMOKE", None)
        else:
            os.environ["SMOKE"] = saved


def execute_notebooks(names: list[str] | None = None, parameters: dict | None = None,
                      out_dir: Path | None = None,
                      notebooks_dir: Path | None = None) -> list[Path]:
    """Execute the notebooks in order into ``results/notebooks/`` (``results/smoke/notebooks/``
    with SMOKE=True); stop at the first failure."""
    with smoke_environment(parameters or {}):
        return execute_in_order(names, parameters or {}, out_dir, notebooks_dir)


def execute_in_order(names: list[str] | None, parameters: dict, out_dir: Path | None,
                     notebooks_dir: Path | None) -> list[Path]:
    """Execute the selected notebooks one after the other; stop at the first failure."""
    out_dir = Path(out_dir) if out_dir else paths.executed_notebooks_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = select_notebooks(names, notebooks_dir)
    if not sources:
        raise HandinError(f"no NN_*.ipynb notebook in {notebooks_dir or paths.NOTEBOOKS_DIR}")
    done = []
    with venv_kernel() as kernel:
        for source in sources:
            print(f"[handin] executing {source.name} -> {out_dir / source.name}", flush=True)
            done.append(execute_notebook(source, out_dir / source.name, parameters, kernel))
    return done


def executed_notebooks(out_dir: Path | None = None) -> list[Path]:
    """The executed notebooks in ``results/notebooks/`` in run order."""
    folder = Path(out_dir) if out_dir else paths.executed_notebooks_dir()
    return list_notebooks(folder) if folder.is_dir() else []
