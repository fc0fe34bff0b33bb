"""Notebook execution (papermill, in order, venv kernel, failures) and PDF export (xelatex)."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from conftest import FILLED_TEAM
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from utils.core import paths
from utils.handin.display import dataframe_latex
from utils.handin.execute import HandinError, execute_notebooks, select_notebooks
from utils.handin.pdf import clean_stream, collapse_carriage_returns, export_pdf, trim_lines
from utils.handin.submission import missing_identity, normalize, pdf_pages
from utils.handin.team import load_team

IDENTITY_CELL = (f"import sys\nsys.path.insert(0, {str(paths.ROOT)!r})\n"
                 "from utils.handin.display import enable_pdf_tables\n"
                 "from utils.handin.team import show_team\n"
                 "enable_pdf_tables()\nshow_team()")
# A top-5 table as notebook 03 shows it: its text form is wider than pandas' 80 characters.
TOP5_CELL = ("import pandas as pd\npd.DataFrame({'image': [f'images/bike/bike_{i:03d}.jpg' "
             "for i in range(5)], 'caption': ['A group of cyclists racing down a road in "
             "colourful jerseys & helmets, 50% uphill'] * 5, 'score': [0.2796, 0.27, 0.269, "
             "0.267, 0.262]})")
LONG_TOKEN = "abcdefghij" * 16
SOURCE_CELL = ("from utils.handin.display import show_source\n"
               "from utils.models.clip import ClipLoss, ClipModel\n"
               "show_source(ClipLoss, ClipModel.encode_text)")


def write_notebook(path: Path, *sources: str, title: str = "Notebook de test") -> Path:
    """A notebook: a title, a tagged parameters cell, then one code cell per source."""
    parameters = new_code_cell("SMOKE = None\nOVERRIDES = {}")
    parameters.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[new_markdown_cell(f"# {title}\n\nDes accents : é, à, ç."),
                             parameters, *[new_code_cell(s) for s in sources]])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def outputs_text(path: Path) -> str:
    """Stream and text/plain outputs of an executed notebook, joined."""
    nb = nbformat.read(path, as_version=4)
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", "") + output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def test_dataframe_latex_wraps_long_text_escapes_and_cuts_long_tables():
    frame = pd.DataFrame({"run_name": ["a_b", "c"], "caption": ["x" * 40, "50% & more"],
                          "score": [0.28006, 123.456]})
    latex = dataframe_latex(frame)
    assert r"\begin{tabular}{llp{0.60\linewidth}r}" in latex
    assert r"a\_b" in latex and r"50\% \& more" in latex
    assert "0.280" in latex and "123.5" in latex and "0.28006" not in latex
    assert r"\adjustbox{max width=\linewidth}" in latex
    scores = dataframe_latex(pd.DataFrame({"score": np.array([0.123456], dtype=np.float32)}))
    assert "0.123" in scores and "0.1234" not in scores  # similarity scores come as float32
    long = dataframe_latex(pd.DataFrame({"n": range(100)}))
    assert "40 premières lignes sur 100" in long and " 39 " in long and " 40 " not in long


def test_collapse_carriage_returns_keeps_final_state():
    text = "\r  0%|   | 0/3\r 33%|#  | 1/3\r100%|###| 3/3\nnext line\n"
    assert collapse_carriage_returns(text) == "100%|###| 3/3\nnext line\n"


def test_trim_lines_keeps_head_and_tail():
    text = "\n".join(f"line {i}" for i in range(100)) + "\n"
    trimmed = trim_lines(text).splitlines()
    assert trimmed[0] == "line 0" and trimmed[-1] == "line 99"
    assert "[... 65 lines trimmed ...]" in trimmed and len(trimmed) == 36
    assert trim_lines("a\nb\n") == "a\nb\n"


def test_clean_stream_drops_tqdm_noise_and_block_characters():
    text = ("/x/tqdm/auto.py:21: TqdmWarning: IProgress not found. Please update jupyter\n"
            "  from .autonotebook import tqdm as notebook_tqdm\n"
            "\rtrain:  50%|\u2588\u2588\u258c  | 1/2\rtrain: 100%|\u2588\u2588\u2588\u2588| 2/2\n")
    assert clean_stream(text).strip() == "train: 100%|####| 2/2"


def test_select_notebooks_by_number_or_name(tmp_path: Path):
    for name in ("01_a", "02_b", "10_c"):
        write_notebook(tmp_path / f"{name}.ipynb")
    (tmp_path / "scratch.ipynb").write_text("{}")
    assert [p.stem for p in select_notebooks(None, tmp_path)] == ["01_a", "02_b", "10_c"]
    assert [p.stem for p in select_notebooks(["10", "02_b.ipynb"], tmp_path)] == ["02_b", "10_c"]
    with pytest.raises(HandinError, match="no notebook matches '7'"):
        select_notebooks(["7"], tmp_path)


def test_execute_in_order_with_parameters_cwd_and_venv_kernel(tmp_path: Path):
    src = tmp_path / "notebooks"
    write_notebook(src / "01_first.ipynb",
                   "import sys, pathlib\nprint('python:', sys.executable)\nprint('smoke:', SMOKE)\n"
                   "pathlib.Path('order.txt').write_text('01')")
    write_notebook(src / "02_second.ipynb",
                   "import pathlib\nprint('after:', pathlib.Path('order.txt').read_text())")
    before = (src / "01_first.ipynb").read_text()
    done = execute_notebooks(parameters={"SMOKE": True}, out_dir=tmp_path / "out",
                             notebooks_dir=src)
    assert [p.name for p in done] == ["01_first.ipynb", "02_second.ipynb"]
    first = outputs_text(done[0])
    assert f"python: {sys.executable}" in first and "smoke: True" in first
    assert "after: 01" in outputs_text(done[1])
    assert (src / "01_first.ipynb").read_text() == before  # the source keeps no outputs
    assert nbformat.read(done[0], as_version=4).metadata.kernelspec.name == "python3"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [p.name for p in done]


def test_failure_names_notebook_and_cell_and_stops(tmp_path: Path):
    src, out = tmp_path / "notebooks", tmp_path / "out"
    write_notebook(src / "01_ok.ipynb", "x = 1")
    write_notebook(src / "02_bad.ipynb", "y = 2", "raise ValueError('boom in cell')")
    write_notebook(src / "03_never.ipynb", "import pathlib\npathlib.Path('ran.txt').write_text('')")
    out.mkdir()
    (out / "02_bad.ipynb").write_text("previous good run")
    with pytest.raises(HandinError) as caught:
        execute_notebooks(out_dir=out, notebooks_dir=src)
    message = str(caught.value)
    assert "notebook 02_bad.ipynb failed at cell" in message
    assert "raise ValueError" in message and "ValueError: boom in cell" in message
    assert "--only 02" in message
    assert (out / "02_bad.failed.ipynb").exists()
    assert (out / "02_bad.ipynb").read_text() == "previous good run"
    assert not (out / "03_never.ipynb").exists() and not (src / "ran.txt").exists()


def words_beyond(pdf: Path, margin: float) -> list[str]:
    """Words whose right edge lies within ``margin`` points of the page edge (pdftotext -bbox)."""
    html = subprocess.run(["pdftotext", "-bbox", str(pdf), "-"], capture_output=True,
                          text=True, check=True).stdout
    width = float(re.search(r'<page width="([\d.]+)"', html).group(1))
    return [w for x, w in re.findall(r'xMax="([\d.]+)"[^>]*>([^<]*)</word>', html)
            if float(x) > width - margin]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small notebook (long line, tqdm bar, long output, figure) executed, then exported."""
    base = tmp_path_factory.mktemp("export")
    (base / "team.toml").write_text(FILLED_TEAM, encoding="utf-8")
    src = base / "notebooks"
    write_notebook(
        src / "01_export.ipynb", IDENTITY_CELL,
        f"very_long_name_number_one = {{'alpha': 1, 'beta': 2, 'gamma': 3, 'delta': 4, "
        f"'epsilon': 5, 'zeta': 6}}  # a comment that runs on\ntoken = '{LONG_TOKEN}'",
        "from tqdm.auto import tqdm\nimport time\nfor i in tqdm(range(300), desc='epoch 1'):\n"
        "    time.sleep(0.001)\nfor i in range(120):\n    print('row', i)",
        "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('courbe')\nplt.show()",
        TOP5_CELL, SOURCE_CELL, title="Export de test")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TEAM_FILE", str(base / "team.toml"))
        notebook = execute_notebooks(out_dir=base / "out", notebooks_dir=src)[0]
        pdf = export_pdf(notebook, team=load_team())
    return notebook, pdf


def test_export_pdf_names_every_member_and_strips_progress_spam(needs_tex, exported):
    notebook, pdf = exported
    assert pdf == notebook.with_suffix(".pdf")
    raw_stderr = outputs_text(notebook)
    assert raw_stderr.count("it/s]") > 1 or "\r" in raw_stderr  # the bar did redraw itself
    pages = pdf_pages(pdf.read_bytes())
    text = "\n".join(pages)
    team = load_team(notebook.parent.parent / "team.toml")
    assert missing_identity(pages[0], team) == []  # title block on page 1
    assert "Export de test" in pages[0] and "HAI923, groupe 7" in pages[0]
    assert len(re.findall(r"epoch 1:\s*100%", text)) == 1
    assert not re.search(r"epoch 1:\s*\d{1,2}%", text)  # no intermediate bar states
    assert "IProgress" not in text
    assert re.search(r"\[(\.\.\.|…) 85 lines trimmed (\.\.\.|…)\]", text)  # LaTeX makes '…'
    assert "row 0" in text and "row 119" in text and "row 50" not in text
    assert normalize(LONG_TOKEN) in normalize(text)


def test_export_pdf_shows_dataframes_as_whole_tables(needs_tex, exported):
    notebook, pdf = exported
    cells = nbformat.read(notebook, as_version=4).cells
    outputs = [o for c in cells for o in c.get("outputs", [])]
    table = next(o for o in outputs if "text/html" in o.get("data", {}))
    assert "\\begin{tabular}" in table["data"]["text/latex"]  # the PDF's form, beside the HTML
    text = "\n".join(pdf_pages(pdf.read_bytes()))
    assert "0.280" in text  # 3 decimals, as in the report's tables
    # One row per line, path then caption: pandas' text form would split the columns in groups.
    assert re.search(r"bike_004\.jpg\s+A group of cyclists", text)


def test_export_pdf_keeps_code_inside_the_page(needs_tex, exported):
    _, pdf = exported
    assert words_beyond(pdf, margin=28) == []  # 2 cm margins: nothing within 1 cm of the edge
    assert not list(pdf.parent.glob("*.tmp"))


def test_export_pdf_renders(needs_tex, exported, tmp_path: Path):
    _, pdf = exported
    subprocess.run(["pdftoppm", "-r", "40", "-png", "-f", "1", "-l", "1", str(pdf),
                    str(tmp_path / "page")], check=True)
    png = next(tmp_path.glob("page*.png"))
    assert png.stat().st_size > 5000


def test_show_source_shows_the_package_code_itself():
    from utils.handin.display import source_bundle
    from utils.models.clip import ClipModel

    bundle = source_bundle(ClipModel.encode_text)
    header, _, code = bundle["text/plain"].partition("\n")
    assert code == textwrap.dedent(inspect.getsource(ClipModel.encode_text))
    file, line = re.search(r"\((\S+), line (\d+)\)", header).groups()
    lines = (paths.ROOT / file).read_text(encoding="utf-8").splitlines()
    assert lines[int(line) - 1].strip().startswith("def encode_text(")
    assert "<span" in bundle["text/html"] and "\\begin{Verbatim}" in bundle["text/latex"]


def test_export_pdf_shows_the_package_source(needs_tex, exported):
    _, pdf = exported
    text = "\n".join(pdf_pages(pdf.read_bytes()))
    assert "utils.models.clip.ClipLoss" in text and "utils/models/clip.py" in text
    assert "class ClipLoss(nn.Module):" in text
    assert "def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:" in text


def test_the_hand_in_restamps_the_team_of_the_setup_cell_and_keeps_its_other_outputs(
        team_file: Path) -> None:
    from utils.handin.pdf import stamp_identity
    from utils.handin.team import TEAM_OUTPUT, Team, team_bundle

    placeholder = Team(1, load_team(paths.TEAM_FILE).members, paths.TEAM_FILE)
    setup = new_code_cell("setup_notebook(RECIPE, PERSIST)")
    device_line = nbformat.v4.new_output("stream", name="stdout", text="device: cpu | ...\n")
    old = nbformat.v4.new_output("display_data", data=team_bundle(placeholder),
                                 metadata={TEAM_OUTPUT: True})
    setup.outputs = [device_line, old]
    stamped = stamp_identity(new_notebook(cells=[setup]), load_team(), "x")
    outputs = stamped.cells[0].outputs
    assert outputs[0] == device_line and len(outputs) == 2
    assert "Dupont-Leclerc" in outputs[1]["data"]["text/plain"]
    assert "<NOM 1>" not in outputs[1]["data"]["text/plain"]
