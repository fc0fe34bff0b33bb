"""Notebook 08's pieces: variant configs, the comparison with the published anchors, and the
claim its checkpoint rests on: the frozen Lite0 trunk of a rebuilt CLIP gives, from the
pixels, the features that the training read from the cache."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from utils.data.datasets import build_transform, image_pixels
from utils.data.flickr8k import flickr8k_image_files
from utils.eval.index import build_index
from utils.experiments.benchmark import (
    ANCHORS,
    BenchmarkConfig,
    beats,
    benchmark_figures,
    run_variant,
    variant_configs,
)
from utils.models.clip import build_clip
from utils.models.features import image_features
from utils.train.clip import load_clip_frame, make_clip_loaders
from utils.train.features import PrecomputedPairs
from utils.train.towers import create_clip, resolve_image


def test_unknown_variants_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown \\['resnet'\\]"):
        BenchmarkConfig(variants=("pretrained", "resnet"))


def test_variants_use_flickr8k_with_five_captions() -> None:
    pretrained, pretrained_training = variant_configs(BenchmarkConfig(), "pretrained")
    _, scratch = variant_configs(BenchmarkConfig(), "scratch")
    assert pretrained_training.dataset == scratch.dataset == "flickr8k"
    assert pretrained_training.captions_per_image == 5 and pretrained_training.freeze_image
    assert pretrained.pretrained_text.model == "minilm-l6-packaged"
    assert (scratch.image_source, scratch.text_source) == ("scratch", "scratch")
    lite2, lite2_training = variant_configs(BenchmarkConfig(), "pretrained_lite2")
    image, _ = resolve_image(lite2, lite2_training)
    model = build_clip(dataclasses.replace(lite2, image=image, image_size=image.image_size,
                                           text=None), pretrained=False)
    assert (model.config.image.trunk, model.config.image_size) == ("efficientnet_lite2", 260)


def test_beats_compares_each_recall_with_the_anchor() -> None:
    kiros = ANCHORS["Kiros et al. 2014"]
    figures = {way: {k: v + 0.01 for k, v in kiros[way].items()} for way in kiros}
    figures["text_to_image"]["R@5"] = kiros["text_to_image"]["R@5"]  # a tie does not beat
    verdict = beats(figures)
    assert sum(verdict.values()) == 5 and not verdict["text_to_image R@5"]
    klein = beats(figures, "Klein et al. 2015")  # only R@5 published here: two verdicts
    assert klein == {"image_to_text R@5": False, "text_to_image R@5": False}


@pytest.mark.parametrize("variant", ["pretrained", "pretrained_lite2"])
def test_the_rebuilt_trunk_gives_the_cached_features(flickr8k_dir: Path, variant: str) -> None:
    files = flickr8k_image_files(flickr8k_dir)[:4]
    configs = variant_configs(BenchmarkConfig(), variant)
    cached = image_features(files, configs[1].image_source).pooled
    model, _ = create_clip(*configs)
    transform = build_transform(model.config.image_size, augment=False)
    pixels = torch.stack([transform(image_pixels(f, model.config.image_size)) for f in files])
    with torch.no_grad():
        from_pixels = model.image_encoder.eval()(pixels)
    diff = float((from_pixels - cached).abs().max())
    print(f"max |trunk(pixels) - cached pooled| = {diff:.2e}")
    assert diff < 1e-4


def test_end_to_end_variant_trains_both_pretrained_towers(flickr8k_dir: Path) -> None:
    # The variant a GPU adds by default (default_variants): run here on 8 images per split.
    config = BenchmarkConfig(max_images_per_split=8, full_epochs=1, pretrained_batch_size=8)
    configs = variant_configs(config, "pretrained_full")
    frame, root = load_clip_frame(configs[1])
    before, _ = create_clip(*configs)
    run, index, result = run_variant(config, "pretrained_full", frame, root)
    model = run.model
    assert not run.training.freeze_image and not run.training.freeze_text
    assert model.config.pretrained_text.freeze == "none"
    changed = {name: not torch.equal(value, before.state_dict()[name])
               for name, value in model.state_dict().items() if value.is_floating_point()}
    assert any(v for k, v in changed.items() if k.startswith("image_encoder."))
    assert any(v for k, v in changed.items() if k.startswith("text_encoder."))
    figures = benchmark_figures(result, index.split("test"))
    assert (figures["n_images"], figures["n_captions"]) == (8, 40)
    assert 0.0 <= figures["text_to_image"]["R@1"] <= figures["text_to_image"]["R@10"] <= 1.0


def test_the_pair_of_trunks_gives_both_cached_features_side_by_side(flickr8k_dir: Path) -> None:
    """Lite0 + Lite2 (notebook 08): the rebuilt tower reads 224 px; its Lite0 half is the
    cached Lite0 features, its Lite2 half sees the image upsampled to 260 inside the tower."""
    files = flickr8k_image_files(flickr8k_dir)[:4]
    configs = variant_configs(BenchmarkConfig(), "pretrained_lite02")
    assert configs[1].image_source == "efficientnet_lite0+lite2" and configs[1].freeze_image
    model, _ = create_clip(*configs)
    assert (model.config.image_size, model.image_encoder.out_features) == (224, 2560)
    transform = build_transform(224, augment=False)
    pixels = torch.stack([transform(image_pixels(f, 224)) for f in files])
    with torch.no_grad():
        from_pixels = model.image_encoder.eval()(pixels)
    lite0 = image_features(files, "efficientnet_lite0").pooled
    lite2 = image_features(files, "efficientnet_lite2").pooled
    assert float((from_pixels[:, :1280] - lite0).abs().max()) < 1e-4
    cosines = torch.nn.functional.cosine_similarity(from_pixels[:, 1280:], lite2)
    print(f"Lite2 half, upsampled in the tower vs decoded at 260 px: cosine {cosines.min():.4f}")
    assert float(cosines.min()) > 0.99


def test_two_frozen_towers_train_on_precomputed_pairs_through_the_one_runner(
        flickr8k_dir: Path) -> None:
    """Both towers frozen (notebook 08's kept variants): utils.experiments.runs trains on
    cached image AND caption features, and its gallery reads them too: the same embeddings
    as from pixels and token ids."""
    config = BenchmarkConfig(max_images_per_split=8, pretrained_epochs=1,
                             pretrained_batch_size=8)
    configs = variant_configs(config, "pretrained")
    frame, root = load_clip_frame(configs[1])
    run, index, _ = run_variant(config, "pretrained", frame, root)
    train_loader, _ = make_clip_loaders(run.model, run.training, run.tokenizer, frame, root)
    assert isinstance(train_loader.dataset, PrecomputedPairs)
    assert len(run.history) == 1
    pixels = build_index(run.model, run.tokenizer, frame, root, run.model.config.image_size)
    assert pixels.captions == index.captions and pixels.image_paths == index.image_paths
    assert index.max_abs_difference(pixels) < 1e-4
