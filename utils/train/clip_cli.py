"""Train a CLIP from the command line, on one process or several (``torchrun``)::

    python -m utils.train.clip_cli --dataset flickr8k --set image_source=scratch
    torchrun --standalone --nproc_per_node=2 -m utils.train.clip_cli --dataset FILE.csv ...
    make train-ddp NPROC=2 DATASET=flickr8k ARGS="--set epochs=3"

``--dataset``: "course", "flickr8k" or a CSV/TSV/JSONL table (utils.data.generic); ``--set
FIELD=VALUE`` changes any ClipConfig field (VALUE read as JSON when it parses, else a string);
``--smoke`` applies ClipConfig.SMOKE. ``batch_size`` is the global batch, split over the
processes. Rank 0 evaluates on the test split and writes the checkpoint (default
models/clip_cli.pt) and prints the test figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from utils.core import paths
from utils.core.checkpoint import CheckpointError
from utils.core.cli import run_command
from utils.core.common import make_configs, seed_everything
from utils.data.course import DataError
from utils.eval.index import build_index
from utils.eval.zero_shot import evaluate_clip
from utils.models.clip import ClipConfig, save_clip
from utils.train.clip import best_clip_epoch, load_clip_frame, make_clip_loaders, train_clip
from utils.train.configs import ClipTrainConfig
from utils.train.distributed import close_distributed, init_distributed, is_main_process, world_size
from utils.train.towers import create_clip


def parse_value(text: str):
    """A --set value: JSON when it parses (numbers, true, lists), else the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Arguments of ``python -m utils.train.clip_cli``."""
    parser = argparse.ArgumentParser(prog="python -m utils.train.clip_cli",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="course", help="course | flickr8k | a table file")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a ClipConfig field (repeatable)")
    parser.add_argument("--smoke", action="store_true", help="a few images, one epoch")
    parser.add_argument("--out", type=Path, default=None, help="checkpoint to write")
    parser.add_argument("--check-nproc", metavar="N", default=None,
                        help="only check the process count, the config and the dataset "
                             "(make train-ddp NPROC=N runs it before torchrun)")
    return parser.parse_args(argv)


def nproc_problem(value: str) -> str | None:
    """What is wrong with ``NPROC`` for ``make train-ddp`` (None: nothing)."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not value.isdigit() or int(value) < 1:
        return (f"NPROC={value!r}: give a whole number of processes >= 1, e.g. make train-ddp "
                f"NPROC={max(gpus, 2)}")
    if gpus and int(value) > gpus:
        return (f"NPROC={value}: this machine has {gpus} GPU(s), one process each; give "
                f"NPROC={gpus} or fewer (NPROC defaults to the GPU count)")
    return None


def overrides_of(args: argparse.Namespace) -> dict:
    """CLIP config overrides (architecture or run settings) from --dataset and every
    --set FIELD=VALUE."""
    values = {"dataset": args.dataset}
    for item in args.set:
        field, equal, value = item.partition("=")
        if not equal:
            raise ValueError(f"--set {item!r}: write FIELD=VALUE, e.g. --set epochs=3")
        values[field.strip()] = parse_value(value)
    return values


def check_run(args: argparse.Namespace) -> str:
    """``--check-nproc N`` (make train-ddp, before torchrun starts any process): the process
    count, the config of --set and the dataset, each bad one a named error."""
    problem = nproc_problem(args.check_nproc)
    if problem:
        raise ValueError(problem)
    _, training = make_configs(ClipConfig, ClipTrainConfig, args.smoke, overrides_of(args))
    frame, _ = load_clip_frame(training)
    return f"checked: {args.check_nproc} process(es), {frame['image_path'].nunique()} images"


def train_and_save(config: ClipConfig, training: ClipTrainConfig, out: Path) -> dict | None:
    """Train on this process's shard; rank 0 evaluates and saves -> the test result (rank 0)."""
    seed_everything(training.seed)
    frame, root = load_clip_frame(training)
    model, tokenizer = create_clip(config, training, frame=frame)
    loaders = make_clip_loaders(model, training, tokenizer, frame, root)
    history = train_clip(model, *loaders, training)
    if not is_main_process():
        return None
    index = build_index(model, tokenizer, frame, root, model.config.image_size)
    test = evaluate_clip(model, tokenizer, index, "test")
    save_clip(out, model, tokenizer, best_clip_epoch(history),
              {"test": test, "history": history}, index, training)
    return test


def run(args: argparse.Namespace) -> str:
    """Train (one process, or this one of torchrun's) -> rank 0's summary ('' on the others)."""
    start = time.perf_counter()
    init_distributed()
    try:
        configs = make_configs(ClipConfig, ClipTrainConfig, args.smoke, overrides_of(args))
        out = args.out or paths.model_path("clip_cli.pt")
        test = train_and_save(*configs, out)
    finally:
        processes = world_size()
        close_distributed()
    if test is None:
        return ""
    lines = [f"{way} {({k: round(v, 3) for k, v in test[way].items() if v is not None})}"
             for way in ("text_to_image", "image_to_text")]
    return "\n".join([*lines, f"{out}: {processes} process(es), "
                               f"{time.perf_counter() - start:.1f} s"])


def main(argv: list[str] | None = None) -> int:
    """Entry point: a check (make train-ddp), one process, or one of ``torchrun``'s."""
    args = parse_args(argv)
    errors = (DataError, CheckpointError, FileNotFoundError, ValueError)
    if args.check_nproc is not None:
        return 2 * run_command(lambda: check_run(args), errors)
    return run_command(lambda: run(args), errors)


if __name__ == "__main__":
    sys.exit(main())
