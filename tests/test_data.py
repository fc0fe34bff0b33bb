"""utils.data on the real Flickr8k copy and on small corpora and broken folders made here."""

from __future__ import annotations

import hashlib
import http.server
import io
import re
import shutil
import threading
import urllib.error
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from utils.data import course, fetch, flickr8k
from utils.data.__main__ import main as data_main
from utils.data.course import (
    CLASSES,
    DataError,
    check_dataset,
    classify_caption,
    load_dataset,
    make_split,
    read_captions,
)
from utils.data.flickr8k import build_subset, read_flickr8k

STRAY_KEY = "2258277193_586949ec62.jpg.1"
COLORS = {"ball": (200, 40, 40), "bike": (40, 200, 40), "dog": (40, 40, 200), "water": (0, 90, 200)}


# --- small inputs made by the tests ----------------------------------------------------------

def make_jpeg(path: Path, color=(120, 60, 30), size=(16, 16), mode="RGB") -> Path:
    """A tiny real image file (any PIL mode, format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, color)
    image = image.convert(mode) if mode != "RGB" else image
    image.save(path)
    return path


def make_course_dir(root: Path, per_class: int = 2) -> Path:
    """A course-format folder: captions.csv, captions/, images/<class>/<class>_NNN.jpg."""
    rows = []
    for label in CLASSES:
        for n in range(1, per_class + 1):
            stem = f"{label}_{n:03d}"
            make_jpeg(root / "images" / label / f"{stem}.jpg", COLORS[label])
            caption = f"A photo number {n} of a {label}, seen closely ."
            (root / "captions").mkdir(parents=True, exist_ok=True)
            (root / "captions" / f"{stem}.txt").write_text(caption + "\n", encoding="utf-8")
            rows.append((f"images/{label}/{stem}.jpg", label, caption))
    pd.DataFrame(rows, columns=course.COLUMNS).to_csv(root / "captions.csv", index=False)
    return root


# Captions #0 of a synthetic corpus; file names out of order on purpose (the builder sorts).
SYNTHETIC = {
    "30_dogball.jpg": "A dog shakes its head near the shore , a red ball next to it .",
    "10_dog.jpg": "Two DOGS play in the grass .",
    "20_ball.jpg": "A boy kicks a ball .",
    "25_bikewater.jpg": "Cyclists ride along the water .",
    "40_water.jpg": "A child splashes in the water !",
    "50_bike.jpg": "A man repairs his bicycle .",
    "55_none.jpg": "A hotdog stand near the waterfall .",
    "60_none.jpg": "A man sits on a bench .",
    "70_ball.jpg": "Kids throw balls .",
    "80_water.jpg": "Water everywhere .",
}


# Ten images per class: enough for a stratified 70/15/15 split.
SYNTHETIC_10 = {f"{n:02d}_{label}.jpg": f"A {label} photo number {n} ." for label in CLASSES
                for n in range(1, 11)}


def make_flickr_like(root: Path, captions0: dict[str, str] = SYNTHETIC) -> Path:
    """A Flickr8k-shaped folder: images, token file (5 captions each, plus a stray key),
    and the three split files."""
    lines = []
    for i, (image, caption) in enumerate(captions0.items()):
        make_jpeg(root / flickr8k.FLICKR_IMAGES / image, color=(20 * i % 255, 100, 150))
        lines.append(f"{image}#0\t{caption}")
        # Captions #1..#4 name a dog: the selection must only read caption #0.
        lines += [f"{image}#{n}\tVariant {n} : a dog near {image[:-4]} ." for n in range(1, 5)]
        if i == 2:
            lines += [f"{STRAY_KEY}#{n}\tpeople waiting for the subway" for n in range(5)]
    text = root / flickr8k.FLICKR_TEXT
    text.mkdir(parents=True)
    (text / flickr8k.TOKEN_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    names = sorted(captions0)
    for split, name in flickr8k.FLICKR_SPLIT_FILES.items():
        chosen = {"train": names[:6], "val": names[6:8], "test": names[8:]}[split]
        (text / name).write_text("\n".join(chosen) + "\n", encoding="utf-8")
    return root


def md5(path: Path) -> str:
    """Content hash of a file."""
    return hashlib.md5(path.read_bytes()).hexdigest()


# --- Flickr8k parser -------------------------------------------------------------------------

def test_read_flickr8k_real_corpus_skips_and_reports_the_stray_key_once(flickr8k_dir, capsys):
    flickr8k.REPORTED.clear()
    frame = read_flickr8k(flickr8k_dir)
    read_flickr8k(flickr8k_dir)  # the note is said once per process
    notes = [line for line in capsys.readouterr().out.splitlines() if STRAY_KEY in line]
    assert len(notes) == 1
    assert "lines 6731-6735" in notes[0] and notes[0].startswith("note: ")
    assert len(frame) == 40_460 - 5
    assert frame["image"].nunique() == 8091
    assert STRAY_KEY not in set(frame["image"])
    assert sorted(frame["caption_index"].unique()) == [0, 1, 2, 3, 4]
    images = frame.drop_duplicates("image")
    assert images["flickr_split"].value_counts().to_dict() == {
        "train": 6000, "val": 1000, "test": 1000, "": 91}
    first = frame.iloc[0]
    assert (first["image"], first["caption_index"]) == ("1000268201_693b08cb0e.jpg", 0)
    assert first["caption"].startswith("A child in a pink dress is climbing up a set of stairs")


def test_read_flickr8k_names_file_and_line_of_a_malformed_line(tmp_path):
    root = make_flickr_like(tmp_path / "f")
    token = root / flickr8k.FLICKR_TEXT / flickr8k.TOKEN_FILE
    lines = token.read_text().splitlines()
    lines[1] = "10_dog.jpg#1 caption without a tab"
    token.write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"Flickr8k\.token\.txt, line 2: expected"):
        read_flickr8k(root)


def test_read_flickr8k_missing_folder_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="Fix: unzip Flickr8k_Dataset.zip"):
        read_flickr8k(tmp_path / "nowhere")


# --- selection and builder -------------------------------------------------------------------

@pytest.mark.parametrize("caption, label", [
    ("A dog chases a ball .", "dog"),
    ("Two bicyclists ride by the water", "bike"),
    ("BIKERS and balls", "bike"),
    ("A ball floats on the water", "ball"),
    ("waves of water", "water"),
    ("A hotdog seller near a waterfall", None),
    ("a cyclist", "bike"),
    ("the dog's bowl", "dog"),
])
def test_classify_caption_whole_words_and_priority(caption, label):
    assert classify_caption(caption) == label


def test_selection_rules_on_a_synthetic_corpus(tmp_path, capsys):
    root = make_flickr_like(tmp_path / "f")
    flickr8k.REPORTED.clear()
    out = build_subset(root, tmp_path / "subset", per_class=2, min_per_class=1)
    assert STRAY_KEY in capsys.readouterr().out
    frame = read_captions(out)
    sources = {md5(p): p.name for p in (root / flickr8k.FLICKR_IMAGES).iterdir()}
    chosen = {row.image_path: sources[md5(out / row.image_path)] for row in frame.itertuples()}
    assert chosen == {
        # file-name order within a class; dog beats ball; bike beats water; caption #0 only
        "images/ball/ball_001.jpg": "20_ball.jpg", "images/ball/ball_002.jpg": "70_ball.jpg",
        "images/bike/bike_001.jpg": "25_bikewater.jpg", "images/bike/bike_002.jpg": "50_bike.jpg",
        "images/dog/dog_001.jpg": "10_dog.jpg", "images/dog/dog_002.jpg": "30_dogball.jpg",
        "images/water/water_001.jpg": "40_water.jpg", "images/water/water_002.jpg": "80_water.jpg",
    }
    assert frame.set_index("image_path").loc["images/dog/dog_002.jpg", "caption"] == \
        SYNTHETIC["30_dogball.jpg"]
    assert (out / "captions" / "dog_002.txt").read_text().strip() == SYNTHETIC["30_dogball.jpg"]
    with pytest.raises(DataError, match="too few images for --per-"):
        build_subset(root, tmp_path / "too_many", per_class=3, min_per_class=1)
    assert not (tmp_path / "too_many").exists()


def test_five_captions_per_image_keep_all_captions_together(tmp_path):
    root = make_flickr_like(tmp_path / "f")
    out = build_subset(root, tmp_path / "subset", per_class=1, captions_per_image=5,
                       min_per_class=1)
    frame = read_captions(out)
    assert len(frame) == 4 * 5
    assert frame.groupby("image_path")["caption"].nunique().eq(5).all()
    lines = (out / "captions" / "dog_001.txt").read_text().splitlines()
    assert lines == frame[frame["image_path"] == "images/dog/dog_001.jpg"]["caption"].tolist()
    assert lines[0] == SYNTHETIC["10_dog.jpg"] and lines[1].startswith("Variant 1")


def test_course_subset_has_the_course_layout(course_subset, flickr8k_dir):
    frame = read_captions(course_subset)
    assert list(frame.columns) == ["image_path", "label", "caption"]
    assert frame["label"].value_counts().to_dict() == dict.fromkeys(CLASSES, 150)
    assert frame["image_path"].is_unique
    for row in frame.itertuples():
        assert re.fullmatch(rf"images/{row.label}/{row.label}_(\d{{3}})\.jpg", row.image_path)
        stem = Path(row.image_path).stem
        assert (course_subset / "captions" / f"{stem}.txt").read_text().strip() == row.caption
    numbers = frame[frame["label"] == "dog"]["image_path"].str[-7:-4].astype(int)
    assert sorted(numbers) == list(range(1, 151))
    # An image is used once: 600 different files.
    assert len({md5(course_subset / p) for p in frame["image_path"]}) == 600


def test_course_subset_follows_the_course_dog_images(course_subset, flickr8k_dir):
    captions = read_captions(course_subset).set_index("image_path")["caption"]
    source = flickr8k_dir / flickr8k.FLICKR_IMAGES
    # The course's dog_001 is the first Flickr8k file whose caption #0 says dog; dog_004 also
    # says "ball" and is a dog.
    for stem, flickr_name in (("dog_001", "1001773457_577c3a7d70.jpg"),
                              ("dog_004", "1012212859_01547e3f17.jpg")):
        assert md5(course_subset / f"images/dog/{stem}.jpg") == md5(source / flickr_name)
    assert "ball" in captions["images/dog/dog_004.jpg"]
    with Image.open(course_subset / "images/dog/dog_004.jpg") as image:
        assert (image.format, image.size) == ("JPEG", (224, 224))


def test_course_subset_passes_check_and_every_image_opens(course_subset):
    assert check_dataset(course_subset) == []


def test_build_twice_gives_identical_files(course_subset, flickr8k_dir, tmp_path):
    out = tmp_path / "again"
    build_subset(flickr8k_dir, out, per_class=150)
    assert (out / "captions.csv").read_bytes() == (course_subset / "captions.csv").read_bytes()
    first = read_captions(course_subset)["image_path"]
    assert all(md5(out / p) == md5(course_subset / p) for p in first)


def test_rebuild_moves_the_old_folder_aside_whole_and_only_when_asked(tmp_path):
    root = make_flickr_like(tmp_path / "f")
    out = tmp_path / "built" / "subset"
    build_subset(root, out, per_class=2, min_per_class=1)
    (out / "NOTES.txt").write_text("the team's notes")
    with pytest.raises(DataError, match="refusing to replace it .*--replace"):
        build_subset(root, out, per_class=1, min_per_class=1)
    assert (out / "NOTES.txt").is_file() and len(read_captions(out)) == 8  # untouched
    build_subset(root, out, per_class=1, min_per_class=1, replace=True)
    assert len(read_captions(out)) == 4 and not (out / "NOTES.txt").exists()
    aside, = [p for p in out.parent.iterdir() if p.name != "subset"]  # no temp folder left
    assert aside.name.startswith("subset.replaced-")
    assert (aside / "NOTES.txt").read_text() == "the team's notes"
    assert len(read_captions(aside)) == 8


def test_build_refuses_to_replace_a_folder_that_is_not_a_dataset(tmp_path):
    root = make_flickr_like(tmp_path / "f")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match="refusing to replace"):
        build_subset(root, tmp_path / "mine", per_class=1, min_per_class=1)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_cli_build_then_check(tmp_path, capsys):
    root = make_flickr_like(tmp_path / "f", SYNTHETIC_10)
    assert data_main(["build", "--flickr8k", str(root), "--out", str(tmp_path / "s"),
                      "--per-class", "10"]) == 0
    assert data_main(["check", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"dog\s+10 images\s+10 captions", out)
    assert re.search(r"total\s+40 images", out)


# --- check on broken inputs ------------------------------------------------------------------

def rewrite_csv(root: Path, edit) -> None:
    """Apply ``edit`` to the CSV table and write it back."""
    frame = pd.read_csv(root / "captions.csv", keep_default_na=False)
    edit(frame).to_csv(root / "captions.csv", index=False)


def truncate_image(root: Path) -> None:
    """Replace dog_001 by a noisy JPEG cut in the middle of its image data."""
    path = root / "images/dog/dog_001.jpg"
    Image.effect_noise((96, 96), 80).convert("RGB").save(path, quality=95)
    body = path.read_bytes()
    path.write_bytes(body[: len(body) * 2 // 3])
    with Image.open(path) as image:  # the header still reads: only a full decode sees the cut
        assert image.size == (96, 96)


BROKEN = {
    "missing image": (lambda r: (r / "images/dog/dog_001.jpg").unlink(),
                      r"captions\.csv, line 6: image .*dog_001\.jpg not found"),
    "truncated jpeg": (truncate_image,
                       r"dog_001\.jpg \(captions\.csv line 6\): unreadable image"),
    "not an image": (lambda r: (r / "images/ball/ball_002.jpg").write_text("hello"),
                     r"ball_002\.jpg \(captions\.csv line 3\): unreadable image"),
    "empty caption": (lambda r: rewrite_csv(r, lambda f: f.assign(
        caption=f["caption"].where(f.index != 1, "  "))),
        r"captions\.csv, line 3: empty caption"),
    "unknown label": (lambda r: rewrite_csv(r, lambda f: f.assign(
        label=f["label"].where(f.index != 7, "cat"))),
        r"captions\.csv, line 9: unknown label 'cat'"),
    "missing column": (lambda r: rewrite_csv(r, lambda f: f.drop(columns="label")),
                       r"captions\.csv, line 1: missing column\(s\) label"),
    "duplicate row": (lambda r: rewrite_csv(r, lambda f: pd.concat([f, f.iloc[[0]]])),
                      r"captions\.csv, line 10: duplicate row"),
    "wrong class folder": (lambda r: rewrite_csv(r, lambda f: f.assign(
        label=f["label"].where(f.index != 4, "ball"))),
        r"captions\.csv, line 6: images/dog/dog_001\.jpg is in the dog/ folder but labelled"),
    "no csv": (lambda r: (r / "captions.csv").unlink(), r"captions\.csv: not found"),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_check_names_each_problem_with_file_and_line(tmp_path, name):
    root = make_course_dir(tmp_path / "course")
    assert check_dataset(root) == []
    breaker, expected = BROKEN[name]
    breaker(root)
    problems = check_dataset(root)
    assert len(problems) == 1, problems
    assert re.search(expected, problems[0]), problems[0]
    assert "Fix:" in problems[0]
    with pytest.raises(DataError, match=expected):
        fetch.validate_dataset(root)


@pytest.mark.parametrize("mode, suffix", [("RGBA", ".png"), ("L", ".jpg"), ("CMYK", ".jpg"),
                                          ("P", ".png")])
def test_check_accepts_any_image_mode(tmp_path, mode, suffix):
    root = make_course_dir(tmp_path / "course")
    path = root / f"images/dog/dog_009{suffix}"
    make_jpeg(path, mode=mode)
    rewrite_csv(root, lambda f: pd.concat([f, pd.DataFrame(
        [[f"images/dog/dog_009{suffix}", "dog", "A dog in another format ."]],
        columns=f.columns)]))
    with Image.open(path) as image:
        assert image.mode == mode
    assert check_dataset(root) == []


def test_csv_with_bom_and_crlf_reads_like_the_plain_one(tmp_path):
    root = make_course_dir(tmp_path / "course")
    plain = read_captions(root)
    text = (root / "captions.csv").read_text(encoding="utf-8")
    (root / "captions.csv").write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    assert check_dataset(root) == []
    pd.testing.assert_frame_equal(read_captions(root), plain)


def test_csv_quoted_commas_and_windows_paths_are_read(tmp_path):
    root = make_course_dir(tmp_path / "course")
    rewrite_csv(root, lambda f: f.assign(image_path=f["image_path"].str.replace("/", "\\")))
    frame = read_captions(root)
    assert frame["image_path"].iloc[0] == "images/ball/ball_001.jpg"
    assert frame["caption"].iloc[0] == "A photo number 1 of a ball, seen closely ."


def test_cli_check_exits_1_listing_every_problem(tmp_path, capsys):
    root = make_course_dir(tmp_path / "course")
    (root / "images/dog/dog_001.jpg").unlink()
    rewrite_csv(root, lambda f: f.assign(label=f["label"].where(f.index != 0, "cat")))
    assert data_main(["check", str(root)]) == 1
    errors = capsys.readouterr().err
    assert "2 problem(s)" in errors
    assert "line 2: unknown label 'cat'" in errors
    assert re.search(r"line 6: image .*dog_001\.jpg not found", errors)


# --- split -----------------------------------------------------------------------------------

def test_split_is_stratified_disjoint_and_stable(course_subset):
    frame = read_captions(course_subset)
    split = make_split(frame)
    assert split["image_path"].is_unique
    assert set(split["image_path"]) == set(frame["image_path"])
    table = pd.crosstab(frame.merge(split)["label"], frame.merge(split)["split"])
    for name, share in (("train", 0.70), ("val", 0.15), ("test", 0.15)):
        assert (table[name] - share * 150).abs().max() <= 1, table
    pd.testing.assert_frame_equal(make_split(frame), split)
    assert not make_split(frame, seed=1).equals(split)


def test_load_dataset_writes_splits_csv_once(course_subset, tmp_path, monkeypatch):
    root = tmp_path / "flickr_subset2"
    shutil.copytree(course_subset, root, ignore=shutil.ignore_patterns("splits.csv"))
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    first = load_dataset()
    written = (root / "splits.csv").read_bytes()
    again = load_dataset(root)
    pd.testing.assert_frame_equal(first, again)
    assert (root / "splits.csv").read_bytes() == written
    assert set(first["split"]) == {"train", "val", "test"}
    assert first.groupby("image_path")["split"].nunique().eq(1).all()


def test_five_captions_split_keeps_an_image_rows_together(course_subset_5):
    frame = load_dataset(course_subset_5)
    assert frame.groupby("image_path").size().eq(5).all()
    assert frame.groupby("image_path")["split"].nunique().eq(1).all()
    images = frame.drop_duplicates("image_path")
    assert images["split"].value_counts().to_dict() == {"train": 56, "val": 12, "test": 12}


def test_stale_splits_csv_is_an_error_with_its_fix(tmp_path):
    root = make_course_dir(tmp_path / "course", per_class=10)
    load_dataset(root)
    split = pd.read_csv(root / "splits.csv")
    split.iloc[1:].to_csv(root / "splits.csv", index=False)
    with pytest.raises(DataError, match="splits.csv: does not match captions.csv.*Fix: delete"):
        load_dataset(root)


# --- fetch -----------------------------------------------------------------------------------

class Files(http.server.BaseHTTPRequestHandler):
    """Serves ``self.server.files`` (path -> bytes), with HTTP Range support."""

    def do_GET(self):  # noqa: N802 - the http.server API
        self.server.requests.append((self.path, self.headers.get("Range")))
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        start = int(match.group(1)) if match else 0
        self.send_response(206 if match else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """A local HTTP server on 127.0.0.1 (files set by the test); yields its base URL setter."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    httpd.files, httpd.requests = {}, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def zip_folder(folder: Path, prefix: str = "") -> bytes:
    """A zip of ``folder``'s files, stored under ``prefix``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(folder).as_posix())
    return buffer.getvalue()


@pytest.fixture
def empty_place(tmp_path, monkeypatch):
    """DATA_DIR empty, FLICKR8K_DIR pointing nowhere: nothing local to use."""
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FLICKR8K_DIR", str(tmp_path / "no_flickr8k"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return tmp_path / "data"


def test_fetch_uses_a_present_valid_subset(tmp_path, empty_place):
    make_course_dir(empty_place / "flickr_subset2", per_class=10)
    assert fetch.ensure_dataset() == empty_place / "flickr_subset2"
    assert (empty_place / "flickr_subset2" / "splits.csv").is_file()


def test_fetch_refuses_a_present_broken_subset(tmp_path, empty_place):
    root = make_course_dir(empty_place / "flickr_subset2", per_class=10)
    (root / "images/dog/dog_003.jpg").unlink()
    with pytest.raises(DataError, match="dog_003.jpg not found"):
        fetch.ensure_dataset()


def test_fetch_builds_from_flickr8k_dir(tmp_path, monkeypatch, empty_place):
    monkeypatch.setenv("FLICKR8K_DIR", str(make_flickr_like(tmp_path / "f", SYNTHETIC_10)))
    root = fetch.ensure_dataset(per_class=10)
    assert read_captions(root)["label"].value_counts().to_dict() == dict.fromkeys(CLASSES, 10)
    assert (root / "splits.csv").is_file()


def test_fetch_offline_lists_the_three_ways(monkeypatch, empty_place):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(fetch, "urlopen", offline)
    with pytest.raises(DataError) as error:
        fetch.ensure_dataset()
    message = str(error.value)
    assert "1. put the content of flickr_subset2.zip" in message
    assert "2. set FLICKR8K_DIR" in message
    assert "3. connect to the internet" in message
    assert fetch.COURSE_ZIP_URL in message and "no network" in message
    assert not (empty_place / "flickr_subset2").exists()


def test_fetch_downloads_and_unzips_the_course_zip(tmp_path, monkeypatch, empty_place, server):
    archive = zip_folder(make_course_dir(tmp_path / "made", per_class=10), "flickr_subset2/")
    server.files["/flickr_subset2.zip"] = archive
    monkeypatch.setattr(fetch, "COURSE_ZIP_URL", server.url + "/flickr_subset2.zip")
    root = fetch.ensure_dataset()
    assert root == empty_place / "flickr_subset2"
    assert len(read_captions(root)) == 40 and (root / "splits.csv").is_file()
    assert not list((empty_place / "downloads").iterdir())  # zip removed once installed
    assert server.requests == [("/flickr_subset2.zip", None)]


def test_download_resumes_a_partial_file_with_http_range(tmp_path, server):
    body = bytes(range(256)) * 4000
    server.files["/big.zip"] = body
    dest = tmp_path / "big.zip"
    (tmp_path / "big.zip.part").write_bytes(body[:300_000])
    fetch.download_file(server.url + "/big.zip", dest)
    assert dest.read_bytes() == body
    assert server.requests == [("/big.zip", "bytes=300000-")]
    assert not (tmp_path / "big.zip.part").exists()


def test_fetch_falls_back_to_flickr8k_archives(tmp_path, monkeypatch, empty_place, server):
    corpus = make_flickr_like(tmp_path / "f", SYNTHETIC_10)
    server.files["/Flickr8k_Dataset.zip"] = zip_folder(corpus / flickr8k.FLICKR_IMAGES,
                                                       "Flicker8k_Dataset/")
    server.files["/Flickr8k_text.zip"] = zip_folder(corpus / flickr8k.FLICKR_TEXT)
    monkeypatch.setattr(fetch, "COURSE_ZIP_URL", server.url + "/missing.zip")
    monkeypatch.setattr(fetch, "FLICKR8K_URLS", (server.url + "/Flickr8k_Dataset.zip",
                                                server.url + "/Flickr8k_text.zip"))
    root = fetch.ensure_dataset(per_class=10)
    assert read_captions(root)["label"].value_counts().to_dict() == dict.fromkeys(CLASSES, 10)
    assert (empty_place / "flickr8k" / flickr8k.FLICKR_TEXT / flickr8k.TOKEN_FILE).is_file()
    assert [p for p, _ in server.requests] == ["/missing.zip", "/Flickr8k_Dataset.zip",
                                               "/Flickr8k_text.zip"]
