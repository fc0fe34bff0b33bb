"""Course data: read, build, check, split and fetch the 4-class Flickr8k subset.

The course format (``flickr_subset2/``, as the course's zip unpacks)::

    captions.csv                      image_path,label,caption (one row per caption)
    captions/<class>_NNN.txt          the image's caption(s), one per line
    images/<class>/<class>_NNN.jpg    NNN from 001

``load_dataset`` adds ``splits.csv`` (image_path,split) beside captions.csv: one fixed
70/15/15 split by image, stratified by class, shared by every notebook.

Command line::

    python -m utils.data build --flickr8k DIR --out DIR [--per-class 150] [--captions-per-image 1]
    python -m utils.data check DIR
    python -m utils.data fetch
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar
from urllib.request import Request, urlopen

import pandas as pd
from PIL import Image, ImageFile
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm

from utils import paths
from utils.common import atomic_path, default_mode

CLASSES = ("ball", "bike", "dog", "water")
# Whole words, any case. A caption naming several classes gets the first class of
# CLASS_PRIORITY it names. Why this order: the course's own dog_004 ("A dog shakes its head near
# the shore, a red ball next to it") is a dog, so the animal beats the ball; more generally the
# photo's subject beats what it uses or where it is. dog (the subject) > bike (a vehicle someone
# rides, big in the frame) > ball (a small object that someone plays with) > water (the setting,
# the most generic word, so it only wins when nothing else is named).
CLASS_PRIORITY = ("dog", "bike", "ball", "water")
CLASS_WORDS = {
    "dog": ("dog", "dogs"),
    "bike": ("bike", "bikes", "bicycle", "bicycles", "bicyclist", "bicyclists",
             "cyclist", "cyclists", "biker", "bikers"),
    "ball": ("ball", "balls"),
    "water": ("water",),
}
CLASS_PATTERNS = {name: re.compile(r"\b(?:" + "|".join(words) + r")\b", re.IGNORECASE)
                  for name, words in CLASS_WORDS.items()}
COLUMNS = ("image_path", "label", "caption")
SPLITS = ("train", "val", "test")
SPLIT_SEED = 0  # one split for every notebook: delete splits.csv to redo it
CAPTIONS_CSV = "captions.csv"
SPLITS_CSV = "splits.csv"

FLICKR_IMAGES = "Flicker8k_Dataset"  # the official (misspelt) folder name
FLICKR_TEXT = "Flickr8k_text"
TOKEN_FILE = "Flickr8k.token.txt"
FLICKR_SPLIT_FILES = {"train": "Flickr_8k.trainImages.txt", "val": "Flickr_8k.devImages.txt",
                      "test": "Flickr_8k.testImages.txt"}
COURSE_ZIP_URL = "https://www.lirmm.fr/~poncelet/Ressources/flickr_subset2.zip"
FLICKR8K_URLS = (
    "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_Dataset.zip",
    "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_text.zip",
)
DOWNLOAD_TIMEOUT_S = 30


class DataError(ValueError):
    """Bad or missing data; the message names the file, the line and the fix."""


@dataclass
class DataConfig:
    """Settings of notebook 00 (getting, checking and showing the data)."""

    seed: int = 0  # seed of the figures' image sampling (the split uses SPLIT_SEED)
    per_class: int = 150  # images per class when the subset is built from Flickr8k
    captions_per_image: int = 1  # captions per image when built (1 = the course format, max 5)
    grid_per_class: int = 6  # images per class in the image grid figure
    text_length: int = 32  # token length of the text models: share of longer captions reported
    SMOKE: ClassVar[dict] = {"grid_per_class": 3}


# ----------------------------------------------------------------------------------------------
# Flickr8k as it unpacks
# ----------------------------------------------------------------------------------------------

def has_flickr8k(flickr8k: Path) -> bool:
    """True when ``flickr8k`` holds the unpacked corpus (token file and image folder)."""
    return (flickr8k / FLICKR_TEXT / TOKEN_FILE).is_file() and (flickr8k / FLICKR_IMAGES).is_dir()


def require_flickr8k(flickr8k: Path) -> None:
    """Raise a DataError that says how to get Flickr8k when ``flickr8k`` does not hold it."""
    for needed in (flickr8k / FLICKR_TEXT / TOKEN_FILE, flickr8k / FLICKR_IMAGES):
        if not needed.exists():
            raise DataError(f"{needed}: not found. Fix: unzip Flickr8k_Dataset.zip and "
                            f"Flickr8k_text.zip into {flickr8k} (or set FLICKR8K_DIR).")


def parse_token_line(line: str, token_file: Path, line_no: int) -> tuple[str, int, str]:
    """Split one ``IMAGE.jpg#N<TAB>caption`` line into (image, N, caption)."""
    key, tab, caption = line.partition("\t")
    image, hash_sign, index = key.strip().rpartition("#")
    if not tab or not hash_sign or not index.isdigit():
        raise DataError(f"{token_file}, line {line_no}: expected 'IMAGE.jpg#N<TAB>caption', got "
                        f"{line[:80]!r}. Fix: restore the file from Flickr8k_text.zip.")
    return image, int(index), caption.strip()


def report_stray_keys(stray: dict[str, list[int]], token_file: Path, image_dir: Path) -> None:
    """Warn once about caption keys that name no image (the corpus has one such key)."""
    if not stray:
        return
    described = ", ".join(f"{key} (lines {lines[0]}-{lines[-1]})" for key, lines in stray.items())
    count = sum(len(lines) for lines in stray.values())
    warnings.warn(f"{token_file}: skipped {count} caption(s) whose key names no image in "
                  f"{image_dir}: {described}", stacklevel=3)


def read_flickr8k_splits(flickr8k: Path) -> dict[str, str]:
    """The official Flickr8k split: image file name -> "train" | "val" | "test"."""
    split_of = {}
    for split, name in FLICKR_SPLIT_FILES.items():
        split_file = flickr8k / FLICKR_TEXT / name
        if split_file.is_file():
            lines = split_file.read_text(encoding="utf-8-sig").split()
            split_of.update(dict.fromkeys(lines, split))
    return split_of


def read_flickr8k(flickr8k: Path) -> pd.DataFrame:
    """Parse Flickr8k.token.txt: one row per caption (image, caption_index, caption, flickr_split).

    Keys naming no file of ``Flicker8k_Dataset/`` (the corpus's ``2258277193_586949ec62.jpg.1``)
    are skipped and reported once with a warning.
    """
    flickr8k = Path(flickr8k)
    require_flickr8k(flickr8k)
    token_file = flickr8k / FLICKR_TEXT / TOKEN_FILE
    image_dir = flickr8k / FLICKR_IMAGES
    images = set(os.listdir(image_dir))
    rows, stray = [], {}
    text = token_file.read_text(encoding="utf-8-sig")
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        image, index, caption = parse_token_line(line, token_file, line_no)
        if image in images:
            rows.append((image, index, caption))
        else:
            stray.setdefault(image, []).append(line_no)
    report_stray_keys(stray, token_file, image_dir)
    frame = pd.DataFrame(rows, columns=["image", "caption_index", "caption"])
    # object dtype first: an all-missing split column is float, which refuses "" as a fill value
    splits = frame["image"].map(read_flickr8k_splits(flickr8k)).astype(object)
    return frame.assign(flickr_split=splits.fillna(""))


# ----------------------------------------------------------------------------------------------
# Building the course subset from Flickr8k
# ----------------------------------------------------------------------------------------------

def classify_caption(caption: str) -> str | None:
    """The class a caption names (CLASS_PRIORITY decides between several); None when none."""
    return next((name for name in CLASS_PRIORITY if CLASS_PATTERNS[name].search(caption)), None)


def select_images(captions: pd.DataFrame, per_class: int) -> pd.DataFrame:
    """The first ``per_class`` images of each class in file-name order, classed by caption #0.

    Returns columns image, label, number (1..per_class), sorted by label then number; each
    image gets one class, so it is used once.
    """
    first = captions[captions["caption_index"] == 0].sort_values("image", kind="stable")
    labelled = first.assign(label=first["caption"].map(classify_caption)).dropna(subset=["label"])
    chosen = labelled.groupby("label", sort=False).head(per_class)
    counts = chosen["label"].value_counts()
    short = {name: int(counts.get(name, 0)) for name in CLASSES if counts.get(name, 0) < per_class}
    if short:
        raise DataError(f"Flickr8k: too few images for --per-class {per_class}: {short}. "
                        "Fix: lower --per-class.")
    chosen = chosen.assign(number=chosen.groupby("label").cumcount() + 1)
    return chosen.sort_values(["label", "number"])[["image", "label", "number"]]


def subset_rows(chosen: pd.DataFrame, captions: pd.DataFrame, captions_per_image: int
                ) -> pd.DataFrame:
    """Rows of captions.csv (plus ``image``, the Flickr8k source file) for the chosen images."""
    kept = captions[captions["caption_index"] < captions_per_image]
    rows = chosen.merge(kept, on="image", how="left", validate="one_to_many")
    per_image = rows.groupby("image")["caption"].count()
    if (per_image < captions_per_image).any():
        missing = per_image[per_image < captions_per_image].index[0]
        raise DataError(f"Flickr8k: {missing} has fewer than {captions_per_image} captions. "
                        "Fix: lower --captions-per-image.")
    stem = rows["label"] + "_" + rows["number"].map("{:03d}".format)
    rows = rows.assign(stem=stem, image_path="images/" + rows["label"] + "/" + stem + ".jpg")
    return rows.sort_values(["label", "number", "caption_index"]).reset_index(drop=True)


def replace_dir(new: Path, target: Path) -> None:
    """Move the finished folder ``new`` onto ``target``, replacing an older dataset there."""
    if target.exists() and any(target.iterdir()) and not (target / CAPTIONS_CSV).exists():
        raise DataError(f"{target}: exists and holds no {CAPTIONS_CSV}; refusing to replace it. "
                        "Fix: choose an empty or new --out folder.")
    if not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old)


@contextlib.contextmanager
def building_dir(out: Path) -> Iterator[Path]:
    """Yield a temp folder beside ``out``; rename it onto ``out`` only if the block succeeds."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".building", dir=out.parent))
    try:
        yield tmp
        os.chmod(tmp, default_mode(directory=True))
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def copy_images(rows: pd.DataFrame, image_dir: Path, out: Path) -> None:
    """Copy each chosen Flickr8k JPEG (already 224x224) to ``out/images/<class>/<stem>.jpg``."""
    images = rows.drop_duplicates("image_path")
    for name in CLASSES:
        (out / "images" / name).mkdir(parents=True, exist_ok=True)
    pairs = zip(images["image"], images["image_path"], strict=True)
    for source, target in tqdm(pairs, total=len(images), desc="copy images", disable=None):
        shutil.copyfile(image_dir / source, out / target)


def write_caption_files(rows: pd.DataFrame, out: Path) -> None:
    """Write ``captions/<stem>.txt``: the image's captions, one per line."""
    (out / "captions").mkdir(parents=True, exist_ok=True)
    for stem, group in rows.groupby("stem", sort=True):
        text = "\n".join(group["caption"]) + "\n"
        (out / "captions" / f"{stem}.txt").write_text(text, encoding="utf-8")


def write_captions_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write captions.csv (UTF-8, LF line ends, columns image_path,label,caption)."""
    frame[list(COLUMNS)].to_csv(path, index=False, encoding="utf-8", lineterminator="\n")


def build_subset(flickr8k: Path, out: Path, per_class: int = 150,
                 captions_per_image: int = 1) -> Path:
    """Build the course subset from Flickr8k into ``out`` (atomically: temp folder, then rename)."""
    if not 1 <= captions_per_image <= 5:
        raise DataError(f"--captions-per-image {captions_per_image}: Flickr8k has 5 captions "
                        "per image. Fix: use a value from 1 to 5.")
    flickr8k, out = Path(flickr8k), Path(out)
    captions = read_flickr8k(flickr8k)
    rows = subset_rows(select_images(captions, per_class), captions, captions_per_image)
    with building_dir(out) as tmp:
        copy_images(rows, flickr8k / FLICKR_IMAGES, tmp)
        write_caption_files(rows, tmp)
        write_captions_csv(rows, tmp / CAPTIONS_CSV)
    return out


# ----------------------------------------------------------------------------------------------
# Reading and checking the course format
# ----------------------------------------------------------------------------------------------

def resolve_image_path(root: Path, raw: str, label: str) -> str:
    """Normalise an image_path to POSIX relative to ``root``; tolerate paths without images/."""
    path = raw.strip().replace("\\", "/").removeprefix("./").removeprefix(f"{root.name}/")
    for candidate in (path, f"images/{path}", f"images/{label}/{path}"):
        if (root / candidate).is_file():
            return candidate
    return path


def read_csv_records(csv_path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, fields) records of a UTF-8 CSV (BOM and CRLF tolerated)."""
    try:
        with csv_path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = [name.strip().lower() for name in next(reader, [])]
            records = [(reader.line_num, fields) for fields in reader if fields]
    except UnicodeDecodeError as err:
        raise DataError(f"{csv_path}: not UTF-8 ({err}). Fix: save it as UTF-8 CSV.") from err
    except csv.Error as err:
        raise DataError(f"{csv_path}: malformed CSV ({err}). Fix: check its quotes.") from err
    return header, records


def frame_from_records(root: Path, header: list[str], records: list, csv_path: Path
                       ) -> tuple[pd.DataFrame, list[str]]:
    """Table (image_path, label, caption, line) of the records, and rows with a wrong width."""
    problems, rows = [], []
    where = [header.index(name) for name in COLUMNS]
    for line, fields in records:
        if len(fields) != len(header):
            problems.append(f"{csv_path}, line {line}: {len(fields)} field(s) instead of "
                            f"{len(header)}. Fix: quote captions that contain commas.")
            continue
        path, label, caption = (fields[i].strip() for i in where)
        rows.append((path, label.lower(), caption, line))
    frame = pd.DataFrame(rows, columns=[*COLUMNS, "line"])
    frame["image_path"] = [resolve_image_path(root, p, lab)
                           for p, lab in zip(frame["image_path"], frame["label"], strict=True)]
    return frame, problems


def find_row_problems(root: Path, frame: pd.DataFrame, csv_path: Path) -> list[str]:
    """Empty fields, unknown labels, duplicates, missing images, images in the wrong folder."""
    problems = []
    duplicated = frame.duplicated(["image_path", "caption"], keep="first")
    labels_per_image = frame.groupby("image_path")["label"].transform("nunique")
    for row, dup, n_labels in zip(frame.itertuples(), duplicated, labels_per_image, strict=True):
        at = f"{csv_path}, line {row.line}"
        if not row.caption:
            problems.append(f"{at}: empty caption. Fix: write the caption or delete the row.")
        if row.label not in CLASSES:
            problems.append(f"{at}: unknown label {row.label!r}. Fix: use one of {CLASSES}.")
        if dup:
            problems.append(f"{at}: duplicate row ({row.image_path}, same caption). "
                            "Fix: delete the repeated row.")
        if n_labels > 1:
            problems.append(f"{at}: {row.image_path} has {n_labels} different labels. "
                            "Fix: give the image a single label.")
        problems.extend(find_path_problems(root, row.image_path, row.label, at))
    return problems


def find_path_problems(root: Path, image_path: str, label: str, at: str) -> list[str]:
    """An image_path that is empty, missing, or in another class's folder."""
    if not image_path:
        return [f"{at}: empty image_path. Fix: give the image's path, e.g. images/dog/dog_001.jpg."]
    if not (root / image_path).is_file():
        return [f"{at}: image {root / image_path} not found. Fix: restore the file or the path."]
    parts = Path(image_path).parts
    folder = parts[-2] if len(parts) >= 2 else ""
    if folder in CLASSES and label in CLASSES and folder != label:
        return [f"{at}: {image_path} is in the {folder}/ folder but labelled {label!r}. "
                f"Fix: move the image to images/{label}/ or correct the label."]
    return []


def read_caption_rows(root: Path) -> tuple[pd.DataFrame | None, list[str]]:
    """captions.csv as a table with its CSV line numbers, and every problem found in it."""
    csv_path = Path(root) / CAPTIONS_CSV
    if not csv_path.is_file():
        return None, [f"{csv_path}: not found. Fix: run `python -m utils.data fetch` (or unzip "
                      "flickr_subset2.zip there)."]
    header, records = read_csv_records(csv_path)
    missing = [name for name in COLUMNS if name not in header]
    if missing:
        return None, [f"{csv_path}, line 1: missing column(s) {', '.join(missing)} (found "
                      f"{', '.join(header) or 'nothing'}). Fix: the header must be "
                      f"{','.join(COLUMNS)}."]
    frame, problems = frame_from_records(Path(root), header, records, csv_path)
    if frame.empty and not problems:
        problems.append(f"{csv_path}: no rows. Fix: restore the file from the course zip.")
    return frame, problems + find_row_problems(Path(root), frame, csv_path)


def read_captions(root: Path) -> pd.DataFrame:
    """captions.csv as a validated table (image_path POSIX relative to ``root``, label, caption)."""
    frame, problems = read_caption_rows(Path(root))
    if problems:
        raise DataError(f"{Path(root)}: {len(problems)} problem(s):\n" + "\n".join(problems))
    return frame[list(COLUMNS)].reset_index(drop=True)


def image_error(path: Path) -> str | None:
    """Why an image cannot be fully decoded, or None. Any mode (RGBA, L, CMYK) is fine."""
    relaxed = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a cut JPEG must fail even if a library relaxed this
    try:
        with Image.open(path) as image:
            image.load()
    except Exception as err:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError...
        return f"{type(err).__name__}: {err}"
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = relaxed
    return None


def find_image_problems(root: Path, frame: pd.DataFrame) -> list[str]:
    """Images that exist but cannot be decoded (truncated, not an image...)."""
    problems = []
    images = frame.drop_duplicates("image_path")
    for row in tqdm(images.itertuples(), total=len(images), desc="decode images", disable=None):
        path = root / row.image_path
        error = image_error(path) if row.image_path and path.is_file() else None
        if error:
            problems.append(f"{path} ({CAPTIONS_CSV} line {row.line}): unreadable image "
                            f"({error}). Fix: replace the file with a valid image.")
    return problems


def check_dataset(root: Path) -> list[str]:
    """Every problem of a course-format folder (empty list when it is fine), each naming its file
    and row: missing file or column, empty caption, unknown label, duplicate row, missing,
    unreadable or misplaced image."""
    root = Path(root)
    try:
        frame, problems = read_caption_rows(root)
    except DataError as err:
        return [str(err)]
    if frame is not None:
        problems += find_image_problems(root, frame)
    return problems


def count_classes(frame: pd.DataFrame) -> pd.DataFrame:
    """Images and captions per class (index CLASSES, columns images, captions)."""
    counts = pd.DataFrame({
        "images": frame.drop_duplicates("image_path")["label"].value_counts(),
        "captions": frame["label"].value_counts(),
    })
    return counts.reindex(list(CLASSES), fill_value=0).astype(int)


def describe_counts(root: Path, frame: pd.DataFrame) -> str:
    """A short text summary: per-class image and caption counts and the total."""
    counts = count_classes(frame)
    lines = [f"{root}: OK"]
    lines += [f"  {name:<6} {row.images:4d} images {row.captions:5d} captions"
              for name, row in counts.iterrows()]
    total = counts.sum()
    lines.append(f"  {'total':<6} {total['images']:4d} images {total['captions']:5d} captions")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Split
# ----------------------------------------------------------------------------------------------

def make_split(frame: pd.DataFrame, seed: int = SPLIT_SEED) -> pd.DataFrame:
    """70/15/15 split by image, stratified by class: columns image_path, split."""
    images = frame.drop_duplicates("image_path").sort_values("image_path")[["image_path", "label"]]
    try:
        train, rest = train_test_split(images, test_size=0.30, stratify=images["label"],
                                       random_state=seed)
        val, test = train_test_split(rest, test_size=0.50, stratify=rest["label"],
                                     random_state=seed)
    except ValueError as err:
        raise DataError(f"too few images per class for a stratified 70/15/15 split ({err}). "
                        "Fix: use at least 10 images per class.") from err
    parts = [part.assign(split=name) for part, name in zip((train, val, test), SPLITS, strict=True)]
    split = pd.concat(parts).sort_values("image_path")
    return split[["image_path", "split"]].reset_index(drop=True)


def read_split(split_path: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """splits.csv, checked against the images of captions.csv."""
    split = pd.read_csv(split_path, encoding="utf-8-sig", dtype=str, keep_default_na=False)
    fix = f"Fix: delete {split_path} so that it is made again."
    if list(split.columns) != ["image_path", "split"]:
        raise DataError(f"{split_path}, line 1: columns must be image_path,split. {fix}")
    bad = split.index[~split["split"].isin(SPLITS)]
    if len(bad):
        raise DataError(f"{split_path}, line {bad[0] + 2}: split must be one of {SPLITS}. {fix}")
    listed, needed = set(split["image_path"]), set(frame["image_path"])
    if listed != needed or split["image_path"].duplicated().any():
        odd = sorted(listed ^ needed)[:3]
        raise DataError(f"{split_path}: does not match {CAPTIONS_CSV} (e.g. {odd}). {fix}")
    return split


def load_split(root: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """The split of ``root`` (splits.csv), made and written beside captions.csv when absent."""
    split_path = root / SPLITS_CSV
    if split_path.is_file():
        return read_split(split_path, frame)
    split = make_split(frame, seed=SPLIT_SEED)
    try:
        with atomic_path(split_path) as tmp:
            split.to_csv(tmp, index=False, lineterminator="\n")
    except OSError as err:  # a read-only dataset still works: the split is deterministic
        warnings.warn(f"{split_path}: could not write the split ({err}); using it in memory.",
                      stacklevel=2)
    return split


def load_dataset(root: Path | None = None) -> pd.DataFrame:
    """captions.csv plus a ``split`` column ("train"/"val"/"test"); root: paths.subset_dir()."""
    root = Path(root) if root is not None else paths.subset_dir()
    frame = read_captions(root)
    split = load_split(root, frame)
    return frame.merge(split, on="image_path", how="left", validate="many_to_one")


def caption_lengths(frame: pd.DataFrame) -> pd.Series:
    """Words per caption (letters/digits runs, apostrophes dropped like the text vectoriser)."""
    return frame["caption"].str.replace("'", "", regex=False).str.count(r"[^\W_]+")


def split_table(frame: pd.DataFrame, margins: bool = False) -> pd.DataFrame:
    """Images per class (rows, CLASSES) and split (columns, SPLITS); ``margins`` adds totals."""
    images = frame.drop_duplicates("image_path")
    table = pd.crosstab(images["label"], images["split"]).reindex(
        index=list(CLASSES), columns=list(SPLITS), fill_value=0)
    if margins:
        table["total"] = table.sum(axis=1)
        table.loc["total"] = table.sum(axis=0)
    return table


def summarize_dataset(frame: pd.DataFrame, text_length: int = 32) -> dict:
    """Counts per class and split (images, captions) and caption length statistics (words)."""
    images = frame.drop_duplicates("image_path")
    per_split = split_table(frame)
    lengths = caption_lengths(frame)
    return {
        "images": len(images), "captions": len(frame),
        "images_per_class_and_split": {s: per_split[s].to_dict() for s in SPLITS},
        "captions_per_split": frame["split"].value_counts().reindex(list(SPLITS)).to_dict(),
        "caption_words": {"min": int(lengths.min()), "max": int(lengths.max()),
                          "mean": round(float(lengths.mean()), 2),
                          "median": float(lengths.median()),
                          "p95": float(lengths.quantile(0.95)),
                          f"share_over_{text_length}": round(float((lengths > text_length)
                                                                   .mean()), 4)},
    }


# ----------------------------------------------------------------------------------------------
# Fetching: local copy, Flickr8k, course zip, Flickr8k archives
# ----------------------------------------------------------------------------------------------

def download_file(url: str, dest: Path, attempts: int = 2) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part`` (resumed by HTTP Range), then rename."""
    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    done = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={done}-", "User-Agent": "hai923-clip"} if done else {
        "User-Agent": "hai923-clip"}
    try:
        with urlopen(Request(url, headers=headers), timeout=DOWNLOAD_TIMEOUT_S) as response:
            write_response(response, part, done)
    except urllib.error.HTTPError as err:
        if err.code != 416 or attempts <= 1:  # 416: the .part is stale; start over once
            raise
        part.unlink()
        return download_file(url, dest, attempts - 1)
    os.replace(part, dest)
    return dest


def write_response(response, part: Path, done: int) -> None:
    """Stream an HTTP response into ``part`` (appending after ``done`` bytes on a 206 answer)."""
    resumed = done > 0 and getattr(response, "status", None) == 206
    size = int(response.headers.get("Content-Length") or 0)
    total = size + (done if resumed else 0)
    with part.open("ab" if resumed else "wb") as out, tqdm(
            total=total or None, initial=done if resumed else 0, unit="B", unit_scale=True,
            desc=part.name.removesuffix(".part"), disable=None) as bar:
        while chunk := response.read(1 << 20):
            out.write(chunk)
            bar.update(len(chunk))
    if total and part.stat().st_size != total:
        raise OSError(f"{part}: got {part.stat().st_size} of {total} bytes. Fix: run again "
                      "to resume the download.")


def find_folder(base: Path, marker: str) -> Path:
    """The shallowest folder under ``base`` holding ``marker`` (zips differ in their top level)."""
    hits = sorted((p for p in base.rglob(marker) if "__MACOSX" not in p.parts),
                  key=lambda p: len(p.parts))
    if not hits:
        raise DataError(f"{base}: the archive holds no {marker}. Fix: check the downloaded zip.")
    return hits[0].parent


def unzip_to_temp(zip_path: Path, near: Path) -> Path:
    """Extract ``zip_path`` into a new temporary folder beside ``near``; return that folder."""
    near.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".unzip-", dir=near))
    try:
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(staging)
    except (zipfile.BadZipFile, OSError) as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(f"{zip_path}: not a valid zip ({err}). Fix: delete it and run "
                        "`python -m utils.data fetch` again.") from err
    return staging


def fetch_course_zip(target: Path) -> Path:
    """Download the course's flickr_subset2.zip and install its content as ``target``."""
    zip_path = download_file(COURSE_ZIP_URL, paths.data_dir() / "downloads" / "flickr_subset2.zip")
    staging = unzip_to_temp(zip_path, paths.data_dir())
    try:
        replace_dir(find_folder(staging, CAPTIONS_CSV), target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    zip_path.unlink()
    return target


def fetch_flickr8k(flickr8k: Path) -> Path:
    """Download Flickr8k's two public archives and unpack them as ``flickr8k/``."""
    downloads = paths.data_dir() / "downloads"
    zips = [download_file(url, downloads / url.rsplit("/", 1)[1]) for url in FLICKR8K_URLS]
    staging = Path(tempfile.mkdtemp(prefix=".flickr8k-", dir=paths.data_dir()))
    try:
        for number, zip_path in enumerate(zips):  # one folder each: the text zip has no top folder
            with zipfile.ZipFile(zip_path) as archive:
                archive.extractall(staging / str(number))
        images = find_folder(staging, "*.jpg")
        text = find_folder(staging, TOKEN_FILE)
        flickr8k.mkdir(parents=True, exist_ok=True)
        os.replace(images, flickr8k / FLICKR_IMAGES)
        os.replace(text, flickr8k / FLICKR_TEXT)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for zip_path in zips:
        zip_path.unlink()
    return flickr8k


def validate_dataset(root: Path) -> Path:
    """Raise a DataError listing every problem of ``root``; else make splits.csv and return it."""
    problems = check_dataset(root)
    if problems:
        raise DataError(f"{root}: {len(problems)} problem(s):\n" + "\n".join(problems))
    load_dataset(root)
    return root


def offline_message(target: Path, errors: list[str]) -> str:
    """The error shown when the data is nowhere: the three ways to provide it."""
    return (
        f"No course data in {target}, no Flickr8k at {paths.flickr8k_dir()}, and no download "
        "worked. Provide the data in one of three ways, then run `make data` again:\n"
        f"  1. put the content of flickr_subset2.zip (captions.csv, captions/, images/) in "
        f"{target};\n"
        "  2. set FLICKR8K_DIR to an unpacked Flickr8k (Flicker8k_Dataset/, Flickr8k_text/);\n"
        f"  3. connect to the internet (the course zip comes from {COURSE_ZIP_URL}).\n"
        "Download errors:\n  " + "\n  ".join(errors)
    )


def ensure_dataset(per_class: int = 150, captions_per_image: int = 1) -> Path:
    """Make paths.subset_dir() ready and return it: the local copy if present, else built from
    Flickr8k, else the course zip downloaded, else Flickr8k downloaded and built."""
    target = paths.subset_dir()
    if (target / CAPTIONS_CSV).exists():
        return validate_dataset(target)
    flickr8k = paths.flickr8k_dir()
    if has_flickr8k(flickr8k):
        return validate_dataset(build_subset(flickr8k, target, per_class, captions_per_image))
    errors = []
    try:
        return validate_dataset(fetch_course_zip(target))
    except (OSError, urllib.error.URLError, DataError) as err:
        errors.append(f"{COURSE_ZIP_URL}: {err}")
    try:
        flickr8k = fetch_flickr8k(paths.data_dir() / "flickr8k")
        return validate_dataset(build_subset(flickr8k, target, per_class, captions_per_image))
    except (OSError, urllib.error.URLError, DataError) as err:
        errors.append(f"{FLICKR8K_URLS[0]} (and _text.zip): {err}")
    raise DataError(offline_message(target, errors))


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Arguments of ``python -m utils.data {build,check,fetch}``."""
    parser = argparse.ArgumentParser(prog="python -m utils.data",
                                     description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build the course subset from Flickr8k")
    build.add_argument("--flickr8k", type=Path, required=True, help="the unpacked Flickr8k folder")
    build.add_argument("--out", type=Path, required=True, help="the subset folder to write")
    build.add_argument("--per-class", type=int, default=150, help="images per class")
    build.add_argument("--captions-per-image", type=int, default=1, help="1 (course) to 5")
    check = commands.add_parser("check", help="check a course-format folder")
    check.add_argument("root", type=Path, help="folder holding captions.csv")
    commands.add_parser("fetch", help="make data/flickr_subset2 ready (local, build or download)")
    return parser.parse_args(argv)


def run_check(root: Path) -> int:
    """Print the summary (exit 0) or every problem (exit 1)."""
    problems = check_dataset(root)
    if problems:
        print(f"{root}: {len(problems)} problem(s)", *problems, sep="\n", file=sys.stderr)
        return 1
    print(describe_counts(root, read_captions(root)))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m utils.data``."""
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        if args.command == "build":
            out = build_subset(args.flickr8k, args.out, args.per_class, args.captions_per_image)
            print(describe_counts(out, read_captions(out)))
        elif args.command == "check":
            return run_check(args.root)
        else:
            root = ensure_dataset()
            print(describe_counts(root, read_captions(root)))
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.command}: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
