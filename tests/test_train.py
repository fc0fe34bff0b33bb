"""The shared training loop (seeded repeatability, early stopping) and the metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from utils.core.common import make_generator, seed_everything
from utils.data.course import CLASSES
from utils.data.datasets import ImageClassificationDataset, TextClassificationDataset, make_loader
from utils.data.tokenizers import TextVectorizer
from utils.eval.classification import (
    classification_metrics,
    interleave_by_class,
    misclassified,
    predict,
)
from utils.models.cnn import CnnConfig, build_image_classifier
from utils.models.smallbert import SmallBertConfig, build_text_classifier
from utils.train.classifier import fit_classifier, validate_classifier
from utils.train.configs import CnnTrainConfig, SmallBertTrainConfig
from utils.train.loop import EarlyStopping, best_epoch

CPU = torch.device("cpu")
HISTORY_KEYS = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr"}


def short_image_run(frame, root, seed: int) -> list[dict]:
    """One epoch of 2 augmented batches from a fresh seeded model -> its history."""
    seed_everything(seed)
    config = CnnConfig(image_size=48, channels=(8, 16))
    training = CnnTrainConfig(seed=seed, epochs=1, batch_size=8, limit_batches=2)
    train = frame[frame["split"] == "train"].head(32)
    val = frame[frame["split"] == "val"].head(16)
    train_loader = make_loader(ImageClassificationDataset(train, root, 48, augment=True), 8,
                               shuffle=True, seed=seed)
    val_loader = make_loader(ImageClassificationDataset(val, root, 48, augment=False), 8,
                             shuffle=False)
    return fit_classifier(build_image_classifier(config), train_loader, val_loader, training,
                          device=CPU)


def test_seeded_cpu_run_repeats_its_numbers(course_split, course_subset):
    first = short_image_run(course_split, course_subset, seed=3)
    again = short_image_run(course_split, course_subset, seed=3)
    other = short_image_run(course_split, course_subset, seed=4)
    assert len(first) == 1 and set(first[0]) == HISTORY_KEYS
    assert first == again
    assert first != other


@pytest.mark.slow
def test_early_stopping_restores_the_best_weights(course_split):
    seed_everything(0)
    # 16 training captions overfit quickly, so the validation loss rises and training stops.
    train = course_split[course_split["split"] == "train"].groupby("label").head(4)
    val = course_split[course_split["split"] == "val"]
    vectorizer = TextVectorizer.fit(train["caption"])
    config = SmallBertConfig(vocab_size=vectorizer.vocab_size)
    training = SmallBertTrainConfig(epochs=60, patience=3, lr=5e-3)
    train_loader = make_loader(TextClassificationDataset(train, vectorizer), 16, True, seed=0)
    val_loader = make_loader(TextClassificationDataset(val, vectorizer), 64, False)
    model = build_text_classifier(config)
    history = fit_classifier(model, train_loader, val_loader, training, device=CPU)
    assert len(history) < training.epochs  # stopped early
    assert best_epoch(history, "val_loss", "min") == len(history) - training.patience
    with torch.no_grad():
        val_loss = validate_classifier(model, val_loader, CPU)["val_loss"]
    assert val_loss == pytest.approx(min(row["val_loss"] for row in history), abs=1e-6)
    assert val_loss < history[-1]["val_loss"]


def test_predict_returns_labels_predictions_and_probabilities(course_split):
    frame = course_split[course_split["split"] == "test"]
    vectorizer = TextVectorizer.fit(frame["caption"])
    model = build_text_classifier(SmallBertConfig(vocab_size=vectorizer.vocab_size))
    loader = make_loader(TextClassificationDataset(frame, vectorizer), 32, shuffle=False)
    y_true, y_pred, probs = predict(model, loader, CPU)
    assert y_true.tolist() == [CLASSES.index(label) for label in frame["label"]]
    assert probs.shape == (len(frame), len(CLASSES))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (y_pred == probs.argmax(axis=1)).all()


def test_classification_metrics_on_a_hand_checked_example():
    y_true = [0, 0, 1, 2, 3, 3]
    y_pred = [0, 1, 1, 2, 3, 0]
    metrics = classification_metrics(y_true, y_pred, CLASSES)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["confusion_matrix"] == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0],
                                           [1, 0, 0, 1]]
    # F1 per class: ball 2*.5*.5/1 = .5, bike 2*.5*1/1.5 = 2/3, dog 1, water 2*1*.5/1.5 = 2/3.
    assert metrics["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 1 + 2 / 3) / 4)
    assert metrics["report"]["dog"]["support"] == 1
    assert misclassified(y_true, y_pred).tolist() == [1, 5]


def test_misclassified_examples_are_interleaved_across_classes():
    y_true = [0, 0, 0, 1, 1, 2]
    assert interleave_by_class(np.array([0, 1, 2, 3, 4, 5]), y_true) == [0, 3, 5, 1, 4, 2]


def test_early_stopping_keeps_the_first_best_value_in_either_direction():
    model = torch.nn.Linear(2, 1)
    for mode, values, best in (("min", [3.0, 1.0, 1.0, 2.0], 2), ("max", [0.1, 0.5, 0.5, 0.2], 2)):
        stopper = EarlyStopping("v", mode, patience=2)
        stops = [stopper.update({"epoch": e, "v": v}, model) for e, v in enumerate(values, 1)]
        history = [{"epoch": e, "v": v} for e, v in enumerate(values, 1)]
        assert stopper.best_epoch == best == best_epoch(history, "v", mode)
        assert stops == [False, False, False, True]  # epoch 4 is 2 epochs after the best


def test_one_cycle_schedule_keeps_the_epoch_of_the_best_validation_accuracy():
    torch.manual_seed(0)
    inputs = torch.randn(64, 8)
    labels = (inputs[:, 0] > 0).long() + 2 * (inputs[:, 1] > 0).long()
    loader = DataLoader(TensorDataset(inputs, labels), batch_size=16, shuffle=True,
                        generator=make_generator(0))
    training = CnnTrainConfig(epochs=6, lr=0.05, warmup=0.3, label_smoothing=0.1, patience=10)
    model = torch.nn.Linear(8, len(CLASSES))
    history = fit_classifier(model, loader, loader, training, device=CPU)
    lrs = [row["lr"] for row in history]  # the lr at the start of each epoch
    assert lrs[0] < max(lrs) and lrs[-1] < max(lrs)  # warm-up, then decay
    kept = best_epoch(history, "val_acc", "max")
    with torch.no_grad():
        restored = validate_classifier(model, loader, CPU)["val_acc"]
    assert restored == history[kept - 1]["val_acc"] == max(r["val_acc"] for r in history)
