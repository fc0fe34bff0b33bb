"""Run the notebooks in order with papermill, then export each executed copy to PDF (xelatex).

``python -m utils.handin notebooks [--only NN ...] [--smoke]`` executes ``notebooks/NN_*.ipynb``
into ``results/notebooks/`` (the sources stay without outputs) and stops at the first failing
notebook, naming it and its failing cell. ``python -m utils.handin pdf`` exports every executed
notebook to a PDF beside it through nbconvert's LaTeX route: code lines wrapped, progress bars
reduced to their final line, long outputs trimmed, and the team identity (team.toml) in the
title block and in the identity cell, refreshed at export time so a team may fill team.toml
after running the notebooks.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pandas as pd

from utils import paths
from utils.common import atomic_path, default_mode
from utils.report import format_value, french_date
from utils.team import Team, load_team, team_bundle

NOTEBOOK_NAME = re.compile(r"^\d{2}_[\w-]+\.ipynb$")
KERNEL_NAME = "hai923-venv"
MAX_OUTPUT_LINES = 40  # longer outputs keep their head and tail in the PDF
HEAD_LINES, TAIL_LINES = 20, 15
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
# tqdm draws its bars with block characters that the PDF's monospace font lacks.
BAR_CHARS = re.compile("[\u2580-\u259f]")
# tqdm.auto's warning when ipywidgets is absent: noise in a hand-in PDF.
TQDM_NOISE = re.compile(r"TqdmWarning: IProgress not found|from \.autonotebook import tqdm")
PDF_TABLE_ROWS = 40  # a longer DataFrame shows its first rows in the PDF (the .ipynb keeps all)
LONG_TEXT = 30  # text columns with longer values wrap inside a paragraph column in the PDF
INSTALL_TEX = ("install TeX Live and pandoc (Debian/Ubuntu/Colab: apt-get install texlive-xetex "
               "texlive-fonts-recommended texlive-plain-generic pandoc)")

# The nbconvert LaTeX template, extended: one member per line in the title block, 2 cm margins,
# and code lines that wrap even inside long tokens the stock template cannot break.
LATEX_TEMPLATE = r"""((*- extends 'index.tex.j2' -*))
((* block packages *))
((( super() )))
((* endblock packages *))
((* block author *))
\author{((*- for author in nb.metadata.get('authors', []) -*))
((( author.name | escape_latex )))((* if not loop.last *))\\((* endif *))
((*- endfor -*))}
((* endblock author *))
((* block margins *))
\geometry{verbose,tmargin=2cm,bmargin=2cm,lmargin=2cm,rmargin=2cm}
% The stock wrapper breaks code lines at spaces and punctuation only; XeTeX inter-character
% penalties (inside Verbatim only) let a long token (string, path, name) break anywhere too.
% (A count register, not digits: digits inside the inserted tokens would insert again.)
\newcount\handinbreakpenalty \handinbreakpenalty=5000
\XeTeXinterchartoks 0 0 = {\penalty\handinbreakpenalty}
\newcommand{\handinbreakanywhere}{\XeTeXinterchartokenstate=1\relax}
\fvset{formatcom=\handinbreakanywhere}
((* endblock margins *))
"""


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
    # papermill wants an output name ending in .ipynb, hence no utils.common.atomic_path here.
    fd, name = tempfile.mkstemp(prefix=f".{out_path.stem}.", suffix=".ipynb", dir=out_path.parent)
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


def execute_notebooks(names: list[str] | None = None, parameters: dict | None = None,
                      out_dir: Path | None = None,
                      notebooks_dir: Path | None = None) -> list[Path]:
    """Execute the notebooks in order into ``results/notebooks/``; stop at the first failure."""
    out_dir = Path(out_dir) if out_dir else paths.executed_notebooks_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = select_notebooks(names, notebooks_dir)
    if not sources:
        raise HandinError(f"no NN_*.ipynb notebook in {notebooks_dir or paths.NOTEBOOKS_DIR}")
    done = []
    with venv_kernel() as kernel:
        for source in sources:
            print(f"[handin] executing {source.name} -> {out_dir / source.name}", flush=True)
            done.append(execute_notebook(source, out_dir / source.name, parameters or {}, kernel))
    return done


def column_spec(frame: pd.DataFrame) -> str:
    """tabular column spec: index levels 'l', numbers 'r', long text wrapped in p{} columns."""
    kinds = []
    for position in range(frame.shape[1]):
        column = frame.iloc[:, position]
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            kinds.append("r")
        elif column.astype(str).str.len().max() > LONG_TEXT:
            kinds.append("p")
        else:
            kinds.append("l")
    width = 0.6 / max(kinds.count("p"), 1)  # the long texts share 60 % of the line
    wrapped = rf"p{{{width:.2f}\linewidth}}"
    return "l" * frame.index.nlevels + "".join(wrapped if k == "p" else k for k in kinds)


def dataframe_latex(frame: pd.DataFrame) -> str:
    """A DataFrame as LaTeX for the notebook PDFs: booktabs, escaped, at most the line width.

    Without it nbconvert prints the text form, which pandas cuts into column groups ending in
    '\\' once it is wider than 80 characters: unreadable for the top-5 tables.
    """
    shown = frame.head(PDF_TABLE_ROWS)
    body = shown.to_latex(escape=True, column_format=column_spec(shown),
                          float_format=format_value, multirow=False)
    more = (f"\\par{{\\footnotesize ({len(shown)} premières lignes sur {len(frame)})}}"
            if len(frame) > len(shown) else "")
    return ("\\begin{center}\\adjustbox{max width=\\linewidth}{" + body.strip() + "}"
            + more + "\\end{center}")


def enable_pdf_tables() -> None:
    """In a notebook, give every DataFrame output a LaTeX form that the PDF export uses
    (Jupyter and Colab keep showing the HTML table); does nothing outside IPython."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is not None:
        shell.display_formatter.formatters["text/latex"].for_type(pd.DataFrame, dataframe_latex)


def collapse_carriage_returns(text: str) -> str:
    """Keep what a terminal would show: each line's text after its last carriage return."""
    lines = text.split("\n")
    kept = []
    for line in lines:
        parts = [p for p in line.split("\r") if p.strip()]
        kept.append(parts[-1] if parts else "")
    return "\n".join(kept)


def trim_lines(text: str, max_lines: int = MAX_OUTPUT_LINES) -> str:
    """Keep the head and tail of a text longer than ``max_lines`` lines, with a marker."""
    lines = text.splitlines()
    if len(lines) <= max_lines:
        return text
    cut = len(lines) - HEAD_LINES - TAIL_LINES
    marker = f"[... {cut} lines trimmed ...]"
    return "\n".join(lines[:HEAD_LINES] + [marker] + lines[-TAIL_LINES:]) + "\n"


def clean_stream(text: str) -> str:
    """A stream for print: progress bars reduced to their final state, noise removed, trimmed."""
    text = BAR_CHARS.sub("#", collapse_carriage_returns(text))
    lines = [line for line in text.split("\n") if not TQDM_NOISE.search(line)]
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return trim_lines(text)


def merge_streams(outputs: list) -> list:
    """Join consecutive stream outputs of the same name (tqdm writes one per update)."""
    merged: list = []
    for output in outputs:
        previous = merged[-1] if merged else None
        if (output.output_type == "stream" and previous is not None
                and previous.output_type == "stream" and previous.name == output.name):
            previous.text += output.text
        else:
            merged.append(copy.deepcopy(output))
    return merged


def clean_outputs(cell) -> None:
    """Drop widget outputs and empty streams; clean streams; trim long plain-text results."""
    kept = []
    for output in merge_streams(cell.get("outputs", [])):
        if WIDGET_MIME in output.get("data", {}):
            continue
        if output.output_type == "stream":
            output.text = clean_stream(output.text)
            if not output.text.strip():
                continue
        elif "text/plain" in output.get("data", {}):
            output.data["text/plain"] = trim_lines(output.data["text/plain"])
        kept.append(output)
    cell.outputs = kept


def notebook_title(nb, fallback: str) -> str:
    """The first Markdown '# heading' of the notebook, else ``fallback``."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return re.sub(r"[*_`]", "", line[2:]).strip()
    return fallback


def stamp_identity(nb, team: Team, fallback_title: str):
    """Write the team in the notebook metadata (PDF title block) and its identity cell output."""
    title = notebook_title(nb, fallback_title)
    nb.metadata["title"] = title
    nb.metadata["authors"] = [{"name": member.label()} for member in team.members]
    nb.metadata["date"] = f"HAI923, groupe {team.group}, {french_date()}"
    nb.metadata["hai923_team"] = {"group": team.group, "members": [
        {"name": m.name, "first_name": m.first_name, "student_card": m.student_card}
        for m in team.members]}
    output = nbformat.v4.new_output("display_data", data=team_bundle(team))
    for cell in nb.cells:
        if cell.cell_type == "code" and "show_team(" in cell.source:
            cell.outputs = [output]
    return nb


def prepare_for_pdf(nb, team: Team, fallback_title: str):
    """A copy of the executed notebook ready for LaTeX: identity stamped, outputs cleaned."""
    nb = stamp_identity(copy.deepcopy(nb), team, fallback_title)
    for cell in nb.cells:
        if cell.cell_type == "code":
            clean_outputs(cell)
    return nb


def require_tex() -> None:
    """Fail with the install command when xelatex or pandoc is missing."""
    missing = [tool for tool in ("xelatex", "pandoc") if shutil.which(tool) is None]
    if missing:
        raise HandinError(f"{' and '.join(missing)} not found on PATH: {INSTALL_TEX}.")


def make_exporter():
    """nbconvert's PDFExporter with the hand-in template (xelatex, wrapped code lines)."""
    import jinja2
    from nbconvert import PDFExporter

    exporter = PDFExporter(extra_loaders=[jinja2.DictLoader({"handin.tex.j2": LATEX_TEMPLATE})])
    exporter.template_file = "handin.tex.j2"
    exporter.latex_command = ["xelatex", "-interaction=nonstopmode", "{filename}"]
    return exporter


def export_pdf(notebook: Path, pdf_path: Path | None = None, team: Team | None = None) -> Path:
    """Export one executed notebook to PDF (beside it by default), atomically."""
    from nbconvert.exporters.pdf import LatexFailed

    require_tex()
    notebook = Path(notebook)
    pdf_path = Path(pdf_path) if pdf_path else notebook.with_suffix(".pdf")
    nb = prepare_for_pdf(nbformat.read(notebook, as_version=4), team or load_team(),
                         notebook.stem)
    resources = {"metadata": {"name": notebook.stem, "path": str(notebook.parent)}}
    try:
        body, _ = make_exporter().from_notebook_node(nb, resources=resources)
    except LatexFailed as error:
        tail = "\n".join(str(error.output).splitlines()[-25:])
        raise HandinError(f"xelatex failed on {notebook.name}:\n{tail}\nFix: look for the "
                          "output or Markdown cell named in the log above.") from error
    with atomic_path(pdf_path) as tmp:
        tmp.write_bytes(body)
    return pdf_path


def executed_notebooks(out_dir: Path | None = None) -> list[Path]:
    """The executed notebooks in ``results/notebooks/`` in run order."""
    folder = Path(out_dir) if out_dir else paths.executed_notebooks_dir()
    return list_notebooks(folder) if folder.is_dir() else []


def export_pdfs(out_dir: Path | None = None, team: Team | None = None) -> list[Path]:
    """Export every executed notebook of ``results/notebooks/`` to PDF beside it."""
    notebooks = executed_notebooks(out_dir)
    if not notebooks:
        folder = out_dir or paths.executed_notebooks_dir()
        raise HandinError(f"no executed notebook in {folder}: run `make notebooks` first.")
    team = team or load_team()
    pdfs = []
    for notebook in notebooks:
        print(f"[handin] exporting {notebook.name} -> {notebook.with_suffix('.pdf').name}",
              flush=True)
        pdfs.append(export_pdf(notebook, team=team))
    return pdfs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line: ``notebooks [--only NN ...] [--smoke]`` or ``pdf``."""
    parser = argparse.ArgumentParser(prog="python -m utils.handin", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("notebooks", help="execute notebooks/NN_*.ipynb in order")
    run.add_argument("--only", nargs="+", metavar="NN", help="only these notebooks (e.g. 01 03)")
    run.add_argument("--smoke", action="store_true", help="SMOKE=True: tiny data, seconds each")
    commands.add_parser("pdf", help="export results/notebooks/*.ipynb to PDF (xelatex)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m utils.handin``."""
    args = parse_args(argv)
    try:
        if args.command == "notebooks":
            done = execute_notebooks(args.only, {"SMOKE": True} if args.smoke else None)
        else:
            done = export_pdfs()
    except (HandinError, ValueError) as error:
        print(f"[handin] ERROR: {error}", file=sys.stderr)
        return 1
    print(f"[handin] {len(done)} file(s) written in {done[0].parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
