"""SmallBERT: shapes, poolers (masked mean ignores padding exactly), overfitting, checkpoints."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from utils.core.checkpoint import save_checkpoint
from utils.core.common import seed_everything
from utils.data.course import CLASSES
from utils.data.datasets import TextClassificationDataset, make_loader
from utils.data.glove import load_glove
from utils.data.tokenizers import TextVectorizer
from utils.eval.classification import predict, predict_logits
from utils.models.smallbert import (
    POOLINGS,
    SentenceEncoder,
    SmallBert,
    SmallBertConfig,
    build_text_classifier,
    load_text_classifier,
    pool_tokens,
)
from utils.train.classifier import fit_classifier, start_from_glove
from utils.train.configs import SmallBertTrainConfig

VOCAB = 50


def random_tokens(batch: int = 3, length: int = 32, real=(5, 12, 32)) -> torch.Tensor:
    """Token ids (B,L) with ``real[i]`` real tokens (ids >= 2) then padding (0)."""
    tokens = torch.randint(2, VOCAB, (batch, length))
    for row, count in enumerate(real):
        tokens[row, count:] = 0
    return tokens


def small_config(**changes) -> SmallBertConfig:
    """The default architecture on a tiny vocabulary."""
    return dataclasses.replace(SmallBertConfig(vocab_size=VOCAB), **changes)


def sixteen_captions(frame):
    """16 training captions, 4 per class, in a fixed order."""
    train = frame[frame["split"] == "train"].sort_values("image_path")
    return train.groupby("label").head(4).reset_index(drop=True)


def test_shapes_of_bert_encoder_and_classifier():
    config = small_config()
    tokens = random_tokens()
    bert = SmallBert(config)
    assert bert(tokens).shape == (3, 32, 128)
    for pooling in POOLINGS:
        encoder = SentenceEncoder(bert, pooling)
        assert encoder(tokens).shape == (3, encoder.out_features) == (3, 128)
    assert build_text_classifier(config)(tokens).shape == (3, len(CLASSES))


def test_pool_tokens_masked_mean_ignores_padded_values_exactly():
    hidden = torch.randn(3, 32, 16)
    mask = random_tokens() != 0
    changed = hidden.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), 16) * 100
    pooled = pool_tokens(hidden, mask, "masked_mean")
    assert torch.equal(pooled, pool_tokens(changed, mask, "masked_mean"))
    expected = torch.stack([hidden[i, mask[i]].mean(dim=0) for i in range(3)])
    torch.testing.assert_close(pooled, expected)
    # The plain mean and "first" behave as documented: the mean sees the padding.
    assert not torch.allclose(pool_tokens(hidden, mask, "mean"), pool_tokens(changed, mask, "mean"))
    assert torch.equal(pool_tokens(hidden, mask, "first"), hidden[:, 0])


def test_encoder_masked_mean_ignores_what_sits_at_padded_positions():
    seed_everything(0)
    bert = SmallBert(small_config()).eval()
    tokens = random_tokens()
    encoder = SentenceEncoder(bert, "masked_mean")
    with torch.no_grad():
        before = encoder(tokens)
        plain_before = SentenceEncoder(bert, "mean")(tokens)
        # Padded positions stay padding (id 0) but now carry other vectors: a non-zero padding
        # embedding and different position embeddings there.
        bert.token_embedding.weight[0] = torch.randn(bert.token_embedding.embedding_dim)
        bert.position_embedding.weight[12:] = torch.randn(20, bert.width)
        after = encoder(tokens)
        plain_after = SentenceEncoder(bert, "mean")(tokens)
    torch.testing.assert_close(after[:2], before[:2], rtol=0, atol=1e-6)
    assert not torch.allclose(plain_after[:2], plain_before[:2], atol=1e-3)


def test_sentence_vector_does_not_depend_on_the_other_captions_of_the_batch():
    seed_everything(0)
    encoder = SentenceEncoder(SmallBert(small_config()), "masked_mean").eval()
    tokens = random_tokens()
    with torch.no_grad():
        batch = encoder(tokens)
        alone = torch.cat([encoder(tokens[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, alone, rtol=0, atol=1e-5)


def test_empty_caption_gives_finite_vectors():
    tokens = torch.zeros(2, 32, dtype=torch.long)
    tokens[1, :4] = 7
    encoder = SentenceEncoder(SmallBert(small_config()), "masked_mean").eval()
    with torch.no_grad():
        assert torch.isfinite(encoder(tokens)).all()


def test_bad_pooling_name_is_refused():
    with pytest.raises(ValueError, match="pooling"):
        SmallBertConfig(pooling="cls")


@pytest.mark.slow
@pytest.mark.parametrize("pooling", POOLINGS)
def test_overfits_sixteen_real_captions(course_split, pooling):
    seed_everything(0)
    frame = sixteen_captions(course_split)
    vectorizer = TextVectorizer.fit(frame["caption"])
    config = SmallBertConfig(vocab_size=vectorizer.vocab_size, pooling=pooling)
    training = SmallBertTrainConfig(epochs=40, patience=40, batch_size=16, lr=2e-3)
    loader = make_loader(TextClassificationDataset(frame, vectorizer), 16, shuffle=True, seed=0)
    model = build_text_classifier(config)
    fit_classifier(model, loader, loader, training, device=torch.device("cpu"))
    y_true, y_pred, _ = predict(model, loader, torch.device("cpu"))
    assert (y_true == y_pred).all()


def test_checkpoint_round_trip_gives_identical_logits(course_split, tmp_path):
    seed_everything(0)
    frame = sixteen_captions(course_split)
    vectorizer = TextVectorizer.fit(frame["caption"])
    config = SmallBertConfig(vocab_size=vectorizer.vocab_size)
    loader = make_loader(TextClassificationDataset(frame, vectorizer), 8, shuffle=False, seed=0)
    model = build_text_classifier(config)
    fit_classifier(model, loader, loader, SmallBertTrainConfig(epochs=1),
                   device=torch.device("cpu"))
    path = save_checkpoint(tmp_path / "text.pt", model.state_dict(), dataclasses.asdict(config),
                           vectorizer=vectorizer.to_dict(), epoch=1)
    reloaded, config2, vectorizer2 = load_text_classifier(path)
    assert config2 == config
    assert torch.equal(vectorizer2.encode(list(frame["caption"])),
                       vectorizer.encode(list(frame["caption"])))
    before, _ = predict_logits(model, loader, torch.device("cpu"))
    after, _ = predict_logits(reloaded, loader, torch.device("cpu"))
    assert torch.equal(before, after)


def test_glove_sized_words_start_from_glove_and_map_to_the_width(course_split):
    frame = sixteen_captions(course_split)
    vectorizer = TextVectorizer.fit(frame["caption"])
    config = SmallBertConfig(vocab_size=vectorizer.vocab_size)
    assert config.glove_dim == 50  # the default, chosen on validation (issue 23)
    model = build_text_classifier(config)
    missing = start_from_glove(model.encoder.bert, vectorizer, seed=0)
    glove = load_glove()
    words = vectorizer.vocabulary()
    table = model.encoder.bert.token_embedding.weight
    assert table.shape == (vectorizer.vocab_size, 50)
    dog = words.index("dog")
    assert torch.equal(table[dog], torch.from_numpy(glove.vector("dog").copy()))
    assert torch.count_nonzero(table[model.encoder.bert.pad_id]) == 0
    assert "dog" not in missing and len(missing) < len(words) / 4
    assert model.encoder.bert(random_tokens(real=(3, 4, 5)) % len(words)).shape == (3, 32, 128)


def test_a_checkpoint_older_than_glove_dim_rebuilds_with_random_width_words(tmp_path):
    config = small_config(glove_dim=0)
    model = build_text_classifier(config)
    stored = dataclasses.asdict(config)
    del stored["glove_dim"]  # written before the field existed
    vectorizer = TextVectorizer.fit(["a dog runs", "a ball"])
    path = save_checkpoint(tmp_path / "old.pt", model.state_dict(), stored,
                           vectorizer=vectorizer.to_dict())
    reloaded, config2, _ = load_text_classifier(path)
    assert config2.glove_dim == 0
    assert reloaded.encoder.bert.token_embedding.weight.shape == (VOCAB, 128)
    tokens = random_tokens()
    assert torch.equal(model.eval()(tokens), reloaded(tokens))
