"""Notebook 07: losses, the caption-derived tag rule, fusion model shapes, metrics, reload."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from utils.data.flickr8k import read_flickr8k
from utils.data.tags import LEMMA_FILE, build_tag_table, rank_tags, rule_captions, tag_vector
from utils.data.tokenizers import TextVectorizer
from utils.eval.multilabel import (
    best_threshold,
    mean_average_precision,
    roc_auc_macro,
    roc_curves,
    top_k_hit,
)
from utils.models.fusion import (
    FusionBundle,
    FusionConfig,
    LstmTextEncoder,
    MultiTaskNet,
    build_fusion,
    drop_modality,
    fusion_spec,
    load_fusion,
    save_fusion,
)
from utils.models.losses import focal_loss, smoothed_cross_entropy

SMALL = FusionConfig(embed_dim=8, lstm_hidden=6, image_hidden=10, hidden=12, trunk_hidden=9)


# --- losses -----------------------------------------------------------------------------------

def test_focal_loss_at_gamma_zero_is_binary_cross_entropy() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 7, generator=generator) * 3
    targets = (torch.rand(16, 7, generator=generator) > 0.7).float()
    expected = F.binary_cross_entropy_with_logits(logits, targets)
    assert torch.allclose(focal_loss(logits, targets, gamma=0.0), expected, atol=1e-7)
    elementwise = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    assert torch.allclose(focal_loss(logits, targets, 0.0, reduction="none"), elementwise)


def test_focal_loss_down_weights_easy_examples() -> None:
    # Two positives: an easy one (p = 0.95) and a hard one (p = 0.27).
    logits, targets = torch.tensor([[3.0, -1.0]]), torch.ones(1, 2)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    focal = focal_loss(logits, targets, gamma=2.0, reduction="none")
    ratio = (focal / bce)[0]
    assert (focal <= bce).all()
    assert ratio[0] < 0.01 and ratio[1] > 0.5  # (1 - p)^2: 0.0023 vs 0.53
    assert torch.allclose(ratio, (1 - torch.sigmoid(logits[0])) ** 2)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_label_smoothing_matches_pytorch(smoothing: float) -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(32, 4, generator=generator) * 4
    labels = torch.randint(0, 4, (32,), generator=generator)
    expected = F.cross_entropy(logits, labels, label_smoothing=smoothing)
    assert torch.allclose(smoothed_cross_entropy(logits, labels, smoothing), expected, atol=1e-6)


# --- the tag rule -----------------------------------------------------------------------------

def test_tag_rule_on_hand_made_captions() -> None:
    captions = ["a dog run on the grass", "two dog play", "a man throw a ball to a dog",
                "the ball be red"]
    on = tag_vector(captions, ["dog", "ball", "grass", "man", "cat"], min_mentions=2)
    assert on.tolist() == [1, 1, 0, 0, 0]  # dog 3x, ball 2x, grass 1x, man 1x, cat 0x
    assert tag_vector(captions, ["grass"], min_mentions=1).tolist() == [1]
    assert tag_vector(["hotdog stand"], ["dog"], min_mentions=1).tolist() == [0]  # whole words
    ranked = rank_tags({"a": captions, "b": ["dog", "dog", "man", "man"], "c": ["man", "man"]},
                       ["ball", "cat", "dog", "man"], n_tags=3)
    assert ranked == ["dog", "man", "ball"]  # 2 images each for dog and man: alphabetical


@pytest.fixture(scope="module")
def tag_table(flickr8k_dir: Path):
    return build_tag_table(flickr8k_dir, n_tags=30, held_out=0, min_mentions=2)


def test_tags_of_real_images_ignore_the_held_out_caption(tag_table, flickr8k_dir: Path) -> None:
    frame, targets = tag_table.split("train")
    assert len(frame) == 6000 and targets.shape == (6000, 30)
    on = {image: {t for t, v in zip(tag_table.tags, row, strict=True) if v}
          for image, row in zip(frame["image"], targets.tolist(), strict=True)}
    # Caption #0 (held out): "A child in a pink dress be climb ..."; #1-4 say "girl" 4 times,
    # "dress" once (#4), "child" never.
    assert {"girl"} <= on["1000268201_693b08cb0e.jpg"]
    assert not {"child", "dress"} & on["1000268201_693b08cb0e.jpg"]
    assert "dog" in on["1001773457_577c3a7d70.jpg"]
    row = frame.index[frame["image"] == "1000268201_693b08cb0e.jpg"][0]
    assert frame.loc[row, "caption"].startswith("A child in a pink dress")  # the text input
    # With caption #1 held out instead, #0 counts and "dress" (#0 and #4) is on.
    lemmas = read_flickr8k(flickr8k_dir, LEMMA_FILE)
    rules = rule_captions(lemmas[lemmas["image"] == "1000268201_693b08cb0e.jpg"], held_out=1)
    assert tag_vector(rules["1000268201_693b08cb0e.jpg"], ["dress", "child"]).tolist() == [1, 0]


def test_tags_are_frequent_visual_nouns(tag_table) -> None:
    _, train = tag_table.split("train")
    counts = train.sum(dim=0)
    assert tag_table.tags[0] == "dog" and (counts[:-1] >= counts[1:]).all()
    assert tag_table.frame["split"].value_counts().to_dict() == {"train": 6000, "val": 1000,
                                                                 "test": 1000}


# --- models -----------------------------------------------------------------------------------

def small_vectorizer() -> TextVectorizer:
    return TextVectorizer.fit(["a dog runs on the grass", "a red ball", "a bike on a road",
                               "water splashes"], length=8)


@pytest.mark.parametrize("modality", ["image", "text", "early"])
def test_fusion_model_shapes(modality: str) -> None:
    vectorizer = small_vectorizer()
    tokens = vectorizer.encode(["a dog on the grass", "a ball", "water"])
    image = torch.randn(3, 20)
    for text, text_input in (("lstm", tokens), ("features", torch.randn(3, 5))):
        spec = fusion_spec(modality, image_features=20, text=text,
                           vocab_size=vectorizer.vocab_size, text_features=5, outputs=4)
        model = build_fusion(spec, SMALL).eval()
        assert model(image, text_input).shape == (3, 4)
        assert (model.image_branch is None) == (modality == "text")
        assert (model.text_encoder is None) == (modality == "image")


def test_lstm_ignores_padding_and_starts_from_given_embeddings() -> None:
    vectorizer = small_vectorizer()
    embeddings = torch.randn(vectorizer.vocab_size, SMALL.embed_dim)
    encoder = LstmTextEncoder(vectorizer.vocab_size, SMALL, embeddings).eval()
    assert torch.equal(encoder.embedding.weight[2:], embeddings[2:])
    assert not encoder.embedding.weight[0].any()  # padding row is zero
    short = vectorizer.encode(["a red ball"])
    longer = torch.cat([short, torch.zeros(1, 5, dtype=torch.long)], dim=1)  # more padding
    with torch.no_grad():
        assert encoder(short).shape == (1, 2 * SMALL.lstm_hidden)
        assert torch.allclose(encoder(short), encoder(longer), atol=1e-6)


def test_modality_dropout_zeroes_one_branch_per_dropped_item() -> None:
    torch.manual_seed(0)
    image, text = torch.ones(200, 3), torch.ones(200, 2)
    kept_image, kept_text = drop_modality([image, text], rate=1.0)
    image_on, text_on = kept_image.any(1), kept_text.any(1)
    assert (image_on ^ text_on).all()  # every item lost exactly one of the two
    assert 60 < image_on.sum() < 140  # the branch is picked at random
    same = drop_modality([image, text], rate=0.0)
    assert torch.equal(same[0], image) and torch.equal(same[1], text)
    spec = fusion_spec("early", image_features=3, text="features", text_features=2)
    model = build_fusion(spec, SMALL).eval()  # eval mode: nothing dropped, same output
    with torch.no_grad():
        assert torch.equal(model(image[:4], text[:4]), model(image[:4], text[:4]))


def test_multitask_net_has_two_heads_on_one_trunk() -> None:
    model = MultiTaskNet(20, 7, SMALL).eval()
    classes, tags = model(torch.randn(5, 20))
    assert classes.shape == (5, 4) and tags.shape == (5, 7)
    assert model.trunk[1].out_features == SMALL.trunk_hidden


def test_reload_gives_identical_probabilities(tmp_path: Path) -> None:
    torch.manual_seed(0)
    vectorizer = small_vectorizer()
    specs = {name: fusion_spec(name, image_features=20, vocab_size=vectorizer.vocab_size)
             for name in ("image", "text", "early")}
    bundle = FusionBundle({n: build_fusion(s, SMALL).eval() for n, s in specs.items()}, specs,
                          vectorizer, SMALL)
    path = save_fusion(tmp_path / "fusion.pt", bundle, {"accuracy": 0.5})
    reloaded = load_fusion(path)
    features, sentences = torch.randn(4, 20), ["a dog", "a bike on a road", "balls", "x y z"]
    before, after = bundle.probabilities(features, sentences), reloaded.probabilities(
        features, sentences)
    assert set(before) == {"image", "text", "early", "late"}
    for name in before:
        assert np.array_equal(before[name], after[name]), name
    assert reloaded.config == SMALL
    assert torch.load(path, weights_only=True)["metrics"] == {"accuracy": 0.5}


# --- metrics ----------------------------------------------------------------------------------

def test_multilabel_scores_on_a_hand_made_case() -> None:
    targets = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 1, 0]])
    scores = np.array([[0.9, 0.1, 0.3], [0.2, 0.3, 0.8], [0.5, 0.5, 0.5], [0.7, 0.6, 0.1]])
    # Items with a tag: 0 (best tag right), 1 (best tag wrong, 2nd right), 3 (right).
    assert top_k_hit(targets, scores, 1) == pytest.approx(2 / 3)
    assert top_k_hit(targets, scores, 2) == 1.0
    assert mean_average_precision(targets, targets.astype(float)) == 1.0  # the 3rd tag: no positive
    assert 0.05 <= best_threshold(targets, scores) <= 0.95


def test_roc_skips_classes_absent_from_the_split() -> None:
    y_true = np.array([0, 0, 1, 1, 2])  # class 3 absent
    probs = np.eye(4)[[0, 0, 1, 1, 2]] * 0.7 + 0.075
    assert roc_auc_macro(y_true, probs) == 1.0
    curves = roc_curves(y_true, probs, ["ball", "bike", "dog", "water"])
    assert set(curves) == {"ball", "bike", "dog"} and curves["dog"][2] == 1.0


def test_best_fusion_breaks_saturated_validation_accuracy_by_log_loss() -> None:
    """Two fusions both right on every validation item: the more confident one is chosen;
    a fusion over an input that chose its epoch on this validation split is not trusted."""
    from types import SimpleNamespace

    from utils.experiments.fusion import best_fusion, course_table, variant_inputs

    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    inputs = SimpleNamespace(get=lambda split, name: labels)
    onehot = np.eye(4)[labels.numpy()]
    sure, unsure, surest = onehot * 0.9 + 0.025, onehot * 0.5 + 0.125, onehot * 0.99 + 0.0025
    results = {"early_lstm": [{"val": unsure, "test": unsure}],
               "late_lstm": [{"val": sure, "test": sure}],
               "text_lstm": [{"val": surest, "test": surest}],
               "early_smallbert": [{"val": surest, "test": surest}]}
    table = course_table(results, inputs)
    assert table.loc["early_lstm", "val_accuracy"] == table.loc["late_lstm", "val_accuracy"] == 1
    assert table.loc["late_lstm", "val_log_loss"] < table.loc["early_lstm", "val_log_loss"]
    assert variant_inputs("late_smallbert") == {"efficientnet", "smallbert"}
    # not text_lstm (not a fusion), not early_smallbert (step 2 chose its epoch on validation)
    assert best_fusion(table) == "late_lstm"
    assert best_fusion(table.loc[["early_smallbert", "text_lstm"]]) == "early_smallbert"
