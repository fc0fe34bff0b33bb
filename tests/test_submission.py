"""The hand-in zip: every rule of `check` on small zips made here, `build`, the whole chain."""

from __future__ import annotations

import functools
import io
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import matplotlib
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output
from test_report import report_copy

from utils.core import paths
from utils.handin import submission
from utils.handin.execute import list_notebooks
from utils.handin.pdf import export_pdfs
from utils.handin.submission import SubmissionError, build_submission, check_submission, write_zip
from utils.handin.team import Team, TeamError, load_team

matplotlib.use("Agg")


def identity(team: Team, skip: str = "") -> str:
    """The members' identities as text lines (one field left out when ``skip`` names it)."""
    return "\n".join(" ".join(v for v in (m.name, m.first_name, m.student_card) if v != skip)
                     for m in team.members)


@functools.lru_cache(maxsize=64)
def make_pdf(*pages: str) -> bytes:
    """A real PDF with one page per text (matplotlib, TrueType fonts so pypdf reads them)."""
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    buffer = io.BytesIO()
    with plt.rc_context({"pdf.fonttype": 42}), PdfPages(buffer) as pdf:
        for text in pages:
            figure = plt.figure(figsize=(8.27, 11.69))
            figure.text(0.1, 0.9, text, va="top", fontsize=11)
            pdf.savefig(figure)
            plt.close(figure)
    return buffer.getvalue()


def make_notebook(text: str, outputs: bool = True, error: bool = False) -> bytes:
    """An executed (or not) notebook whose identity cell printed ``text``."""
    cell = new_code_cell("from utils.team import show_team\nshow_team()", execution_count=1)
    if outputs:
        cell.outputs = [new_output("stream", name="stdout", text=text)]
    if error:
        cell.outputs.append(new_output("error", ename="ValueError", evalue="boom", traceback=[]))
    return nbformat.writes(new_notebook(cells=[cell])).encode("utf-8")


def good_entries(team: Team) -> dict[str, bytes]:
    """A valid hand-in for group 7: a 3-page report (1 annex page) and two notebooks."""
    who = f"HAI923 - groupe {team.group}\n" + identity(team)
    entries = {"7.pdf": make_pdf(f"Rapport\n{who}", "Suite du rapport", "Annexes\nA.1 Figures")}
    for stem in ("01_cnn_image_classifier", "03_clip"):
        entries[f"7_{stem}.ipynb"] = make_notebook(who)
        entries[f"7_{stem}.pdf"] = make_pdf(f"{stem}\n{who}")
    return entries


def make_zip(path: Path, entries: dict[str, bytes]) -> Path:
    """Write a zip holding ``entries`` (a name ending in '/' is a folder entry)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def rename(old: str, new: str) -> Callable[[dict, Team], None]:
    """A mutation renaming one entry."""
    return lambda entries, team: entries.__setitem__(new, entries.pop(old))


def put(name: str, make: Callable[[Team], bytes]) -> Callable[[dict, Team], None]:
    """A mutation adding or replacing one entry."""
    return lambda entries, team: entries.__setitem__(name, make(team))


def test_valid_zip_passes(team_file: Path, tmp_path: Path):
    team = load_team()
    result = check_submission(make_zip(tmp_path / "7.zip", good_entries(team)), team)
    assert result.ok, result.violations
    assert "report: 2 body page(s), 1 annex page(s)" in result.notes
    assert "2 notebook(s) as .ipynb + .pdf, 5 file(s)" in result.notes


@pytest.mark.parametrize(("mutate", "expected"), [
    (rename("7.pdf", "rapport.pdf"), ["the report 7.pdf is missing",
                                      "rapport.pdf is not a hand-in name. Fix: the report must "
                                      "be named 7.pdf"]),
    (rename("7_03_clip.ipynb", "03_clip.ipynb"), ["rename it 7_03_clip.ipynb",
                                                  "7_03_clip.pdf has no 7_03_clip.ipynb"]),
    (rename("7_03_clip.pdf", "8_03_clip.pdf"), ["8_03_clip.pdf is not a hand-in name"]),
    (put("7_03_clip.pdf", lambda t: make_pdf(identity(t, skip="22001234"))),
     ["7_03_clip.pdf does not name every member (missing: N'Diaye student_card)"]),
    (put("7_03_clip.ipynb", lambda t: make_notebook(identity(t, skip="Zoé"))),
     ["7_03_clip.ipynb does not name every member (missing: Martin first_name)"]),
    (put("7.pdf", lambda t: make_pdf(identity(t), *["Page"] * 8)),
     ["the report 7.pdf has 9 body pages (no page headed 'Annexes' found)"]),
    (put("7.pdf", lambda t: make_pdf(identity(t), "x", "Annexes", "a2", "a3")),
     ["the report 7.pdf has 3 annex pages"]),
    (put("__MACOSX/._7.pdf", lambda t: b"x"), ["stray entry __MACOSX/._7.pdf"]),
    (put(".DS_Store", lambda t: b"x"), ["stray entry .DS_Store"]),
    (put("7_clip.pt", lambda t: b"x"), ["stray model checkpoint 7_clip.pt"]),
    (put("data/images/dog.jpg", lambda t: b"x"), ["data/images/dog.jpg is a folder or inside"]),
    (put("rendu/", lambda t: b""), ["rendu/ is a folder or inside a folder"]),
    (lambda entries, team: entries.pop("7_03_clip.pdf"), ["7_03_clip.ipynb has no 7_03_clip.pdf"]),
    (put("7_03_clip.ipynb", lambda t: make_notebook(identity(t), outputs=False)),
     ["7_03_clip.ipynb has no outputs"]),
    (put("7_03_clip.ipynb", lambda t: make_notebook(identity(t), error=True)),
     ["7_03_clip.ipynb contains an error output (ValueError)"]),
    (put("7_03_clip.pdf", lambda t: make_pdf(identity(t) + "\n<NOM 1> <Prénom 1>")),
     ["7_03_clip.pdf still shows team.toml placeholders"]),
    (put("7_03_clip.pdf", lambda t: b"%PDF-1.4 broken"), ["7_03_clip.pdf is not a readable PDF"]),
])
def test_check_catches_each_violation(team_file: Path, tmp_path: Path, mutate, expected):
    team = load_team()
    entries = good_entries(team)
    mutate(entries, team)
    result = check_submission(make_zip(tmp_path / "7.zip", entries), team)
    assert not result.ok
    for words in expected:
        assert any(words in v for v in result.violations), (words, result.violations)
    assert all(". Fix: " in v for v in result.violations)


def test_annexes_after_eight_pages_pass(team_file: Path, tmp_path: Path):
    team = load_team()
    entries = good_entries(team)
    entries["7.pdf"] = make_pdf(identity(team), *["Page"] * 7, "Annexes\nA.1", "A.2")
    assert check_submission(make_zip(tmp_path / "7.zip", entries), team).ok


def test_written_zip_is_flat_deflated_and_readable_by_all(tmp_path: Path):
    path = write_zip(tmp_path / "3.zip", {"3.pdf": b"%PDF", "3_00_data.ipynb": b"{}"})
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        archive.extractall(tmp_path / "out")
    assert [i.filename for i in infos] == ["3.pdf", "3_00_data.ipynb"]
    assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in infos)
    assert all((i.external_attr >> 16) & 0o777 == 0o644 for i in infos)
    assert (tmp_path / "out" / "3.pdf").stat().st_mode & 0o044 == 0o044  # group/others read


def test_zip_name_and_readability(team_file: Path, tmp_path: Path):
    team = load_team()
    wrong = check_submission(make_zip(tmp_path / "rendu.zip", good_entries(team)), team)
    assert any("name it <group number>.zip" in v for v in wrong.violations)
    (tmp_path / "7.zip").write_bytes(b"not a zip")
    broken = check_submission(tmp_path / "7.zip", team)
    assert any("is not a readable zip" in v for v in broken.violations)
    missing = check_submission(tmp_path / "8.zip", team)
    assert any("does not exist" in v for v in missing.violations)


def test_a_group_mismatch_between_zip_team_and_files_fails(team_file: Path, tmp_path: Path):
    # team.toml and every file say group 7; the zip and its entries are named for group 8.
    entries = {name.replace("7", "8", 1): data for name, data in good_entries(load_team()).items()}
    path = make_zip(tmp_path / "8.zip", entries)
    result = check_submission(path)
    assert any("team.toml says group 7, the zip is for group 8" in v for v in result.violations)
    assert any("8_03_clip.ipynb names group 7, the zip is for group 8" in v
               for v in result.violations)
    assert any("8.pdf names group 7" in v for v in result.violations)
    assert submission.main(["check", str(path)]) == 1
    same = make_zip(tmp_path / "7.zip", good_entries(load_team()))
    assert check_submission(same).ok


def test_check_refuses_a_team_file_with_placeholders(tmp_path: Path):
    team = load_team(paths.TEAM_FILE)
    result = check_submission(make_zip(tmp_path / "1.zip", {"1.pdf": make_pdf("x")}), team)
    assert any("still holds placeholders" in v for v in result.violations)


def test_cli_check_exit_status(team_file: Path, tmp_path: Path, capsys):
    team = load_team()
    good = make_zip(tmp_path / "7.zip", good_entries(team))
    assert submission.main(["check", str(good)]) == 0
    assert "7.zip OK" in capsys.readouterr().out
    entries = good_entries(team)
    entries[".DS_Store"] = b"x"
    del entries["7.pdf"]
    (tmp_path / "bad").mkdir()
    bad = make_zip(tmp_path / "bad" / "7.zip", entries)
    assert submission.main(["check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "2 problem(s)" in err and err.count("Fix:") == 2


def test_build_refuses_placeholders_before_anything_else(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("TEAM_FILE", str(paths.TEAM_FILE))
    with pytest.raises(TeamError, match="placeholders left"):
        build_submission(out_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_build_refuses_unexecuted_notebooks(team_file: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("RESULTS_DIR", str(tmp_path / "results"))
    with pytest.raises(SubmissionError, match="run `make notebooks`"):
        build_submission(out_dir=tmp_path)
    assert not (tmp_path / "7.zip").exists()


@pytest.mark.slow
def test_whole_chain(needs_tex, flickr8k_dir, smoke_run: Path, team_file: Path, tmp_path: Path):
    """Smoke-executed notebooks -> PDFs -> report -> zip -> check, and the PDFs render."""
    pdfs = export_pdfs()
    stems = [p.stem for p in list_notebooks()]
    assert [p.stem for p in pdfs] == stems
    zip_path = build_submission(out_dir=tmp_path, report_dir=report_copy(tmp_path),
                                allow_smoke=True)  # the chain itself is under test here
    assert zip_path == tmp_path / "7.zip"
    result = check_submission(zip_path, load_team())
    assert result.ok, result.violations
    handed = [s for s in stems if s[:2] in load_team().handin_notebooks()]  # 00-05 here
    assert handed[-1].startswith("05_") and len(handed) == 6
    with zipfile.ZipFile(zip_path) as archive:
        names = set(archive.namelist())
        archive.extract("7.pdf", tmp_path)
        archive.extract(f"7_{handed[-1]}.pdf", tmp_path)
    assert names == {"7.pdf"} | {f"7_{s}.{ext}" for s in handed for ext in ("ipynb", "pdf")}
    for pdf in ("7.pdf", f"7_{handed[-1]}.pdf"):
        subprocess.run(["pdftoppm", "-r", "40", "-png", "-f", "1", "-l", "1",
                        str(tmp_path / pdf), str(tmp_path / Path(pdf).stem)], check=True)
    assert len([p for p in tmp_path.glob("7*.png") if p.stat().st_size > 5000]) == 2


def test_the_hand_in_holds_00_to_05_and_the_notebooks_team_toml_adds(team_file: Path,
                                                                     tmp_path: Path):
    folder = tmp_path / "results" / "notebooks"
    folder.mkdir(parents=True)
    for source in list_notebooks():
        nbformat.write(new_notebook(cells=[new_code_cell("1")]), folder / source.name)
    extra = folder / "06_captioning.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("1")]), extra)
    chosen = submission.notebooks_to_submit(load_team(), tmp_path / "results")
    assert [p.stem[:2] for p in chosen] == ["00", "01", "02", "03", "04", "05"]
    team_file.write_text(team_file.read_text(encoding="utf-8").replace(
        "group = 7", 'group = 7\nnotebooks = ["06"]'), encoding="utf-8")
    with_extra = submission.notebooks_to_submit(load_team(), tmp_path / "results")
    assert with_extra[-1] == extra
