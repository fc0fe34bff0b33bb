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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from utils.core.device import grad_scaler
from utils.core.progress import note, progress

# step(model, batch, device) -> (mean loss of the batch (scalar tensor), items in the batch,
# extra counts to add up over the epoch, e.g. {"acc": right answers}); counts may be tensors
# on the device (summed there, read once per epoch: no host sync per batch on a GPU)
Step = Callable[[nn.Module, Any, torch.device], tuple[torch.Tensor, int, dict]]


def limit(loader: Iterable, batches: int) -> Iterable:
    """The first ``batches`` batches of ``loader`` (all of them when ``batches`` is 0)."""
    return itertools.islice(loader, batches) if batches > 0 else loader


def batch_count(loader: DataLoader, batches: int) -> int:
    """Number of batches an epoch will see, for the progress bar."""
    return min(len(loader), batches) if batches > 0 else len(loader)


SYNC_EVERY = 50  # on a GPU, the loss is read back (a host sync) once every SYNC_EVERY batches


def check_finite(total: torch.Tensor, epoch: int, batches: str, lr: float) -> None:
    """Stop training on a NaN/inf loss (the running total of the epoch) with what to change."""
    if not torch.isfinite(total):
        raise FloatingPointError(
            f"loss is {total.item()} at epoch {epoch}, {batches}. Lower the learning rate "
            f"(lr={lr:g}: try OVERRIDES={{'lr': {lr / 10:g}}}), check the data (empty captions, "
            "unreadable images: python -m utils.data check), keep max_logit_scale <= 100; on a "
            "GPU, RECIPE='cpu' or DETERMINISTIC=1 help tell a precision problem from a data one.")


def sync_interval(device: torch.device) -> int:
    """Batches between two reads of the running loss: every batch on the CPU (free there), every
    SYNC_EVERY on a GPU (each read waits for the GPU to finish its queue)."""
    return 1 if device.type == "cpu" else SYNC_EVERY


def add_to(totals: dict, key: str, value) -> None:
    """totals[key] += value, values being numbers or tensors (kept on their device)."""
    totals[key] = totals[key] + value if key in totals else value


def optimizer_step(loss: torch.Tensor, optimizer, scaler: torch.amp.GradScaler) -> None:
    """Backward and step through the scaler, a no-op one except in float16 (where it skips a
    step with inf/NaN gradients and lowers its scale)."""
    optimizer.zero_grad(set_to_none=True)
    if not scaler.is_enabled():
        loss.backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


class StepCounter:
    """Counts the optimizer's real steps (a post-step hook: no host sync), so a per-batch
    scheduler skips the batches whose step the gradient scaler skipped."""

    def __init__(self, optimizer) -> None:
        self.count = 0
        self.handle = optimizer.register_step_post_hook(self.increment)

    def increment(self, optimizer, args, kwargs) -> None:
        """The hook: one more step taken."""
        self.count += 1

    def remove(self) -> None:
        """Unhook from the optimizer."""
        self.handle.remove()


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
            note(f"early stop at epoch {row['epoch']}: best {self.monitor} at epoch "
                       f"{self.best_epoch}")
            return True
        return False


def best_epoch(history: list[dict], monitor: str, mode: str) -> int:
    """The epoch ``fit`` kept: the first best ``monitor`` value of the history rows."""
    pick = min if mode == "min" else max
    return pick(history, key=lambda row: row[monitor])["epoch"]


def train_epoch(model: nn.Module, batches: Iterable, step: Step, optimizer,
                device: torch.device, epoch: int, bar, batch_scheduler=None,
                scaler: torch.amp.GradScaler | None = None,
                steps: StepCounter | None = None) -> dict:
    """One training pass -> {"train_loss": mean loss, plus each extra count per item};
    ``batch_scheduler`` (e.g. OneCycleLR) steps after every batch that updated the weights.
    Sums stay on the device; they are read every ``sync_interval`` batches and at the end."""
    model.train()
    scaler = scaler or grad_scaler(device)
    steps = steps or StepCounter(optimizer)
    totals: dict = {}
    lr = optimizer.param_groups[-1]["lr"]
    every, last = sync_interval(device), 0
    for index, batch in enumerate(batches, start=1):
        loss, n, extra = step(model, batch, device)
        add_to(totals, "loss", loss.detach().float() * n)
        if index % every == 0:  # before the update: a NaN never reaches the weights on the CPU
            check_finite(totals["loss"], epoch, f"batches {last + 1}-{index}", lr)
            last = index
        taken = steps.count
        optimizer_step(loss, optimizer, scaler)
        if batch_scheduler is not None and steps.count > taken:
            batch_scheduler.step()
        add_to(totals, "n", n)
        for key, value in extra.items():
            add_to(totals, key, value)
        if index % every == 0:
            bar.set_postfix(loss=f"{float(totals['loss']) / float(totals['n']):.3f}",
                            refresh=False)
        bar.update(1)
    if not totals:
        return {}
    check_finite(totals["loss"], epoch, f"batches {last + 1}-{index}", lr)
    count = max(float(totals.pop("n")), 1.0)
    return {f"train_{key}": float(value) / count for key, value in totals.items()}


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
    scaler, steps = grad_scaler(device), StepCounter(optimizer)
    history = []
    for epoch in range(1, epochs + 1):
        if hasattr(train_loader.dataset, "set_epoch"):
            train_loader.dataset.set_epoch(epoch)  # e.g. a new caption per image each epoch
        if hasattr(train_loader.sampler, "set_epoch"):
            train_loader.sampler.set_epoch(epoch)  # several processes: reshuffle their shards
        # A manual bar on stdout (not progress(loader)): one line per epoch in Jupyter and the PDF.
        bar = progress(total=batch_count(train_loader, limit_batches),
                   desc=f"epoch {epoch}/{epochs}", mininterval=1.0)
        row = {"epoch": epoch, "lr": optimizer.param_groups[-1]["lr"]}
        row.update(train_epoch(model, limit(train_loader, limit_batches), step, optimizer,
                               device, epoch, bar, scheduler if per_batch else None, scaler,
                               steps))
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
    steps.remove()
    if stopper.best_state is not None:
        model.load_state_dict(stopper.best_state)
    return history


@dataclass
class TrainedRun:
    """A trained model and what the notebooks report about its run."""

    model: nn.Module
    config: Any  # its architecture config (what its checkpoint stores)
    history: list[dict]  # one row per epoch (see fit)
    seconds: float  # wall time of the training, feature caching included
    best_epoch: int  # the epoch whose weights were kept
    loaders: dict[str, DataLoader] = field(default_factory=dict)  # "train", "val", "test"
    tokenizer: Any = None  # the text models' tokenizer
    training: Any = None  # the run settings it was trained with (utils.train.configs)
