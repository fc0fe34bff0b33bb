"""The one training loop of the project, and its one early-stopping / best-epoch rule.

Every model trains through ``fit``: the classifiers of steps 1-2 (batches ``(inputs, labels)``,
cross-entropy, kept by validation loss) and CLIP (batches ``(images, tokens, index)``, the
contrastive loss inside the model, kept by validation R@5). What differs is passed in: a
``step`` that returns the batch loss, a ``validate`` that returns the validation row, and an
``EarlyStopping`` naming the monitored value. The weights of the best epoch are restored.
"""

from __future__ import annotations

import copy
import itertools
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

# step(model, batch, device) -> (mean loss of the batch (scalar tensor), items in the batch,
# extra counts to add up over the epoch, e.g. {"correct": 12})
Step = Callable[[nn.Module, Any, torch.device], tuple[torch.Tensor, int, dict]]


def limit(loader: Iterable, batches: int) -> Iterable:
    """The first ``batches`` batches of ``loader`` (all of them when ``batches`` is 0)."""
    return itertools.islice(loader, batches) if batches > 0 else loader


def batch_count(loader: DataLoader, batches: int) -> int:
    """Number of batches an epoch will see, for the progress bar."""
    return min(len(loader), batches) if batches > 0 else len(loader)


def check_finite(loss: torch.Tensor, epoch: int, step: int, lr: float) -> None:
    """Stop training on a NaN/inf loss with what to change."""
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"loss is {loss.item()} at epoch {epoch}, batch {step}. Lower the learning rate "
            f"(lr={lr:g}: try OVERRIDES={{'lr': {lr / 10:g}}}), check the data (empty captions, "
            "unreadable images: python -m utils.data check), keep max_logit_scale <= 100 and "
            "use bf16 or float32, never fp16.")


@dataclass
class EarlyStopping:
    """Keep the epoch whose ``monitor`` is best (ties keep the earlier one); stop after
    ``patience`` epochs without a better value."""

    monitor: str  # key of the history row, e.g. "val_loss" or "val_R@5"
    mode: str  # "min" (a loss) | "max" (a recall, an accuracy)
    patience: int
    best_value: float | None = None
    best_epoch: int = 0
    best_state: dict | None = field(default=None, repr=False)

    def is_better(self, value: float) -> bool:
        """True when ``value`` beats the best value so far (strictly)."""
        if self.best_value is None:
            return True
        return value < self.best_value if self.mode == "min" else value > self.best_value

    def update(self, row: dict, model: nn.Module) -> bool:
        """Record an epoch's row; keep the weights if better; True when training must stop."""
        if self.is_better(row[self.monitor]):
            self.best_value, self.best_epoch = row[self.monitor], row["epoch"]
            self.best_state = copy.deepcopy(model.state_dict())
        elif row["epoch"] - self.best_epoch >= self.patience:
            tqdm.write(f"early stop at epoch {row['epoch']}: best {self.monitor} at epoch "
                       f"{self.best_epoch}")
            return True
        return False


def best_epoch(history: list[dict], monitor: str, mode: str) -> int:
    """The epoch ``fit`` kept: the first best ``monitor`` value of the history rows."""
    pick = min if mode == "min" else max
    return pick(history, key=lambda row: row[monitor])["epoch"]


def train_epoch(model: nn.Module, batches: Iterable, step: Step, optimizer,
                device: torch.device, epoch: int, bar: tqdm, batch_scheduler=None) -> dict:
    """One training pass -> {"train_loss": mean loss, plus each extra count per item};
    ``batch_scheduler`` (e.g. OneCycleLR) steps after every batch."""
    model.train()
    totals: dict[str, float] = {"loss": 0.0, "n": 0}
    lr = optimizer.param_groups[-1]["lr"]
    for index, batch in enumerate(batches):
        loss, n, extra = step(model, batch, device)
        check_finite(loss, epoch, index, lr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if batch_scheduler is not None:
            batch_scheduler.step()
        totals["loss"] += loss.item() * n
        totals["n"] += n
        for key, value in extra.items():
            totals[key] = totals.get(key, 0) + value
        bar.set_postfix(loss=f"{totals['loss'] / totals['n']:.3f}", refresh=False)
        bar.update(1)
    count = max(totals.pop("n"), 1)
    return {f"train_{key}": value / count for key, value in totals.items()}


def fit(model: nn.Module, train_loader: DataLoader, step: Step,
        validate: Callable[[nn.Module], dict], optimizer, scheduler, stopper: EarlyStopping,
        epochs: int, device: torch.device, limit_batches: int = 0) -> list[dict]:
    """Train for at most ``epochs``; restore the best epoch's weights -> one row per epoch.

    ``validate(model)`` returns the validation values of the row (``stopper.monitor`` among
    them); ``scheduler`` (may be None) steps once per epoch, with the monitored value when it
    is a ReduceLROnPlateau, or after every batch when it is a OneCycleLR.
    """
    per_batch = isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR)
    model.to(device)
    history = []
    for epoch in range(1, epochs + 1):
        if hasattr(train_loader.dataset, "set_epoch"):
            train_loader.dataset.set_epoch(epoch)  # e.g. a new caption per image each epoch
        if hasattr(train_loader.sampler, "set_epoch"):
            train_loader.sampler.set_epoch(epoch)  # several processes: reshuffle their shards
        # A manual bar on stdout (not tqdm(loader)): one line per epoch in Jupyter and the PDF.
        bar = tqdm(total=batch_count(train_loader, limit_batches), file=sys.stdout,
                   desc=f"epoch {epoch}/{epochs}", mininterval=1.0)
        row = {"epoch": epoch, "lr": optimizer.param_groups[-1]["lr"]}
        row.update(train_epoch(model, limit(train_loader, limit_batches), step, optimizer,
                               device, epoch, bar, scheduler if per_batch else None))
        with torch.no_grad():
            row.update(validate(model))
        bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k.startswith(("train", "val"))})
        bar.close()
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(row[stopper.monitor])
        elif scheduler is not None and not per_batch:
            scheduler.step()
        history.append(row)
        if stopper.update(row, model):
            break
    if stopper.best_state is not None:
        model.load_state_dict(stopper.best_state)
    return history


@dataclass
class TrainedRun:
    """A trained model and what the notebooks report about its run."""

    model: nn.Module
    config: Any  # the stage config dataclass it was built and trained with
    history: list[dict]  # one row per epoch (see fit)
    seconds: float  # wall time of the training, feature caching included
    best_epoch: int  # the epoch whose weights were kept
    loaders: dict[str, DataLoader] = field(default_factory=dict)  # "train", "val", "test"
    tokenizer: Any = None  # the text models' tokenizer
