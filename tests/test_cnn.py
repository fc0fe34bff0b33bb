"""Image classifier: shapes, trunks (scratch, EfficientNet-Lite0, ResNet offline), overfitting,
frozen trunk, checkpoint round trip."""

from __future__ import annotations

import dataclasses
import urllib.error

import pytest
import torch

from utils.core.checkpoint import save_checkpoint
from utils.core.common import seed_everything
from utils.data.course import CLASSES
from utils.data.datasets import (
    ImageClassificationDataset,
    build_transform,
    decode_image,
    make_loader,
)
from utils.eval.classification import predict, predict_logits
from utils.models.cnn import (
    CnnConfig,
    ImageClassifier,
    build_image_classifier,
    build_trunk,
    load_efficientnet_lite0,
    load_image_classifier,
)
from utils.train.classifier import fit_classifier
from utils.train.configs import CnnTrainConfig

CPU = torch.device("cpu")
IMAGENET_DOGS = range(151, 269)  # ImageNet classes 151-268 are dog breeds


def sixteen_images(frame):
    """16 training images, 4 per class, in a fixed order."""
    images = frame[frame["split"] == "train"].drop_duplicates("image_path")
    return images.sort_values("image_path").groupby("label").head(4).reset_index(drop=True)


def test_scratch_trunk_and_head_shapes():
    config = CnnConfig(channels=(8, 16, 32))
    model = build_image_classifier(config)
    assert config.image_size == 64
    assert model.trunk.out_features == 32
    assert [type(m).__name__ for m in model.head] == ["Dropout", "Linear"]  # hidden=0
    deeper = build_image_classifier(CnnConfig(channels=(8, 16, 32), hidden=12))
    assert deeper.head[0].out_features == 12 and deeper.head[-1].out_features == len(CLASSES)
    for size in (64, 128):
        images = torch.randn(2, 3, size, size)
        assert model.trunk(images).shape == (2, 32)
        assert model(images).shape == (2, len(CLASSES))
    assert isinstance(model.trunk[-1], torch.nn.Flatten)


def test_pretrained_trunks_default_to_224_and_unknown_trunk_is_refused():
    assert CnnConfig(trunk="efficientnet_lite0").image_size == 224
    assert CnnConfig(trunk="efficientnet_lite0", image_size=160).image_size == 160
    with pytest.raises(ValueError, match="trunk"):
        CnnConfig(trunk="vgg16")


def test_efficientnet_lite0_loads_offline_and_sees_dogs(flickr8k_dir, course_subset):
    network = load_efficientnet_lite0().eval()
    transform = build_transform(224, augment=False)
    dogs = [course_subset / "images" / "dog" / f"dog_{i:03d}.jpg" for i in range(1, 5)]
    images = torch.stack([transform(decode_image(path, 224)) for path in dogs])
    with torch.no_grad():
        logits = network(images)
        trunk = build_trunk(CnnConfig(trunk="efficientnet_lite0")).eval()
        features = trunk(images)
    assert features.shape == (4, trunk.out_features) == (4, 1280)
    assert all(int(top) in IMAGENET_DOGS for top in logits.argmax(dim=1))
    # The trunk is the network up to its pooled features: its ImageNet layer gives the logits.
    torch.testing.assert_close(network._fc(features), logits, rtol=1e-4, atol=1e-4)


def test_resnet_without_internet_raises_a_clear_error(monkeypatch, tmp_path):
    import torchvision.models._api as api

    def no_internet(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(api, "load_state_dict_from_url", no_internet)
    with pytest.raises(RuntimeError, match="TORCH_HOME") as error:
        build_trunk(CnnConfig(trunk="resnet18"))
    assert "internet" in str(error.value) and "resnet18" in str(error.value)
    assert str(tmp_path / "hub" / "checkpoints") in str(error.value)
    assert build_trunk(CnnConfig(trunk="resnet18"), pretrained=False).out_features == 512


@pytest.mark.slow
def test_scratch_cnn_overfits_sixteen_real_images(course_split, course_subset):
    seed_everything(0)
    frame = sixteen_images(course_split)
    config = CnnConfig(image_size=64, channels=(16, 32, 64), dropout=0.0)
    training = CnnTrainConfig(augment=False, epochs=40, patience=40, batch_size=16, lr=3e-3)
    dataset = ImageClassificationDataset(frame, course_subset, config.image_size, augment=False)
    loader = make_loader(dataset, training.batch_size, shuffle=True, seed=0)
    model = build_image_classifier(config)
    fit_classifier(model, loader, loader, training, device=CPU)
    y_true, y_pred, _ = predict(model, loader, CPU)
    assert (y_true == y_pred).all()


@pytest.mark.slow
def test_frozen_pretrained_trunk_does_not_change(course_split, course_subset):
    seed_everything(0)
    frame = sixteen_images(course_split)
    config = CnnConfig(trunk="efficientnet_lite0", image_size=64)
    training = CnnTrainConfig(epochs=1, batch_size=8)
    model = build_image_classifier(config, freeze_trunk=training.freeze_trunk)
    before = {k: v.clone() for k, v in model.trunk.state_dict().items()}
    head_before = [p.clone() for p in model.head.parameters()]
    dataset = ImageClassificationDataset(frame, course_subset, config.image_size, augment=True)
    fit_classifier(model, make_loader(dataset, 8, shuffle=True, seed=0),
        make_loader(dataset, 8, shuffle=False), training, device=CPU)
    after = model.trunk.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN statistics
    assert not all(torch.equal(a, b) for a, b in zip(head_before, model.head.parameters(),
                                                      strict=True))


def test_checkpoint_round_trip_gives_identical_logits(course_split, course_subset, tmp_path):
    seed_everything(0)
    frame = sixteen_images(course_split)
    config = CnnConfig(image_size=64, channels=(8, 16))
    dataset = ImageClassificationDataset(frame, course_subset, config.image_size, augment=False)
    loader = make_loader(dataset, 8, shuffle=False)
    model = build_image_classifier(config)
    fit_classifier(model, loader, loader, CnnTrainConfig(epochs=1, batch_size=8), device=CPU)
    path = save_checkpoint(tmp_path / "cnn.pt", model.state_dict(), dataclasses.asdict(config),
                           epoch=1)
    reloaded, config2 = load_image_classifier(path)
    assert isinstance(reloaded, ImageClassifier) and config2 == config
    before, _ = predict_logits(model, loader, CPU)
    after, _ = predict_logits(reloaded, loader, CPU)
    assert torch.equal(before, after)


def test_a_pair_of_trunks_concatenates_each_one_on_its_own_size():
    from utils.models.cnn import ConcatTrunk

    class Probe(torch.nn.Module):
        """Features: the input's side length and mean (B,2)."""
        out_features = 2

        def forward(self, images):
            side = torch.full((len(images), 1), float(images.shape[-1]))
            return torch.cat([side, images.mean(dim=(1, 2, 3))[:, None]], dim=1)

    trunk = ConcatTrunk({"small": Probe(), "large": Probe()}, {"small": 8, "large": 16})
    images = torch.rand(3, 3, 16, 16)
    features = trunk(images)
    assert trunk.out_features == 4 and features.shape == (3, 4)
    assert features[:, 0].tolist() == [8.0] * 3 and features[:, 2].tolist() == [16.0] * 3
    assert torch.allclose(features[:, 3], images.mean(dim=(1, 2, 3)))
    config = CnnConfig(trunk="efficientnet_lite0+lite2")
    assert config.image_size == 224
