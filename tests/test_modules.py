"""Every module of the package is imported by a test that exercises it; the ones no other test
file reaches are exercised here: the figures (written, with their axes), the reload proof, the
lazy exports, the progress bar, the small experiment configs, the setup and GPU-check commands,
the command-line helpers, the fusion training loop on a tiny run."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from utils.core import paths

PACKAGE = paths.ROOT / "utils"
RUN_BY_PATH = {"utils.app.page": "AppTest runs it by file (tests/test_app.py, PAGE)"}


def imported_by_tests() -> set[str]:
    """Modules (and module.name) that the test files import, at any depth."""
    found = set()
    for test in (paths.ROOT / "tests").glob("*.py"):
        for node in ast.walk(ast.parse(test.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("utils"):
                found.add(node.module)
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("utils")}
    return found


def test_every_module_is_imported_by_a_test() -> None:
    modules = {".".join(p.relative_to(paths.ROOT).with_suffix("").parts)
               for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    missing = sorted(modules - imported_by_tests() - set(RUN_BY_PATH))
    assert not missing, f"no test imports: {missing}"


# --- figures: written to results/images, with the axes a reader expects -----------------------
@pytest.fixture
def figures(tmp_path, monkeypatch) -> Path:
    """RESULTS_DIR in a temporary folder; returns the figures' folder."""
    monkeypatch.setenv("RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.delenv("SMOKE", raising=False)
    return tmp_path / "results" / "images"


def test_the_figures_are_written_with_their_axes(figures, course_split) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from utils.eval import plots

    fig = plots.plot_class_split_counts(course_split, name="counts.png")
    assert fig.axes[0].get_xlabel() == "classe" and fig.axes[0].get_ylabel() == "images"
    fig = plots.plot_caption_lengths(course_split, 32, name="lengths.png")
    assert fig.axes[0].get_xlabel() == "mots par légende"
    history = [{"epoch": e, "train_loss": 2.0 / e, "val_loss": 2.1 / e, "val_R@5_t2i": 0.1 * e,
                "val_R@5_i2t": 0.1 * e, "val_R@5": 0.1 * e, "logit_scale": 14.0 + e}
               for e in (1, 2, 3)]
    fig = plots.plot_clip_history(history, name="history.png")
    assert [ax.get_title() for ax in fig.axes][:2] == ["Perte contrastive", "R@5 de validation"]
    fig = plots.plot_confusion_matrix([[3, 1], [0, 4]], ["ball", "bike"], "test", "cm.png")
    assert fig.axes[0].get_xlabel() == "Predicted label"
    curves = {"dog": (np.array([0, 0.5, 1]), np.array([0, 0.9, 1]), 0.85)}
    assert plots.plot_roc_curves(curves, "ROC", "roc.png").axes[0].get_ylabel() == \
        "taux de vrais positifs"
    scores = np.eye(4)
    fig = plots.plot_similarity_matrix(scores, [0, 1, 2, 3], [0, 1, 2, 3],
                                       ("ball", "bike", "dog", "water"), name="sim.png")
    assert fig.axes[0].get_xlabel() == "images (test)"
    assert plots.plot_similarity_matrix(scores, [-1] * 4, [-1] * 4, (), name="none.png") is None
    written = {p.name for p in figures.iterdir()}
    assert written == {"counts.png", "lengths.png", "history.png", "cm.png", "roc.png",
                       "sim.png"}
    assert all((figures / name).stat().st_size > 2000 for name in written)


def test_the_caption_figures_show_the_history_and_the_attention(figures, tmp_path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from PIL import Image

    from utils.eval import caption_plots

    history = [{"epoch": e, "train_ce": 3.0 / e, "val_ce": 3.2 / e, "val_BLEU-4": 0.05 * e,
                "val_CIDEr": 0.1 * e, "lr": 4e-3} for e in (1, 2)]
    fig = caption_plots.plot_caption_history(history, name="captioner.png")
    assert fig.axes and (figures / "captioner.png").is_file()
    picture = tmp_path / "dog.jpg"
    Image.new("RGB", (64, 48), (120, 80, 40)).save(picture)
    fig = caption_plots.plot_attention(picture, ["a", "dog", "<end>"],
                                       torch.full((3, 49), 1 / 49), name="attention.png")
    assert len(fig.axes) >= 3 and (figures / "attention.png").is_file()


# --- the reload proof, the lazy exports, the progress bar -----------------------------------
def test_the_reload_proof_is_exact_on_the_cpu_and_names_a_mismatch() -> None:
    from utils.eval.reload import ReloadMismatch, prove_reload, same_results

    before = {"image": torch.ones(3, 2), "text": np.zeros(4)}
    assert prove_reload(before, {"image": torch.ones(3, 2), "text": np.zeros(4)}) == 0.0
    with pytest.raises(ReloadMismatch, match="differ by 9.5.*e-07 .*the file does not rebuild"):
        prove_reload(torch.ones(2), torch.ones(2) + 1e-6, "logits", torch.device("cpu"))
    with pytest.raises(ReloadMismatch, match="changed shape"):
        prove_reload(torch.ones(2), torch.ones(3))
    assert same_results([("a.jpg", "a dog", 0.5)], [("a.jpg", "a dog", 0.5)])
    assert not same_results([("a.jpg", "a dog", 0.5)], [("b.jpg", "a dog", 0.5)])


def test_lazy_exports_give_the_named_objects_and_name_the_api_on_a_typo() -> None:
    import utils.models
    from utils.core.exports import lazy_exports
    from utils.models.clip import ClipLoss

    assert utils.models.ClipLoss is ClipLoss
    all_names, getattr_, dir_ = lazy_exports("utils.eval", {"utils.eval.plots": ("plots",)})
    assert all_names == ["plots"] and dir_() == ["plots"]
    assert getattr_("plots").__name__ == "utils.eval.plots"
    with pytest.raises(AttributeError, match="its API is"):
        utils.models.ClipLos  # noqa: B018 - the typo is the test


def test_the_progress_bar_writes_plain_text_on_stdout(capsys) -> None:
    from utils.core.progress import note, progress

    for _ in progress(range(3), desc="steps", mininterval=0):
        pass
    note("a line")
    out = capsys.readouterr()
    assert "steps: 100%" in out.out and "a line" in out.out and out.err == ""


# --- the small experiment configs and the command lines ---------------------------------------
def test_the_experiment_configs_derive_from_step_3s(monkeypatch) -> None:
    from utils.experiments.enrichment import (
        EnrichConfig,
        enrichment_clip_configs,
        make_llm_enricher,
    )
    from utils.experiments.pretrained_text import PretrainedTowerConfig, tower_config
    from utils.experiments.reuse import STEP1_VARIANTS, reuse_specs
    from utils.models.clip import ClipConfig
    from utils.models.cnn import CnnConfig
    from utils.train.configs import ClipTrainConfig

    base = (ClipConfig(embed_dim=64, image=CnnConfig()), ClipTrainConfig(epochs=4))
    specs = {spec.name: spec.training for spec in reuse_specs(*base)}
    assert specs[STEP1_VARIANTS["scratch"]].image_source == "checkpoint"
    assert specs[STEP1_VARIANTS["pretrained"]].image_source == "checkpoint_pretrained"
    assert specs["random towers"].image_source == "scratch"
    frozen = specs["frozen towers (steps 1-2)"]
    assert frozen.freeze_image and frozen.freeze_text and frozen.epochs == 4
    architectures = [spec.config for spec in reuse_specs(*base)]
    assert all(c.embed_dim == 64 and c.image is None for c in architectures)  # resolved again
    monkeypatch.delenv("ENRICH_BASE_URL", raising=False)
    monkeypatch.delenv("ENRICH_MODEL", raising=False)
    with pytest.raises(ValueError, match="llm_model is empty.*Fix: remove llm_model"):
        make_llm_enricher(EnrichConfig(llm_model=""))
    enriched, enriched_training = enrichment_clip_configs(base, EnrichConfig())
    assert isinstance(enriched, ClipConfig) and enriched_training.text_source == "scratch"
    with pytest.raises(ValueError, match="unknown field"):
        enrichment_clip_configs(base, EnrichConfig(clip_overrides={"epoch": 3}))
    tower = tower_config(PretrainedTowerConfig(model="minilm-l6-packaged"), "cls")
    assert tower.pooling == "cls" and tower.freeze == "all"


def test_the_command_line_helpers_print_one_line_per_known_error(capsys) -> None:
    import argparse

    from utils.core.cli import positive_int, run_command

    assert run_command(lambda: "done", (ValueError,)) == 0
    assert capsys.readouterr().out == "done\n"
    assert run_command(lambda: int("x"), (ValueError,), "[x] ERROR") == 1
    assert capsys.readouterr().err.startswith("[x] ERROR: invalid literal")
    assert positive_int("3") == 3
    with pytest.raises(argparse.ArgumentTypeError):
        positive_int("-1")


def test_python_m_utils_handin_names_an_unknown_notebook(capsys) -> None:
    from utils.handin.__main__ import main

    assert main(["notebooks", "--only", "99"]) == 1
    assert "[handin] ERROR: no notebook matches '99'" in capsys.readouterr().err


def test_gpu_check_needs_a_gpu_and_reads_the_headline_figures(tmp_path, monkeypatch,
                                                              capsys) -> None:
    from utils.handin import gpu_check

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main() == 2 and "no CUDA GPU here" in capsys.readouterr().err
    monkeypatch.setenv("RESULTS_DIR", str(tmp_path))
    monkeypatch.delenv("SMOKE", raising=False)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "03_clip.json").write_text(json.dumps(
        {"test": {"text_to_image": {"R@5": 0.3}, "image_to_text": {"R@5": 0.2},
                  "zero_shot_accuracy": 0.9}, "reload_max_abs_diff": 0.0}), encoding="utf-8")
    figures = gpu_check.headline_figures()
    assert figures["03_t2i_R@5"] == 0.3 and figures["01_accuracy"] == {}


def test_the_setup_keeps_its_promises_outside_colab(tmp_path, monkeypatch) -> None:
    from utils.handin import setup

    for name in ("PERSIST_DIR", "COLAB_RELEASE_TAG", "MODELS_DIR", "RESULTS_DIR", "TEAM_FILE"):
        monkeypatch.setenv(name, "")  # recorded, so the test leaves the environment as it was
        monkeypatch.delenv(name)
    with pytest.raises(RuntimeError, match="works on Colab only"):
        setup.persist_on_drive()
    with pytest.raises(ValueError, match="PERSIST='dropbox'"):
        setup.setup_notebook(persist="dropbox")
    monkeypatch.setenv("PERSIST_DIR", str(tmp_path / "drive"))
    (tmp_path / "drive").mkdir()
    (tmp_path / "drive" / "team.toml").write_text("group = 3\n", encoding="utf-8")
    setup.persist_on_drive()
    import os

    assert os.environ["MODELS_DIR"] == str(tmp_path / "drive" / "models")
    assert os.environ["TEAM_FILE"] == str(tmp_path / "drive" / "team.toml")
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "drive" / "flickr_subset2.zip").write_bytes(b"zip")
    assert setup.fetch_command("course")[-2:] == ["--zip",
                                                  str(tmp_path / "drive" / "flickr_subset2.zip")]


def test_clip_cli_reads_its_overrides_as_json() -> None:
    import argparse

    from utils.train.clip_cli import nproc_problem, overrides_of

    args = argparse.Namespace(dataset="flickr8k", set=["epochs=3", "freeze_image=true",
                                                       "image_source=scratch"])
    assert overrides_of(args) == {"dataset": "flickr8k", "epochs": 3, "freeze_image": True,
                                  "image_source": "scratch"}
    assert nproc_problem("2") is None and "whole number" in nproc_problem("two")


def test_frozen_features_are_cached_on_disk_once(tmp_path, monkeypatch) -> None:
    from utils.train import features

    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    encoder = torch.nn.Sequential(torch.nn.Embedding(20, 4), torch.nn.Flatten())
    tokens = torch.randint(0, 20, (10, 3))
    first = features.cached_text_features(encoder, tokens, "tiny")
    assert first.shape == (10, 12) and features.text_cache_path("tiny", tokens).is_file()
    monkeypatch.setattr(features, "encode_tokens", lambda *a: pytest.fail("computed again"))
    assert torch.equal(features.cached_text_features(encoder, tokens, "tiny"), first)


def test_latex_escapes_and_formats_what_the_report_prints() -> None:
    from utils.handin.latex import escape_latex, format_value

    assert escape_latex("R@5 & 50% of_x") == r"R@5 \& 50\% of\_x"
    assert format_value(0.12345) == "0.123" and format_value(7) == "7"


def test_masked_mean_ignores_the_padding() -> None:
    from utils.models.pooling import masked_mean

    hidden = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(hidden, torch.tensor([[True, True, False]])).item() == 2.0


def test_a_tiny_fusion_run_trains_through_the_one_loop(tmp_path) -> None:
    from utils.models.fusion import FusionConfig
    from utils.train.configs import FusionTrainConfig
    from utils.train.fusion import build_multitask, multitask_step, predict_multitask, train_model

    torch.manual_seed(0)
    config = FusionConfig(trunk_hidden=16)
    training = FusionTrainConfig(epochs=3, patience=3, batch_size=8)
    features, classes = torch.randn(32, 12), torch.randint(0, 4, (32,))
    tags = (torch.rand(32, 5) > 0.7).float()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(features, classes, tags),
                                         batch_size=8)
    model = build_multitask(12, 5, config, seed=0)
    run = train_model(model, multitask_step(training, 1.0, 1.0),
                      {"train": loader, "val": loader}, 3, 1e-2, training, torch.device("cpu"))
    assert len(run.history) == 3 and run.history[-1]["train_loss"] < run.history[0]["train_loss"]
    class_logits, tag_logits = predict_multitask(run.model, loader, torch.device("cpu"))
    assert class_logits.shape == (32, 4) and tag_logits.shape == (32, 5)
    assert isinstance(pd.DataFrame(run.history), pd.DataFrame)
