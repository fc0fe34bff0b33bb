"""Build the LaTeX report (``rapport_latex/``) and enforce the course's page limits.

``python -m utils.handin.report build`` writes ``rapport_latex/generated/`` (the team identity from
team.toml, one table per ``results/metrics/NN_*.json``, the figures of ``results/images/``),
compiles ``main.tex`` with ``latexmk -xelatex`` into ``rapport_latex/build/main.pdf`` and exits
with status 1 when the body runs over 8 pages or the annexes over 2. A missing metrics file or
figure becomes a visible "manquant" box, never a crash. No analysis text is generated: the
course forbids AI-written report prose, so the sections hold boxed placeholders for the team.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from utils.core import paths
from utils.core.cli import run_command
from utils.core.common import load_json, write_text
from utils.handin.latex import escape_latex, format_value, french_date
from utils.handin.team import Team, TeamError, load_team, warning_line

MAX_BODY_PAGES = 8


MAX_ANNEX_PAGES = 2


MAX_COLUMNS = 12  # wider tables are unreadable even scaled to the text width


MAX_ROWS = 25


FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf")


SKIPPED_KEYS = {"config", "training", "clip_config", "clip_training", "history", "report",
                "confusion_matrix", "chance"}


NAME_KEYS = ("run", "name", "variant", "label", "model")


WRAP_HEADER = 16  # longer column titles wrap in a narrow box


INSTALL_TEX = ("install TeX Live (Debian/Ubuntu/Colab: apt-get install texlive-xetex "
               "texlive-fonts-recommended texlive-plain-generic latexmk)")


# One table per metrics file: its caption (a description of the numbers, not an analysis).
TABLES = {
    "00_data": "Jeu de données : images par classe et par partition (notebook 00).",
    "01_cnn": "Classifieur d'images : variantes évaluées sur le test (notebook 01).",
    "02_smallbert": "Classifieur de textes SmallBERT : poolings comparés sur le test "
                    "(notebook 02).",
    "03_clip": "CLIP : recherche texte-image et image-texte sur le test (notebook 03).",
    "04_pretrained_text_tower": "Tour de texte pré-entraînée : résultats sur le test "
                                "(notebook 04).",
    "05_caption_enrichment": "Enrichissement des légendes : résultats sur le test (notebook 05).",
}


HEADERS = {
    "accuracy": "Exactitude", "macro_f1": "F1 macro", "best_epoch": "Meilleure époque",
    "epochs_run": "Époques", "seconds": "Temps (s)", "train_time_s": "Temps (s)",
    "median_rank": "Rang médian", "class_precision@5": "Préc. classe@5",
    "zero_shot_accuracy": "Zéro-shot", "trainable_parameters": "Param. entraînables",
    "text_to_image": r"texte $\rightarrow$ image", "image_to_text": r"image $\rightarrow$ texte",
    "variants": "Variante", "poolings": "Pooling", "comparison": "Variante",
    "images_per_class_and_split": "Partition", "runs": "Variante",
    "reload_max_abs_diff": "Écart max. après rechargement",
    "reload_max_abs_logit_diff": "Écart max. après rechargement", "wall_time_s": "Durée (s)",
    "device": "Appareil", "vocab_size": "Vocabulaire", "kept_pooling": "Pooling retenu",
    "text_length": "Longueur du texte", "enrichment": "Enrichissement",
    "best_val_R5": "R@5 val.", "images": "Images", "captions": "Légendes",
    "caption_words": "Mots par légende", "captions_per_split": "Légendes par partition",
}


# Table rows of both retrieval directions ("t2i_R@5"): the direction, then the metric.
DIRECTIONS = {"t2i_": r"texte$\rightarrow$image ", "i2t_": r"image$\rightarrow$texte "}


CHANCE = " (hasard)"


class ReportError(RuntimeError):
    """The report could not be built or breaks the page limits; the message says how to fix it."""


@dataclass(frozen=True)
class PageCount:
    """Pages of the body (title to references) and of the annexes."""

    body: int
    annexes: int

    def problems(self) -> list[str]:
        """The page limits broken, as messages with their fix."""
        found = []
        if self.body > MAX_BODY_PAGES:
            found.append(f"the body has {self.body} pages, the course allows {MAX_BODY_PAGES}: "
                         "shorten the sections or move figures to the annexes")
        if self.annexes > MAX_ANNEX_PAGES:
            found.append(f"the annexes have {self.annexes} pages, the course allows "
                         f"{MAX_ANNEX_PAGES}: remove or shrink annex figures")
        return found


def team_tex(team: Team) -> str:
    """generated/team.tex: \\teamgroup, \\teamdate and the member rows of the title table."""
    rows = "\n".join("    " + " & ".join(escape_latex(v) for v in
                                         (m.name, m.first_name, m.student_card)) + r" \\"
                     for m in team.members)
    warning = warning_line(team)
    note = (r"\\ \textcolor{red}{\textbf{" + escape_latex(warning) + "}}") if warning else ""
    return ("% Written by utils/handin/report.py from team.toml: edit team.toml, not this file.\n"
            f"\\newcommand{{\\teamgroup}}{{{team.group}}}\n"
            f"\\newcommand{{\\teamdate}}{{{french_date()}{note}}}\n"
            f"\\newcommand{{\\teammembers}}{{%\n{rows}\n}}\n")


def header(key: str) -> str:
    """Column or row title (LaTeX): a French label for the known keys, else the key escaped."""
    if key.endswith(CHANCE):
        return header(key[: -len(CHANCE)]) + escape_latex(CHANCE)
    if key[:4] in DIRECTIONS:
        return DIRECTIONS[key[:4]] + header(key[4:])
    return HEADERS[key] if key in HEADERS else escape_latex(key)


def column_header(key: str) -> str:
    """A column title, wrapped in a narrow centred box when long (run descriptions)."""
    text = header(key)
    return rf"\parbox[b]{{2.8cm}}{{\centering {text}}}" if len(key) > WRAP_HEADER else text


def is_scalar(value: object) -> bool:
    """Numbers, booleans and short strings fit in a table cell."""
    return isinstance(value, (int, float, bool)) or (isinstance(value, str) and len(value) < 40)


def row_values(record: dict) -> dict:
    """A record's scalar fields, those of its nested 'test' dict (classifier summaries) first."""
    test = record.get("test") if isinstance(record.get("test"), dict) else {}
    values = {k: v for k, v in test.items() if is_scalar(v) and k not in SKIPPED_KEYS}
    values.update({k: v for k, v in record.items() if is_scalar(v) and k not in SKIPPED_KEYS})
    return values


def record_name_key(records: list[dict]) -> str | None:
    """The key naming each record of a list ('run', 'name'...): a string, unique per record."""
    candidates = [k for k in NAME_KEYS if k in records[0]]
    candidates += [k for k, v in records[0].items() if isinstance(v, str) and k not in candidates]
    for key in candidates:
        names = [r.get(key) for r in records]
        if all(isinstance(n, str) for n in names) and len(set(names)) == len(names):
            return key
    return None


def as_records(value: object) -> dict[str, dict] | None:
    """A dict of dicts, or a list of dicts (named by their 'run'/'name' key), else None."""
    if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        key = record_name_key(value)
        if key is None:
            return {str(i + 1): v for i, v in enumerate(value)}
        return {v[key]: {k: x for k, x in v.items() if k != key} for v in value}
    return None


def transpose(rows: dict[str, dict]) -> dict[str, dict]:
    """{row: {column: value}} -> {column: {row: value}}."""
    columns: dict[str, dict] = {}
    for name, values in rows.items():
        for key, value in values.items():
            columns.setdefault(key, {})[name] = value
    return columns


def tabular(rows: dict[str, dict], corner: str = "") -> str:
    """A booktabs tabular (scaled down to the text width if needed) from {row: {column: value}}.

    A table with many columns and few rows (variants x metrics) is transposed to stay readable.
    """
    columns: list[str] = []
    for values in rows.values():
        columns += [k for k in values if k not in columns]
    if len(columns) > 7 and len(rows) < len(columns):
        rows, corner = transpose(rows), ""
        columns = list(dict.fromkeys(k for values in rows.values() for k in values))
    columns = columns[:MAX_COLUMNS]
    names = list(rows)[:MAX_ROWS]
    lines = [" & ".join([header(corner)] + [column_header(c) for c in columns]) + r" \\",
             r"\midrule"]
    lines += [" & ".join([header(n)] + [format_value(rows[n][c]) if c in rows[n] else "--"
                                        for c in columns]) + r" \\" for n in names]
    spec = "l" + "r" * len(columns)
    return (f"\\begin{{adjustbox}}{{max width=\\linewidth}}\n\\begin{{tabular}}{{{spec}}}\n"
            "\\toprule\n" + "\n".join(lines) + "\n\\bottomrule\n\\end{tabular}\n"
            "\\end{adjustbox}\n")


def retrieval_rows(test: dict) -> dict[str, dict]:
    """Rows 'texte -> image' / 'image -> texte' (and their chance levels) of a CLIP test dict."""
    rows = {}
    chance = test.get("chance") if isinstance(test.get("chance"), dict) else {}
    for direction in ("text_to_image", "image_to_text"):
        if isinstance(test.get(direction), dict):
            rows[direction] = {k: v for k, v in test[direction].items() if is_scalar(v)}
            if isinstance(chance.get(direction), dict):
                rows[direction + CHANCE] = {
                    k: v for k, v in chance[direction].items() if is_scalar(v)}
    return rows


def table_blocks(data: dict) -> list[str]:
    """Tabulars for a metrics dict: CLIP retrieval, every dict of records, else key/value."""
    blocks = []
    test = data.get("test")
    if isinstance(test, dict) and retrieval_rows(test):
        blocks.append(tabular(retrieval_rows(test), "Sens (test)"))
    for key, value in data.items():
        records = as_records(value) if key not in SKIPPED_KEYS | {"test"} else None
        rows = {name: row_values(r) for name, r in (records or {}).items()}
        if rows and any(rows.values()):
            blocks.append(tabular({n: v for n, v in rows.items() if v}, key))
    if not blocks:
        flat = flatten_scalars(data)
        if flat:
            blocks.append(tabular({k: {"Valeur": v} for k, v in flat.items()}, "Mesure"))
    return blocks


def flatten_scalars(data: dict, prefix: str = "", depth: int = 0) -> dict:
    """Numeric leaves as {'a.b.c': value}, skipping configs, histories and reports."""
    found = {}
    for key, value in data.items():
        if key in SKIPPED_KEYS:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            found[name] = value
        elif isinstance(value, dict) and depth < 3:
            found.update(flatten_scalars(value, f"{name}.", depth + 1))
    return dict(list(found.items())[:MAX_ROWS])


def summary_line(data: dict) -> str:
    """Top-level scalars and small scalar dicts (device, reload difference, zero-shot...)."""
    items = []
    test = data.get("test") if isinstance(data.get("test"), dict) else {}
    for key, value in [*test.items(), *data.items()]:
        if key in SKIPPED_KEYS or key in {"test", "text_to_image", "image_to_text"}:
            continue
        if is_scalar(value):
            items.append(f"{header(key)} : {format_value(value)}")
        elif isinstance(value, dict) and as_records(value) is None:
            inner = ", ".join(f"{escape_latex(str(k))} {format_value(v)}"
                              for k, v in value.items() if is_scalar(v))
            if inner:
                items.append(f"{header(key)} : {inner}")
    return "; ".join(items)


def notebook_for(stem: str) -> str:
    """The notebook that writes results/metrics/<stem>.json (same NN prefix)."""
    prefix = stem.split("_")[0]
    found = sorted(paths.NOTEBOOKS_DIR.glob(f"{prefix}_*.ipynb"))
    return found[0].stem if found else f"{prefix} ({stem})"


def missing_box(message: str) -> str:
    """A visible red box replacing a table whose results are missing or unreadable."""
    return f"\\begin{{manquantbox}}{message}\\end{{manquantbox}}\n"


def table_tex(stem: str, metrics_dir: Path) -> str:
    """generated/table_<stem>.tex: the table of a metrics file, or a 'missing results' box."""
    path = metrics_dir / f"{stem}.json"
    notebook = escape_latex(notebook_for(stem))
    if not path.is_file():
        return missing_box(f"Résultats manquants : exécuter le notebook {notebook} "
                           f"(\\texttt{{results/metrics/{escape_latex(stem)}.json}} absent).")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return missing_box(f"Résultats illisibles ({escape_latex(str(error))[:120]}) : "
                           f"ré-exécuter le notebook {notebook}.")
    blocks = table_blocks(data) if isinstance(data, dict) else []
    if not blocks:
        return missing_box(f"Aucune mesure dans \\texttt{{{escape_latex(stem)}.json}} : "
                           f"ré-exécuter le notebook {notebook}.")
    line = summary_line(data)
    note = f"\\par\\vspace{{2pt}}{{\\footnotesize {line}}}\n" if line else ""
    return ("% Written by utils/handin/report.py from results/metrics: rerun `make report`.\n"
            f"\\begin{{table}}[H]\n\\centering\n\\caption{{{escape_latex(TABLES.get(stem, stem))}}}"
            f"\n\\label{{tab:{stem}}}\n" + "\\par\\vspace{4pt}\n".join(blocks) + note
            + "\\end{table}\n")


def extra_sections_tex(team: Team, metrics_dir: Path) -> str:
    """generated/extra.tex: a subsection per notebook listed in team.toml's ``notebooks`` (its
    results table and a box for the team's analysis); empty when none is listed."""
    blocks = ["% Written by utils/handin/report.py from team.toml's `notebooks`: one subsection "
              "per extra notebook.\n"]
    for number in team.extra_notebooks:
        stems = sorted(p.stem for p in metrics_dir.glob(f"{number}_*.json"))
        title = escape_latex(notebook_for(stems[0]) if stems else f"notebook {number}")
        blocks.append(f"\\subsection{{Notebook {title}}}\n\\arediger{{Objectif, méthode et "
                      "lecture des résultats de ce notebook (à rédiger par l'équipe).}\n")
        blocks += [table_tex(stem, metrics_dir) for stem in stems] or [missing_box(
            f"Résultats manquants : exécuter le notebook {number} (aucun "
            f"\\texttt{{results/metrics/{number}\\_*.json}}).")]
    return "\n".join(blocks)


def copy_figures(figures_dir: Path, target: Path) -> list[Path]:
    """Copy results/images/* into generated/figures/ (relative paths: no space/tilde issues)."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    if not figures_dir.is_dir():
        return []
    figures = [p for p in sorted(figures_dir.iterdir()) if p.suffix.lower() in FIGURE_SUFFIXES]
    return [Path(shutil.copy2(p, target / p.name)) for p in figures]


def generate(report_dir: Path | None = None, team: Team | None = None,
             results_dir: Path | None = None) -> Path:
    """Write rapport_latex/generated/: team.tex, table_*.tex and figures/; returns the folder."""
    report_dir = Path(report_dir or paths.REPORT_DIR)
    results_dir = Path(results_dir or paths.results_dir())
    out = report_dir / "generated"
    out.mkdir(parents=True, exist_ok=True)
    team = team or load_team()
    write_text(out / "team.tex", team_tex(team))
    write_text(out / "extra.tex", extra_sections_tex(team, results_dir / "metrics"))
    stems = set(TABLES) | {p.stem for p in (results_dir / "metrics").glob("*.json")}
    for stem in sorted(stems):
        write_text(out / f"table_{stem}.tex", table_tex(stem, results_dir / "metrics"))
    copy_figures(results_dir / "images", out / "figures")
    return out


def require_latex() -> None:
    """Fail with the install command when latexmk, xelatex or bibtex is missing."""
    missing = [tool for tool in ("latexmk", "xelatex", "bibtex") if shutil.which(tool) is None]
    if missing:
        raise ReportError(f"{', '.join(missing)} not found on PATH: {INSTALL_TEX}.")


def latex_errors(log: str) -> str:
    """The error lines of a LaTeX log ('! ...' and 'file:line: ...') with a little context."""
    lines = log.splitlines()
    picked = []
    for i, line in enumerate(lines):
        if line.startswith("!") or re.match(r"^[^\s:]+\.(tex|bib|sty|cls):\d+: ", line):
            picked += lines[i:i + 3]
    return "\n".join(picked[:30]) or "\n".join(lines[-30:])


def compile_report(report_dir: Path) -> Path:
    """latexmk -xelatex main.tex into report_dir/build/; returns the PDF."""
    build = report_dir / "build"
    command = ["latexmk", "-xelatex", "-interaction=nonstopmode", "-halt-on-error",
               "-file-line-error", "-outdir=build", "main.tex"]
    result = subprocess.run(command, cwd=report_dir, capture_output=True, text=True,
                            encoding="utf-8", errors="replace", check=False)
    log_file = build / "main.log"
    if result.returncode != 0:
        log = log_file.read_text(encoding="utf-8", errors="replace") if log_file.exists() else ""
        raise ReportError(f"LaTeX failed on {report_dir / 'main.tex'} (log: {log_file}):\n"
                          f"{latex_errors(log + result.stdout)}\nFix the line named above.")
    return build / "main.pdf"


def read_abspages(aux: Path) -> dict[str, int]:
    """Absolute pages of the zref labels written to the .aux (body-end, annex-start...)."""
    text = aux.read_text(encoding="utf-8", errors="replace") if aux.exists() else ""
    return {m.group(1): int(m.group(2)) for m in
            re.finditer(r"\\zref@newlabel\{([^}]*)\}\{.*?\\abspage\{(\d+)\}", text)}


def count_pages(aux: Path) -> PageCount:
    """Body and annex page counts from the labels annex-start and annex-end of main.tex.

    The annexes start on a fresh page (\\clearpage), so every page before it is body,
    floats flushed by that \\clearpage included.
    """
    pages = read_abspages(aux)
    missing = [k for k in ("annex-start", "annex-end") if k not in pages]
    if missing:
        raise ReportError(f"labels {missing} not found in {aux}: keep the lines "
                          "\\zlabel{annex-start} and \\zlabel{annex-end} of main.tex.")
    annexes = pages["annex-end"] - pages["annex-start"] + 1
    return PageCount(body=pages["annex-start"] - 1, annexes=annexes)


SMOKE_REFUSED = ("these are the results of a SMOKE run (tiny data, one or two epochs), not "
                 "figures to hand in. Fix: run the notebooks without SMOKE (`make run`), then "
                 "`make submit`")


def smoke_results(results_dir: Path) -> list[str]:
    """The metrics files of ``results_dir`` written by a SMOKE run (their runtime says so)."""
    found = []
    for path in sorted((Path(results_dir) / "metrics").glob("*.json")):
        runtime = load_json(path).get("runtime")
        if isinstance(runtime, dict) and runtime.get("smoke"):
            found.append(path.name)
    return found


def refuse_smoke(results_dir: Path) -> None:
    """Raise ReportError when the results come from a SMOKE run."""
    found = smoke_results(results_dir)
    if found:
        raise ReportError(f"{results_dir / 'metrics'} ({', '.join(found[:3])}): "
                          f"{SMOKE_REFUSED}.")


def build_report(report_dir: Path | None = None, team: Team | None = None,
                 results_dir: Path | None = None, allow_smoke: bool = False
                 ) -> tuple[Path, PageCount]:
    """Generate, compile and measure the report; raise ReportError past 8 + 2 pages, or on
    the results of a SMOKE run (``allow_smoke``: tests of the chain only)."""
    if not allow_smoke:
        refuse_smoke(Path(results_dir or paths.results_dir()))
    require_latex()
    report_dir = Path(report_dir or paths.REPORT_DIR)
    generate(report_dir, team, results_dir)
    pdf = compile_report(report_dir)
    count = count_pages(report_dir / "build" / "main.aux")
    if count.problems():
        raise ReportError(f"{pdf}: " + "; ".join(count.problems()) + ".")
    return pdf, count


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line: ``build [--report-dir DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m utils.handin.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="generate tables, compile, check page limits")
    build.add_argument("--report-dir", type=Path, default=None,
                       help="LaTeX folder (default: rapport_latex/)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m utils.handin.report``."""
    args = parse_args(argv)

    def work() -> str:
        pdf, count = build_report(args.report_dir)
        return (f"[report] {pdf}: body {count.body}/{MAX_BODY_PAGES} pages, annexes "
                f"{count.annexes}/{MAX_ANNEX_PAGES} pages")

    return run_command(work, (ReportError, TeamError), "[report] ERROR")


if __name__ == "__main__":
    sys.exit(main())
