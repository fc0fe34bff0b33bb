"""Build and check the hand-in zip: ``<group>.zip`` = the report and every notebook twice.

``python -m utils.handin.submission build [--group N]`` writes ``<group>.zip`` at the
repository root with ``<group>.pdf`` (the report, rebuilt) and ``<group>_<notebook>.ipynb`` plus
``<group>_<notebook>.pdf`` for each executed notebook of ``results/notebooks/`` (PDFs
re-exported when older than the notebook or team.toml), nothing else; then checks it.
``python -m utils.handin.submission check ZIP`` checks any zip, ours or hand-made, against the
course's rules (names, formats, twins, members' identities in every file, 8 + 2 report pages, no
stray entries, a plain flat zip) and lists every violation with its fix (exit status 1).
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import time
import unicodedata
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from utils.core import paths
from utils.core.common import atomic_path
from utils.handin.execute import HandinError, executed_notebooks, list_notebooks
from utils.handin.pdf import export_pdf, stamp_identity
from utils.handin.report import (
    MAX_ANNEX_PAGES,
    MAX_BODY_PAGES,
    SMOKE_REFUSED,
    ReportError,
    build_report,
)
from utils.handin.team import FIELDS, Team, TeamError, load_team, placeholder_fields, require_filled

ZIP_NAME = re.compile(r"^(\d+)\.zip$")


NOTEBOOK_STEM = r"[\w-]+"


STRAY_PARTS = ("__MACOSX", ".DS_Store", ".ipynb_checkpoints", "Thumbs.db", "desktop.ini")


STRAY_SUFFIXES = {".pt": "model checkpoint", ".pth": "model checkpoint", ".ckpt": "checkpoint",
                  ".safetensors": "model weights", ".png": "image", ".jpg": "image",
                  ".jpeg": "image", ".csv": "data file", ".npy": "data file", ".zip": "archive",
                  ".tex": "LaTeX source", ".py": "source file", ".txt": "text file"}


ANNEX_HEADING = re.compile(r"^(?:[a-z0-9]{1,3}[.)]?\s+)?(annexes?|appendix|appendices)\b")


QUOTES = str.maketrans({"’": "'", "‘": "'", "ʼ": "'", "`": "'", "‐": "-", "‑": "-"})


class SubmissionError(RuntimeError):
    """The zip could not be built or breaks the hand-in rules; the message lists the fixes."""


@dataclass
class CheckResult:
    """The violations found in a zip (each 'problem. Fix: ...') and a summary of what is fine."""

    path: Path
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, problem: str, fix: str) -> None:
        """Record one violation with its fix."""
        self.violations.append(f"{problem}. Fix: {fix}")

    @property
    def ok(self) -> bool:
        """True when no rule is broken."""
        return not self.violations


def normalize(text: str) -> str:
    """Case-folded, accent-free, whitespace-free text (PDF extraction breaks lines anywhere)."""
    text = unicodedata.normalize("NFKD", text.translate(QUOTES))
    text = "".join(c for c in text if not unicodedata.combining(c))
    return re.sub(r"\s+", "", text.casefold())


def pdf_pages(data: bytes) -> list[str]:
    """Text of each page of a PDF (pypdf)."""
    from pypdf import PdfReader

    return [page.extract_text() or "" for page in PdfReader(io.BytesIO(data)).pages]


def notebook_text(data: bytes) -> str:
    """Every string of a notebook's JSON (sources, outputs, metadata), joined."""
    found: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                found.append(str(key))
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(json.loads(data.decode("utf-8")))
    return "\n".join(found)


def missing_identity(text: str, team: Team) -> list[str]:
    """The member fields ('DUPONT first_name') that ``text`` does not contain."""
    haystack = normalize(text)
    return [f"{member.name} {field_name}" for member in team.members for field_name in FIELDS
            if normalize(getattr(member, field_name)) not in haystack]


def shows_placeholders(text: str) -> bool:
    """True when the text still shows a team.toml placeholder such as '<NOM 1>'."""
    return bool(re.search(r"<(NOM|Prénom|Prenom|numéro de carte|numero de carte) \d>", text))


def check_entries(infos: list[zipfile.ZipInfo], group: int, result: CheckResult) -> list[str]:
    """Flat, unencrypted, no stray entries, every name allowed; returns the well-named files."""
    allowed = re.compile(rf"^{group}(?:_{NOTEBOOK_STEM}\.(?:ipynb|pdf)|\.pdf)$")
    good = []
    for info in infos:
        name = info.filename
        if info.flag_bits & 0x1:
            result.add(f"{name} is encrypted", "zip without a password")
        if any(part in name for part in STRAY_PARTS):
            result.add(f"stray entry {name} (system or editor file)",
                       "rebuild the zip with `make submit`, or `zip -d` that entry")
        elif info.is_dir() or "/" in name or "\\" in name:
            result.add(f"{name} is a folder or inside a folder", "put the files at the top "
                       "level of the zip, no folders (`make submit` does)")
        elif Path(name).suffix.lower() in STRAY_SUFFIXES:
            kind = STRAY_SUFFIXES[Path(name).suffix.lower()]
            result.add(f"stray {kind} {name}", "the zip holds only the report and the notebooks "
                       "(.ipynb + .pdf): remove it")
        elif not allowed.match(name):
            result.add(f"{name} is not a hand-in name", misnamed_fix(name, group))
        else:
            good.append(name)
    return good


def misnamed_fix(name: str, group: int) -> str:
    """How to rename a wrongly named file."""
    path = Path(name)
    if path.suffix == ".ipynb" or (path.suffix == ".pdf" and re.match(r"^\d{2}_", path.stem)):
        stem = re.sub(r"^\d+_(?=\d{2}_)", "", path.stem)
        return f"rename it {group}_{stem}{path.suffix} (group number, '_', notebook name)"
    if path.suffix == ".pdf":
        return f"the report must be named {group}.pdf and notebooks {group}_<notebook>.pdf"
    return f"remove it: the zip holds only {group}.pdf and {group}_<notebook>.ipynb/.pdf"


def check_twins(files: list[str], group: int, result: CheckResult) -> list[str]:
    """The report is there; each notebook comes as .ipynb and .pdf; returns the notebook stems."""
    if f"{group}.pdf" not in files:
        result.add(f"the report {group}.pdf is missing",
                   "build it with `make report` and put it in the zip as "
                   f"{group}.pdf (`make submit` does)")
    notebooks = {Path(n).stem for n in files if n.endswith(".ipynb")}
    pdfs = {Path(n).stem for n in files if n.endswith(".pdf") and n != f"{group}.pdf"}
    for stem in sorted(notebooks - pdfs):
        result.add(f"{stem}.ipynb has no {stem}.pdf", "export it with `make pdf` and add it")
    for stem in sorted(pdfs - notebooks):
        result.add(f"{stem}.pdf has no {stem}.ipynb", "add the executed notebook "
                   "(results/notebooks/) under that name")
    if not notebooks and not pdfs:
        result.add("no notebook in the zip", "add each executed notebook as "
                   f"{group}_<notebook>.ipynb and {group}_<notebook>.pdf")
    return sorted(notebooks | pdfs)


def check_notebook(name: str, data: bytes, result: CheckResult) -> str:
    """A readable, executed notebook without error outputs; returns its text."""
    try:
        nb = nbformat.reads(data.decode("utf-8"), as_version=4)
    except Exception as error:  # nbformat raises several JSON/validation error types
        result.add(f"{name} is not a readable notebook ({error})",
                   "copy the .ipynb from results/notebooks/")
        return ""
    code = [c for c in nb.cells if c.cell_type == "code"]
    if code and not any(c.get("outputs") for c in code):
        result.add(f"{name} has no outputs", "hand in the executed copy from results/notebooks/ "
                   "(`make notebooks`), not the source notebook")
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    if errors:
        result.add(f"{name} contains an error output ({errors[0].get('ename')})",
                   "fix the failing cell and re-run `make notebooks pdf`")
    return notebook_text(data)


def annex_start(pages: list[str]) -> int | None:
    """0-based index of the first page (after page 1) headed 'Annexes', if any."""
    for index, text in enumerate(pages[1:], start=1):
        lines = [line.strip().casefold() for line in text.splitlines() if line.strip()][:6]
        if any(ANNEX_HEADING.match(line) and len(line) < 60 for line in lines):
            return index
    return None


def check_report_pages(name: str, pages: list[str], result: CheckResult) -> None:
    """At most 8 pages before the 'Annexes' heading and 2 from it on."""
    start = annex_start(pages)
    body = len(pages) if start is None else start
    annexes = 0 if start is None else len(pages) - start
    if body > MAX_BODY_PAGES:
        where = "" if start is not None else " (no page headed 'Annexes' found)"
        result.add(f"the report {name} has {body} body pages{where}, the course allows "
                   f"{MAX_BODY_PAGES}", "shorten it, or start the annexes on a new page under "
                   "the heading 'Annexes'")
    if annexes > MAX_ANNEX_PAGES:
        result.add(f"the report {name} has {annexes} annex pages, the course allows "
                   f"{MAX_ANNEX_PAGES}", "shorten the annexes")
    result.notes.append(f"report: {body} body page(s), {annexes} annex page(s)")


def check_identity(name: str, text: str, team: Team, result: CheckResult) -> None:
    """Every member's name, first name and card number appear in the file; no placeholder."""
    missing = missing_identity(text, team)
    if missing:
        shown = ", ".join(missing[:4]) + (" ..." if len(missing) > 4 else "")
        result.add(f"{name} does not name every member (missing: {shown})",
                   "fill team.toml, then re-export (`make pdf report submit`): each file must "
                   "give every member's name, first name and student card number")
    if shows_placeholders(text):
        result.add(f"{name} still shows team.toml placeholders ('<NOM 1>'...)",
                   "re-export it after filling team.toml (`make submit` does)")


def stated_groups(text: str) -> set[int]:
    """Group numbers a hand-in file states ('HAI923 - groupe 7', 'Groupe 7', "group": 7)."""
    found = re.findall(r"HAI923\W{1,5}(?:rapport de projet\W{1,5})?groupe\s*(\d+)", text,
                       flags=re.IGNORECASE)
    found += re.findall(r'"group":\s*(\d+)', text)
    return {int(number) for number in found}


def check_group(name: str, text: str, group: int, result: CheckResult) -> None:
    """Every group number a file states is the zip's group."""
    others = sorted(stated_groups(text) - {group})
    if others:
        result.add(f"{name} names group {', '.join(map(str, others))}, the zip is for group "
                   f"{group}", f"set `group = {group}` in team.toml and rebuild with `make "
                   f"submit`, or name the zip after the group the files state")


def check_file(name: str, data: bytes, group: int, team: Team | None,
               result: CheckResult) -> None:
    """Read one hand-in file (PDF or notebook) and check its content."""
    if name.endswith(".pdf"):
        try:
            pages = pdf_pages(data)
        except Exception as error:  # pypdf raises many error types on broken files
            result.add(f"{name} is not a readable PDF ({error})", "re-export it")
            return
        text = "\n".join(pages)
        if name == f"{group}.pdf":
            check_report_pages(name, pages, result)
    else:
        text = check_notebook(name, data, result)
    if text:
        check_group(name, text, group, result)
    if team is not None and text:
        check_identity(name, text, team, result)


MAX_ENTRY_BYTES = 100 * 2**20  # an executed notebook or its PDF weighs a few MiB
MAX_TOTAL_BYTES = 400 * 2**20  # the whole hand-in, uncompressed


def oversized(infos: list[zipfile.ZipInfo]) -> list[tuple[str, str]]:
    """(what is wrong, fix) for entries whose uncompressed size is beyond what a hand-in
    holds, read from the zip's directory before anything is decompressed (a zip bomb)."""
    problems = [(f"{info.filename} would unpack to {info.file_size / 2**20:.0f} MiB (over "
                 f"{MAX_ENTRY_BYTES // 2**20} MiB; a hand-in file weighs a few MiB)",
                 "rebuild the zip with `make submit`; nothing of it was read")
                for info in infos if info.file_size > MAX_ENTRY_BYTES]
    total = sum(info.file_size for info in infos)
    if total > MAX_TOTAL_BYTES:
        problems.append((f"the zip would unpack to {total / 2**20:.0f} MiB (over "
                         f"{MAX_TOTAL_BYTES // 2**20} MiB)", "rebuild it with `make submit`"))
    return problems


def open_zip(path: Path, result: CheckResult) -> zipfile.ZipFile | None:
    """Open the zip, bound its sizes, test its CRCs; None (with a violation) when it is
    broken or too big to unpack."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as error:
        result.add(f"{path.name} is not a readable zip ({error})", "rebuild it (`make submit`)")
        return None
    too_big = oversized(archive.infolist())
    if too_big:
        for problem, fix in too_big:
            result.add(f"{path.name}: {problem}", fix)
        archive.close()
        return None
    try:
        bad = archive.testzip()
    except (RuntimeError, NotImplementedError, zipfile.BadZipFile) as error:
        bad = f"unreadable ({error})"
    if bad:
        result.add(f"{path.name}: corrupt entry {bad}", "rebuild the zip (`make submit`)")
    return archive


def team_for_check(team: Team | None, result: CheckResult) -> Team | None:
    """The team whose identities every file must show (team.toml by default)."""
    try:
        team = team or load_team()
    except TeamError as error:
        result.add(f"cannot read the team: {error}", "fix team.toml")
        return None
    if placeholder_fields(team):
        result.add(f"{team.path} still holds placeholders", "write each member's name, first "
                   "name and card number there, then re-export (`make submit`)")
        return None
    return team


def check_submission(zip_path: str | Path, team: Team | None = None) -> CheckResult:
    """Check a hand-in zip against every rule of the course; never raises on a bad zip."""
    path = Path(zip_path)
    result = CheckResult(path)
    match = ZIP_NAME.match(path.name)
    if not match:
        result.add(f"the zip is named {path.name}", "name it <group number>.zip, e.g. 1.zip")
    group = int(match.group(1)) if match else (team.group if team else 0)
    team = team_for_check(team, result)
    if team is not None and match and team.group != group:
        result.add(f"{team.path.name} says group {team.group}, the zip is for group {group}",
                   f"set `group = {group}` in {team.path.name} (or build with `make submit "
                   f"GROUP={group}`), or rename the zip {team.group}.zip if that is your group")
    archive = open_zip(path, result) if path.is_file() else None
    if archive is None:
        if not path.is_file():
            result.add(f"{path} does not exist", "build it with `make submit`")
        return result
    with archive:
        files = check_entries(archive.infolist(), group, result)
        stems = check_twins(files, group, result)
        for name in files:
            check_file(name, archive.read(name), group, team, result)
    result.notes.append(f"{len(stems)} notebook(s) as .ipynb + .pdf, {len(files)} file(s)")
    if team is not None:
        result.notes.append(f"{len(team.members)} member(s) checked in every file")
    return result


def fresh_pdf(notebook: Path, team: Team) -> Path:
    """The notebook's PDF, re-exported when older than the notebook or the team file."""
    pdf = notebook.with_suffix(".pdf")
    newest_input = max(notebook.stat().st_mtime, team.path.stat().st_mtime)
    if not pdf.exists() or pdf.stat().st_mtime < newest_input:
        print(f"[submission] exporting {notebook.name} to PDF", flush=True)
        export_pdf(notebook, pdf, team)
    return pdf


def notebooks_to_submit(team: Team, results_dir: Path | None = None) -> list[Path]:
    """The executed notebooks the hand-in covers (00-05 and team.toml's extras); raise when
    one is missing or failed."""
    folder = (results_dir / "notebooks") if results_dir else paths.executed_notebooks_dir()
    wanted = team.handin_notebooks()
    executed = [p for p in executed_notebooks(folder) if p.stem[:2] in wanted]
    done = {p.stem for p in executed}
    missing = [p.stem for p in list_notebooks() if p.stem[:2] in wanted and p.stem not in done]
    failed = sorted(p.name for p in folder.glob("*.failed.ipynb")
                    if p.name[:2] in wanted) if folder.is_dir() else []
    problems = []
    if missing:
        problems.append(f"not executed: {missing}: run `make notebooks`")
    if failed:
        problems.append(f"failed runs left in {folder}: {failed}: fix them and run "
                        "`make notebooks` again")
    if not executed:
        problems.append(f"no executed notebook in {folder}: run `make notebooks`")
    if problems:
        raise SubmissionError("; ".join(problems))
    return executed


def zip_entries(group: int, team: Team, report_pdf: Path,
                notebooks: list[Path]) -> dict[str, bytes]:
    """Name -> content of every file of the zip (notebooks stamped with the team identity)."""
    entries = {f"{group}.pdf": report_pdf.read_bytes()}
    for notebook in notebooks:
        nb = stamp_identity(nbformat.read(notebook, as_version=4), team, notebook.stem)
        entries[f"{group}_{notebook.stem}.ipynb"] = nbformat.writes(nb).encode("utf-8")
        entries[f"{group}_{notebook.stem}.pdf"] = fresh_pdf(notebook, team).read_bytes()
    return entries


def write_zip(path: Path, entries: dict[str, bytes]) -> Path:
    """Write a flat deflated zip atomically, its files readable by whoever unzips it."""
    now = time.localtime()[:6]
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in entries.items():
                info = zipfile.ZipInfo(name, date_time=now)
                info.external_attr = 0o644 << 16  # writestr(name) would make them 0600
                archive.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    return path


def smoke_notebooks(notebooks: list[Path]) -> list[str]:
    """The executed notebooks that ran with SMOKE=True (papermill records the parameters)."""
    found = []
    for path in notebooks:
        meta = nbformat.read(path, as_version=4).metadata.get("papermill", {})
        if (meta.get("parameters") or {}).get("SMOKE"):
            found.append(path.name)
    return found


def build_submission(group: int | None = None, out_dir: Path | None = None,
                     team: Team | None = None, results_dir: Path | None = None,
                     report_dir: Path | None = None, allow_smoke: bool = False) -> Path:
    """Build ``<group>.zip`` (report + notebooks as .ipynb and .pdf), then check it; the
    results of a SMOKE run are refused (``allow_smoke``: tests of the chain only)."""
    team = (team or load_team()).with_group(group)
    require_filled(team)
    notebooks = notebooks_to_submit(team, results_dir)
    smoke = smoke_notebooks(notebooks)
    if smoke and not allow_smoke:
        raise SubmissionError(f"{', '.join(smoke[:3])}: {SMOKE_REFUSED}.")
    report_pdf, _ = build_report(report_dir, team, results_dir, allow_smoke)
    entries = zip_entries(team.group, team, report_pdf, notebooks)
    path = write_zip(Path(out_dir or paths.ROOT) / f"{team.group}.zip", entries)
    result = check_submission(path, team)
    if not result.ok:
        raise SubmissionError(f"{path} was built but breaks the rules:\n- "
                              + "\n- ".join(result.violations))
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line: ``build [--group N]`` or ``check ZIP``."""
    parser = argparse.ArgumentParser(prog="python -m utils.handin.submission", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build <group>.zip at the root, then check it")
    build.add_argument("--group", type=int, default=None, help="group number (default: team.toml)")
    check = commands.add_parser("check", help="check a hand-in zip")
    check.add_argument("zip", type=Path, nargs="?", default=None,
                       help="the zip to check, e.g. 1.zip (default: <group of team.toml>.zip)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m utils.handin.submission``."""
    args = parse_args(argv)
    try:
        group = getattr(args, "group", None)
        if args.command == "build":
            path = build_submission(group)
        else:
            path = args.zip or paths.ROOT / f"{load_team().group}.zip"
        team = load_team().with_group(group) if group else None
    except (SubmissionError, TeamError, ReportError, HandinError) as error:
        print(f"[submission] ERROR: {error}", file=sys.stderr)
        return 1
    result = check_submission(path, team)
    if not result.ok:
        print(f"[submission] {path}: {len(result.violations)} problem(s):", file=sys.stderr)
        for violation in result.violations:
            print(f"  - {violation}", file=sys.stderr)
        return 1
    print(f"[submission] {path} OK: " + "; ".join(result.notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
