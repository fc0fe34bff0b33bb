"""Flickr8k as it unpacks (``Flicker8k_Dataset/``, ``Flickr8k_text/``) and the course subset
built from it: each image's caption #0, the first images of each class in file-name order.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd

from utils.core.progress import note, progress
from utils.data.course import (
    CAPTIONS_CSV,
    CLASSES,
    MIN_PER_CLASS,
    DataError,
    building_dir,
    check_dataset,
    check_output_folder,
    classify_caption,
    make_split,
    read_captions,
    write_captions_csv,
)

FLICKR_IMAGES = "Flicker8k_Dataset"  # the official (misspelt) folder name


FLICKR_TEXT = "Flickr8k_text"


TOKEN_FILE = "Flickr8k.token.txt"


FLICKR_SPLIT_FILES = {"train": "Flickr_8k.trainImages.txt", "val": "Flickr_8k.devImages.txt",
                      "test": "Flickr_8k.testImages.txt"}


def flickr8k_image_files(flickr8k: Path) -> list[Path]:
    """Every image of the corpus (8,091 JPEGs), sorted by file name: one fixed image set, so
    every notebook reads the same cached features (utils.models.features)."""
    require_flickr8k(Path(flickr8k))
    return sorted(p for p in (Path(flickr8k) / FLICKR_IMAGES).iterdir() if p.suffix == ".jpg")


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


REPORTED: set[tuple[str, str]] = set()  # (token file, stray keys) already reported here


def report_stray_keys(stray: dict[str, list[int]], token_file: Path, image_dir: Path) -> None:
    """Say once per process which caption keys name no image and were skipped (the corpus has
    one such key): a note on stdout, not a warning, since nothing is wrong with the data."""
    if not stray or (str(token_file), " ".join(stray)) in REPORTED:
        return
    REPORTED.add((str(token_file), " ".join(stray)))
    described = ", ".join(f"{key} (lines {lines[0]}-{lines[-1]})" for key, lines in stray.items())
    count = sum(len(lines) for lines in stray.values())
    note(f"note: {token_file}: skipped {count} caption(s) whose key names no image in "
         f"{image_dir}: {described}")


def read_flickr8k_splits(flickr8k: Path) -> dict[str, str]:
    """The official Flickr8k split: image file name -> "train" | "val" | "test"."""
    split_of = {}
    for split, name in FLICKR_SPLIT_FILES.items():
        split_file = flickr8k / FLICKR_TEXT / name
        if split_file.is_file():
            lines = split_file.read_text(encoding="utf-8-sig").split()
            split_of.update(dict.fromkeys(lines, split))
    return split_of


def read_flickr8k(flickr8k: Path, token_name: str = TOKEN_FILE) -> pd.DataFrame:
    """Parse Flickr8k.token.txt: one row per caption (image, caption_index, caption, flickr_split).
    ``token_name`` may name the lemmatised twin, ``Flickr8k.lemma.token.txt`` (same keys).

    Keys naming no file of ``Flicker8k_Dataset/`` (the corpus's ``2258277193_586949ec62.jpg.1``)
    are skipped and reported once with a warning.
    """
    flickr8k = Path(flickr8k)
    require_flickr8k(flickr8k)
    token_file = flickr8k / FLICKR_TEXT / token_name
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


def copy_images(rows: pd.DataFrame, image_dir: Path, out: Path) -> None:
    """Copy each chosen Flickr8k JPEG (already 224x224) to ``out/images/<class>/<stem>.jpg``."""
    images = rows.drop_duplicates("image_path")
    for name in CLASSES:
        (out / "images" / name).mkdir(parents=True, exist_ok=True)
    pairs = zip(images["image"], images["image_path"], strict=True)
    for source, target in progress(pairs, total=len(images), desc="copy images", disable=None):
        shutil.copyfile(image_dir / source, out / target)


def write_caption_files(rows: pd.DataFrame, out: Path) -> None:
    """Write ``captions/<stem>.txt``: the image's captions, one per line."""
    (out / "captions").mkdir(parents=True, exist_ok=True)
    for stem, group in rows.groupby("stem", sort=True):
        text = "\n".join(group["caption"]) + "\n"
        (out / "captions" / f"{stem}.txt").write_text(text, encoding="utf-8")


def build_subset(flickr8k: Path, out: Path, per_class: int = 150,
                 captions_per_image: int = 1, min_per_class: int = MIN_PER_CLASS,
                 replace: bool = False) -> Path:
    """Build the course subset from Flickr8k into ``out`` (atomically: temp folder, then rename).
    An existing non-empty ``out`` is refused, or with ``replace`` moved aside (never deleted)."""
    check_build_arguments(per_class, captions_per_image, min_per_class)
    flickr8k, out = Path(flickr8k), Path(out)
    captions = read_flickr8k(flickr8k)
    rows = subset_rows(select_images(captions, per_class), captions, captions_per_image)
    check_output_folder(out)
    with building_dir(out, replace) as tmp:
        copy_images(rows, flickr8k / FLICKR_IMAGES, tmp)
        write_caption_files(rows, tmp)
        write_captions_csv(rows, tmp / CAPTIONS_CSV)
        check_new_build(tmp, out, splittable=min_per_class >= MIN_PER_CLASS)  # never a bad one
    return out


def check_build_arguments(per_class: int, captions_per_image: int,
                          min_per_class: int = MIN_PER_CLASS) -> None:
    """Refuse sizes that cannot make a course-format dataset, before anything is written
    (``min_per_class`` below MIN_PER_CLASS only for small test corpora that are never split)."""
    if per_class < max(min_per_class, 1):
        raise DataError(f"--per-class {per_class}: the shared 70/15/15 split needs at least "
                        f"{MIN_PER_CLASS} images per class (the course uses 150). Fix: use "
                        f"--per-class {MIN_PER_CLASS} or more.")
    if not 1 <= captions_per_image <= 5:
        raise DataError(f"--captions-per-image {captions_per_image}: Flickr8k has 5 captions "
                        "per image. Fix: use a value from 1 to 5.")


def check_new_build(built: Path, out: Path, splittable: bool = True) -> None:
    """Raise (the old ``out`` kept) unless the folder just built passes the dataset check."""
    problems = check_dataset(built)
    if not problems:
        if splittable:
            make_split(read_captions(built))  # the split must be drawable too
        return
    raise DataError(f"the new build of {out} failed its check, so {out} was left as it was:\n"
                    + "\n".join(problems[:5]))


def outside_image(flickr8k: Path, label: str = "dog", per_class: int = 150) -> Path:
    """A Flickr8k image of class ``label`` (by its first caption) that the course subset does
    not hold: not among the ``per_class`` images utils.data.build_subset picks, and from the
    official Flickr8k test split."""

    captions = read_flickr8k(flickr8k)
    chosen = set(select_images(captions, per_class)["image"])
    first = captions[(captions["caption_index"] == 0) & ~captions["image"].isin(chosen)]
    first = first[first["flickr_split"] == "test"].sort_values("image")
    matches = first[first["caption"].map(classify_caption) == label]
    if matches.empty:
        raise ValueError(f"{flickr8k}: no test image of class {label!r} outside the subset")
    return Path(flickr8k) / FLICKR_IMAGES / matches["image"].iloc[0]


def flickr8k_frame(flickr8k: Path) -> tuple[pd.DataFrame, Path]:
    """Flickr8k with its official split as a CLIP table: rows image_path (file name), label
    ("": unlabelled), caption (all 5), split (train 6,000 / val 1,000 / test 1,000 images);
    root = the image folder. Images in no official split (91) are left out."""
    captions = read_flickr8k(Path(flickr8k))
    kept = captions[captions["flickr_split"] != ""].sort_values(["image", "caption_index"])
    frame = pd.DataFrame({"image_path": kept["image"], "label": "", "caption": kept["caption"],
                          "split": kept["flickr_split"]})
    return frame.reset_index(drop=True), Path(flickr8k) / FLICKR_IMAGES
