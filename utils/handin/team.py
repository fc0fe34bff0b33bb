"""The team's identity (``team.toml``): loaded, validated and shown in every hand-in file.

The course takes points from a team whose files do not name each member (family name, first
name, student card number), so every notebook's second cell calls :func:`show_team`, the
notebook PDFs carry the members in their title block and the report prints them on page 1.
``$TEAM_FILE`` points at another file (tests, or a team keeping its identity outside the repo).
"""

from __future__ import annotations

import html
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from utils.core import paths
from utils.handin.latex import escape_latex

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (older Colab images) needs the backport
    import tomli as tomllib


FIELDS = ("name", "first_name", "student_card")


FIELD_TITLES = {"name": "Nom", "first_name": "Prénom", "student_card": "N° de carte"}


MAX_MEMBERS = 4
# The notebooks every hand-in holds (the course chain); team.toml's `notebooks` adds others.
HANDIN_NOTEBOOKS = ("00", "01", "02", "03", "04", "05")


PLACEHOLDER = re.compile(r"^\s*<.*>\s*$")


class TeamError(ValueError):
    """team.toml is missing or malformed; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class Member:
    """One member: family name, first name and student card number."""

    name: str
    first_name: str
    student_card: str

    def label(self) -> str:
        """'NAME First name (carte n° 123)', the form used in titles and author lists."""
        return f"{self.name} {self.first_name} (carte n° {self.student_card})"


@dataclass(frozen=True)
class Team:
    """The group number, its 1 to 4 members and the file they come from."""

    group: int
    members: tuple[Member, ...]
    path: Path
    extra_notebooks: tuple[str, ...] = ()  # numbers of notebooks beyond 00-05 to hand in

    def handin_notebooks(self) -> tuple[str, ...]:
        """Numbers of the notebooks the hand-in and the report cover ("00".."05" + extras)."""
        return HANDIN_NOTEBOOKS + tuple(n for n in self.extra_notebooks
                                        if n not in HANDIN_NOTEBOOKS)

    def with_group(self, group: int | None) -> Team:
        """A copy with another group number (``make submit GROUP=N``); None keeps this one."""
        if group is None:
            return self
        if isinstance(group, bool) or not isinstance(group, int) or group < 1:
            raise TeamError(f"group {group!r} is not a positive integer: pass e.g. GROUP=3.")
        return Team(group, self.members, self.path, self.extra_notebooks)


def team_file() -> Path:
    """The team file: ``$TEAM_FILE`` when set, else ``team.toml`` at the repository root."""
    override = os.environ.get("TEAM_FILE")
    return Path(override).expanduser().resolve() if override else paths.TEAM_FILE


def member_lines(text: str) -> list[int]:
    """0-based line indexes of the [[members]] headers."""
    return [i for i, line in enumerate(text.splitlines()) if line.strip().startswith("[[members]]")]


def find_line(text: str, key: str, member: int | None = None) -> int:
    """1-based line of ``key =`` (in the member-th [[members]] block when given), else its header.

    Returns 0 when nothing is found; tomllib reports no positions for values, hence this scan.
    """
    lines = text.splitlines()
    starts = member_lines(text)
    if member is not None and member >= len(starts):
        return 0
    start = starts[member] + 1 if member is not None else 0
    for i in range(start, len(lines)):
        stripped = lines[i].strip()
        if stripped.startswith("["):
            break
        if re.match(rf"{re.escape(key)}\s*=", stripped):
            return i + 1
    return start if member is not None else 0


def fail(path: Path, line: int, problem: str, fix: str) -> TeamError:
    """Build a TeamError 'file:line: problem. Fix: ...'."""
    where = f"{path}:{line}" if line else str(path)
    return TeamError(f"{where}: {problem}. Fix: {fix}")


def parse_group(data: dict, path: Path, text: str) -> int:
    """The ``group`` value, a positive integer."""
    line = find_line(text, "group")
    if "group" not in data:
        raise fail(path, 0, "no 'group' key", "add 'group = N' (your group number) at the top")
    group = data["group"]
    if isinstance(group, bool) or not isinstance(group, int) or group < 1:
        raise fail(path, line, f"group = {group!r} is not a positive integer",
                   "write your group number without quotes, e.g. 'group = 3'")
    return group


def parse_member(entry: object, index: int, path: Path, text: str) -> Member:
    """One [[members]] block: the three fields, each a non-empty string (card: digits allowed)."""
    starts = member_lines(text)
    block_line = starts[index] + 1 if index < len(starts) else 0
    if not isinstance(entry, dict):
        raise fail(path, block_line, f"member #{index + 1} is not a table",
                   "write each member as a [[members]] block with name, first_name, student_card")
    unknown = sorted(set(entry) - set(FIELDS))
    if unknown:
        raise fail(path, find_line(text, unknown[0], index),
                   f"member #{index + 1} has unknown key(s) {unknown}",
                   f"use exactly the keys {list(FIELDS)}")
    values = {}
    for field in FIELDS:
        value = entry.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and field == "student_card":
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            line = find_line(text, field, index) if field in entry else block_line
            raise fail(path, line, f"member #{index + 1}: '{field}' is missing or empty",
                       f'write {field} = "..." in that [[members]] block')
        values[field] = " ".join(value.split())
    return Member(**values)


def parse_team(text: str, path: Path) -> Team:
    """Validate the TOML text of a team file (1 to 4 members, non-empty fields, group >= 1)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        found = re.search(r"at line (\d+)", str(error))
        raise fail(path, int(found.group(1)) if found else 0, f"not valid TOML ({error})",
                   "check the quotes and the '=' on that line") from None
    unknown = sorted(set(data) - {"group", "members", "notebooks"})
    if unknown:
        raise fail(path, find_line(text, unknown[0]), f"unknown key(s) {unknown}",
                   "only 'group', 'notebooks' and [[members]] blocks are read")
    group = parse_group(data, path, text)
    entries = data.get("members", [])
    if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_MEMBERS:
        count = len(entries) if isinstance(entries, list) else "no"
        raise fail(path, 0, f"{count} members found, a team has 1 to {MAX_MEMBERS}",
                   "keep one [[members]] block per member (delete unused ones)")
    members = tuple(parse_member(e, i, path, text) for i, e in enumerate(entries))
    return Team(group=group, members=members, path=path,
                extra_notebooks=parse_notebooks(data, path, text))


def parse_notebooks(data: dict, path: Path, text: str) -> tuple[str, ...]:
    """The optional ``notebooks = ["06", "08"]``: numbers of extra notebooks to hand in."""
    numbers = data.get("notebooks", [])
    valid = isinstance(numbers, list) and all(
        isinstance(n, str) and re.fullmatch(r"\d{2}", n) for n in numbers)
    if not valid:
        raise fail(path, find_line(text, "notebooks"), f"notebooks = {numbers!r} is not a list "
                   "of two-digit numbers", 'write e.g. notebooks = ["06", "08"]')
    return tuple(numbers)


def load_team(path: str | Path | None = None) -> Team:
    """Read and validate the team file (default :func:`team_file`); raises TeamError."""
    path = Path(path) if path is not None else team_file()
    if not path.is_file():
        raise fail(path, 0, "team file not found",
                   "copy team.toml from the repository and fill in each member")
    return parse_team(path.read_text(encoding="utf-8"), path)


def placeholder_fields(team: Team) -> list[str]:
    """Descriptions of the fields still holding a '<...>' placeholder."""
    return [f"member #{i + 1} {field} = {getattr(m, field)!r}"
            for i, m in enumerate(team.members) for field in FIELDS
            if PLACEHOLDER.match(getattr(m, field))]


def has_placeholders(team: Team) -> bool:
    """True while a field of the team file is still a template placeholder like '<NOM 1>'."""
    return bool(placeholder_fields(team))


def require_filled(team: Team) -> None:
    """Raise a TeamError listing the placeholders left (checked at hand-in time only)."""
    left = placeholder_fields(team)
    if left:
        raise TeamError(f"{team.path}: placeholders left: {'; '.join(left)}. Fix: write each "
                        "member's family name, first name and student card number in team.toml.")


def warning_line(team: Team) -> str:
    """The reminder shown while placeholders remain; empty once the file is filled in."""
    if not has_placeholders(team):
        return ""
    return (f"Attention : {team.path.name} contient encore des champs '<...>' : remplissez-le "
            "avant le rendu (make submit refuse une archive sans les identités).")


def team_text(team: Team) -> str:
    """Plain-text table of the team (the print fallback and the text/plain output)."""
    rows = [f"HAI923 - groupe {team.group}"]
    rows += [f"  {m.name:<20} {m.first_name:<20} carte n° {m.student_card}" for m in team.members]
    warning = warning_line(team)
    return "\n".join(rows + ([warning] if warning else []))


def team_html(team: Team) -> str:
    """HTML table of the team (what Jupyter and Colab display)."""
    head = "".join(f"<th>{FIELD_TITLES[f]}</th>" for f in FIELDS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(getattr(m, f))}</td>" for f in FIELDS)
                   + "</tr>" for m in team.members)
    warning = warning_line(team)
    note = f"<p><b>{html.escape(warning)}</b></p>" if warning else ""
    return (f"<p><b>HAI923 - groupe {team.group}</b></p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}")


def team_latex(team: Team) -> str:
    """LaTeX table of the team (what the notebook PDF shows, via nbconvert's LaTeX route)."""
    rows = "".join(" & ".join(escape_latex(getattr(m, f)) for f in FIELDS) + r" \\" + "\n"
                   for m in team.members)
    head = " & ".join(r"\textbf{" + escape_latex(FIELD_TITLES[f]) + "}" for f in FIELDS)
    warning = warning_line(team)
    note = "\n\\par\\textbf{" + escape_latex(warning) + "}" if warning else ""
    return (f"\\textbf{{HAI923 -- groupe {team.group}}}\\par\n"
            f"\\begin{{tabular}}{{lll}}\n\\hline\n{head} \\\\\n\\hline\n{rows}\\hline\n"
            f"\\end{{tabular}}{note}\n")


TEAM_OUTPUT = "hai923_team_identity"  # marks the identity output (the hand-in re-stamps it)


def team_bundle(team: Team) -> dict[str, str]:
    """The MIME bundle of the identity: HTML for Jupyter, LaTeX for the PDF, plain text."""
    return {"text/plain": team_text(team), "text/html": team_html(team),
            "text/latex": team_latex(team)}


def in_ipython() -> bool:
    """True inside a running IPython kernel or shell."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


def show_team(path: str | Path | None = None) -> None:
    """Display the team identity (a table in notebooks, text elsewhere)."""
    team = load_team(path)
    if in_ipython():
        from IPython.display import display

        display(team_bundle(team), raw=True, metadata={TEAM_OUTPUT: True})
    else:
        print(team_text(team))
