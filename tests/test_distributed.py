"""Two CPU processes (gloo on 127.0.0.1) training CLIP with DDP compute the same loss and the
same gradients as one process on the same global batch: the loss gathers the embeddings of
both processes, so each pair meets all the negatives, and DDP averages the gradients."""

from __future__ import annotations

import socket
import sys
import time
import types
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from utils.core import paths
from utils.data.datasets import ImageTextDataset
from utils.data.flickr8k import flickr8k_frame
from utils.models.clip import ClipConfig, ClipModel, build_clip, clip_config_from_dict
from utils.models.cnn import CnnConfig
from utils.models.smallbert import SmallBertConfig
from utils.train.configs import ClipTrainConfig
from utils.train.distributed import is_distributed, world_size, wrap_ddp
from utils.train.towers import create_clip

WORLD = 2
GLOBAL_BATCH = 8


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_clip() -> tuple[ClipModel, object, torch.Tensor, torch.Tensor]:
    """A small CLIP (scratch CNN frozen in eval mode, 1-block SmallBERT without dropout) and
    one global batch of 8 real Flickr8k training images with their caption #0."""
    frame, root = flickr8k_frame(paths.flickr8k_dir())
    train = frame[frame["split"] == "train"]
    first = train.drop_duplicates("image_path").head(GLOBAL_BATCH).reset_index(drop=True)
    config = ClipConfig(embed_dim=16, image=CnnConfig(channels=(8, 16), image_size=32),
                        text=SmallBertConfig(width=32, heads=2, ff=64, layers=1, dropout=0.0))
    training = ClipTrainConfig(image_source="scratch", text_source="scratch", freeze_image=True)
    model, tokenizer = create_clip(config, training, frame=first)
    dataset = ImageTextDataset(first, root, tokenizer, 32, augment=False)
    images, tokens, _ = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return model, tokenizer, torch.stack(images), torch.stack(tokens)


def loss_and_grads(model: torch.nn.Module, images: torch.Tensor, tokens: torch.Tensor
                   ) -> tuple[float, dict[str, torch.Tensor]]:
    """One training forward/backward -> (loss, gradient of every trainable weight)."""
    model.train()
    loss = model(images, tokens)["loss"]
    loss.backward()
    named = model.named_parameters()
    return loss.item(), {n.removeprefix("module."): p.grad.clone() for n, p in named
                         if p.requires_grad}


def worker(rank: int, port: int, inputs: Path, out: Path) -> None:
    """One DDP process: its half of the global batch -> its loss and gradients, saved."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD)
    try:
        data = torch.load(inputs, weights_only=True)
        model = build_clip(clip_config_from_dict(data["config"]), pretrained=False)
        model.lock(image=True)  # as tiny_clip's run settings freeze it
        model.load_state_dict(data["state"])
        assert is_distributed() and world_size() == WORLD
        part = slice(rank * GLOBAL_BATCH // WORLD, (rank + 1) * GLOBAL_BATCH // WORLD)
        loss, grads = loss_and_grads(wrap_ddp(model), data["images"][part],
                                     data["tokens"][part])
        torch.save({"loss": loss, "grads": grads}, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_match_one_on_the_same_global_batch(flickr8k_dir, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    # Spawned processes re-run the parent's __main__; after a streamlit AppTest that is the
    # search page's script, so the children get a bare __main__ instead.
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    model, tokenizer, images, tokens = tiny_clip()
    inputs = tmp_path / "inputs.pt"
    torch.save({"config": asdict(model.config), "tokenizer": tokenizer.to_dict(),
                "state": model.state_dict(), "images": images, "tokens": tokens}, inputs)
    loss, grads = loss_and_grads(model, images, tokens)
    start = time.perf_counter()
    mp.spawn(worker, args=(free_port(), inputs, tmp_path), nprocs=WORLD, join=True)
    seconds = time.perf_counter() - start
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    assert sorted(ranks[0]["grads"]) == sorted(grads)
    diff = max(float((r["grads"][n] - g).abs().max()) for r in ranks for n, g in grads.items())
    scale = max(float(g.abs().max()) for g in grads.values())
    print(f"loss 1 process {loss:.6f}, 2 processes {[r['loss'] for r in ranks]}; max gradient "
          f"difference {diff:.2e} (largest gradient {scale:.2e}); spawn + step {seconds:.1f} s")
    assert all(abs(r["loss"] - loss) < 1e-5 for r in ranks)
    assert diff < 1e-5 * max(scale, 1.0)
    assert scale > 0  # the comparison is not between two zero gradients


def test_without_a_process_group_the_loss_gathers_nothing(flickr8k_dir) -> None:
    model, _, images, tokens = tiny_clip()
    assert not is_distributed() and world_size() == 1
    out = model.train()(images, tokens)
    logits = model.loss_fn.logits(out["image_embeds"], out["text_embeds"], model.logit_scale)
    assert logits.shape == (GLOBAL_BATCH, GLOBAL_BATCH)
    assert torch.equal(out["loss"], model.loss_fn(out["image_embeds"], out["text_embeds"],
                                                  model.logit_scale))
