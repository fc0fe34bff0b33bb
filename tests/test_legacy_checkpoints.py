"""Checkpoints written before the package was layered (project 0.1) still load.

``tests/data/legacy_clip_v0_1.json`` holds a CLIP checkpoint saved by project 0.1's
``utils.clip.save_clip`` (tiny scratch towers; tensors written as lists), together with what
that code computed for a few probe images and captions. The test writes the checkpoint back as
the ``.pt`` file it was, loads it with today's ``load_clip`` and compares the embeddings.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from utils.core.checkpoint import load_checkpoint, save_checkpoint
from utils.eval.index import GalleryIndex
from utils.models.clip import ClipConfig, clip_config_from_dict, load_clip
from utils.models.cnn import CnnConfig
from utils.models.smallbert import SmallBertConfig

FIXTURE = Path(__file__).parent / "data" / "legacy_clip_v0_1.json"


def decode(value):
    """Lists tagged as tensors back to tensors, recursively."""
    if isinstance(value, dict) and "__tensor__" in value:
        return torch.tensor(value["__tensor__"], dtype=getattr(torch, value["dtype"]))
    if isinstance(value, dict):
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def write_legacy(tmp_path: Path) -> tuple[Path, dict]:
    """The 0.1 checkpoint as a .pt file, and the probe computed by the 0.1 code."""
    fixture = decode(json.loads(FIXTURE.read_text(encoding="utf-8")))
    path = tmp_path / "03_clip.pt"
    torch.save(fixture["checkpoint"], path)
    return path, fixture["probe"]


def test_legacy_config_becomes_typed_sub_configs(tmp_path: Path) -> None:
    path, _ = write_legacy(tmp_path)
    stored = load_checkpoint(path)["config"]
    assert "image_config" in stored and "text_config" in stored  # really the old layout
    config = clip_config_from_dict(stored)
    assert isinstance(config, ClipConfig)
    assert isinstance(config.image, CnnConfig) and config.image.channels == (2, 3)
    assert isinstance(config.text, SmallBertConfig) and config.text.width == 4
    assert config.pretrained_text is None


def test_legacy_clip_checkpoint_loads_and_embeds_as_before(tmp_path: Path) -> None:
    path, probe = write_legacy(tmp_path)
    model, tokenizer, checkpoint = load_clip(path)
    with torch.no_grad():
        image_embeds = model.encode_image(probe["images"].to(next(model.parameters()).device))
        text_embeds = model.encode_text(tokenizer.encode(probe["captions"]).to(
            next(model.parameters()).device))
    # The probe was computed on another CPU: the order of float32 sums varies with the
    # instruction set (AVX2, AVX-512), so equality holds to rounding, not to the bit.
    torch.testing.assert_close(image_embeds.cpu(), probe["image_embeds"], atol=1e-6, rtol=0)
    torch.testing.assert_close(text_embeds.cpu(), probe["text_embeds"], atol=1e-6, rtol=0)
    index = GalleryIndex.from_dict(checkpoint["index"])
    assert index.split("test").image_paths == ["images/ball/ball_001.jpg"]


def test_a_new_checkpoint_stores_the_typed_layout(tmp_path: Path) -> None:
    path, _ = write_legacy(tmp_path)
    model, tokenizer, checkpoint = load_clip(path)
    again = tmp_path / "again.pt"
    save_checkpoint(again, model.state_dict(), asdict(model.config))
    config = load_checkpoint(again)["config"]
    assert {"image", "text", "pretrained_text"} <= set(config)
    assert not {"image_config", "text_config", "hf_spec"} & set(config)
    assert clip_config_from_dict(config) == model.config


def test_checkpoints_from_before_the_config_split_load_with_their_run_settings(
        tmp_path: Path) -> None:
    """Until 0.4 a checkpoint's ``config`` held architecture and run settings together (and no
    ``training`` entry): the model rebuilds from the architecture fields, and the run settings
    are read from the same dict (utils.core.checkpoint.stored_training)."""
    from utils.core.checkpoint import stored_training
    from utils.core.common import config_from_dict
    from utils.models.cnn import build_image_classifier, load_image_classifier
    from utils.models.smallbert import build_text_classifier
    from utils.train.configs import ClipTrainConfig, CnnTrainConfig, SmallBertTrainConfig

    cnn = {**asdict(CnnConfig(channels=(4, 8), image_size=16)), "seed": 3, "epochs": 7,
           "lr": 0.01, "augment": False, "report_seeds": [0, 1]}
    net = build_image_classifier(CnnConfig(channels=(4, 8), image_size=16))
    save_checkpoint(tmp_path / "01_cnn.pt", net.state_dict(), cnn, kind="image_classifier")
    _, config = load_image_classifier(tmp_path / "01_cnn.pt")
    assert config == CnnConfig(channels=(4, 8), image_size=16)
    training = config_from_dict(CnnTrainConfig,
                                stored_training(load_checkpoint(tmp_path / "01_cnn.pt")))
    assert (training.seed, training.epochs, training.lr, training.augment) == (3, 7, 0.01, False)

    bert = SmallBertConfig(width=8, heads=2, ff=16, layers=1, vocab_size=20)
    text = build_text_classifier(bert)
    save_checkpoint(tmp_path / "02.pt", text.state_dict(),
                    {**asdict(bert), "epochs": 9, "max_tokens": 500}, kind="text_classifier")
    checkpoint = load_checkpoint(tmp_path / "02.pt")
    assert config_from_dict(SmallBertTrainConfig, stored_training(checkpoint)).max_tokens == 500
    assert config_from_dict(SmallBertConfig, checkpoint["config"]) == bert

    old_clip = {"embed_dim": 16, "lr": 0.002, "epochs": 4, "image_source": "scratch",
                "freeze_image": True, "dataset": "flickr8k", "captions_per_image": 5}
    assert clip_config_from_dict(old_clip) == ClipConfig(embed_dim=16)
    moved = config_from_dict(ClipTrainConfig, stored_training({"config": old_clip}))
    assert (moved.lr, moved.image_source, moved.freeze_image, moved.dataset) == (
        0.002, "scratch", True, "flickr8k")
    assert stored_training({"config": old_clip, "training": {"lr": 0.5}}) == {"lr": 0.5}
