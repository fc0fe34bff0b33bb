"""CLIP: the loss, the model, building from step-1/2 checkpoints, save/reload, search, training."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from utils.core.checkpoint import save_checkpoint
from utils.core.common import make_configs, seed_everything
from utils.data.course import keep_first_images, load_dataset
from utils.data.glove import load_glove
from utils.data.tokenizers import fit_tokenizer
from utils.eval.index import GalleryIndex, build_index
from utils.eval.search import ClipSearch
from utils.models.clip import ClipConfig, ClipLoss, ClipModel, load_clip, save_clip
from utils.models.cnn import CnnConfig, build_image_classifier
from utils.models.smallbert import SmallBertConfig, build_text_classifier
from utils.train.clip import clip_step, make_clip_loaders, train_clip, validate_clip
from utils.train.configs import ClipTrainConfig
from utils.train.loop import check_finite
from utils.train.towers import choose_image_tower, create_clip, image_tower_overrides


class TinyImageEncoder(nn.Module):
    """Stand-in image trunk: (B,3,S,S) -> (B,6)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.out_features = 6

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images).mean(dim=(2, 3))


class TinyTextEncoder(nn.Module):
    """Stand-in text encoder: (B,L) ids -> (B,5) mean of embeddings."""

    def __init__(self, vocab: int = 50):
        super().__init__()
        self.embedding = nn.Embedding(vocab, 5)
        self.out_features = 5

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embedding(tokens).mean(dim=1)


def tiny_model(**overrides) -> ClipModel:
    torch.manual_seed(0)
    return ClipModel(TinyImageEncoder(), TinyTextEncoder(), ClipConfig(embed_dim=4, **overrides))


def tiny_configs(**overrides) -> tuple[ClipConfig, ClipTrainConfig]:
    """A real (scratch) CLIP small enough for a CPU test: 2 conv blocks, 1 transformer block
    (architecture, run settings)."""
    values = dict(image_source="scratch", text_source="scratch", embed_dim=16, batch_size=16,
                  augment=False, lr=3e-3, encoder_lr_scale=1.0,
                  image=CnnConfig(channels=(8, 16), image_size=32),
                  text=SmallBertConfig(width=32, heads=2, ff=64, layers=1))
    return make_configs(ClipConfig, ClipTrainConfig, False, {**values, **overrides}, "cpu")


@pytest.fixture(scope="module")
def small_frame(course_subset: Path):
    """The first 32 images of each split of the real course subset."""
    return keep_first_images(load_dataset(course_subset), 32)


# --- loss ---------------------------------------------------------------------------------------
def test_loss_is_near_zero_for_identical_pairs_at_a_large_scale() -> None:
    embeds = torch.linalg.qr(torch.randn(64, 16)).Q.T  # 16 orthonormal rows
    assert ClipLoss()(embeds, embeds, 100.0).item() < 1e-6


def test_loss_is_near_log_n_for_random_pairs() -> None:
    torch.manual_seed(0)
    n = 32
    a = nn.functional.normalize(torch.randn(n, 1024), dim=-1)
    b = nn.functional.normalize(torch.randn(n, 1024), dim=-1)
    # Random directions in 1024-D are nearly orthogonal: every logit ~ 0, softmax ~ uniform.
    assert ClipLoss()(a, b, 1.0).item() == pytest.approx(math.log(n), abs=0.05)


def test_loss_is_symmetric_and_matches_both_cross_entropies() -> None:
    torch.manual_seed(1)
    a = nn.functional.normalize(torch.randn(8, 6), dim=-1)
    b = nn.functional.normalize(torch.randn(8, 6), dim=-1)
    loss = ClipLoss()(a, b, 10.0)
    assert loss.item() == pytest.approx(ClipLoss()(b, a, 10.0).item(), abs=1e-6)
    logits = 10.0 * a @ b.T
    rows = -logits.log_softmax(dim=1).diagonal().mean()
    cols = -logits.log_softmax(dim=0).diagonal().mean()
    assert loss.item() == pytest.approx(((rows + cols) / 2).item(), abs=1e-5)


def test_the_hard_negative_term_is_the_vse_max_violation_hinge() -> None:
    """Faghri et al. 2018: for each image and each text, only its hardest negative counts."""
    a = torch.eye(3)
    b = nn.functional.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0],
                                              [0.0, 0.9, 0.1]]), dim=-1)
    plain, hard = ClipLoss()(a, b, 10.0), ClipLoss(hard_weight=1.0, margin=0.2)(a, b, 10.0)
    cos = a @ b.T
    rows = [(0.2 - cos[i, i] + max(cos[i, j] for j in range(3) if j != i)).clamp(min=0)
            for i in range(3)]
    cols = [(0.2 - cos[j, j] + max(cos[i, j] for i in range(3) if i != j)).clamp(min=0)
            for j in range(3)]
    expected = (sum(rows) / 3 + sum(cols) / 3) / 2
    assert (hard - plain).item() == pytest.approx(float(expected), abs=1e-5)
    assert float(expected) > 0.2  # texts 1 and 2 are near-duplicates: a violation
    apart = torch.linalg.qr(torch.randn(16, 8)).Q.T
    assert ClipLoss(hard_weight=1.0)(apart, apart, 10.0).item() == pytest.approx(
        ClipLoss()(apart, apart, 10.0).item(), abs=1e-6)  # orthogonal pairs: no violation
    model = tiny_model(hard_negative_weight=0.5)
    assert model.loss_fn.hard_weight == 0.5


# --- model --------------------------------------------------------------------------------------
def test_embeddings_have_unit_norm_and_forward_returns_the_loss() -> None:
    model = tiny_model()
    images, tokens = torch.randn(5, 3, 16, 16), torch.randint(1, 50, (5, 7))
    out = model(images, tokens)
    assert out["image_embeds"].shape == out["text_embeds"].shape == (5, 4)
    assert torch.allclose(out["image_embeds"].norm(dim=1), torch.ones(5), atol=1e-5)
    assert torch.allclose(out["text_embeds"].norm(dim=1), torch.ones(5), atol=1e-5)
    assert out["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-5)
    expected = ClipLoss()(out["image_embeds"], out["text_embeds"], model.logit_scale)
    assert out["loss"].item() == pytest.approx(expected.item(), abs=1e-6)


def test_logit_scale_starts_at_1_over_0_07_and_is_clamped_at_100() -> None:
    model = tiny_model()
    assert model.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        model.log_logit_scale.fill_(10.0)  # exp(10) ~ 22026
    assert model.logit_scale.item() == pytest.approx(100.0, rel=1e-5)


def test_a_frozen_tower_keeps_its_encoder_but_trains_its_projection() -> None:
    model = tiny_model().lock(image=True)
    model.train()
    assert not model.image_encoder.training and model.text_encoder.training
    model(torch.randn(4, 3, 16, 16), torch.randint(1, 50, (4, 7)))["loss"].backward()
    assert all(p.grad is None for p in model.image_encoder.parameters())
    assert model.image_projection.weight.grad is not None
    assert model.text_encoder.embedding.weight.grad is not None


def test_cached_features_go_through_an_explicit_view_that_shares_the_trained_weights() -> None:
    model = tiny_model().eval()
    images, tokens = torch.randn(3, 3, 16, 16), torch.randint(1, 50, (3, 7))
    features = model.image_encoder(images)
    view = model.with_feature_inputs(image=True)
    assert torch.equal(model.encode_image(images), view.encode_image(features))
    assert view.image_projection is model.image_projection
    assert view.log_logit_scale is model.log_logit_scale and view.text_encoder is model.text_encoder
    assert model.with_feature_inputs() is model
    with pytest.raises(RuntimeError):  # the model itself takes pixels only: it never guesses
        model.encode_image(features)
    view.train()
    view(features, tokens)["loss"].backward()
    assert model.image_projection.weight.grad is not None  # training the view trains the model


def test_no_model_decides_what_an_input_is_from_its_rank_or_dtype() -> None:
    import re

    from utils.core import paths

    pattern = re.compile(r"\.(dim\(\)|ndim)\s*[=!<>]=?|is_floating_point\(\)")
    found = [f"{path.name}:{number}: {line.strip()}"
             for path in sorted((paths.ROOT / "utils" / "models").glob("*.py"))
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if pattern.search(line)]
    assert not found, "\n".join(found)


def test_non_finite_loss_stops_with_what_to_change() -> None:
    with pytest.raises(FloatingPointError, match="Lower the learning rate"):
        check_finite(torch.tensor(float("nan")), epoch=3, batches="batches 7-7", lr=1e-3)


# --- building from the step-1/2 checkpoints -----------------------------------------------------
def test_missing_step_checkpoint_names_the_notebook(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MODELS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="01_cnn_image_classifier"):
        create_clip(ClipConfig(), ClipTrainConfig())


def test_towers_start_from_the_step_1_and_2_weights(tmp_path, monkeypatch, small_frame) -> None:
    monkeypatch.setenv("MODELS_DIR", str(tmp_path))
    cnn_config = CnnConfig(channels=(8, 16), image_size=32)
    classifier = build_image_classifier(cnn_config)
    save_checkpoint(tmp_path / "01_cnn.pt", classifier.state_dict(), asdict(cnn_config))
    vectorizer = fit_tokenizer(small_frame)
    bert_config = SmallBertConfig(width=32, heads=2, ff=64, layers=1, pooling="first",
                                  vocab_size=vectorizer.vocab_size)
    text_classifier = build_text_classifier(bert_config)
    save_checkpoint(tmp_path / "02_smallbert.pt", text_classifier.state_dict(),
                    asdict(bert_config), vectorizer=vectorizer.to_dict())
    model, tokenizer = create_clip(ClipConfig(embed_dim=8), ClipTrainConfig())
    assert torch.equal(model.image_encoder[0][0].weight, classifier.trunk[0][0].weight)
    bert_weight = text_classifier.encoder.bert.token_embedding.weight
    assert torch.equal(model.text_encoder.bert.token_embedding.weight, bert_weight)
    assert model.text_encoder.pooling == "masked_mean"  # CLIP pools by masked mean
    assert model.config.image_size == 32 and tokenizer.to_dict() == vectorizer.to_dict()



def save_step1(folder: Path, name: str, val_accs: list[float], channels=(8, 16)) -> nn.Module:
    """A tiny step-1 classifier saved as notebook 01 does, with its validation history."""
    config = CnnConfig(channels=channels, image_size=32)
    classifier = build_image_classifier(config)
    save_checkpoint(folder / name, classifier.state_dict(), asdict(config),
                    history=[{"val_acc": acc} for acc in val_accs])
    return classifier


def test_image_tower_best_is_the_step_1_model_of_higher_validation_accuracy(
        tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MODELS_DIR", str(tmp_path))
    assert choose_image_tower("best") == ("scratch", {"scratch": None, "pretrained": None})
    save_step1(tmp_path, "01_cnn.pt", [0.4, 0.62])
    save_step1(tmp_path, "01_cnn_pretrained.pt", [0.5, 0.58], channels=(4, 8))
    assert choose_image_tower("best") == ("scratch", {"scratch": 0.62, "pretrained": 0.58})
    save_step1(tmp_path, "01_cnn_pretrained.pt", [0.9], channels=(4, 8))
    assert choose_image_tower("best")[0] == "pretrained"
    assert choose_image_tower("scratch")[0] == "scratch"  # an explicit choice is kept
    with pytest.raises(ValueError, match="'best', 'scratch', 'pretrained'"):
        choose_image_tower("resnet")


def test_the_pretrained_tower_comes_from_its_own_checkpoint_and_is_frozen_on_cpu(
        tmp_path, monkeypatch, small_frame) -> None:
    monkeypatch.setenv("MODELS_DIR", str(tmp_path))
    save_step1(tmp_path, "01_cnn.pt", [0.6])
    pretrained = save_step1(tmp_path, "01_cnn_pretrained.pt", [0.9], channels=(4, 8))
    overrides = image_tower_overrides("pretrained", "cpu")
    assert overrides == {"image_source": "checkpoint_pretrained", "freeze_image": True}
    assert image_tower_overrides("pretrained", "gpu")["freeze_image"] is False
    model, _ = create_clip(*tiny_configs(**overrides, image=None), frame=small_frame)
    assert torch.equal(model.image_encoder[0][0].weight, pretrained.trunk[0][0].weight)
    assert not any(p.requires_grad for p in model.image_encoder.parameters())


def test_a_fresh_smallbert_tower_starts_from_glove(small_frame) -> None:
    model, tokenizer = create_clip(*tiny_configs(), frame=small_frame)
    glove, words = load_glove(), tokenizer.vocabulary()
    known = [row for row, word in enumerate(words) if word in glove]
    assert len(known) > len(words) / 2
    table = model.text_encoder.bert.token_embedding.weight
    for row in known[:20]:
        assert torch.equal(table[row], torch.from_numpy(glove.vector(words[row]).copy()))
    plain, _ = create_clip(*tiny_configs(text=SmallBertConfig(width=32, heads=2, ff=64, layers=1,
                                                              glove_dim=0)), frame=small_frame)
    assert plain.text_encoder.bert.token_embedding.weight.shape[1] == 32

# --- save / reload / search on real data -------------------------------------------------------
def test_save_and_reload_give_identical_embeddings(tmp_path, course_subset, small_frame) -> None:
    config, training = tiny_configs()
    model, tokenizer = create_clip(config, training, frame=small_frame)
    index = build_index(model, tokenizer, small_frame, course_subset, model.config.image_size)
    path = save_clip(tmp_path / "03_clip.pt", model, tokenizer, epoch=0, metrics={"x": 1.0},
                     index=index, training=training)
    again, tokenizer_again, checkpoint = load_clip(path)
    assert asdict(again.config) == asdict(model.config)
    # The architecture rebuilds the model; the run settings ride along as metadata only.
    assert checkpoint["training"] == asdict(training)
    assert not {"lr", "epochs", "seed", "image_source"} & set(checkpoint["config"])
    assert not {"lr", "epochs", "seed", "augment"} & set(checkpoint["config"]["image"])
    assert tokenizer_again.to_dict() == tokenizer.to_dict()
    reindexed = build_index(again, tokenizer_again, small_frame, course_subset,
                            again.config.image_size)
    assert reindexed.max_abs_difference(index) == 0.0
    assert GalleryIndex.from_dict(checkpoint["index"]).max_abs_difference(index) == 0.0
    assert checkpoint["index"]["captions"] == index.captions
    search = ClipSearch(model, tokenizer, index, course_subset, model.config.image_size)
    from_file = ClipSearch.from_checkpoint(path, course_subset)
    assert from_file.search_images("a dog", k=5) == search.search_images("a dog", k=5)


def test_search_returns_k_sorted_results_within_cosine_range(course_subset, small_frame) -> None:
    model, tokenizer = create_clip(*tiny_configs(), frame=small_frame)
    index = build_index(model, tokenizer, small_frame, course_subset, model.config.image_size)
    search = ClipSearch(model, tokenizer, index, course_subset, model.config.image_size)
    images = search.search_images("A big dog in the woods", k=5)
    assert len(images) == 5
    scores = [score for _, _, score in images]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= s <= 1.0 for s in scores)
    assert all(Path(path).is_file() and caption for path, caption, _ in images)
    query = course_subset / index.image_paths[0]
    texts = search.search_texts(query, k=4)
    assert [s for *_, s in texts] == sorted((s for *_, s in texts), reverse=True)
    with Image.open(query) as picture:  # a PIL image gives the same answer as its path
        assert search.search_texts(picture, k=4) == texts


def test_search_names_a_missing_image_file(course_subset, small_frame, tmp_path) -> None:
    model, tokenizer = create_clip(*tiny_configs(), frame=small_frame)
    index = build_index(model, tokenizer, small_frame, course_subset, model.config.image_size)
    search = ClipSearch(model, tokenizer, index, course_subset, model.config.image_size)
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        search.search_texts(tmp_path / "nope.jpg")


# --- training on real data ---------------------------------------------------------------------
def mean_loss(model: ClipModel, loader) -> float:
    """Mean loss over a loader in eval mode (no dropout, fixed captions)."""
    model.eval()
    with torch.no_grad():
        return sum(model(x, t)["loss"].item() for x, t, _ in loader) / len(loader)


def test_a_few_batches_of_training_lower_the_loss(course_subset, small_frame) -> None:
    seed_everything(0)
    config, training = tiny_configs()
    model, tokenizer = create_clip(config, training, frame=small_frame)
    train_loader, _ = make_clip_loaders(model, training, tokenizer, small_frame, course_subset)
    before = mean_loss(model, train_loader)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(4):  # 2 batches of 16 images per epoch
        for batch in train_loader:
            loss, _, _ = clip_step(model.train(), batch, torch.device("cpu"))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert mean_loss(model, train_loader) < before - 0.1


def test_train_clip_keeps_the_epoch_with_the_best_validation_recall(course_subset,
                                                                    small_frame) -> None:
    seed_everything(0)
    config, training = tiny_configs(epochs=3, patience=5)
    model, tokenizer = create_clip(config, training, frame=small_frame)
    loaders = make_clip_loaders(model, training, tokenizer, small_frame, course_subset)
    train_loader, val_loader = loaders
    history = train_clip(model, train_loader, val_loader, training)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    restored = validate_clip(model, val_loader, torch.device("cpu"))
    assert restored["val_R@5"] == max(row["val_R@5"] for row in history)


def test_a_frozen_tower_gallery_reads_the_features_training_read(course_subset, small_frame,
                                                                 monkeypatch) -> None:
    """run_index of a frozen, cached image tower skips the pixels: same embeddings."""
    import utils.eval.index
    from utils.experiments.runs import run_index
    from utils.train.loop import TrainedRun

    config, training = tiny_configs(freeze_image=True)
    model, tokenizer = create_clip(config, training, frame=small_frame)
    run = TrainedRun(model, model.config, [], 0.0, 0, tokenizer=tokenizer, training=training)
    with monkeypatch.context() as patch:
        patch.setattr(utils.eval.index, "image_loader", lambda *a: pytest.fail("pixels read"))
        fast = run_index(run, small_frame, course_subset)
    pixels = build_index(model, tokenizer, small_frame, course_subset, model.config.image_size)
    assert fast.image_paths == pixels.image_paths and fast.captions == pixels.captions
    assert fast.max_abs_difference(pixels) < 1e-5
    assert fast.image_embeds.shape == (len(set(small_frame["image_path"])), 16)
