"""TextVectorizer on the course captions: vocabulary, encoding, save/load."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
import torch

from utils.core.checkpoint import load_checkpoint, save_checkpoint
from utils.data.course import load_dataset
from utils.data.tokenizers import TextVectorizer


def split_words(text: str) -> list[str]:
    """The vectoriser's normalisation, written independently: lower-case, apostrophes dropped,
    other punctuation as spaces."""
    return re.sub(r"[^\w\s]|_", " ", re.sub(r"['’`]", "", text.lower())).split()


@pytest.fixture(scope="module")
def train_captions(flickr8k_dir, course_subset) -> list[str]:
    frame = load_dataset(course_subset)
    return frame[frame["split"] == "train"]["caption"].tolist()


@pytest.fixture(scope="module")
def vectorizer(train_captions) -> TextVectorizer:
    return TextVectorizer.fit(train_captions)


def test_vocabulary_is_training_words_by_decreasing_frequency(vectorizer, train_captions):
    counts = Counter(word for caption in train_captions for word in split_words(caption))
    expected = sorted(counts, key=lambda word: (-counts[word], word))
    assert vectorizer.vocabulary() == ["[PAD]", "[UNK]", *expected]
    assert vectorizer.vocab_size == len(counts) + 2
    assert vectorizer.vocabulary()[2:6] == ["a", "in", "the", "water"]


def test_fit_is_deterministic_and_caps_the_vocabulary(train_captions, vectorizer):
    again = TextVectorizer.fit(list(reversed(train_captions)))
    assert again.vocabulary() == vectorizer.vocabulary()
    small = TextVectorizer.fit(train_captions, max_tokens=12)
    assert small.vocab_size == 12
    assert small.vocabulary() == vectorizer.vocabulary()[:12]


def test_encode_pads_with_0_marks_unknown_words_1_and_truncates(vectorizer):
    tokens = vectorizer.encode(["A dog zyxwvut", "", " ".join(["dog"] * 50)])
    assert tokens.dtype == torch.long and tokens.shape == (3, 32)
    dog = vectorizer.vocabulary().index("dog")
    assert tokens[0, :3].tolist() == [vectorizer.vocabulary().index("a"), dog, 1]
    assert tokens[0, 3:].eq(0).all() and vectorizer.pad_id == 0
    assert tokens[1].eq(0).all()
    assert tokens[2].eq(dog).all()  # cut to 32, no padding


def test_encode_ignores_case_and_punctuation(vectorizer):
    same = vectorizer.encode(["A DOG, in the Water!!!", "a dog in the water"])
    assert torch.equal(same[0], same[1])
    apostrophe = vectorizer.encode(["the dog's ball", "the dogs ball"])
    assert torch.equal(apostrophe[0], apostrophe[1])
    hyphen = vectorizer.encode(["black-and-white dog"])[0]
    assert vectorizer.decode(hyphen) == "black and white dog"


def test_to_dict_json_from_dict_round_trip(vectorizer, train_captions, tmp_path):
    state = json.loads(json.dumps(vectorizer.to_dict()))
    restored = TextVectorizer.from_dict(state)
    texts = [*train_captions, "Unseen words: quokka, zebu!"]
    assert torch.equal(restored.encode(texts), vectorizer.encode(texts))
    assert (restored.vocab_size, restored.length) == (vectorizer.vocab_size, vectorizer.length)
    path = save_checkpoint(tmp_path / "v.pt", {}, {}, vocabulary=vectorizer.to_dict())
    from_checkpoint = TextVectorizer.from_dict(load_checkpoint(path)["vocabulary"])
    assert torch.equal(from_checkpoint.encode(texts), vectorizer.encode(texts))


def test_other_length_and_bad_input(train_captions):
    short = TextVectorizer.fit(train_captions[:50], length=8)
    assert short.encode(["a dog runs in the water with a red ball"]).shape == (1, 8)
    with pytest.raises(ValueError, match="no texts"):
        TextVectorizer.fit([])
    with pytest.raises(TypeError, match="list of texts"):
        short.encode("a dog")


def test_every_part_splits_words_by_the_one_rule() -> None:
    """SmallBERT's tokenizer, the captioner's vocabulary, the enrichment guards and the tags
    read the same words (utils.data.words)."""
    from utils.data.captions import Vocabulary
    from utils.data.enrich import word_count
    from utils.data.tags import lemma_words
    from utils.data.tokenizers import make_tokenizer
    from utils.data.words import normalize_caption
    from utils.data.words import split_words as project_words

    text = "A dog's black-and-white ball, café_2 (Bike!)"
    expected = ["a", "dogs", "black", "and", "white", "ball", "café", "2", "bike"]
    assert project_words(text) == split_words(text) == expected
    tokenizer = make_tokenizer()
    normalized = tokenizer.normalizer.normalize_str(text)
    assert [w for w, _ in tokenizer.pre_tokenizer.pre_tokenize_str(normalized)] == expected
    vocabulary = Vocabulary.build([text], min_count=1)
    assert [vocabulary.words[i] for i in vocabulary.encode(text, 20)[1:10]] == expected
    assert lemma_words(text) == set(expected) and word_count(text) == len(expected)
    assert normalize_caption(text) == " ".join(expected)
