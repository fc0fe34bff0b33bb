"""The on-disk cache of frozen encoder features, and the GloVe vectors."""

from __future__ import annotations

import shutil

import pytest
import torch

from utils.core.device import get_device, precision_for
from utils.data.glove import embedding_matrix, load_glove
from utils.models import features
from utils.models.cnn import EfficientNetLiteTrunk, load_efficientnet_lite0


@pytest.fixture
def six_images(flickr8k_dir, tmp_path, monkeypatch):
    """Six real Flickr8k images copied to a folder, and DATA_DIR pointing at tmp_path."""
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    source = sorted((flickr8k_dir / "Flicker8k_Dataset").iterdir())[:6]
    folder = tmp_path / "images"
    folder.mkdir()
    return [shutil.copy(f, folder / f.name) for f in source]


def test_features_are_cached_and_match_the_trunk(six_images, monkeypatch):
    found = features.image_features(six_images, batch_size=4)
    assert found.maps.shape == (6, 49, 1280) and found.maps.dtype == torch.float16
    assert found.pooled.shape == (6, 1280)
    trunk = EfficientNetLiteTrunk(load_efficientnet_lite0()).eval()
    with torch.no_grad():
        expected = trunk(features.normalised_batch(six_images[:2], 224))
    # The cache is computed on this machine's device: bf16/float16 on a GPU rounds far more
    # than the float32 CPU reference (relative error about 2^-8).
    tolerance = 1e-4 if precision_for(get_device()).dtype is None else 5e-2
    torch.testing.assert_close(found.pooled[:2], expected, atol=tolerance, rtol=tolerance)
    assert found.rows([six_images[3].name]).tolist() == [3]

    def refuse(*args, **kwargs):
        raise AssertionError("the cached features were computed again")

    monkeypatch.setattr(features, "compute_features", refuse)
    again = features.image_features(six_images)
    assert torch.equal(again.maps, found.maps) and again.files == found.files


def test_another_image_set_gets_another_cache_file(six_images):
    first = features.cache_path(six_images, "efficientnet_lite0", 224)
    assert features.cache_path(six_images[:5], "efficientnet_lite0", 224) != first
    assert features.cache_path(six_images, "efficientnet_lite2", 260) != first
    six_images[0].write_bytes(six_images[0].read_bytes() + b"\0")  # same name, new content size
    assert features.cache_path(six_images, "efficientnet_lite0", 224) != first


def test_glove_vectors_fill_the_known_words_of_a_vocabulary():
    glove = load_glove()
    assert len(glove.words) == 400_000 and glove.vectors.shape == (400_000, 50)
    matrix, missing = embedding_matrix(["<pad>", "dog", "puppy", "cat", "qzxv"], glove)
    assert missing == ["<pad>", "qzxv"]
    assert torch.equal(matrix[1], torch.from_numpy(glove.vector("dog").copy()))
    cos = torch.nn.functional.cosine_similarity
    assert cos(matrix[1], matrix[2], dim=0) > cos(matrix[1], matrix[4], dim=0)  # dog ~ puppy
