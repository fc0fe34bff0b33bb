"""Command line of the data layer::

    python -m utils.data build --flickr8k DIR --out DIR [--per-class 150] [--captions-per-image 1]
    python -m utils.data check DIR        (a course-format folder)
    python -m utils.data check FILE [--image-column C] [--caption-column C] [--label-column C]
                                    [--split-column C]   (any CSV/TSV/JSONL image-caption table)
    python -m utils.data fetch [--zip flickr_subset2.zip] [--flickr8k]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from utils.core.cli import run_command
from utils.data.course import DataError, check_dataset, describe_counts, read_captions
from utils.data.fetch import ensure_dataset, ensure_flickr8k
from utils.data.flickr8k import build_subset
from utils.data.generic import TableColumns, check_table, describe_table, load_table_dataset


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
    build.add_argument("--replace", action="store_true",
                       help="replace an existing --out folder (moved aside whole, not deleted)")
    check = commands.add_parser("check", help="check a course-format folder or a table file")
    check.add_argument("root", type=Path, help="folder holding captions.csv, or a CSV/TSV/JSONL")
    for what in ("image", "caption", "label", "split"):
        check.add_argument(f"--{what}-column", help=f"the {what} column (default: guessed)")
    check.add_argument("--allow-outside-paths", action="store_true",
                       help="a table only: accept image paths outside its folder (absolute, ..)")
    fetch = commands.add_parser("fetch", help="make data/flickr_subset2 ready (local copy, "
                                "the course zip, built from Flickr8k, or downloaded)")
    fetch.add_argument("--zip", type=Path, default=None,
                       help="a local copy of the course's flickr_subset2.zip to unpack")
    fetch.add_argument("--flickr8k", action="store_true",
                       help="also make Flickr8k ready (notebooks 06 and 08; about 1 GB)")
    return parser.parse_args(argv)


def run_check(root: Path, columns: TableColumns | None = None, allow_outside: bool = False
              ) -> int:
    """Print the summary (exit 0) or every problem (exit 1); a file is a table dataset."""
    problems = check_table(root, columns, allow_outside) if root.is_file() else \
        check_dataset(root)
    if problems:
        print(f"{root}: {len(problems)} problem(s)", *problems, sep="\n", file=sys.stderr)
        return 1
    if root.is_file():
        print(describe_table(root, load_table_dataset(root, columns, allow_outside)[0]))
    else:
        print(describe_counts(root, read_captions(root)))
    return 0


def build_or_fetch(args: argparse.Namespace) -> str:
    """``build`` or ``fetch``: the dataset made ready -> its summary and the time taken."""
    start = time.perf_counter()
    if args.command == "build":
        root = build_subset(args.flickr8k, args.out, args.per_class, args.captions_per_image,
                            replace=args.replace)
    else:
        root = ensure_dataset(course_zip=args.zip)
    lines = [describe_counts(root, read_captions(root))]
    if args.command == "fetch" and args.flickr8k:
        lines.append(f"Flickr8k: {ensure_flickr8k()}")
    return "\n".join([*lines, f"{args.command}: {time.perf_counter() - start:.1f} s"])


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m utils.data``."""
    args = parse_args(argv)
    if args.command == "check":
        try:
            return run_check(args.root, TableColumns(args.image_column, args.caption_column,
                                                     args.label_column, args.split_column),
                             args.allow_outside_paths)
        except DataError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    return run_command(lambda: build_or_fetch(args), (DataError,))


if __name__ == "__main__":
    sys.exit(main())
