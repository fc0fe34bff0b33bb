"""Any image-caption table: CSV, TSV with ';', JSON lines; columns given or guessed; split
given or made; checked with named errors; read by the CLIP stage through ClipTrainConfig.dataset;
evaluated without labels (class precision and zero-shot are None)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from utils.data.__main__ import main
from utils.data.course import DataError
from utils.data.flickr8k import flickr8k_image_files
from utils.data.generic import TableColumns, load_table_dataset
from utils.eval.index import GalleryIndex
from utils.eval.zero_shot import evaluate_clip
from utils.train.clip import load_clip_frame
from utils.train.configs import ClipTrainConfig

WORDS = ("dog", "ball")


def copy_images(flickr8k_dir: Path, folder: Path, n: int = 20) -> list[str]:
    """The first ``n`` Flickr8k images copied to folder/images/ -> their stems."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    files = flickr8k_image_files(flickr8k_dir)[:n]
    for file in files:
        shutil.copyfile(file, folder / "images" / file.name)
    return [file.stem for file in files]


def test_a_labelled_csv_gets_a_stratified_split(flickr8k_dir: Path, tmp_path: Path) -> None:
    stems = copy_images(flickr8k_dir, tmp_path)
    rows = [f"images/{s}.jpg,\"a photo, number {i}\",{WORDS[i % 2]}" for i, s in enumerate(stems)]
    path = tmp_path / "pairs.csv"
    path.write_text("Image,Caption,Label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    frame, root = load_table_dataset(path)
    assert root == tmp_path and len(frame) == 20 and frame["caption"][0] == "a photo, number 0"
    images = frame.groupby("split")["image_path"].nunique().to_dict()
    assert images == {"train": 14, "val": 3, "test": 3}
    assert set(frame[frame["split"] == "train"]["label"]) == set(WORDS)  # stratified
    assert (tmp_path / "pairs_splits.csv").is_file()


def test_a_semicolon_herbarium_table_without_labels(flickr8k_dir: Path, tmp_path: Path) -> None:
    stems = copy_images(flickr8k_dir, tmp_path)
    rows = [f"{s};leaves opposite; flowers {i} mm" for i, s in enumerate(stems)]
    path = tmp_path / "herbarium.tsv"
    path.write_text("code;attributes\n" + "\n".join(f'{r.split(";")[0]};"{r.split(";", 1)[1]}"'
                                                    for r in rows) + "\n", encoding="utf-8")
    frame, _ = load_table_dataset(path)
    assert frame["image_path"][0] == f"images/{stems[0]}.jpg"  # code without extension
    assert frame["caption"][1] == "leaves opposite; flowers 1 mm"
    assert set(frame["label"]) == {""} and frame["split"].value_counts()["train"] == 14
    again, _ = load_table_dataset(path)  # the written split is read back, identical
    assert again.equals(frame)


def test_jsonl_with_its_own_split_column(flickr8k_dir: Path, tmp_path: Path) -> None:
    stems = copy_images(flickr8k_dir, tmp_path, n=6)
    splits = ["train", "train", "dev", "validation", "test", "test"]
    lines = [json.dumps({"file": f"images/{s}.jpg", "text": f"caption {i}", "set": split})
             for i, (s, split) in enumerate(zip(stems, splits, strict=True))]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    frame, _ = load_table_dataset(path)
    assert frame["split"].tolist() == ["train", "train", "val", "val", "test", "test"]
    with pytest.raises(DataError, match=r"pairs.jsonl, line 1: no column 'legend'"):
        load_table_dataset(path, TableColumns(caption="legend"))


def test_check_names_the_file_the_line_and_the_fix(flickr8k_dir: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    stems = copy_images(flickr8k_dir, tmp_path, n=3)
    path = tmp_path / "bad.csv"
    path.write_text(f"image,caption,split\nimages/{stems[0]}.jpg,a dog,train\n"
                    "images/missing.jpg,a cat,train\n"
                    f"images/{stems[1]}.jpg,,test\nimages/{stems[2]}.jpg,a ball,later\n",
                    encoding="utf-8")
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}, line 3: image {tmp_path / 'images/missing.jpg'} not found. Fix:" in err
    assert f"{path}, line 4: empty caption. Fix:" in err
    assert f"{path}, line 5: split 'later' unknown. Fix:" in err
    good = tmp_path / "good.csv"
    stems = copy_images(flickr8k_dir, tmp_path, n=10)  # the made split needs 10 images
    good.write_text("image,caption\n" + "".join(f"images/{s}.jpg,caption {s}\n"
                                                for s in stems), encoding="utf-8")
    assert main(["check", str(good), "--caption-column", "caption"]) == 0
    assert "unlabelled" in capsys.readouterr().out


def test_the_clip_stage_reads_a_table_and_evaluates_without_labels(flickr8k_dir: Path,
                                                                    tmp_path: Path) -> None:
    stems = copy_images(flickr8k_dir, tmp_path)
    path = tmp_path / "pairs.csv"
    path.write_text("image,caption\n" + "".join(f"images/{s}.jpg,caption {s}\n" for s in stems),
                    encoding="utf-8")
    frame, root = load_clip_frame(ClipTrainConfig(dataset=str(path)))
    assert root == tmp_path and len(frame) == 20
    test = frame[frame["split"] == "test"]
    embeds = F.normalize(torch.randn(len(test), 8, generator=torch.Generator().manual_seed(0)))
    index = GalleryIndex(embeds, test["image_path"].tolist(), [-1] * len(test),
                         ["test"] * len(test), embeds.clone(), test["caption"].tolist(),
                         list(range(len(test))), class_names=[])
    result = evaluate_clip(None, None, index, "test")  # no model needed without labels
    assert result["text_to_image"]["R@1"] == 1.0  # each caption's embedding is its image's
    assert result["text_to_image"]["class_precision@5"] is None
    assert result["zero_shot_accuracy"] is None and result["chance"]["zero_shot_accuracy"] is None
