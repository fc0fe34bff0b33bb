"""Notebook 07's comparison runs: the course variants over several seeds (image-only, text-only,
early and late fusion), the Flickr8k tag task (BCE vs focal loss) and the multi-task heads.

A course variant is (modality, image input, text input): the inputs are the named tensors of
``utils.train.fusion.course_inputs``; late fusion averages the class probabilities of an
image-only and a text-only run of the same seed (nothing more is trained).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import log_loss
from torch.utils.data import TensorDataset

from utils.core.common import seed_everything
from utils.data.course import CLASS_PATTERNS, CLASSES
from utils.data.datasets import make_loader
from utils.eval.classification import classification_metrics
from utils.eval.multilabel import best_threshold, multilabel_metrics, roc_auc_macro
from utils.models.fusion import FusionBundle, FusionConfig, build_fusion, fusion_spec
from utils.train.configs import FusionTrainConfig
from utils.train.fusion import (
    SplitInputs,
    build_multitask,
    class_loss,
    cpu_threads,
    fusion_step,
    multitask_step,
    predict_fusion,
    predict_multitask,
    tag_loss,
    train_model,
)
from utils.train.loop import TrainedRun


def quietly(label: str, train: Callable[..., TrainedRun], *args) -> TrainedRun:
    """Run ``train(*args)`` with its per-epoch progress bars silenced; print one line instead."""
    with contextlib.redirect_stdout(io.StringIO()):
        run = train(*args)
    print(f"{label}: best epoch {run.best_epoch} of {len(run.history)}, {run.seconds:.1f} s")
    return run


# name -> (modality, image input, text input)
COURSE_VARIANTS = {
    "image_cnn": ("image", "cnn", None),
    "image_effnet": ("image", "efficientnet", None),
    "text_lstm": ("text", None, "lstm"),
    "text_smallbert": ("text", None, "smallbert"),
    "early_lstm": ("early", "efficientnet", "lstm"),
    "early_smallbert": ("early", "efficientnet", "smallbert"),
}


LATE_VARIANTS = {"late_lstm": ("image_effnet", "text_lstm"),
                 "late_smallbert": ("image_effnet", "text_smallbert")}


FUSION_VARIANTS = ("early_lstm", "early_smallbert", "late_lstm", "late_smallbert")


# Inputs that chose their own epoch on this validation split (step 1's CNN by validation
# accuracy, step 2's SmallBERT by validation loss): the validation figures of the variants built on
# them are optimistic (measured: SmallBERT text-only log-loss 0.0002 on validation, yet 0.956 on
# test against 0.967 for the LSTM at 0.049), so they cannot rank those variants fairly.
VALIDATION_SEEN = {"cnn", "smallbert"}


def variant_inputs(name: str) -> set[str]:
    """The inputs ("cnn", "efficientnet", "lstm", "smallbert") a course variant is built on."""
    if name in LATE_VARIANTS:
        return set().union(*(variant_inputs(part) for part in LATE_VARIANTS[name]))
    return {x for x in COURSE_VARIANTS[name][1:] if x}


TAG_MODALITIES = {"image": ("image", "efficientnet", None), "text": ("text", None, "lstm"),
                  "early": ("early", "efficientnet", "lstm")}


# name -> (weight of the class loss, weight of the tag loss; None: training.task_weight)
MULTITASK_VARIANTS = {"multitask": (1.0, None), "class_only": (1.0, 0.0), "tags_only": (0.0, 1.0)}


SCORES = ("accuracy", "macro_f1", "roc_auc_macro")


def variant_spec(variant: tuple, inputs: SplitInputs, outputs: int) -> dict:
    """The fusion_spec of a (modality, image input, text input) variant on these inputs."""
    modality, image, text = variant
    train = inputs.tensors["train"]
    return fusion_spec(modality, image_features=train[image].shape[1] if image else 0,
                       text="lstm" if text in (None, "lstm") else "features",
                       vocab_size=inputs.vectorizer.vocab_size,
                       text_features=train[text].shape[1] if text and text != "lstm" else 0,
                       outputs=outputs)


def variant_tensors(variant: tuple, inputs: SplitInputs, split: str, target: str
                    ) -> list[torch.Tensor]:
    """[image (N,F) or (N,0), text (N,L)/(N,D) or (N,0), target] of one split."""
    _, image, text = variant
    count = len(inputs.get(split, target))
    empty = torch.zeros(count, 0)
    return [inputs.get(split, image) if image else empty,
            inputs.get(split, text) if text else empty, inputs.get(split, target)]


def variant_loaders(variant: tuple, inputs: SplitInputs, target: str, batch_size: int,
                    seed: int) -> dict:
    """Loaders of the three splits (train shuffled with ``seed``)."""
    return {split: make_loader(TensorDataset(*variant_tensors(variant, inputs, split, target)),
                               batch_size, split == "train", seed, num_workers=0)
            for split in ("train", "val", "test")}


def train_variant(variant: tuple, inputs: SplitInputs, config: FusionConfig,
                  training: FusionTrainConfig, seed: int, device: torch.device) -> TrainedRun:
    """Train one course variant with ``seed`` (weights, dropout, shuffling)."""
    seed_everything(seed)
    model = build_fusion(variant_spec(variant, inputs, len(CLASSES)), config, inputs.embeddings)
    loaders = variant_loaders(variant, inputs, "label", training.batch_size, seed)
    return train_model(model, fusion_step(class_loss), loaders, training.epochs, training.lr,
                       training, device)


def split_probabilities(run: TrainedRun, device: torch.device) -> dict[str, np.ndarray]:
    """Softmax probabilities (N,C) of a trained fusion model on "val" and "test"."""
    return {split: predict_fusion(run.model, run.loaders[split], device).softmax(1).numpy()
            for split in ("val", "test")}


def course_variants(inputs: SplitInputs) -> dict[str, tuple]:
    """The course variants these inputs allow (no step-1 CNN checkpoint: no "image_cnn")."""
    return {name: v for name, v in COURSE_VARIANTS.items()
            if all(inputs.has(x) for x in v[1:] if x)}


def run_course(inputs: SplitInputs, config: FusionConfig, training: FusionTrainConfig,
               device: torch.device) -> dict:
    """Every course variant for seeds seed..seed+seeds-1 -> name -> list (one per seed) of
    {"seed", "run" (trained variants only), "val", "test": probabilities (N,4)}."""
    with cpu_threads(training.threads):
        results = train_course(inputs, config, training, device)
    for name, (image, text) in LATE_VARIANTS.items():
        if image in results and text in results:
            results[name] = [late_fusion(a, b) for a, b in zip(results[image], results[text],
                                                               strict=True)]
    return results


def train_course(inputs: SplitInputs, config: FusionConfig, training: FusionTrainConfig,
                 device: torch.device) -> dict:
    """The trained course variants, each over the seeds (see run_course)."""
    results = {}
    for name, variant in course_variants(inputs).items():
        results[name] = []
        for seed in range(training.seed, training.seed + training.seeds):
            run = quietly(f"{name} seed {seed}", train_variant, variant, inputs, config,
                          training, seed, device)
            results[name].append({"seed": seed, "run": run, **split_probabilities(run, device)})
    return results


def late_fusion(image: dict, text: dict) -> dict:
    """Averaged probabilities of an image-only and a text-only result of the same seed."""
    return {"seed": image["seed"],
            **{split: (image[split] + text[split]) / 2 for split in ("val", "test")}}


def class_scores(y_true: np.ndarray, probs: np.ndarray) -> dict:
    """Accuracy, macro-F1 and one-vs-rest macro ROC-AUC of probabilities (N,C) vs labels (N,)."""
    metrics = classification_metrics(y_true, probs.argmax(1), CLASSES)
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "roc_auc_macro": roc_auc_macro(y_true, probs)}


def mean_std(rows: list[dict], prefix: str = "") -> dict:
    """Mean and std (over seeds, ddof 0) of each score: {score, score_std} (prefixed)."""
    out = {}
    for score in SCORES:
        values = np.array([np.nan if r[score] is None else r[score] for r in rows], float)
        out[f"{prefix}{score}"] = float(np.mean(values))
        out[f"{prefix}{score}_std"] = float(np.std(values))
    return out


def course_table(results: dict, inputs: SplitInputs) -> pd.DataFrame:
    """One row per variant: test scores (mean, std over seeds) and the validation accuracy."""
    rows = {}
    for name, seeds in results.items():
        test = [class_scores(inputs.get("test", "label").numpy(), r["test"]) for r in seeds]
        val = [class_scores(inputs.get("val", "label").numpy(), r["val"]) for r in seeds]
        val_loss = [log_loss(inputs.get("val", "label").numpy(), r["val"],
                             labels=range(len(CLASSES))) for r in seeds]
        rows[name] = {**mean_std(test), **mean_std(val, "val_"),
                      "val_log_loss": float(np.mean(val_loss)), "seeds": len(seeds)}
    return pd.DataFrame.from_dict(rows, orient="index")


def best_fusion(table: pd.DataFrame) -> str:
    """The fusion variant of the lowest mean validation log-loss, among those whose inputs never
    saw the validation split (VALIDATION_SEEN; all of them when no other is left). Not validation
    accuracy: on 90 validation images several variants reach 1.000, and the first of a tie is
    arbitrary; the log-loss still ranks how confidently right each one is."""
    fusion = [n for n in FUSION_VARIANTS if n in table.index]
    fair = [n for n in fusion if not variant_inputs(n) & VALIDATION_SEEN] or fusion
    return str(table.loc[fair, "val_log_loss"].idxmin())


def named_classes(caption: str) -> int:
    """How many of the 4 classes a caption names (utils.data.course class words)."""
    return sum(bool(pattern.search(caption)) for pattern in CLASS_PATTERNS.values())


def accuracy_by_caption(captions: Sequence[str], y_true: np.ndarray, results: dict
                        ) -> pd.DataFrame:
    """Test accuracy (mean over seeds) of each variant on the captions that name one class only
    and on those that name several (the subset's label is then the first of CLASS_PRIORITY);
    ``n``: test items of the group."""
    several = np.array([named_classes(c) > 1 for c in captions])
    rows = {}
    for group, keep in (("caption names 1 class", ~several),
                        ("caption names 2+ classes", several)):
        row = {"n": int(keep.sum())}
        for name, seeds in results.items():
            hits = [(r["test"].argmax(1)[keep] == y_true[keep]).mean() if keep.any() else np.nan
                    for r in seeds]
            row[name] = float(np.mean(hits))
        rows[group] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def course_bundle(results: dict, inputs: SplitInputs, config: FusionConfig) -> FusionBundle:
    """The first seed's image-only (EfficientNet), text-only (LSTM) and early-fusion (LSTM)
    models, to save and to use on any image and sentence."""
    names = {"image": "image_effnet", "text": "text_lstm", "early": "early_lstm"}
    models = {key: results[name][0]["run"].model for key, name in names.items()}
    specs = {key: variant_spec(COURSE_VARIANTS[name], inputs, len(CLASSES))
             for key, name in names.items()}
    return FusionBundle(models, specs, inputs.vectorizer, config)


def train_tag_model(modality: str, gamma: float | None, inputs: SplitInputs,
                    config: FusionConfig, training: FusionTrainConfig, device: torch.device
                    ) -> TrainedRun:
    """A multi-label tag model ("image", "text", "early") with BCE (gamma None) or focal loss."""
    seed_everything(training.seed)
    variant = TAG_MODALITIES[modality]
    tags = inputs.get("train", "tags").shape[1]
    model = build_fusion(variant_spec(variant, inputs, tags), config, inputs.embeddings)
    loaders = variant_loaders(variant, inputs, "tags", training.tag_batch_size, training.seed)
    return train_model(model, fusion_step(tag_loss(gamma)), loaders, training.tag_epochs,
                       training.tag_lr, training, device)


def tag_scores(val_scores: np.ndarray, test_scores: np.ndarray, inputs: SplitInputs,
               tags: Sequence[str], target: str = "tags") -> dict:
    """Test tag metrics, the decision threshold chosen on the validation split (micro-F1)."""
    threshold = best_threshold(inputs.get("val", target).numpy(), val_scores)
    return multilabel_metrics(inputs.get("test", target).numpy(), test_scores, tags, threshold)


def run_tags(inputs: SplitInputs, tags: Sequence[str], config: FusionConfig,
             training: FusionTrainConfig, device: torch.device) -> tuple[dict, dict]:
    """Each modality with BCE and with focal loss -> (name -> test metrics, name -> run)."""
    metrics, runs = {}, {}
    with cpu_threads(training.threads):
        for modality in TAG_MODALITIES:
            for loss, gamma in (("bce", None), ("focal", training.focal_gamma)):
                name = f"{modality}_{loss}"
                runs[name] = quietly(name, train_tag_model, modality, gamma, inputs, config,
                                     training, device)
                metrics[name] = tag_run_scores(runs[name], inputs, tags, device)
    return metrics, runs


def tag_run_scores(run: TrainedRun, inputs: SplitInputs, tags: Sequence[str],
                   device: torch.device) -> dict:
    """Test tag metrics of a trained tag model (threshold chosen on the validation split)."""
    scores = {s: predict_fusion(run.model, run.loaders[s], device).sigmoid().numpy()
              for s in ("val", "test")}
    return tag_scores(scores["val"], scores["test"], inputs, tags)


def classed_inputs(inputs: SplitInputs) -> SplitInputs:
    """The rows whose image has a course class (class >= 0), every split."""
    tensors = {}
    for split, part in inputs.tensors.items():
        keep = part["class"] >= 0
        tensors[split] = {name: values[keep] for name, values in part.items()}
    return SplitInputs(tensors, inputs.vectorizer, inputs.embeddings, inputs.notes)


def multitask_loaders(inputs: SplitInputs, batch_size: int, seed: int) -> dict:
    """(features, class, tags) loaders of the three splits."""
    return {s: make_loader(TensorDataset(*[inputs.get(s, n) for n in ("efficientnet", "class",
                                                                      "tags")]),
                           batch_size, s == "train", seed, num_workers=0)
            for s in ("train", "val", "test")}


def train_multitask(inputs: SplitInputs, config: FusionConfig, training: FusionTrainConfig,
                    weights: tuple[float, float], device: torch.device) -> TrainedRun:
    """The shared trunk + both heads, trained with L = w_class * L_class + w_tags * L_tags."""
    features, tags = (inputs.get("train", n).shape[1] for n in ("efficientnet", "tags"))
    model = build_multitask(features, tags, config, training.seed)
    loaders = multitask_loaders(inputs, training.tag_batch_size, training.seed)
    return train_model(model, multitask_step(training, *weights), loaders,
                       training.tag_epochs, training.tag_lr, training, device)


def multitask_scores(run: TrainedRun, inputs: SplitInputs, tags: Sequence[str],
                     weights: tuple[float, float], device: torch.device) -> dict:
    """Class-head metrics (when trained) and tag-head metrics (when trained) on the test."""
    (_, val_tags), (test_class, test_tags) = (
        predict_multitask(run.model, run.loaders[s], device) for s in ("val", "test"))
    out = {"class": None, "tags": None}
    if weights[0]:
        y_true = inputs.get("test", "class").numpy()
        out["class"] = classification_metrics(y_true, test_class.argmax(1).numpy(), CLASSES)
        out["class"]["roc_auc_macro"] = roc_auc_macro(y_true, test_class.softmax(1).numpy())
    if weights[1]:
        out["tags"] = tag_scores(val_tags.sigmoid().numpy(), test_tags.sigmoid().numpy(),
                                 inputs, tags)
    return out


def run_multitask(inputs: SplitInputs, tags: Sequence[str], config: FusionConfig,
                  training: FusionTrainConfig, device: torch.device) -> tuple[dict, dict]:
    """Joint training vs each head alone, on the images with a course class ->
    (name -> {"class", "tags"} test metrics, name -> run)."""
    inputs = classed_inputs(inputs)
    metrics, runs = {}, {}
    with cpu_threads(training.threads):
        for name, (class_weight, tag_weight) in MULTITASK_VARIANTS.items():
            weights = (class_weight, training.task_weight if tag_weight is None else tag_weight)
            runs[name] = quietly(name, train_multitask, inputs, config, training, weights,
                                 device)
            metrics[name] = multitask_scores(runs[name], inputs, tags, weights, device)
    return metrics, runs


def mean_std_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The test scores as "mean ± std" strings (3 decimals), one column per score."""
    return pd.DataFrame({score: [f"{m:.3f} ± {s:.3f}" for m, s in
                                 zip(table[score], table[f"{score}_std"], strict=True)]
                         for score in SCORES}, index=table.index)


def fusion_gain(table: pd.DataFrame, n_test: int) -> dict:
    """The best fusion (by validation) against the better single modality (by test accuracy):
    their mean test accuracies and the difference in points and in test items."""
    fusion = best_fusion(table)
    singles = table.loc[[n for n in table.index if n.startswith(("image_", "text_"))]]
    single = singles["accuracy"].idxmax()
    gain = table.loc[fusion, "accuracy"] - table.loc[single, "accuracy"]
    return {"best_fusion": fusion, "fusion_accuracy": float(table.loc[fusion, "accuracy"]),
            "best_single": single, "single_accuracy": float(table.loc[single, "accuracy"]),
            "gain_points": float(100 * gain), "gain_items": float(gain * n_test),
            "n_test": n_test}


def course_json(table: pd.DataFrame) -> dict:
    """variant -> {score: mean, score_std: std} of the test scores, for the metrics file."""
    keys = [k for score in SCORES for k in (score, f"{score}_std")]
    return {name: {k: float(row[k]) for k in keys} for name, row in table.iterrows()}
