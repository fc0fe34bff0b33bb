"""Beside the layers, ``utils.handin``: from a fresh runtime to the zip the course grades.

``install`` (the requirements this Python lacks, its torch kept; standard library only),
``setup`` (what every notebook's setup cell does), ``chain`` (the whole chain in one runtime),
``team`` (team.toml), ``display`` (what notebooks show: team, tables, source code), ``execute``
(papermill), ``pdf`` (nbconvert + xelatex), ``latex``, ``report`` (the LaTeX report and its page
limits), ``submission`` (build and check the zip), ``gpu_check`` (``make gpu-check``).
May import ``utils.core`` only. ``python -m utils.handin {notebooks,pdf}``.
"""

from utils.core.exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "utils.handin.setup": ("setup_notebook",),
    "utils.handin.display": ("show_source",),
    "utils.handin.chain": ("run_chain",),
})
