"""The pretrained text tower: packaged MiniLM offline, pooling, tokenizer, freezing, DistilBERT."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from utils.core.checkpoint import load_checkpoint, save_checkpoint
from utils.core.common import count_parameters
from utils.core.pretrained import (
    ModelUnavailableError,
    PretrainedTextConfig,
    load_hf_config,
    pretrained_text_config,
)
from utils.data.tokenizers import HFTokenizerAdapter, check_tokenizer, load_hf_tokenizer
from utils.experiments.runs import best_by_validation
from utils.models.text_pretrained import build_hf_text_encoder, find_layers, pool_hidden
from utils.train.loop import TrainedRun

CAPTIONS = ["A black dog runs through the water .", "A boy rides his bike on a dirt path .",
            "Two children play with a red ball"]
WORDS = "a the dog boy ball bike water runs rides plays on in with red black two".split()


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs as CI does: no hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def minilm():
    """The packaged all-MiniLM-L6-v2, frozen, masked-mean pooling (loaded once)."""
    spec = PretrainedTextConfig(model="minilm-l6-packaged", max_length=24)
    return build_hf_text_encoder(spec), HFTokenizerAdapter(spec)


@pytest.fixture(scope="module")
def tiny_distilbert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random DistilBERT and its DistilBertTokenizerFast vocabulary, saved locally."""
    from transformers import DistilBertConfig, DistilBertModel, DistilBertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_distilbert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    DistilBertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    config = DistilBertConfig(vocab_size=len(vocab), n_layers=2, dim=32, hidden_dim=64,
                              n_heads=2, max_position_embeddings=64, pad_token_id=0)
    torch.manual_seed(0)
    DistilBertModel(config).save_pretrained(folder)
    return folder


def test_packaged_minilm_embeds_offline(minilm) -> None:
    encoder, tokenizer = minilm
    tokens = tokenizer.encode(CAPTIONS)
    assert tokens.shape == (3, 24) and tokenizer.pad_id == 0
    assert (tokens[:, 0] == tokenizer.tokenizer.cls_token_id).all()
    with torch.no_grad():
        vectors = encoder(tokens)
    assert vectors.shape == (3, 384) and encoder.out_features == 384
    assert torch.isfinite(vectors).all()
    # A real sentence model: different captions get clearly different vectors.
    similarity = torch.nn.functional.cosine_similarity(vectors[0], vectors[1], dim=0)
    assert similarity < 0.99


def test_masked_mean_ignores_padding(minilm) -> None:
    encoder, _ = minilm
    short = HFTokenizerAdapter(replace(encoder.config, max_length=16)).encode(CAPTIONS[:1])
    long = HFTokenizerAdapter(replace(encoder.config, max_length=40)).encode(CAPTIONS[:1])
    assert (long == 0).sum() > (short == 0).sum()
    with torch.no_grad():
        assert torch.allclose(encoder(short), encoder(long), atol=1e-5)


def test_pool_hidden_uses_only_real_tokens() -> None:
    hidden = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    changed = hidden.clone()
    changed[~mask] = 1000.0
    pooled = pool_hidden(hidden, mask, "masked_mean")
    assert torch.allclose(pooled, pool_hidden(changed, mask, "masked_mean"))
    assert torch.allclose(pooled[0], hidden[0, :2].mean(0))
    assert torch.equal(pool_hidden(hidden, mask, "cls"), hidden[:, 0])
    with pytest.raises(ValueError, match="pooling"):
        pool_hidden(hidden, mask, "first")


def test_adapter_round_trips_through_dict(minilm) -> None:
    _, tokenizer = minilm
    data = json.loads(json.dumps(tokenizer.to_dict()))
    rebuilt = HFTokenizerAdapter.from_dict(data)
    assert torch.equal(rebuilt.encode(CAPTIONS), tokenizer.encode(CAPTIONS))
    assert rebuilt.config == tokenizer.config and rebuilt.length == 24
    with pytest.raises(ValueError, match="kind"):
        HFTokenizerAdapter.from_dict({"kind": "word_level"})


def test_frozen_vs_last_n_trainable_counts(minilm) -> None:
    frozen, _ = minilm
    assert count_parameters(frozen)["trainable"] == 0
    partial = build_hf_text_encoder(replace(frozen.config, freeze="last_n",
                                            train_last_n_layers=1))
    last = find_layers(partial.model)[-1]
    assert len(find_layers(partial.model)) == 6
    assert count_parameters(partial)["trainable"] == sum(p.numel() for p in last.parameters())


def test_frozen_encoder_stays_deterministic_in_train_mode(minilm) -> None:
    encoder, tokenizer = minilm
    encoder.train()
    tokens = tokenizer.encode(CAPTIONS)
    with torch.no_grad():
        assert torch.equal(encoder(tokens), encoder(tokens))
    assert not encoder.model.training


def test_distilbert_builds_from_local_folder(tiny_distilbert: Path) -> None:
    spec = PretrainedTextConfig(model=str(tiny_distilbert), pooling="cls", freeze="none",
                                max_length=12)
    tokenizer = HFTokenizerAdapter(spec)
    assert type(tokenizer.tokenizer).__name__.startswith("DistilBertTokenizer")
    assert tokenizer.tokenizer.is_fast
    encoder = build_hf_text_encoder(spec)
    tokens = tokenizer.encode(CAPTIONS)
    assert tokens.shape == (3, 12) and (tokens == 0).any()
    assert encoder(tokens).shape == (3, 32) and encoder.out_features == 32
    assert count_parameters(encoder)["trainable"] == count_parameters(encoder)["total"]


def test_checkpoint_rebuilds_same_architecture(tiny_distilbert: Path, tmp_path: Path) -> None:
    spec = PretrainedTextConfig(model=str(tiny_distilbert), freeze="last_n", train_last_n_layers=1,
                        max_length=12)
    encoder = build_hf_text_encoder(spec)
    with torch.no_grad():  # stands in for training: weights now differ from the pretrained ones
        find_layers(encoder.model)[-1].output_layer_norm.bias.add_(0.5)
    tokens = HFTokenizerAdapter(spec).encode(CAPTIONS)
    encoder.eval()
    path = save_checkpoint(tmp_path / "tower.pt", encoder.state_dict(), {"text_spec": asdict(spec)})
    stored = load_checkpoint(path)
    rebuilt = build_hf_text_encoder(stored["config"]["text_spec"])
    rebuilt.load_state_dict(stored["state_dict"])
    rebuilt.eval()
    with torch.no_grad():
        assert torch.allclose(rebuilt(tokens), encoder(tokens))
        assert not torch.allclose(build_hf_text_encoder(spec).eval()(tokens), encoder(tokens))


def test_mismatched_tokenizer_is_refused(minilm, tiny_distilbert: Path) -> None:
    _, tokenizer = minilm
    config = load_hf_config({"model": str(tiny_distilbert)})
    with pytest.raises(ValueError, match="DistilBertTokenizerFast"):
        check_tokenizer(tokenizer.tokenizer, config, "tiny")
    config.model_type = "bert"
    with pytest.raises(ValueError, match="does not match"):
        check_tokenizer(tokenizer.tokenizer, config, "tiny")
    assert load_hf_tokenizer({"model": "minilm-l6-packaged"}).pad_token_id == 0


def test_missing_model_gives_one_clear_message() -> None:
    with pytest.raises(ModelUnavailableError) as caught:
        build_hf_text_encoder({"model": "no-such-org/no-such-model-xyz"})
    message = str(caught.value)
    assert "no-such-org/no-such-model-xyz" in message
    assert "HF_HOME" in message and "minilm-l6-packaged" in message and "save_pretrained" in message


def test_bad_spec_values_are_refused() -> None:
    with pytest.raises(ValueError, match="pooling"):
        PretrainedTextConfig(pooling="first")
    with pytest.raises(ValueError, match="train_last_n_layers"):
        PretrainedTextConfig(freeze="last_n")
    with pytest.raises(ValueError, match="unknown key"):
        pretrained_text_config({"lr": 1e-3})


def test_frozen_encoder_remembers_captions_exactly(minilm) -> None:
    encoder, tokenizer = minilm
    tokens = tokenizer.encode(CAPTIONS)
    encoder.memo.clear()
    with torch.no_grad():
        direct = encoder.encode(tokens, tokens != 0)
        first = encoder(tokens)
        assert len(encoder.memo) == len(CAPTIONS)
        again = encoder(tokens[[2, 0]])
    assert torch.allclose(first, direct, atol=1e-5) and torch.equal(again, first[[2, 0]])
    encoder.load_state_dict(encoder.state_dict())
    assert encoder.memo == {}


def test_best_by_validation_breaks_ties_with_the_loss() -> None:
    def run(*history: dict) -> TrainedRun:
        return TrainedRun(None, None, list(history), 0.0, 1)

    runs = {"a": run({"val_R@5": 0.5, "val_loss": 2.0}, {"val_R@5": 0.4, "val_loss": 1.0}),
            "b": run({"val_R@5": 0.5, "val_loss": 1.5}),
            "c": run({"val_R@5": 0.3, "val_loss": 0.1})}
    assert best_by_validation(runs) == "b"
    assert best_by_validation(runs, ["a", "c"]) == "a"


def test_clip_with_the_hf_tower_saves_and_reloads(tmp_path: Path) -> None:
    """The contract with utils.clip: create_clip(text_tower="hf") and load_clip from the file."""
    from utils.models.clip import ClipConfig, load_clip, save_clip
    from utils.train.configs import ClipTrainConfig
    from utils.train.towers import create_clip

    spec = PretrainedTextConfig(model="minilm-l6-packaged", max_length=16, freeze="last_n",
                        train_last_n_layers=1)
    config = ClipConfig(text_tower="hf", pretrained_text=spec, embed_dim=32)
    model, tokenizer = create_clip(config, ClipTrainConfig(image_source="scratch"))
    assert isinstance(tokenizer, HFTokenizerAdapter) and model.text_encoder.out_features == 384
    tokens = tokenizer.encode(CAPTIONS)
    images = torch.rand(3, 3, model.config.image_size, model.config.image_size)
    out = model(images, tokens)
    assert out["text_embeds"].shape == (3, 32) and torch.isfinite(out["loss"])
    model.eval()
    path = save_clip(tmp_path / "clip_hf.pt", model, tokenizer, 1, {})
    reloaded, reloaded_tokenizer, _ = load_clip(path)
    with torch.no_grad():
        assert torch.equal(reloaded.encode_text(reloaded_tokenizer.encode(CAPTIONS)),
                           model.encode_text(tokens))
