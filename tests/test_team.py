"""team.toml: the committed template, validation errors naming file/line/fix, identity display."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from utils.core import paths
from utils.handin.team import (
    TeamError,
    has_placeholders,
    load_team,
    placeholder_fields,
    require_filled,
    show_team,
    team_bundle,
)

MEMBER = '[[members]]\nname = "Durand"\nfirst_name = "Léa"\nstudent_card = "21900001"\n'


def write(tmp_path: Path, text: str) -> Path:
    """A team file with ``text`` in a temporary folder."""
    path = tmp_path / "team.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_committed_template_loads_with_four_placeholder_members():
    team = load_team(paths.TEAM_FILE)
    assert team.group == 1 and len(team.members) == 4
    assert has_placeholders(team)
    assert len(placeholder_fields(team)) == 12
    with pytest.raises(TeamError, match="placeholders left"):
        require_filled(team)


def test_filled_file_from_env_override(team_file: Path):
    team = load_team()
    assert team.path == team_file.resolve()
    assert team.group == 7
    assert [m.name for m in team.members] == ["Dupont-Leclerc", "N'Diaye", "Martin"]
    assert team.members[0].first_name == "Éloïse"
    assert not has_placeholders(team)
    require_filled(team)


def test_card_number_written_as_integer_is_accepted(tmp_path: Path):
    team = load_team(write(tmp_path, 'group = 2\n[[members]]\nname = "A"\nfirst_name = "B"\n'
                                     "student_card = 21900001\n"))
    assert team.members[0].student_card == "21900001"


@pytest.mark.parametrize(("text", "line", "words"), [
    ("group = 0\n" + MEMBER, 1, "not a positive integer"),
    ('group = "3"\n' + MEMBER, 1, "not a positive integer"),
    (MEMBER, 0, "no 'group' key"),
    ("group = 3\n", 0, "0 members found"),
    ("group = 3\n" + MEMBER * 5, 0, "5 members found"),
    ("group = 3\n" + MEMBER + MEMBER.replace('"Léa"', '"  "'), 8, "'first_name' is missing"),
    ("group = 3\n" + MEMBER + '[[members]]\nname = "X"\nfirst_name = "Y"\n', 6,
     "'student_card' is missing"),
    ("group = 3\n" + MEMBER.replace("first_name", "prenom"), 4, "unknown key(s) ['prenom']"),
    ("group = 3\nteam = 1\n" + MEMBER, 2, "unknown key(s) ['team']"),
    ('group = 3\n[[members]]\nname = "Durand\n', 3, "not valid TOML"),
])
def test_validation_errors_name_file_line_and_fix(tmp_path: Path, text: str, line: int,
                                                  words: str):
    path = write(tmp_path, text)
    with pytest.raises(TeamError) as caught:
        load_team(path)
    message = str(caught.value)
    where = f"{path}:{line}:" if line else f"{path}:"
    assert message.startswith(where), message
    assert words in message and "Fix:" in message


def test_missing_file_says_how_to_create_it(tmp_path: Path):
    with pytest.raises(TeamError, match="team file not found"):
        load_team(tmp_path / "nothing.toml")


def test_with_group_overrides_and_validates(team_file: Path):
    team = load_team()
    assert team.with_group(12).group == 12 and team.with_group(None).group == 7
    with pytest.raises(TeamError, match="positive integer"):
        team.with_group(0)


def test_show_team_prints_every_member_outside_ipython(team_file: Path, capsys):
    assert show_team() is None  # a notebook cell ending with it prints no repr
    team = load_team()
    out = capsys.readouterr().out
    assert "groupe 7" in out
    for member in team.members:
        assert member.name in out and member.first_name in out and member.student_card in out
    assert "Attention" not in out


def test_show_team_warns_about_placeholders_without_failing(capsys):
    show_team(paths.TEAM_FILE)
    assert "Attention" in capsys.readouterr().out


def test_bundle_escapes_html_and_latex(tmp_path: Path):
    team = load_team(write(tmp_path, 'group = 4\n[[members]]\nname = "Smith & Co_"\n'
                                     'first_name = "<b>Al</b>"\nstudent_card = "42%"\n'))
    bundle = team_bundle(team)
    assert "&lt;b&gt;Al&lt;/b&gt;" in bundle["text/html"] and "<b>Al</b>" not in bundle["text/html"]
    assert r"Smith \& Co\_" in bundle["text/latex"] and r"42\%" in bundle["text/latex"]
    assert re.search(r"Smith & Co_\s+<b>Al</b>", bundle["text/plain"])


def test_extra_notebooks_are_read_and_checked(tmp_path: Path):
    text = 'group = 3\nnotebooks = ["06", "08"]\n[[members]]\nname = "Durand"\n' \
           'first_name = "Léa"\nstudent_card = "21900001"\n'
    path = tmp_path / "team.toml"
    path.write_text(text, encoding="utf-8")
    team = load_team(path)
    assert team.handin_notebooks() == ("00", "01", "02", "03", "04", "05", "06", "08")
    assert team.with_group(4).extra_notebooks == ("06", "08")
    path.write_text(text.replace('["06", "08"]', '["six"]'), encoding="utf-8")
    with pytest.raises(TeamError, match=r"team.toml:2: .*two-digit"):
        load_team(path)
