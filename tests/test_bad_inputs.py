"""Bad inputs found by trying them: each gets a named error and loses nothing."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
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


# --- issue 24: eleven defects found by trying bad inputs, each with its test ------------------
def test_defect_1_a_smoke_run_never_replaces_a_full_run(course_subset, tmp_path, monkeypatch):
    from utils.handin.execute import execute_notebooks

    full_models, full_results = tmp_path / "models", tmp_path / "results"
    full_models.mkdir()
    (full_results / "metrics").mkdir(parents=True)
    checkpoint, metrics = full_models / "02_smallbert.pt", full_results / "metrics" / "02.json"
    checkpoint.write_bytes(b"the full run's SmallBERT")
    metrics.write_text('{"epochs": 20}', encoding="utf-8")
    for key, value in {"MODELS_DIR": full_models, "RESULTS_DIR": full_results,
                       "DATA_DIR": course_subset.parent}.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.delenv("SMOKE", raising=False)
    execute_notebooks(["02"], {"SMOKE": True})  # `utils.handin notebooks --only 02 --smoke`
    assert checkpoint.read_bytes() == b"the full run's SmallBERT"
    assert metrics.read_text(encoding="utf-8") == '{"epochs": 20}'
    assert (full_models / "smoke" / "02_smallbert.pt").is_file()
    assert (full_results / "smoke" / "metrics" / "02_smallbert.json").is_file()
    assert (full_results / "smoke" / "notebooks" / "02_smallbert_text_classifier.ipynb").is_file()
    assert not (full_results / "notebooks").exists() and "SMOKE" not in os.environ


def test_defect_1_the_report_and_the_zip_refuse_smoke_results(tmp_path, team_file):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    from utils.core.common import save_json
    from utils.handin.execute import list_notebooks
    from utils.handin.report import ReportError, build_report
    from utils.handin.submission import SubmissionError, build_submission

    results = tmp_path / "results"
    save_json(results / "metrics" / "03_clip.json", {"runtime": {"smoke": True}})
    with pytest.raises(ReportError, match="03_clip.json.*SMOKE run.*`make run`"):
        build_report(tmp_path / "report", results_dir=results)
    (results / "notebooks").mkdir()
    for source in list_notebooks():
        notebook = new_notebook(cells=[new_code_cell("1")])
        notebook.metadata["papermill"] = {"parameters": {"SMOKE": True}}
        nbformat.write(notebook, results / "notebooks" / source.name)
    with pytest.raises(SubmissionError, match="00_data.ipynb.*SMOKE run"):
        build_submission(out_dir=tmp_path, results_dir=results)
    assert not (tmp_path / "7.zip").exists()


def test_defect_2_build_into_an_existing_folder_deletes_nothing(flickr8k_dir, course_subset,
                                                               tmp_path, capsys):
    out = tmp_path / "flickr_subset2"
    shutil.copytree(course_subset, out)
    (out / "NOTES.txt").write_text("the team's notes", encoding="utf-8")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    code = data_main(["build", "--flickr8k", str(flickr8k_dir), "--out", str(out),
                      "--per-class", "20"])
    assert code == 1 and "refusing to replace it" in capsys.readouterr().err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert data_main(["build", "--flickr8k", str(flickr8k_dir), "--out", str(out),
                      "--per-class", "20", "--replace"]) == 0
    assert "moved aside, whole, to" in capsys.readouterr().out
    aside, = [p for p in tmp_path.iterdir() if p.name.startswith("flickr_subset2.replaced-")]
    assert sorted(p.relative_to(aside) for p in aside.rglob("*")) == before
    assert len(list((out / "images").rglob("*.jpg"))) == 80


def grey16_png(path: Path, size: int = 64) -> Path:
    """A 16-bit greyscale PNG: a horizontal ramp from 0 to 65535."""
    import numpy as np
    from PIL import Image

    ramp = np.tile(np.linspace(0, 65535, size).astype(np.uint16), (size, 1))
    image = Image.fromarray(ramp)
    assert image.mode.startswith("I;16")
    image.save(path)
    return path


def test_defect_4_a_16_bit_png_is_scaled_not_clipped_to_white(tmp_path):
    from utils.data.images import decode_image, image_error, open_rgb
    from utils.eval.search import read_upload

    path = grey16_png(tmp_path / "grey16.png")
    for image in (open_rgb(path), read_upload(path.read_bytes(), path.name)):
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32))
        assert image.mode == "RGB" and pixels.min() == 0 and pixels.max() == 255
        assert 120 < pixels.mean() < 135  # a ramp: mid-grey on average, not white
    assert decode_image(path, 32).float().mean() < 140 and image_error(path) is None


def bomb_png(path: Path, side: int) -> Path:
    """A small PNG file that declares side x side pixels (1-bit, all black)."""
    from PIL import Image

    Image.new("1", (side, side)).save(path)
    return path


@pytest.mark.parametrize("side", [8_000, 15_000])  # over the project's cap; over PIL's own too
def test_defect_6_an_oversized_image_is_refused_by_name_everywhere(tmp_path, side):
    from utils.data.images import ImageError, decode_image, image_error
    from utils.eval.search import UploadError, read_upload

    path = bomb_png(tmp_path / "bomb.png", side)
    assert path.stat().st_size < 3_000_000
    with pytest.raises(UploadError, match="bomb.png: .*pixels"):
        read_upload(path.read_bytes(), "bomb.png")
    with pytest.raises(ImageError, match="Fix: resize it"):
        decode_image(path, 64)
    assert "pixels" in image_error(path)


def test_defect_7_image_paths_stay_inside_the_dataset_folder(course_subset, tmp_path):
    from utils.data.generic import check_table, load_table_dataset

    root = tmp_path / "subset"
    shutil.copytree(course_subset, root)
    csv = root / "captions.csv"
    rows = csv.read_text(encoding="utf-8").splitlines()
    rows[1] = "../../../../etc/hostname," + rows[1].split(",", 1)[1]
    rows[2] = "/etc/passwd," + rows[2].split(",", 1)[1]
    csv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    problems = "\n".join(check_dataset(root))
    assert "'../../../../etc/hostname' leaves the dataset folder" in problems
    assert "'/etc/passwd' leaves the dataset folder" in problems
    assert "unreadable" not in problems and "not found" not in problems  # never opened
    own = tmp_path / "own" / "table.csv"
    own.parent.mkdir()
    image = course_subset / "images" / "dog" / "dog_001.jpg"
    own.write_text(f"image,caption\n{image},a dog\n../x.jpg,nothing\n", encoding="utf-8")
    problems = check_table(own)
    assert len(problems) == 2 and all("leaves the folder" in p and "--allow-outside-paths" in p
                                      for p in problems)
    own.write_text(f"image,caption,split\n{image},a dog,train\n", encoding="utf-8")
    assert check_table(own, allow_outside=True) == []
    assert load_table_dataset(own, allow_outside=True)[0]["image_path"].tolist() == [str(image)]


def test_defect_8_a_huge_csv_field_names_the_line_and_the_fix(tmp_path):
    from utils.data.generic import check_table

    table = tmp_path / "t.csv"
    table.write_text('image,caption\na.jpg,"fine"\nb.jpg,"' + "x" * 140_000 + '"\n',
                     encoding="utf-8")
    problem, = check_table(table)
    assert f"{table}, line 3: unreadable row" in problem and "Fix: close the quote" in problem


def test_defect_8_build_under_a_file_is_a_named_error(flickr8k_dir, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert data_main(["build", "--flickr8k", str(flickr8k_dir), "--out",
                      str(tmp_path / "afile" / "subset")]) == 1
    assert "is a file. Fix: give an --out folder" in capsys.readouterr().err


def write_judgments(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    """A Flickr8k-Expert-format judgments file."""
    path.write_text("\n".join(lines) + "\n", encoding=encoding)
    return path


def test_defects_8_and_9_human_agreement_bad_inputs_are_named(flickr8k_dir, tmp_path, capsys):
    from utils.eval.__main__ import main as eval_main

    made = small_checkpoints(tmp_path)
    images = sorted(p.name for p in (flickr8k_dir / "Flicker8k_Dataset").iterdir())[:2]
    good = [f"{images[0]}\t{images[0]}#0\t4\t4\t3", f"{images[1]}\t{images[0]}#1\t1\t2\t1"]
    judgments = write_judgments(tmp_path / "j.txt", good)
    cases = {
        "a CNN checkpoint": (made["cnn"], judgments, "image classifier .* but a CLIP model"),
        "a truncated one": (broken_files(tmp_path, made["cnn"])["truncated"], judgments,
                            "not a readable PyTorch checkpoint"),
    }
    clip = tiny_clip_checkpoint(tmp_path)
    cases["non-UTF-8 judgments"] = (clip, write_judgments(tmp_path / "latin.txt", [
        f"{images[0]}\t{images[0]}#0\t4\t4\t3 é"], "latin-1"), "not UTF-8 text")
    cases["equal ratings"] = (clip, write_judgments(tmp_path / "same.txt", [
        f"{images[0]}\t{images[0]}#0\t2\t2\t2", f"{images[1]}\t{images[1]}#0\t2\t2\t2"]),
        "all 6 ratings are 2: Kendall's tau is undefined")
    for why, (checkpoint, path, message) in cases.items():
        code = eval_main(["human_agreement", "--judgments", str(path), "--checkpoint",
                          str(checkpoint), "--flickr8k", str(flickr8k_dir)])
        error = capsys.readouterr().err
        assert code == 1 and re.search(message, error) and "Traceback" not in error, why


def tiny_clip_checkpoint(folder: Path) -> Path:
    """A tiny untrained CLIP checkpoint (scratch towers) with an empty gallery."""
    from utils.data.tokenizers import TextVectorizer
    from utils.models.clip import ClipConfig, build_clip, save_clip

    tokenizer = TextVectorizer.fit(["a dog", "a bike on the road"], length=8)
    config = ClipConfig(embed_dim=8,
                        image=CnnConfig(channels=(4, 8), image_size=16),
                        text=SmallBertConfig(width=8, heads=2, ff=16, layers=1,
                                             vocab_size=tokenizer.vocab_size, length=8))
    return save_clip(folder / "tiny_clip.pt", build_clip(config), tokenizer, 0, {})


def test_defect_8_the_captioner_command_names_every_bad_input(tmp_path, capsys):
    from utils.models.captioner import caption_cli

    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    bomb = bomb_png(tmp_path / "bomb.png", 8_000)
    clip = tiny_clip_checkpoint(tmp_path)
    cases = [
        ([str(text), "--checkpoint", str(clip)], "but a captioning model (notebooks/06"),
        ([str(text), "--checkpoint", str(tmp_path / "none.pt")], "checkpoint not found"),
    ]
    for args, message in cases:
        assert caption_cli(["caption", *args]) == 1
        error = capsys.readouterr().err
        assert message in error and "Traceback" not in error and "glove" not in error
    from utils.models.captioner import caption_image

    with pytest.raises(ValueError, match="notes.jpg: .*Fix: give a JPEG or PNG"):
        caption_image(text, None, None)
    with pytest.raises(ValueError, match="bomb.png: .*pixels"):
        caption_image(bomb, None, None)


def test_defect_8_command_line_numbers_are_checked_before_any_work(capsys):
    from utils.app import bench
    from utils.app import index as app_index
    from utils.train.clip_cli import main as clip_main

    for run, args in ((app_index.main, ["--batch-size", "0"]), (bench.main, ["--queries", "0"])):
        with pytest.raises(SystemExit) as stop:
            run(args)
        assert stop.value.code == 2 and "'0' is not a whole number >= 1" in \
            capsys.readouterr().err
    assert clip_main(["--set", "epochs=-3", "--smoke"]) == 1
    assert "ClipTrainConfig.epochs=-3: must be a number > 0" in capsys.readouterr().err
    assert clip_main(["--check-nproc", "0"]) == 2
    assert "NPROC='0': give a whole number" in capsys.readouterr().err
    assert clip_main(["--check-nproc", "2", "--dataset", "missing.csv"]) == 2
    error = capsys.readouterr().err
    assert "missing.csv: not found" in error and "Traceback" not in error


def test_an_interrupted_notebook_run_leaves_no_hidden_copy_forever(tmp_path):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    from utils.handin.execute import execute_notebook, venv_kernel

    source = tmp_path / "00_tiny.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("1 + 1")]), source)
    out = tmp_path / "out"
    out.mkdir()
    dead = out / ".00_tiny.999999999.abcd.ipynb"  # left by a run that was killed
    dead.write_text("{}")
    with venv_kernel() as kernel:
        execute_notebook(source, out / "00_tiny.ipynb", {}, kernel)
    assert sorted(p.name for p in out.iterdir()) == ["00_tiny.ipynb"]


def test_one_class_gives_no_class_precision_instead_of_a_meaningless_1(tmp_path):
    from utils.eval.retrieval import evaluate_retrieval

    embeds = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
    result = evaluate_retrieval(embeds, embeds, list(range(6)), [0] * 6)
    assert result["text_to_image"]["class_precision@5"] is None
    two = evaluate_retrieval(embeds, embeds, list(range(6)), [0, 1] * 3)
    assert two["text_to_image"]["class_precision@5"] is not None


def test_defect_5_the_hand_in_checker_reads_no_zip_bomb(tmp_path):
    import time
    import zipfile

    from utils.handin.submission import MAX_ENTRY_BYTES, check_submission

    bomb = tmp_path / "7.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("7_00_data.ipynb", "w", force_zip64=True) as entry:
            chunk = b"\0" * 2**20
            for _ in range(MAX_ENTRY_BYTES // 2**20 + 8):
                entry.write(chunk)
    assert bomb.stat().st_size < 2**20  # a small file...
    start = time.perf_counter()
    result = check_submission(bomb)
    seconds = time.perf_counter() - start
    assert not result.ok
    assert any("7_00_data.ipynb would unpack to 108 MiB" in v for v in result.violations)
    print(f"checked in {seconds:.2f} s")  # reported, not asserted: nothing was decompressed
