"""Median latency of one text query on the search page's path, printed, never asserted::

    python -m utils.app.bench [--checkpoint models/03_clip.pt] [--gallery models/flickr8k_index.pt]
                              [--queries 200] [--k 5] [--threads N]

For each gallery (the checkpoint's own, then each --gallery file) it times, per query, the text
encoder alone and the search alone (one matrix product + topk + the hits), and prints medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from utils.app.catalog import CheckpointError, Searcher, load_gallery_file, load_searcher
from utils.core import paths
from utils.core.cli import positive_int
from utils.eval.search import Gallery, embed_query_text, search_images


def time_calls(function, inputs: list) -> list[float]:
    """Milliseconds of ``function(x)`` for each input (one warm-up call first)."""
    function(inputs[0])
    times = []
    for value in inputs:
        start = time.perf_counter()
        function(value)
        times.append((time.perf_counter() - start) * 1000)
    return times


def bench_gallery(searcher: Searcher, gallery: Gallery, queries: int, k: int) -> dict:
    """Median (and 90th percentile) ms per text query: text encoder, then search alone."""
    texts = gallery.index.captions[:queries]
    encode = time_calls(lambda t: embed_query_text(searcher.model, searcher.tokenizer, t), texts)
    embeds = [embed_query_text(searcher.model, searcher.tokenizer, t) for t in texts]
    search = time_calls(lambda q: search_images(gallery, q, k), embeds)
    return {"gallery": gallery.name, "images": len(gallery),
            "dim": gallery.index.image_embeds.shape[1], "queries": len(texts),
            "encode_ms": statistics.median(encode), "search_ms": statistics.median(search),
            "search_p90_ms": statistics.quantiles(search, n=10)[-1]}


def format_row(row: dict) -> str:
    """One line of the report."""
    return (f"{row['gallery']}: {row['images']} images x {row['dim']} dims, "
            f"{row['queries']} queries: search median {row['search_ms']:.3f} ms "
            f"(p90 {row['search_p90_ms']:.3f} ms), text encoder median {row['encode_ms']:.2f} ms")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Arguments of ``python -m utils.app.bench``."""
    parser = argparse.ArgumentParser(prog="python -m utils.app.bench",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a CLIP checkpoint (default: models/03_clip.pt)")
    parser.add_argument("--gallery", type=Path, action="append", default=[],
                        help="a gallery file of python -m utils.app.index (repeatable)")
    parser.add_argument("--queries", type=positive_int, default=200,
                        help="text queries per gallery")
    parser.add_argument("--k", type=positive_int, default=5, help="results per query")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default, one per core)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Print the machine, then one latency line per gallery; exit status 1 on bad input."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint or paths.models_dir() / "03_clip.pt"
    try:
        searcher = load_searcher(checkpoint)
        galleries = [searcher.gallery] + [load_gallery_file(g, searcher) for g in args.gallery]
    except (CheckpointError, FileNotFoundError) as error:
        print(f"error: {error}. Fix: run `make run` first or give --checkpoint/--gallery.",
              file=sys.stderr)
        return 1
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} "
          f"threads, load average {load}; model {checkpoint.name}")
    with torch.inference_mode():
        for gallery in galleries:
            print(format_row(bench_gallery(searcher, gallery, args.queries, args.k)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
