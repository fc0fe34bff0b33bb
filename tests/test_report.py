"""The LaTeX report: generated tables (tolerant of missing or odd metrics), build, page limits."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from utils.core import paths
from utils.handin import report
from utils.handin.report import PageCount, ReportError, build_report, count_pages, table_tex
from utils.handin.submission import missing_identity, pdf_pages
from utils.handin.team import load_team

CLIP_METRICS = {
    "config": {"embed_dim": 128}, "reload_max_abs_diff": 0.0, "wall_time_s": 61.5,
    "device": "cpu", "an_extra_key": {"nested": [1, 2]},
    "test": {"text_to_image": {"R@1": 0.125, "R@5": 0.5, "R@10": 0.75, "median_rank": 5.0,
                               "class_precision@5": 0.8},
             "image_to_text": {"R@1": 0.1, "R@5": 0.4, "R@10": 0.6, "median_rank": 7.0,
                               "class_precision@5": 0.7},
             "zero_shot_accuracy": 0.875,
             "chance": {"text_to_image": {"R@1": 0.011}, "image_to_text": {"R@1": 0.011}}},
    "comparison": {"scratch": {"t2i_R@1": 0.05, "i2t_R@1": 0.04, "zero_shot_accuracy": 0.5}},
}


def report_copy(tmp_path: Path) -> Path:
    """A copy of rapport_latex/ without its generated files and build."""
    target = tmp_path / "rapport_latex"
    shutil.copytree(paths.REPORT_DIR, target, ignore=shutil.ignore_patterns("generated", "build"))
    return target


def test_missing_metrics_become_visible_boxes(tmp_path: Path):
    tex = table_tex("03_clip", tmp_path)
    assert "manquantbox" in tex and "Résultats manquants" in tex
    assert "03\\_clip" in tex  # names the notebook to run


def test_unreadable_metrics_become_a_box_not_a_crash(tmp_path: Path):
    (tmp_path / "01_cnn.json").write_text("{not json")
    assert "Résultats illisibles" in table_tex("01_cnn", tmp_path)


def test_clip_table_reads_the_fixed_shape_and_ignores_extra_keys(tmp_path: Path):
    (tmp_path / "03_clip.json").write_text(json.dumps(CLIP_METRICS))
    tex = table_tex("03_clip", tmp_path)
    assert r"texte $\rightarrow$ image" in tex and "(hasard)" in tex
    assert "0.125" in tex and "0.011" in tex and "Rang médian" in tex
    assert "Zéro-shot : 0.875" in tex and "scratch" in tex
    assert "an\\_extra\\_key" not in tex and "embed\\_dim" not in tex


def test_classifier_variants_table(tmp_path: Path):
    summary = {"test": {"accuracy": 0.8125, "macro_f1": 0.8, "report": {}, "n": 90},
               "best_epoch": 4, "epochs_run": 6, "seconds": 12.5, "history": [{"loss": 1}]}
    (tmp_path / "01_cnn.json").write_text(json.dumps(
        {"config": {}, "device": "cpu", "variants": {"scratch_aug": summary},
         "reload_max_abs_logit_diff": 0.0}))
    tex = table_tex("01_cnn", tmp_path)
    assert "scratch\\_aug" in tex and "0.812" in tex and "Exactitude" in tex
    assert "loss" not in tex


def test_count_pages_reads_zref_labels(tmp_path: Path):
    aux = tmp_path / "main.aux"
    aux.write_text("\\zref@newlabel{annex-start}{\\default{7}\\page{9}\\abspage{9}}\n"
                   "\\zref@newlabel{annex-end}{\\default{A.2}\\page{11}\\abspage{11}}\n")
    count = count_pages(aux)
    assert count == PageCount(body=8, annexes=3)
    assert len(count.problems()) == 1 and "annexes have 3 pages" in count.problems()[0]
    aux.write_text("")
    with pytest.raises(ReportError, match="annex-start"):
        count_pages(aux)


def test_build_passes_with_missing_metrics_and_names_the_team(needs_tex, team_file, tmp_path):
    folder = report_copy(tmp_path)
    pdf, count = build_report(folder, results_dir=tmp_path / "no_results")
    assert count.body <= 8 and count.annexes <= 2
    pages = pdf_pages(pdf.read_bytes())
    assert missing_identity(pages[0], load_team()) == []
    text = "\n".join(pages)
    assert "Résultats manquants" in text and "Figure manquante" in text
    assert "À rédiger par l’équipe" in text or "À rédiger par l'équipe" in text
    assert "Radford" in text and "Hodosh" in text  # the bibliography is built
    subprocess.run(["pdftoppm", "-r", "40", "-png", "-f", "1", "-l", "1", str(pdf),
                    str(tmp_path / "page")], check=True)
    assert next(tmp_path.glob("page*.png")).stat().st_size > 5000


def test_build_fails_over_eight_pages(needs_tex, team_file, tmp_path, monkeypatch, capsys):
    folder = report_copy(tmp_path)
    paragraph = "Un paragraphe de remplissage pour dépasser la limite de pages. " * 40
    (folder / "sections" / "99_long.tex").write_text(
        "\\section{Section trop longue}\n" + "\n\n".join([paragraph] * 40), encoding="utf-8")
    main = folder / "main.tex"
    main.write_text(main.read_text(encoding="utf-8").replace(
        "\\input{sections/07_conclusion.tex}",
        "\\input{sections/07_conclusion.tex}\n\\input{sections/99_long.tex}"), encoding="utf-8")
    monkeypatch.setenv("RESULTS_DIR", str(tmp_path / "no_results"))
    assert report.main(["build", "--report-dir", str(folder)]) == 1
    error = capsys.readouterr().err
    assert "the body has" in error and "the course allows 8" in error
    assert len(pdf_pages((folder / "build" / "main.pdf").read_bytes())) > 9


def test_notebooks_listed_in_team_toml_get_their_section(needs_tex, team_file, tmp_path):
    team_file.write_text(team_file.read_text(encoding="utf-8").replace(
        "group = 7", 'group = 7\nnotebooks = ["06"]'), encoding="utf-8")
    metrics = tmp_path / "results" / "metrics"
    metrics.mkdir(parents=True)
    (metrics / "06_captioning.json").write_text(json.dumps(
        {"config": {}, "test": {"BLEU-4": 0.161, "CIDEr": 0.412, "n_images": 1000}}))
    (metrics / "07_fusion_multitask.json").write_text(json.dumps({"test": {"accuracy": 0.9}}))
    pdf, count = build_report(report_copy(tmp_path), results_dir=tmp_path / "results")
    text = "\n".join(pdf_pages(pdf.read_bytes()))
    assert "BLEU-4" in text and "0.161" in text and "0.412" in text
    assert "0.900" not in text  # 07 is not listed in team.toml: not in the report
    assert count.body <= 8
