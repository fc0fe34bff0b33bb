"""Training on several processes (``torchrun --nproc_per_node=N``): DistributedDataParallel.

``torchrun`` sets RANK, WORLD_SIZE, LOCAL_RANK and MASTER_ADDR/PORT; ``init_distributed`` joins
the group (gloo on CPU, nccl on GPU). Each process sees ``batch_size / N`` pairs of the global
batch (a DistributedSampler shards the shuffled images, reseeded each epoch by ``set_epoch``),
DDP averages the gradients, and CLIP's loss gathers the embeddings of every process so that each
pair meets all the negatives of the global batch (``utils.models.clip.gather_embeddings``).
Without torchrun nothing changes: one process, the usual loaders and model.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from utils.data.datasets import make_loader


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    """True on the process that prints, evaluates and saves (rank 0)."""
    return rank() == 0


def init_distributed() -> bool:
    """Join the process group that torchrun describes in the environment; False (and nothing
    done) when not launched by torchrun or with one process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return is_distributed()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return True


def close_distributed() -> None:
    """Leave the process group (no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel in a process group; itself otherwise."""
    if not is_distributed():
        return model
    device_ids = [torch.cuda.current_device()] if torch.cuda.is_available() else None
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (the model itself when not wrapped)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def local_batch_size(batch_size: int) -> int:
    """Pairs per process for a global batch of ``batch_size`` (must divide evenly)."""
    if batch_size % world_size():
        raise ValueError(f"batch_size={batch_size} does not split over {world_size()} "
                         "processes: choose a multiple of the process count")
    return batch_size // world_size()


def distributed_loader(dataset: Dataset, batch_size: int, seed: int, drop_last: bool
                       ) -> DataLoader:
    """A training loader over this process's shard of a shuffled ``dataset``; ``batch_size``
    is the global batch. ``fit`` calls ``loader.sampler.set_epoch`` every epoch."""
    sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=drop_last)
    return make_loader(dataset, local_batch_size(batch_size), shuffle=False, seed=seed,
                       drop_last=drop_last, sampler=sampler)
