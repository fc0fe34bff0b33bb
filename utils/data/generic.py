"""Any image-caption dataset described by one table file, beside (or above) its images::

    CSV or TSV (separator sniffed: , ; tab |)   a header line, then one row per caption
    JSON lines (.jsonl)                        one object per line, one caption per object

An image column and a caption column (names given, else guessed), an optional label column and
an optional split column (train / val / test; else the course's 70/15/15 split by image,
stratified when every image has a label, written once to ``<file stem>_splits.csv``). Image
paths are relative to the file's folder; a name without extension finds ``.jpg``/``.png``.
Problems are reported like the course subset's: file, line and fix.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from utils.data.course import SPLITS, DataError, load_split
from utils.data.images import image_error, inside_folder

IMAGE_NAMES = ("image_path", "image", "img", "file", "filename", "file_name", "path", "code",
               "id")
CAPTION_NAMES = ("caption", "text", "description", "attributes", "sentence", "legende")
LABEL_NAMES = ("label", "class", "category")
SPLIT_NAMES = ("split", "set", "subset")
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test"}
IMAGE_SUFFIXES = ("", ".jpg", ".jpeg", ".png")
SEPARATORS = ",;\t|"


@dataclass
class TableColumns:
    """Which column of the table holds what (None: guessed, or absent for label/split)."""

    image: str | None = None  # image path, relative to the table's folder
    caption: str | None = None  # the caption text
    label: str | None = None  # optional class name
    split: str | None = None  # optional train / val / test


def read_delimited(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """Header and (line, row dict) of a CSV/TSV whose separator is sniffed from its start."""
    text = read_text(path)
    try:
        dialect = csv.Sniffer().sniff(text[:8192], delimiters=SEPARATORS)
    except csv.Error as err:
        raise DataError(f"{path}, line 1: separator not recognised ({err}). Fix: separate the "
                        "columns with one of , ; tab |, with a header line.") from err
    reader = csv.reader(text.splitlines(), dialect)
    try:
        header = [name.strip() for name in next(reader, [])]
        rows = [(reader.line_num, fields) for fields in reader
                if any(field.strip() for field in fields)]
    except csv.Error as err:  # e.g. a field over csv's 128 KiB limit: an unclosed quote
        raise DataError(f"{path}, line {reader.line_num}: unreadable row ({err}). Fix: "
                        "close the quote opened on this line or above (an unclosed quote "
                        "swallows the rest of the file); a caption is a sentence or two.") \
            from err
    for line, fields in rows:
        if len(fields) != len(header):
            raise DataError(f"{path}, line {line}: {len(fields)} field(s) instead of "
                            f"{len(header)}. Fix: quote the fields that contain the separator.")
    return header, [(line, dict(zip(header, fields, strict=True))) for line, fields in rows]


def read_jsonl(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """Keys (in order of first appearance) and (line, object) of a JSON-lines file."""
    header, rows = {}, []
    for line_no, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}, line {line_no}: not JSON ({err.msg}). Fix: one JSON "
                            "object per line.") from err
        if not isinstance(record, dict):
            raise DataError(f"{path}, line {line_no}: a JSON {type(record).__name__}, not an "
                            "object. Fix: write {\"image\": ..., \"caption\": ...} per line.")
        header.update(dict.fromkeys(record))
        rows.append((line_no, {k: "" if v is None else str(v) for k, v in record.items()}))
    return list(header), rows


def read_text(path: Path) -> str:
    """A UTF-8 file's text (BOM tolerated), or a DataError naming the file and the fix."""
    if not path.is_file():
        raise DataError(f"{path}: not found. Fix: give the path of the dataset's table file.")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 ({err}). Fix: save it as UTF-8.") from err


def guess_column(header: list[str], given: str | None, names: tuple[str, ...], what: str,
                 path: Path, required: bool) -> str | None:
    """The column named ``given`` or the first header name in ``names`` (case-insensitive)."""
    lower = {name.lower(): name for name in header}
    if given is not None:
        if given.lower() not in lower:
            raise DataError(f"{path}, line 1: no column {given!r} (found {header}). Fix: give "
                            f"the {what} column's exact name.")
        return lower[given.lower()]
    found = next((lower[name] for name in names if name in lower), None)
    if found is None and required:
        raise DataError(f"{path}, line 1: no {what} column among {header} (looked for "
                        f"{', '.join(names)}). Fix: rename it, or pass --{what}-column NAME.")
    return found


def resolve_columns(header: list[str], columns: TableColumns, path: Path) -> TableColumns:
    """Every column name settled: given or guessed; label and split may stay None."""
    return TableColumns(
        image=guess_column(header, columns.image, IMAGE_NAMES, "image", path, True),
        caption=guess_column(header, columns.caption, CAPTION_NAMES, "caption", path, True),
        label=guess_column(header, columns.label, LABEL_NAMES, "label", path, False),
        split=guess_column(header, columns.split, SPLIT_NAMES, "split", path, False))


def read_records(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """Header and rows of a table file: JSON lines by extension, else a sniffed CSV/TSV."""
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return read_jsonl(path)
    return read_delimited(path)


def find_image(folder: Path, raw: str) -> str:
    """An image path relative to ``folder``; a name without extension finds .jpg/.jpeg/.png,
    also under images/. The path as given when nothing exists (reported by the check)."""
    name = raw.strip().replace("\\", "/").removeprefix("./")
    for prefix in ("", "images/"):
        for suffix in IMAGE_SUFFIXES:
            if name and (folder / f"{prefix}{name}{suffix}").is_file():
                return f"{prefix}{name}{suffix}"
    return name


def table_frame(path: Path, rows: list[tuple[int, dict]], columns: TableColumns
                ) -> pd.DataFrame:
    """Rows image_path, label ("" when absent), caption, split ("" when absent), line."""
    def value(row: dict, column: str | None) -> str:
        return row.get(column, "").strip() if column else ""

    records = [(find_image(path.parent, value(row, columns.image)), value(row, columns.label),
                value(row, columns.caption), value(row, columns.split).lower(), line)
               for line, row in rows]
    return pd.DataFrame(records, columns=["image_path", "label", "caption", "split", "line"])


OUTSIDE_FIX = ("Fix: give the image's path relative to the table's folder, inside it; for a "
               "dataset whose images live elsewhere, allow it explicitly (python -m utils.data "
               "check FILE --allow-outside-paths, or allow_outside=True).")


def row_problems(path: Path, frame: pd.DataFrame, columns: TableColumns,
                 allow_outside: bool = False) -> list[str]:
    """Empty captions, missing labels or images, bad split names, duplicate rows, image paths
    that leave the table's folder (unless ``allow_outside``: absolute paths, '..')."""
    problems = []
    duplicated = frame.duplicated(["image_path", "caption"], keep="first")
    for row, dup in zip(frame.itertuples(), duplicated, strict=True):
        at = f"{path}, line {row.line}"
        if not row.caption:
            problems.append(f"{at}: empty caption. Fix: write the caption or delete the row.")
        if columns.label and not row.label:
            problems.append(f"{at}: empty label in column {columns.label!r}. Fix: label every "
                            "row, or drop the label column.")
        if columns.split and row.split not in SPLIT_ALIASES:
            problems.append(f"{at}: split {row.split!r} unknown. Fix: use one of {SPLITS}.")
        if dup:
            problems.append(f"{at}: duplicate row ({row.image_path}, same caption). Fix: delete "
                            "the repeated row.")
        if not allow_outside and not inside_folder(path.parent, row.image_path):
            problems.append(f"{at}: image path {row.image_path!r} leaves the folder "
                            f"{path.parent}. {OUTSIDE_FIX}")
        elif not (path.parent / row.image_path).is_file():
            problems.append(f"{at}: image {path.parent / row.image_path or '(empty)'} not "
                            "found. Fix: restore the file or correct the path (relative to "
                            "the table's folder).")
    return problems


def image_consistency(path: Path, frame: pd.DataFrame) -> list[str]:
    """An image with several labels or several splits: one line per image, naming its rows."""
    problems = []
    for column in ("label", "split"):
        counts = frame.groupby("image_path")[column].transform("nunique")
        for row in frame[counts > 1].drop_duplicates("image_path").itertuples():
            problems.append(f"{path}, line {row.line}: {row.image_path} has several "
                            f"{column}s. Fix: give each image a single {column}.")
    return problems


def read_table_rows(path: Path, columns: TableColumns | None = None,
                    allow_outside: bool = False) -> tuple[pd.DataFrame, TableColumns, list[str]]:
    """The table (with line numbers), its settled columns and every row problem found."""
    path = Path(path)
    header, rows = read_records(path)
    columns = resolve_columns(header, columns or TableColumns(), path)
    frame = table_frame(path, rows, columns)
    if frame.empty:
        return frame, columns, [f"{path}: no rows. Fix: one row per (image, caption) pair."]
    return frame, columns, (row_problems(path, frame, columns, allow_outside)
                            + image_consistency(path, frame))


def check_table(path: Path, columns: TableColumns | None = None,
                allow_outside: bool = False) -> list[str]:
    """Every problem of a table dataset (empty when fine), unreadable images included."""
    try:
        frame, _, problems = read_table_rows(Path(path), columns, allow_outside)
    except DataError as err:
        return [str(err)]
    return problems + unreadable_images(Path(path), frame, allow_outside)


def unreadable_images(path: Path, frame: pd.DataFrame, allow_outside: bool = False
                      ) -> list[str]:
    """Images that exist but cannot be decoded, each with the first line naming it (paths
    leaving the folder are not opened: they are refused as such)."""
    problems = []
    for row in frame.drop_duplicates("image_path").itertuples():
        image = path.parent / row.image_path
        usable = allow_outside or inside_folder(path.parent, row.image_path)
        error = image_error(image) if usable and image.is_file() else None
        if error:
            problems.append(f"{path}, line {row.line}: unreadable image {image} ({error}). "
                            "Fix: replace the file with a valid image.")
    return problems


def split_path_of(path: Path) -> Path:
    """Where the made split of a table without split column is written."""
    return path.with_name(f"{path.stem}_splits.csv")


def load_table_dataset(path: Path, columns: TableColumns | None = None,
                       allow_outside: bool = False) -> tuple[pd.DataFrame, Path]:
    """(rows image_path, label, caption, split; root = the table's folder), validated."""
    path = Path(path)
    frame, columns, problems = read_table_rows(path, columns, allow_outside)
    if problems:
        raise DataError(f"{path}: {len(problems)} problem(s):\n" + "\n".join(problems))
    if columns.split:
        frame["split"] = frame["split"].map(SPLIT_ALIASES)
    else:
        split = load_split(path.parent, frame, split_path_of(path))
        frame = frame.drop(columns="split").merge(split, on="image_path", how="left",
                                                  validate="many_to_one")
    return frame[["image_path", "label", "caption", "split"]].reset_index(drop=True), path.parent


def describe_table(path: Path, frame: pd.DataFrame) -> str:
    """A short summary: images and captions per split, and the classes when labelled."""
    images = frame.drop_duplicates("image_path")
    lines = [f"{path}: OK"]
    for split in SPLITS:
        part = frame[frame["split"] == split]
        lines.append(f"  {split:<6} {part['image_path'].nunique():5d} images "
                     f"{len(part):6d} captions")
    labels = sorted(label for label in images["label"].unique() if label)
    lines.append(f"  classes: {', '.join(labels)}" if labels else "  unlabelled")
    return "\n".join(lines)
