"""Datasets, image cache, transforms and loaders on the course subsets."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from utils.data import datasets
from utils.data.course import CLASSES, load_dataset
from utils.data.datasets import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageCache,
    ImageClassificationDataset,
    ImageTextDataset,
    TextClassificationDataset,
    build_transform,
    make_loader,
)
from utils.data.tokenizers import TextVectorizer

SIZE = 64  # small images keep these tests fast; the code path is the one of 224


@pytest.fixture(scope="module")
def frame(course_subset):
    return load_dataset(course_subset)


@pytest.fixture(scope="module")
def frame_5(course_subset_5):
    return load_dataset(course_subset_5)


@pytest.fixture(scope="module")
def vectorizer_5(frame_5):
    return TextVectorizer.fit(frame_5[frame_5["split"] == "train"]["caption"])


def test_eval_transform_normalises_with_imagenet_statistics():
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    image = (mean * 255).round().to(torch.uint8).expand(3, 100, 80).clone()
    out = build_transform(SIZE, augment=False)(image)
    assert out.dtype == torch.float32 and out.shape == (3, SIZE, SIZE)
    assert out.abs().max() < 0.02
    white_image = torch.full((3, SIZE, SIZE), 255, dtype=torch.uint8)
    white = build_transform(SIZE, augment=False)(white_image)
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(white[:, 0, 0], expected, atol=1e-5)


def test_augment_transform_is_random_and_keeps_the_shape(course_subset):
    image = ImageCache(course_subset, 96).get("images/dog/dog_001.jpg")
    augment = build_transform(SIZE, augment=True)
    torch.manual_seed(0)
    first = augment(image)
    second = augment(image)
    torch.manual_seed(0)
    assert torch.equal(augment(image), first)
    assert first.shape == (3, SIZE, SIZE) and not torch.equal(first, second)


@pytest.mark.parametrize("mode, suffix", [("RGBA", ".png"), ("L", ".jpg"), ("CMYK", ".jpg"),
                                          ("P", ".png"), ("LA", ".png")])
def test_cache_turns_every_mode_into_rgb(tmp_path, mode, suffix):
    Image.new("RGB", (40, 30), (200, 120, 40)).convert(mode).save(tmp_path / f"x{suffix}")
    image = ImageCache(tmp_path, SIZE).get(f"x{suffix}")
    assert image.dtype == torch.uint8 and image.shape == (3, SIZE, SIZE)


def test_transparent_pixels_become_white(tmp_path):
    picture = Image.new("RGBA", (8, 8), (255, 0, 0, 255))
    picture.putpixel((0, 0), (0, 0, 0, 0))
    picture.save(tmp_path / "a.png")
    image = ImageCache(tmp_path, 8).get("a.png")
    assert image[:, 0, 0].tolist() == [255, 255, 255]
    assert image[:, 4, 4].tolist() == [255, 0, 0]


def test_cache_decodes_each_file_once(course_subset, monkeypatch):
    calls = []
    decode = datasets.decode_image
    monkeypatch.setattr(datasets, "decode_image", lambda *a: calls.append(a) or decode(*a))
    cache = ImageCache(course_subset, SIZE)
    paths = ["images/dog/dog_001.jpg", "images/ball/ball_001.jpg"]
    cache.preload(paths)
    for _ in range(3):
        assert cache.get(paths[0]) is cache.get(paths[0])
    assert len(calls) == 2 and len(cache) == 2
    assert ImageCache.shared(course_subset, SIZE) is ImageCache.shared(course_subset, SIZE)


def test_image_classification_dataset(frame, course_subset):
    test = frame[frame["split"] == "test"]
    dataset = ImageClassificationDataset(test, course_subset, SIZE, augment=False)
    assert len(dataset) == 90
    image, label = dataset[0]
    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32
    assert label == CLASSES.index(test["label"].iloc[0])
    images, labels = next(iter(make_loader(dataset, 16, shuffle=False)))
    assert images.shape == (16, 3, SIZE, SIZE) and labels.dtype == torch.long


def test_text_classification_dataset(frame_5, vectorizer_5):
    train = frame_5[frame_5["split"] == "train"]
    dataset = TextClassificationDataset(train, vectorizer_5)
    assert len(dataset) == len(train) == 5 * 56
    tokens, label = dataset[7]
    assert tokens.shape == (32,) and tokens.dtype == torch.long
    assert torch.equal(tokens, vectorizer_5.encode([train["caption"].iloc[7]])[0])
    assert label == CLASSES.index(train["label"].iloc[7])


def test_image_text_dataset_one_item_per_image(frame_5, course_subset_5, vectorizer_5):
    train = frame_5[frame_5["split"] == "train"]
    dataset = ImageTextDataset(train, course_subset_5, vectorizer_5, SIZE, augment=True)
    assert len(dataset) == 56
    seen = []
    for images, tokens, index in make_loader(dataset, 16, shuffle=True, seed=3):
        assert images.shape[1:] == (3, SIZE, SIZE) and tokens.shape[1:] == (32,)
        assert len(set(index.tolist())) == len(index)  # never the same image twice in a batch
        for token_row, i in zip(tokens, index.tolist(), strict=True):
            allowed = vectorizer_5.encode(dataset.captions[i])
            assert (allowed == token_row).all(dim=1).any()  # one of that image's captions
        seen += index.tolist()
    assert sorted(seen) == list(range(56))


def test_image_text_caption_changes_with_epoch_and_repeats_within(frame_5, course_subset_5,
                                                                  vectorizer_5):
    dataset = ImageTextDataset(frame_5, course_subset_5, vectorizer_5, SIZE, augment=False)
    rows = [dataset.caption_row(i) for i in range(len(dataset))]
    assert rows == [dataset.caption_row(i) for i in range(len(dataset))]
    dataset.set_epoch(1)
    epoch_1 = [dataset.caption_row(i) for i in range(len(dataset))]
    assert sum(a != b for a, b in zip(rows, epoch_1, strict=True)) > len(dataset) // 2
    changed = next(i for i in range(len(dataset)) if rows[i] != epoch_1[i])
    tokens_1 = dataset[changed][1]
    dataset.set_epoch(0)
    assert torch.equal(dataset[changed][1], dataset.tokens[rows[changed]])
    assert not torch.equal(dataset[changed][1], tokens_1)
    other_seed = ImageTextDataset(frame_5, course_subset_5, vectorizer_5, SIZE, False, seed=1)
    assert [other_seed.caption_row(i) for i in range(len(dataset))] != rows


def test_loader_order_follows_the_seed_and_drop_last(frame, course_subset):
    val = frame[frame["split"] == "val"]
    dataset = ImageClassificationDataset(val, course_subset, SIZE, augment=False)
    order = [labels.tolist() for _, labels in make_loader(dataset, 32, True, seed=0)]
    assert order == [labels.tolist() for _, labels in make_loader(dataset, 32, True, seed=0)]
    assert order != [labels.tolist() for _, labels in make_loader(dataset, 32, True, seed=1)]
    assert len(make_loader(dataset, 32, True, drop_last=True)) == 90 // 32
    assert len(make_loader(dataset, 32, True)) == 3
