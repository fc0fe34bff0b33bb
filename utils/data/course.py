"""The course format (``flickr_subset2/``, as the course's zip unpacks): classes, reading and
checking captions.csv, and the one train/val/test split every notebook shares::

    captions.csv                      image_path,label,caption (one row per caption)
    captions/<class>_NNN.txt          the image's caption(s), one per line
    images/<class>/<class>_NNN.jpg    NNN from 001

``load_dataset`` adds ``splits.csv`` (image_path,split) beside captions.csv: one fixed
70/15/15 split by image, stratified by class.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pandas as pd
from sklearn.model_selection import train_test_split

from utils.core import paths
from utils.core.common import atomic_path, default_mode, remove_stale_temps
from utils.core.progress import note, progress
from utils.data.images import image_error, inside_folder

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
MIN_PER_CLASS = 10  # fewest images per class a stratified 70/15/15 split can be drawn from


CAPTIONS_CSV = "captions.csv"


SPLITS_CSV = "splits.csv"


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


def classify_caption(caption: str) -> str | None:
    """The class a caption names (CLASS_PRIORITY decides between several); None when none."""
    return next((name for name in CLASS_PRIORITY if CLASS_PATTERNS[name].search(caption)), None)


def move_aside(target: Path) -> Path:
    """Rename ``target`` to a free sibling name, ``<name>.replaced-<date>-<time>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside, number = target.with_name(f"{target.name}.replaced-{stamp}"), 1
    while aside.exists():
        aside, number = target.with_name(f"{target.name}.replaced-{stamp}-{number}"), number + 1
    os.replace(target, aside)
    return aside


def replace_dir(new: Path, target: Path, replace: bool = False) -> Path | None:
    """Move the finished folder ``new`` onto ``target``. A non-empty ``target`` is never
    deleted: refused unless ``replace``, then moved aside whole -> its new name (or None)."""
    if target.exists() and any(target.iterdir()):
        if not replace:
            raise DataError(f"{target}: exists and is not empty; refusing to replace it "
                            "(nothing was changed). Fix: give a new --out folder, or add "
                            "--replace: the old folder is then moved aside whole, not deleted.")
        aside = move_aside(target)
        os.replace(new, target)
        return aside
    if target.exists():
        target.rmdir()  # empty: nothing to keep
    os.replace(new, target)
    return None


def check_output_folder(out: Path) -> None:
    """Refuse, before anything is built, an output folder that cannot be made or written."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: is a file, not a folder. Fix: give a folder as --out.")
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        raise DataError(f"{out}: cannot be made, {existing} is a file. Fix: give an --out "
                        "folder whose parents are folders.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DataError(f"{out}: {existing} is not writable (permission denied). Fix: give "
                        "an --out folder you can write to.")


@contextlib.contextmanager
def building_dir(out: Path, replace: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside ``out``; rename it onto ``out`` only if the block succeeds
    (an existing ``out`` is refused, or moved aside with ``replace``: see replace_dir)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out.parent, f".{out.name}.", ".building")  # a killed build's
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".building",
                                    dir=out.parent))
    except OSError as error:
        raise DataError(f"{out}: cannot write there ({error.strerror or error}). Fix: give an "
                        "--out folder you can write to.") from error
    try:
        yield tmp
        os.chmod(tmp, default_mode(directory=True))
        aside = replace_dir(tmp, out, replace)
        if aside is not None:
            note(f"{out}: the previous folder was moved aside, whole, to {aside}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_captions_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write captions.csv (UTF-8, LF line ends, columns image_path,label,caption)."""
    frame[list(COLUMNS)].to_csv(path, index=False, encoding="utf-8", lineterminator="\n")


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
    """An image_path that is empty, leaves the dataset folder, is missing, or lies in another
    class's folder (a path outside is never opened: whether it exists is not told)."""
    if not image_path:
        return [f"{at}: empty image_path. Fix: give the image's path, e.g. images/dog/dog_001.jpg."]
    if not inside_folder(root, image_path):
        return [f"{at}: image path {image_path!r} leaves the dataset folder {root}. Fix: give "
                f"its path inside the folder, relative to it, e.g. images/{label or 'dog'}/"
                f"{Path(image_path).name}."]
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


def find_image_problems(root: Path, frame: pd.DataFrame) -> list[str]:
    """Images that exist but cannot be decoded (truncated, not an image...)."""
    problems = []
    images = frame.drop_duplicates("image_path")
    for row in progress(images.itertuples(), total=len(images), desc="decode images", disable=None):
        path = root / row.image_path
        inside = inside_folder(root, row.image_path)
        error = image_error(path) if inside and path.is_file() else None
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


def make_split(frame: pd.DataFrame, seed: int = SPLIT_SEED) -> pd.DataFrame:
    """70/15/15 split by image, stratified by class (when labelled): columns image_path, split."""
    images = frame.drop_duplicates("image_path").sort_values("image_path")[["image_path", "label"]]
    labelled = images["label"].map(lambda v: isinstance(v, str) and v != "").all()
    try:
        train, rest = train_test_split(images, test_size=0.30, random_state=seed,
                                       stratify=images["label"] if labelled else None)
        val, test = train_test_split(rest, test_size=0.50, random_state=seed,
                                     stratify=rest["label"] if labelled else None)
    except ValueError as err:
        raise DataError(f"too few images per class for a stratified 70/15/15 split ({err}). "
                        f"Fix: use at least {MIN_PER_CLASS} images per class.") from err
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


def load_split(root: Path, frame: pd.DataFrame, split_path: Path | None = None) -> pd.DataFrame:
    """The split of ``root`` (splits.csv, or ``split_path``), made and written when absent."""
    split_path = split_path or root / SPLITS_CSV
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


def keep_first_images(frame: pd.DataFrame, per_split: int) -> pd.DataFrame:
    """Rows of the first ``per_split`` images of each split (all of them when 0)."""
    if per_split <= 0:
        return frame
    firsts = frame.drop_duplicates("image_path").groupby("split").head(per_split)["image_path"]
    return frame[frame["image_path"].isin(set(firsts))].reset_index(drop=True)


def take_per_class(frame, per_class: int):
    """At most ``per_class`` rows of each (split, label) pair (0: all rows); smoke mode uses it."""
    if per_class <= 0:
        return frame
    return frame.groupby(["split", "label"], sort=False).head(per_class)
