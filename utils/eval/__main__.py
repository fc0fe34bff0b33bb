"""Command line of the evaluation layer::

    python -m utils.eval human_agreement --judgments FILE --checkpoint CKPT [--flickr8k DIR]

prints Kendall's tau-c between a CLIP checkpoint's CLIP-S / RefCLIP-S and the human ratings of
a Flickr8k-Expert-format file (CLIPScore, Hessel et al. 2021, reports 51.2 / 53.0 with a CLIP
trained on 400M pairs; tau-c x 100).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from utils.core import paths
from utils.core.checkpoint import CheckpointError
from utils.core.cli import run_command
from utils.data.course import DataError
from utils.data.images import ImageError
from utils.eval.human_agreement import human_agreement
from utils.models.clip import load_clip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Arguments of ``python -m utils.eval human_agreement``."""
    parser = argparse.ArgumentParser(prog="python -m utils.eval",
                                     description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    agree = commands.add_parser("human_agreement", help="tau-c with human caption ratings")
    agree.add_argument("--judgments", type=Path, required=True,
                       help="Flickr8k-Expert format: IMAGE, CAPTION_IMAGE#N, 3 ratings 1-4")
    agree.add_argument("--checkpoint", type=Path, required=True, help="a CLIP checkpoint")
    agree.add_argument("--flickr8k", type=Path, default=None,
                       help="the Flickr8k folder (default: FLICKR8K_DIR or data/flickr8k)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m utils.eval``."""
    args = parse_args(argv)
    start = time.perf_counter()

    def work() -> str:
        if not args.checkpoint.is_file():
            raise FileNotFoundError(
                f"{args.checkpoint}: not found. Fix: give a CLIP checkpoint, e.g. "
                "models/03_clip.pt (notebook 03) or models/08_flickr8k_clip.pt (notebook 08).")
        model, tokenizer, _ = load_clip(args.checkpoint)
        result = human_agreement(model, tokenizer, args.judgments,
                                 args.flickr8k or paths.flickr8k_dir())
        return (f"{args.judgments}: {result['pairs']} pairs, {result['ratings']} ratings\n"
                f"Kendall tau-c  CLIP-S: {result['tau_c_clip_s']:.3f}  RefCLIP-S: "
                f"{result['tau_c_ref_clip_s']:.3f}  (CLIPScore paper, 400M pairs: 0.512 / "
                f"0.530)\nhuman_agreement: {time.perf_counter() - start:.1f} s")

    return run_command(work, (DataError, CheckpointError, FileNotFoundError, ImageError))


if __name__ == "__main__":
    sys.exit(main())
