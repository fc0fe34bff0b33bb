"""Notebook 06's captioner: vocabulary, attention, decoder shapes, decoding, metrics, reload."""

from __future__ import annotations

import pytest
import torch
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from utils.data.captions import SPECIALS, Vocabulary
from utils.data.words import split_words
from utils.eval.captioning import caption_scores, clip_scores, java_missing_reason
from utils.eval.clipscore import CLIP_S_WEIGHT
from utils.models.captioner import (
    AttentionCaptioner,
    CaptionerConfig,
    SoftAttention,
    beam_search,
    build_captioner,
    caption_cli,
    caption_loss,
    generate_captions,
    load_captioner,
    save_captioner,
)
from utils.train.captioner import (
    dataset_maps,
    initial_embeddings,
    load_caption_features,
    load_caption_frame,
    make_caption_loaders,
    references_of,
    train_captioner,
)
from utils.train.configs import CaptionerTrainConfig


@pytest.fixture(scope="module")
def tiny_run(flickr8k_dir, tmp_path_factory):
    """A captioner trained for a few epochs on 24 real Flickr8k training images (features
    cached in a temporary DATA_DIR), with its vocabulary, loaders and data."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATA_DIR", str(tmp_path_factory.mktemp("data")))
        config = CaptionerConfig()
        training = CaptionerTrainConfig(train_images=24, val_images=4, test_images=4,
                                        batch_size=8, epochs=8, min_word_count=3, lr=3e-3,
                                        lr_step=4, patience=8)
        frame = load_caption_frame(training, flickr8k_dir)
        features = load_caption_features(frame, config, training, flickr8k_dir)
        vocabulary = Vocabulary.build(frame.loc[frame["split"] == "train", "caption"], 3)
        embeddings, _ = initial_embeddings(vocabulary, config, training)
        model = build_captioner(config, vocabulary, embeddings)
        loaders = make_caption_loaders(frame, features, vocabulary, training)
        history = train_captioner(model, loaders, vocabulary, references_of(frame, "val"),
                                  training, torch.device("cpu"))
    return {"model": model.eval(), "vocabulary": vocabulary, "loaders": loaders,
            "history": history, "features": features, "frame": frame,
            "flickr8k": flickr8k_dir}


def test_vocabulary_of_the_flickr8k_training_captions(flickr8k_dir):
    frame = load_caption_frame(CaptionerTrainConfig(), flickr8k_dir)
    assert frame.groupby("split")["image"].nunique().to_dict() == {
        "train": 6000, "val": 1000, "test": 1000}
    assert (frame.groupby("image").size() == 5).all()
    vocabulary = Vocabulary.build(frame.loc[frame["split"] == "train", "caption"], 5)
    assert tuple(vocabulary.words[:4]) == SPECIALS and 2000 < len(vocabulary) < 3500
    ids = vocabulary.encode("A dog runs through the qwertyzz grass .", length=10)
    assert ids.shape == (12,) and ids[0] == vocabulary.start_id
    assert vocabulary.decode(ids) == "a dog runs through the <unk> grass"
    assert vocabulary.encode("a dog", length=1).tolist()[-1] == vocabulary.end_id  # cut


def test_attention_weights_sum_to_one_and_skip_masked_regions():
    torch.manual_seed(0)
    attention = SoftAttention(feature_dim=8, hidden_dim=6, attention_dim=5)
    features, hidden = torch.randn(3, 49, 8), torch.randn(3, 6)
    mask = torch.ones(3, 49, dtype=torch.bool)
    mask[1, 10:] = False
    context, weights = attention(features, attention.key(features), hidden, mask)
    assert context.shape == (3, 8) and weights.shape == (3, 49)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))
    assert (weights[1, 10:] == 0).all() and (weights[0] > 0).all()
    changed = features.clone()
    changed[1, 10:] = 100.0  # what a masked region holds must not matter
    again, _ = attention(changed, attention.key(changed), hidden, mask)
    torch.testing.assert_close(again[1], context[1])


def test_decoder_step_and_teacher_forcing_have_the_documented_shapes():
    config = CaptionerConfig(embed_dim=16, feature_dim=32, attention_dim=24, hidden_dim=40)
    model = AttentionCaptioner(config, vocab_size=30, channels=1280).eval()
    features, keys, state = model.encode(torch.randn(2, 49, 1280))
    assert features.shape == (2, 49, 32) and keys.shape == (2, 49, 24)
    logits, (h, c), weights = model.step(torch.tensor([1, 5]), state, features, keys)
    assert logits.shape == (2, 30) and h.shape == c.shape == (2, 40) and weights.shape == (2, 49)
    tokens = torch.randint(4, 30, (2, 5, 9))
    logits, weights = model(torch.randn(2, 49, 1280), tokens)
    assert logits.shape == (10, 8, 30) and weights.shape == (10, 8, 49)
    targets = tokens[:, :, 1:].flatten(0, 1)
    targets[0, 4:] = 0  # <pad> targets count neither in the loss nor in the penalty
    loss, cross_entropy = caption_loss(logits, weights, targets, 0, alpha_c=1.0)
    assert loss > cross_entropy > 0


def test_teacher_forcing_skips_padding_and_matches_step_by_step_decoding():
    torch.manual_seed(0)
    config = CaptionerConfig(embed_dim=16, feature_dim=32, attention_dim=24, hidden_dim=40)
    model = AttentionCaptioner(config, vocab_size=30, channels=1280).eval()
    maps, tokens = torch.randn(3, 49, 1280), torch.randint(4, 30, (3, 9))
    tokens[0, 4:], tokens[2, 7:] = 0, 0  # captions of 3, 8 and 6 targets, then <pad>
    logits, weights = model(maps, tokens.unsqueeze(1))  # one caption per image: K = 1
    for i, targets in enumerate((3, 8, 6)):
        features, keys, state = model.encode(maps[i:i + 1])
        for t in range(targets):
            expected, state, alpha = model.step(tokens[i:i + 1, t], state, features, keys)
            torch.testing.assert_close(logits[i, t], expected[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(weights[i, t], alpha[0], atol=1e-6, rtol=1e-5)
        assert (logits[i, targets:] == 0).all() and (weights[i, targets:] == 0).all()


@pytest.mark.slow  # trains a small captioner (tiny_run)
def test_training_lowers_the_loss_on_real_captions(tiny_run):
    history = tiny_run["history"]
    assert len(history) == 8
    assert history[-1]["train_ce"] < history[0]["train_ce"] - 0.5


@pytest.mark.slow  # trains a small captioner (tiny_run)
def test_beam_search_of_width_one_equals_greedy(tiny_run):
    model, vocabulary = tiny_run["model"], tiny_run["vocabulary"]
    maps = dataset_maps(tiny_run["loaders"]["train"])[:8]
    greedy = generate_captions(model, maps, vocabulary, beam_size=1, max_length=12)
    for i, expected in enumerate(greedy):
        found = beam_search(model, maps[i:i + 1].float(), vocabulary, 1, max_length=12)
        assert found.ids == expected.ids
        assert found.score == pytest.approx(expected.score, abs=1e-5)
        torch.testing.assert_close(found.weights, expected.weights)
    assert len({tuple(c.ids) for c in greedy}) > 1 or len(greedy[0].ids) > 2


@pytest.mark.slow  # trains a small captioner (tiny_run)
def test_wider_beams_score_at_least_as_well_and_attend_once_per_token(tiny_run):
    model, vocabulary = tiny_run["model"], tiny_run["vocabulary"]
    maps = dataset_maps(tiny_run["loaders"]["val"])
    for i in range(len(maps)):
        narrow = beam_search(model, maps[i:i + 1].float(), vocabulary, 1, 15)
        wide = beam_search(model, maps[i:i + 1].float(), vocabulary, 3, 15)
        assert wide.score >= narrow.score - 1e-6
        assert wide.weights.shape == (len(wide.ids) + 1, 49)  # the words and <end>
        torch.testing.assert_close(wide.weights.sum(dim=1), torch.ones(len(wide.weights)))


def test_metrics_reproduce_pycocoevalcap_on_a_hand_made_example():
    candidates = ["A dog runs on the grass.", "Two children play, in the WATER!",
                  "A man rides a bike"]
    references = [["A dog is running on green grass .", "The brown dog runs outside ."],
                  ["Two kids are playing in the water .", "Children splash in a pool ."],
                  ["A man is riding a bicycle .", "A cyclist rides down a dirt road ."]]
    scores, per_caption = caption_scores(candidates, references, meteor=False)
    gts = {0: ["a dog is running on green grass", "the brown dog runs outside"],
           1: ["two kids are playing in the water", "children splash in a pool"],
           2: ["a man is riding a bicycle", "a cyclist rides down a dirt road"]}
    res = {0: ["a dog runs on the grass"], 1: ["two children play in the water"],
           2: ["a man rides a bike"]}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    assert [scores[f"BLEU-{n}"] for n in range(1, 5)] == pytest.approx(bleu)
    assert scores["ROUGE-L"] == pytest.approx(Rouge().compute_score(gts, res)[0])
    cider, cider_each = Cider().compute_score(gts, res)
    assert scores["CIDEr"] == pytest.approx(cider)
    assert per_caption == pytest.approx(cider_each)
    # by hand: 15 of the 17 candidate words are in a reference ("play" and "bike" are not);
    # the closest reference lengths (5, 5, 6: ties go to the shorter) sum to 16 < 17 words,
    # so there is no brevity penalty
    assert scores["BLEU-1"] == pytest.approx(15 / 17, rel=1e-6)
    assert scores["METEOR"] is None


class BagOfWordsClip(torch.nn.Module):
    """A stand-in CLIP whose text embedding is the normalised bag of its words."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(tokens.float(), dim=1)


class BagOfWordsTokenizer:
    WORDS = ("dog", "grass", "ball", "water")

    def encode(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([[t.split().count(w) for w in self.WORDS] for t in texts])


def test_clip_scores_follow_hessel_et_al():
    images = torch.nn.functional.normalize(torch.tensor([[1.0, 1, 0, 0], [0, 0, 1, 0]]), dim=1)
    candidates = ["dog grass", "water"]
    references = [["dog", "grass grass"], ["ball water", "dog", "water water"]]
    found = clip_scores(BagOfWordsClip(), BagOfWordsTokenizer(), images, candidates,
                        references)
    clip_s = torch.tensor([CLIP_S_WEIGHT * 1.0, 0.0])  # cos 1, then cos 0 -> w * max(cos, 0)
    best_ref = torch.tensor([2 ** -0.5, 1.0])  # best reference cosine of each candidate
    harmonic = torch.tensor([2 * 2.5 * 2 ** -0.5 / (2.5 + 2 ** -0.5), 0.0])
    assert found["CLIPScore"] == pytest.approx(clip_s.mean().item())
    assert found["RefCLIPScore"] == pytest.approx(harmonic.mean().item())
    assert best_ref.max() == 1.0


@pytest.mark.slow  # trains a small captioner (tiny_run)
def test_save_and_reload_give_identical_captions(tiny_run, tmp_path, capsys):
    model, vocabulary = tiny_run["model"], tiny_run["vocabulary"]
    path = save_captioner(tmp_path / "06_captioner.pt", model, vocabulary, epoch=3,
                          metrics={"note": "test"})
    reloaded, reloaded_vocabulary, checkpoint = load_captioner(path)
    assert checkpoint["epoch"] == 3 and reloaded_vocabulary.words == vocabulary.words
    maps = dataset_maps(tiny_run["loaders"]["test"])
    before = generate_captions(model, maps, vocabulary, beam_size=3)
    after = generate_captions(reloaded, maps, reloaded_vocabulary, beam_size=3)
    assert [c.ids for c in before] == [c.ids for c in after]
    image = tiny_run["flickr8k"] / "Flicker8k_Dataset" / tiny_run["features"].files[0]
    assert caption_cli(["caption", str(image), "--checkpoint", str(path)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]  # after the feature bar
    first = generate_captions(model, tiny_run["features"].maps[:1], vocabulary, beam_size=3)
    assert printed == f"{image}: {vocabulary.decode(first[0].ids)}"
    assert split_words(printed.split(": ", 1)[1])  # a non-empty caption


@pytest.mark.slow  # starts a Java virtual machine
def test_meteor_runs_with_java_and_is_skipped_with_a_reason_without(capsys):
    candidates = ["a dog runs on the grass", "a man rides a bike"]
    references = [["A dog runs on the grass .", "A brown dog outside ."],
                  ["A cyclist on a road .", "A woman swims ."]]
    scores, _ = caption_scores(candidates, references, meteor=True)
    reason = java_missing_reason()
    if reason is None:  # Java is here: METEOR 1.5 from pycocoevalcap's jar, one exact caption
        assert 0.3 < scores["METEOR"] < 0.95
    else:
        assert scores["METEOR"] is None and reason in capsys.readouterr().out


def test_glove_needs_fifty_values_per_word_and_says_which_fields() -> None:
    from utils.data.captions import Vocabulary as Words

    vocabulary = Words.build(["a dog runs", "a dog sits"], 1)
    with pytest.raises(ValueError, match="glove=True needs embed_dim=50.*glove=False"):
        initial_embeddings(vocabulary, CaptionerConfig(embed_dim=16), CaptionerTrainConfig())
    assert initial_embeddings(vocabulary, CaptionerConfig(embed_dim=16),
                              CaptionerTrainConfig(glove=False)) == (None, [])
