"""Retrieval metrics on hand-made similarity matrices whose answers are worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from utils.data.course import CLASSES
from utils.eval.index import GalleryIndex, least_similar_captions
from utils.eval.retrieval import (
    chance_metrics,
    chance_recall,
    class_precision_at_k,
    evaluate_retrieval,
    first_relevant_rank,
    relevance_matrix,
    retrieval_metrics,
)

N = 10


def staircase(n: int) -> torch.Tensor:
    """Query q's right item (column q) is beaten by exactly q items: its rank is q + 1."""
    rows = torch.arange(n).unsqueeze(1)
    cols = torch.arange(n).unsqueeze(0)
    similarity = (cols < rows).float()  # the q items left of the diagonal score 1
    similarity.fill_diagonal_(0.5)  # the right item scores 0.5, all others 0
    return similarity


def test_identity_matrix_is_perfect() -> None:
    eye = torch.eye(N)
    metrics = retrieval_metrics(eye, eye.bool(), [0] * N, [0] * N)
    assert metrics["R@1"] == metrics["R@5"] == metrics["R@10"] == 1.0
    assert metrics["median_rank"] == 1.0


def test_reversed_identity_puts_every_answer_last() -> None:
    # -I: the right item scores -1, every other item 0, so the answer comes last (rank N).
    ranks = first_relevant_rank(-torch.eye(N), torch.eye(N, dtype=torch.bool))
    assert ranks.tolist() == [N] * N
    metrics = retrieval_metrics(-torch.eye(N), torch.eye(N, dtype=torch.bool), [0] * N, [0] * N)
    assert (metrics["R@1"], metrics["R@5"], metrics["R@10"]) == (0.0, 0.0, 1.0)
    assert metrics["median_rank"] == N


def test_staircase_gives_every_rank_once() -> None:
    similarity, relevant = staircase(N), torch.eye(N, dtype=torch.bool)
    assert first_relevant_rank(similarity, relevant).tolist() == list(range(1, N + 1))
    metrics = retrieval_metrics(similarity, relevant, [0] * N, [0] * N)
    # Ranks 1..10: k of them are <= k, the median of 1..10 is 5.5.
    assert metrics["R@1"] == pytest.approx(0.1)
    assert metrics["R@5"] == pytest.approx(0.5)
    assert metrics["median_rank"] == 5.5


def test_image_to_text_counts_any_caption_of_the_image() -> None:
    # Two images, two captions each: captions 0, 1 belong to image 0; captions 2, 3 to image 1.
    caption_images = [0, 0, 1, 1]
    similarity = torch.tensor([  # rows: images, columns: captions
        [0.1, 0.9, 0.3, 0.2],  # image 0: its 2nd caption comes first -> rank 1
        [0.8, 0.1, 0.2, 0.7],  # image 1: caption 0 (wrong), then caption 3 (right) -> rank 2
    ])
    relevant = relevance_matrix([0, 1], caption_images)
    assert first_relevant_rank(similarity, relevant).tolist() == [1, 2]
    image_embeds = torch.eye(2)
    # evaluate_retrieval builds the same similarity from embeddings: captions as columns.
    text_embeds = similarity.T.contiguous()
    result = evaluate_retrieval(image_embeds, text_embeds, caption_images, [0, 1])
    assert result["image_to_text"]["R@1"] == 0.5
    assert result["image_to_text"]["median_rank"] == 1.5


def test_class_precision_counts_the_query_class_in_the_top_k() -> None:
    similarity = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])
    gallery_labels = [1, 0, 1, 1, 0, 1]  # the top 5 hold three items of class 1
    assert class_precision_at_k(similarity, [1], gallery_labels, k=5) == pytest.approx(3 / 5)
    assert class_precision_at_k(similarity, [0], gallery_labels, k=5) == pytest.approx(2 / 5)


def test_chance_levels_match_counting() -> None:
    eye = torch.eye(N, dtype=torch.bool)
    chance = chance_metrics(eye, [0] * 5 + [1] * 5, [0] * 5 + [1] * 5)
    assert chance["R@1"] == pytest.approx(1 / N)
    assert chance["R@5"] == pytest.approx(5 / N)
    assert chance["median_rank"] == (N + 1) / 2
    assert chance["class_precision@5"] == pytest.approx(0.5)
    # Two right answers among four: a random top-2 misses both with probability 1/C(4,2).
    assert chance_recall(4, 2, 2) == pytest.approx(1 - 1 / math.comb(4, 2))
    assert chance_recall(4, 2, 1) == pytest.approx(0.5)


def test_a_query_without_answer_is_rejected() -> None:
    relevant = torch.zeros(2, 3, dtype=torch.bool)
    relevant[0, 0] = True
    with pytest.raises(ValueError, match="at least one relevant"):
        first_relevant_rank(torch.zeros(2, 3), relevant)


def hand_index() -> GalleryIndex:
    """Three images (two train, one test) with unit 2-D embeddings and four captions."""
    return GalleryIndex(
        image_embeds=torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]),
        image_paths=["a.jpg", "b.jpg", "c.jpg"],
        image_labels=[0, 1, 2],
        image_splits=["train", "train", "test"],
        text_embeds=torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.6, 0.8]]),
        captions=["a fits", "b fits", "c is the opposite", "c half fits"],
        caption_images=[0, 1, 2, 2],
    )


def test_least_similar_captions_are_sorted_from_the_worst() -> None:
    worst = least_similar_captions(hand_index(), n=2)
    assert worst["caption"].tolist() == ["c is the opposite", "c half fits"]
    assert worst["score"].tolist() == pytest.approx([-1.0, 0.6])
    assert worst["label"].tolist() == [CLASSES[2]] * 2


def test_select_split_keeps_the_captions_of_its_images() -> None:
    test = hand_index().split("test")
    assert test.image_paths == ["c.jpg"]
    assert test.captions == ["c is the opposite", "c half fits"]
    assert test.caption_images == [0, 0]
    assert test.text_embeds.shape == (2, 2)
    assert test.caption_labels() == [2, 2]


def test_index_round_trips_through_a_checkpoint_dict() -> None:
    index = hand_index()
    again = GalleryIndex.from_dict(index.to_dict())
    assert again.max_abs_difference(index) == 0.0 and again.captions == index.captions
    assert sorted(index.to_dict()) == sorted(["image_embeds", "image_paths", "image_labels",
                                              "image_splits", "text_embeds", "captions",
                                              "caption_images", "class_names"])
    old = {k: v for k, v in index.to_dict().items() if k != "class_names"}  # project 0.1's 7
    assert GalleryIndex.from_dict(old).class_names == list(CLASSES)
