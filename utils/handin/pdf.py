"""Export an executed notebook to PDF through nbconvert's LaTeX route (xelatex): code lines
wrapped, progress bars reduced to their final line, long outputs trimmed, and the team identity
(team.toml) in the title block and in the identity cell, refreshed at export time.
"""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path

import nbformat

from utils.core import paths
from utils.core.common import atomic_path
from utils.handin.execute import HandinError, executed_notebooks
from utils.handin.latex import french_date
from utils.handin.team import TEAM_OUTPUT, Team, load_team, team_bundle

MAX_OUTPUT_LINES = 40  # longer outputs keep their head and tail in the PDF


HEAD_LINES, TAIL_LINES = 20, 15


WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


# tqdm draws its bars with block characters that the PDF's monospace font lacks.
BAR_CHARS = re.compile("[\u2580-\u259f]")


# tqdm.auto's warning when ipywidgets is absent: noise in a hand-in PDF.
TQDM_NOISE = re.compile(r"TqdmWarning: IProgress not found|from \.autonotebook import tqdm")


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
    output = nbformat.v4.new_output("display_data", data=team_bundle(team),
                                    metadata={TEAM_OUTPUT: True})
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        marked = [o.get("metadata", {}).get(TEAM_OUTPUT) for o in cell.outputs]
        if any(marked):  # the setup cell: keep its other outputs (device, data), stamp the team
            cell.outputs = [output if mark else o for o, mark in zip(cell.outputs, marked,
                                                                     strict=True)]
        elif "show_team(" in cell.source:  # notebooks executed before the setup cell existed
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
