"""Paths, seeding, configs, atomic writes and checkpoints: the helpers every stage relies on."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from utils.core import paths
from utils.core.checkpoint import load_checkpoint, save_checkpoint
from utils.core.common import (
    atomic_path,
    default_mode,
    load_json,
    make_config,
    save_json,
    seed_everything,
)


@dataclasses.dataclass
class DemoConfig:
    epochs: int = 20  # full run
    lr: float = 1e-3  # learning rate
    SMOKE: ClassVar[dict] = {"epochs": 1}


def test_paths_follow_environment_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("RESULTS_DIR", str(tmp_path / "r"))
    monkeypatch.setenv("MODELS_DIR", str(tmp_path / "m"))
    assert paths.subset_dir() == tmp_path / "d" / "flickr_subset2"
    assert paths.figure_path("a.png") == tmp_path / "r" / "images" / "a.png"
    assert paths.metrics_path("a.json").parent.is_dir()
    assert paths.model_path("a.pt").parent == tmp_path / "m"


def test_paths_default_to_repository_root(monkeypatch):
    for name in ("DATA_DIR", "RESULTS_DIR", "MODELS_DIR"):
        monkeypatch.delenv(name, raising=False)
    assert paths.data_dir() == paths.ROOT / "data"
    assert paths.models_dir() == paths.ROOT / "models"
    assert (paths.ROOT / "utils" / "core" / "paths.py").is_file()


def test_seed_everything_repeats_random_draws():
    seed_everything(3)
    first = torch.randn(5)
    seed_everything(3)
    assert torch.equal(first, torch.randn(5))


def test_make_config_applies_smoke_then_overrides(monkeypatch):
    monkeypatch.delenv("SMOKE", raising=False)
    assert make_config(DemoConfig).epochs == 20
    assert make_config(DemoConfig, smoke=True).epochs == 1
    assert make_config(DemoConfig, smoke=True, overrides={"epochs": 4}).epochs == 4
    monkeypatch.setenv("SMOKE", "1")
    assert make_config(DemoConfig).epochs == 1


def test_make_config_names_unknown_fields():
    with pytest.raises(ValueError, match="epoch.*valid"):
        make_config(DemoConfig, overrides={"epoch": 3})


def test_atomic_path_leaves_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "out.json"
    save_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert load_json(target) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_checkpoint_round_trip_is_weights_only(tmp_path):
    model = torch.nn.Linear(3, 2)
    config = dataclasses.asdict(DemoConfig())
    path = save_checkpoint(tmp_path / "m.pt", model.state_dict(), config, epoch=4,
                           metrics={"acc": torch.tensor(0.5)}, vocab={"tokenizer": "{}"})
    loaded = load_checkpoint(path)
    assert loaded["config"] == config and loaded["epoch"] == 4
    assert loaded["metrics"] == {"acc": 0.5}
    fresh = torch.nn.Linear(3, 2)
    fresh.load_state_dict(loaded["state_dict"])
    x = torch.randn(4, 3)
    assert torch.equal(fresh(x), model(x))


def test_missing_checkpoint_says_which_notebook_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="notebook"):
        load_checkpoint(Path(tmp_path) / "01_cnn.pt")


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    target = save_json(tmp_path / "shared.json", {"a": 1})
    assert target.stat().st_mode & 0o777 == default_mode()


def test_save_json_writes_strict_json_for_missing_values(tmp_path):
    path = save_json(tmp_path / "m.json", {"a": float("nan"), "b": np.float32(0.5),
                                            "c": torch.tensor([1.0, float("inf")])})
    assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()
    assert load_json(path) == {"a": None, "b": 0.5, "c": [1.0, None]}
