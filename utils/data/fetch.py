"""Making the course data ready: the local copy, else built from Flickr8k, else downloaded
(the course zip, then Flickr8k's public archives), resumable and written atomically.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from urllib.request import Request, urlopen

from utils.core import paths
from utils.core.progress import progress
from utils.data.course import CAPTIONS_CSV, DataError, check_dataset, load_dataset, replace_dir
from utils.data.flickr8k import FLICKR_IMAGES, FLICKR_TEXT, TOKEN_FILE, build_subset, has_flickr8k

COURSE_ZIP_URL = "https://www.lirmm.fr/~poncelet/Ressources/flickr_subset2.zip"


FLICKR8K_URLS = (
    "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_Dataset.zip",
    "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_text.zip",
)


DOWNLOAD_TIMEOUT_S = 30


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
    with part.open("ab" if resumed else "wb") as out, progress(
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


def install_course_zip(zip_path: Path, target: Path) -> Path:
    """Unpack a copy of the course's flickr_subset2.zip (uploaded, on Drive, downloaded) as
    ``target``; the zip itself is left where it is."""
    staging = unzip_to_temp(Path(zip_path), paths.data_dir())
    try:
        replace_dir(find_folder(staging, CAPTIONS_CSV), target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def fetch_course_zip(target: Path) -> Path:
    """Download the course's flickr_subset2.zip and install its content as ``target``."""
    zip_path = download_file(COURSE_ZIP_URL, paths.data_dir() / "downloads" / "flickr_subset2.zip")
    install_course_zip(zip_path, target)
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


def dataset_folder(dataset: str = "course", captions_per_image: int = 1) -> Path:
    """The folder a CLIP dataset's image paths are relative to, nothing read or built: the
    course subset, its N-caption build, Flickr8k's image folder, or a table file's folder."""
    if dataset == "flickr8k":
        return paths.flickr8k_dir() / FLICKR_IMAGES
    if dataset != "course":
        return Path(dataset).parent
    if captions_per_image == 1:
        return paths.subset_dir()
    return paths.data_dir() / f"{paths.SUBSET_NAME}_{captions_per_image}captions"


def ensure_dataset(per_class: int = 150, captions_per_image: int = 1,
                   course_zip: Path | None = None) -> Path:
    """Make paths.subset_dir() ready and return it: the local copy if present, else the
    course zip given (``course_zip``), else built from Flickr8k, else the course zip
    downloaded, else Flickr8k downloaded and built."""
    target = paths.subset_dir()
    if (target / CAPTIONS_CSV).exists():
        return validate_dataset(target)
    if course_zip is not None:
        if not Path(course_zip).is_file():
            raise DataError(f"{course_zip}: no such file. Fix: give the path of "
                            "flickr_subset2.zip as the course distributes it.")
        return validate_dataset(install_course_zip(Path(course_zip), target))
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


def ensure_flickr8k() -> Path:
    """Flickr8k for the sibling captions: the local copy, else downloaded (about 1 GB)."""

    flickr8k = paths.flickr8k_dir()
    if has_flickr8k(flickr8k):
        return flickr8k
    print(f"Flickr8k not found at {flickr8k}: downloading it (about 1 GB)...")
    try:
        return fetch_flickr8k(paths.data_dir() / "flickr8k")
    except (OSError, urllib.error.URLError) as error:
        raise DataError(f"Flickr8k is needed for the sibling captions and could not be "
                        f"downloaded ({error}). Fix: unzip Flickr8k_Dataset.zip and "
                        "Flickr8k_text.zip somewhere and set FLICKR8K_DIR to that folder."
                        ) from error
