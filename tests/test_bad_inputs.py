"""Bad inputs found by trying them: each gets a named error and loses nothing."""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from utils.core.checkpoint import CheckpointError, save_checkpoint
from utils.core.common import atomic_path
from utils.data.__main__ import main as data_main
from utils.data.course import DataError, check_dataset
from utils.data.flickr8k import build_subset
from utils.models.clip import load_clip
from utils.models.cnn import CnnConfig, build_image_classifier, load_image_classifier
from utils.models.smallbert import SmallBertConfig, build_text_classifier, load_text_classifier


@pytest.mark.parametrize("per_class", [0, -1, 3])
def test_build_refuses_too_few_images_and_keeps_the_old_dataset(flickr8k_dir, course_subset,
                                                               tmp_path, per_class, capsys):
    out = tmp_path / "flickr_subset2"
    shutil.copytree(course_subset, out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    code = data_main(["build", "--flickr8k", str(flickr8k_dir), "--out", str(out),
                      "--per-class", str(per_class)])
    assert code == 1
    assert f"--per-class {per_class}" in capsys.readouterr().err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert check_dataset(out) == []


def test_a_build_failing_its_check_leaves_the_old_dataset(flickr8k_dir, course_subset, tmp_path,
                                                          monkeypatch):
    out = tmp_path / "flickr_subset2"
    shutil.copytree(course_subset, out)
    monkeypatch.setattr("utils.data.flickr8k.check_dataset", lambda root: ["a problem"])
    with pytest.raises(DataError, match="left as it was"):
        build_subset(flickr8k_dir, out, per_class=10)
    assert check_dataset(out) == [] and len(list((out / "images").rglob("*.jpg"))) > 10


def test_interrupted_writes_leave_no_hidden_file_behind(tmp_path):
    target = tmp_path / "03_clip.pt"
    dead = tmp_path / ".03_clip.pt.999999999.abcd.tmp"  # a writer killed before its cleanup
    dead.write_bytes(b"half")
    alive = tmp_path / f".03_clip.pt.{os.getpid()}.efgh.tmp"  # this process's: kept
    alive.write_bytes(b"busy")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt  # Ctrl-C in the middle of a save
    assert not target.exists() and not dead.exists() and alive.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [alive.name]


def small_checkpoints(folder: Path) -> dict[str, Path]:
    """A real CNN and a real SmallBERT checkpoint, tiny."""
    cnn_config = CnnConfig(channels=(4, 8), image_size=16)
    bert_config = SmallBertConfig(width=8, heads=2, ff=16, layers=1, vocab_size=20)
    return {
        "cnn": save_checkpoint(folder / "01_cnn.pt", build_image_classifier(cnn_config)
                               .state_dict(), asdict(cnn_config), kind="image_classifier"),
        "bert": save_checkpoint(folder / "02_smallbert.pt", build_text_classifier(bert_config)
                                .state_dict(), asdict(bert_config), kind="text_classifier",
                                vectorizer={}),
    }


def broken_files(folder: Path, good: Path) -> dict[str, Path]:
    """A truncated copy, an empty file and a text file, all named .pt."""
    truncated = folder / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    empty = folder / "empty.pt"
    empty.write_bytes(b"")
    text = folder / "notes.pt"
    text.write_text("these are my notes, not weights\n", encoding="utf-8")
    return {"truncated": truncated, "empty": empty, "text": text}


@pytest.mark.parametrize("loader", [load_clip, load_image_classifier, load_text_classifier])
def test_broken_checkpoint_files_name_the_file_and_the_fix(tmp_path, loader):
    files = broken_files(tmp_path, small_checkpoints(tmp_path)["cnn"])
    for why, path in files.items():
        with pytest.raises(CheckpointError) as caught:
            loader(path)
        message = str(caught.value)
        assert str(path) in message and "Fix:" in message and "re-run" in message, why
    assert "empty file" in str(pytest.raises(CheckpointError, loader, files["empty"]).value)


def test_a_checkpoint_of_another_kind_says_what_it_is_and_what_was_expected(tmp_path):
    made = small_checkpoints(tmp_path)
    with pytest.raises(CheckpointError, match="image classifier .* but a CLIP model"):
        load_clip(made["cnn"])
    with pytest.raises(CheckpointError, match="SmallBERT text classifier .* but a step-1"):
        load_image_classifier(made["bert"])
    with pytest.raises(CheckpointError, match="02_smallbert_text_classifier.ipynb"):
        load_text_classifier(made["cnn"])


def test_weights_that_do_not_fit_their_config_are_a_named_error(tmp_path):
    path = small_checkpoints(tmp_path)["cnn"]
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["config"]["channels"] = [4, 16]  # edited config: the weights no longer fit
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="do not fit the architecture"):
        load_image_classifier(path)
