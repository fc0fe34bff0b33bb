"""What the notebooks display beyond plain outputs: DataFrames as LaTeX tables in the PDF, and
the package's own source code (``show_source``), highlighted in Jupyter and in the PDF.

The course grades the notebooks, yet the code lives in ``utils/``: ``show_source(obj)`` shows
the graded code where a teacher reads it, without copying it into the notebook.
"""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path

import pandas as pd
from pygments import highlight
from pygments.formatters import HtmlFormatter, LatexFormatter
from pygments.lexers import PythonLexer

from utils.core import paths
from utils.handin.latex import format_value

PDF_TABLE_ROWS = 40  # a longer DataFrame shows its first rows in the PDF (the .ipynb keeps all)


LONG_TEXT = 30  # text columns with longer values wrap inside a paragraph column in the PDF


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


def source_of(obj: object) -> tuple[str, str]:
    """(header naming the module, file and first line; the dedented source) of a package object."""
    lines, first = inspect.getsourcelines(obj)
    file = Path(inspect.getsourcefile(obj)).resolve()
    where = file.relative_to(paths.ROOT) if file.is_relative_to(paths.ROOT) else file
    name = f"{obj.__module__}.{obj.__qualname__}"
    return f"# {name}  ({where.as_posix()}, line {first})", textwrap.dedent("".join(lines))


def source_bundle(obj: object) -> dict[str, str]:
    """The MIME bundle of an object's source: highlighted HTML (Jupyter), LaTeX (the PDF)."""
    header, source = source_of(obj)
    code = f"{header}\n{source}"
    html = highlight(code, PythonLexer(), HtmlFormatter(noclasses=True, nobackground=True))
    # Same \PY macros as the code cells of nbconvert's LaTeX template: same colours, and the
    # hand-in template's Verbatim settings wrap long lines.
    latex = highlight(code, PythonLexer(), LatexFormatter(commandprefix="PY"))
    return {"text/plain": code, "text/html": html, "text/latex": latex}


def show_source(*objects: object) -> None:
    """Display the source of package functions/classes (highlighted; the PDF shows it too)."""
    from IPython.display import display  # IPython is there whenever a notebook runs this

    for obj in objects:
        display(source_bundle(obj), raw=True)
