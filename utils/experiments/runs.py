"""The one API of the notebooks' comparison runs: a run spec -> train -> evaluate -> a table row.

Notebooks 03 (is reusing steps 1-2 worth it?), 04 (a pretrained text tower) and 05 (enriched
captions) all compare CLIP runs that differ from step 3's configs by a few fields. Each run is a
``RunSpec``: its name, its ``ClipConfig`` (architecture) and ``ClipTrainConfig`` (run settings)
and the captions it trains on. ``train_run`` builds and
trains it; ``clip_row`` evaluates it on the test images of a gallery index; ``compare`` does both
for a list of specs and returns the table, one row per run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from utils.core.common import count_parameters, replace_fields, seed_everything
from utils.core.progress import note
from utils.eval.index import GalleryIndex, build_index
from utils.eval.retrieval import PRECISION_K, RECALL_KS
from utils.eval.zero_shot import evaluate_clip
from utils.models.clip import ClipConfig
from utils.train.clip import (
    MONITOR,
    frozen_image_features,
    frozen_text_features,
    make_clip_loaders,
    train_clip,
)
from utils.train.configs import ClipTrainConfig
from utils.train.loop import TrainedRun, best_epoch
from utils.train.towers import create_clip


@dataclass
class RunSpec:
    """One comparison run: its name, its configs, and (optionally) its own training captions."""

    name: str
    config: ClipConfig  # architecture
    training: ClipTrainConfig  # run settings
    frame: pd.DataFrame | None = None  # training captions; None: the comparison's frame
    tokenizer: object = None  # a tokenizer to share between runs; None: the tower's own


def derive_configs(config: ClipConfig, training: ClipTrainConfig, **changes
                   ) -> tuple[ClipConfig, ClipTrainConfig]:
    """Step 3's configs with ``changes`` (each to the config that has the field); the towers
    are resolved again from their sources (their sub-configs and image size are dropped
    unless ``changes`` gives them)."""
    towers = {"image": None, "text": None, "pretrained_text": None, "image_size": None}
    return replace_fields((config, training), **{**towers, **changes})


def train_run(config: ClipConfig, training: ClipTrainConfig, frame: pd.DataFrame, root: Path,
              tokenizer=None) -> TrainedRun:
    """Build and train one CLIP on the train split of ``frame`` (val: model selection)."""
    seed_everything(training.seed)
    start = time.perf_counter()
    model, tokenizer = create_clip(config, training, tokenizer=tokenizer, frame=frame)
    loaders = make_clip_loaders(model, training, tokenizer, frame, root)
    history = train_clip(model, *loaders, training)
    return TrainedRun(model, model.config, history, time.perf_counter() - start,
                      best_epoch(history, *MONITOR), tokenizer=tokenizer, training=training)


def run_index(run: TrainedRun, rows: pd.DataFrame, root: Path) -> GalleryIndex:
    """The gallery of ``rows`` (images and captions) embedded by a trained run; frozen towers'
    features are those training read (cached), not recomputed from pixels and tokens."""
    images = frozen_image_features(run.model, run.training, run.tokenizer, rows, root)
    texts = frozen_text_features(run.model, run.training, run.tokenizer, rows)
    return build_index(run.model, run.tokenizer, rows, root, run.model.config.image_size,
                       image_features=images, text_features=texts)


def flatten_clip_metrics(result: dict) -> dict:
    """evaluate_clip's nested result -> one table row (R@k and precision@5 per direction)."""
    row = {}
    for way, short in (("text_to_image", "t2i"), ("image_to_text", "i2t")):
        row.update({f"{short}_R@{k}": result[way][f"R@{k}"] for k in RECALL_KS})
        key = f"class_precision@{PRECISION_K}"
        row[f"{short}_{key}"] = result[way][key]
    row["zero_shot_accuracy"] = result["zero_shot_accuracy"]
    return row


def clip_row(run: TrainedRun, index: GalleryIndex) -> dict:
    """Test-split metrics of a trained run on ``index``, its epochs, size and training time."""
    row = flatten_clip_metrics(evaluate_clip(run.model, run.tokenizer, index, "test"))
    row.update(train_time_s=round(run.seconds, 1), epochs_run=len(run.history),
               best_epoch=run.best_epoch,
               best_val_R5=max(h["val_R@5"] for h in run.history),
               trainable_parameters=count_parameters(run.model)["trainable"])
    return row


def compare(specs: list[RunSpec], frame: pd.DataFrame, root: Path,
            rows: pd.DataFrame | None = None, done: dict[str, dict] | None = None
            ) -> tuple[dict[str, TrainedRun], pd.DataFrame]:
    """Train and evaluate every spec (rows already made are passed in ``done``) -> the runs and
    the table, one row per run; ``rows``: the captions and images of the evaluation gallery
    (default: the test split of ``frame``)."""
    rows = frame[frame["split"] == "test"] if rows is None else rows
    runs, table = {}, dict(done or {})
    for spec in specs:
        if spec.name in table:
            continue
        note(f"--- run: {spec.name}")
        train_frame = spec.frame if spec.frame is not None else frame
        runs[spec.name] = train_run(spec.config, spec.training, train_frame, root,
                                    spec.tokenizer)
        table[spec.name] = clip_row(runs[spec.name], run_index(runs[spec.name], rows, root))
    return runs, pd.DataFrame.from_dict(table, orient="index")


def best_by_validation(runs: dict[str, TrainedRun], names: list[str] | None = None) -> str:
    """Name of the run with the best validation R@5 (ties: the lower validation loss)."""
    def score(name: str) -> tuple[float, float]:
        best = max(runs[name].history, key=lambda h: (h["val_R@5"], -h["val_loss"]))
        return best["val_R@5"], -best["val_loss"]

    return max(names or list(runs), key=score)
