"""Retrieval with a trained CLIP: metrics, the gallery index and the top-k search.

Conventions: embeddings are L2-normalised rows, so a dot product is a cosine similarity in
[-1, 1]. A *similarity matrix* has one row per query and one column per gallery item; the
*relevance matrix* (same shape, bool) marks the right answers of each query. Ranks are 1-based:
rank 1 means the first item returned is right.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from utils.models.clip import similarity

RECALL_KS = (1, 5, 10)


PRECISION_K = 5


def first_relevant_rank(similarity: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """Rank (1-based) of the best-placed relevant item: similarity (Q, G), relevant (Q, G) -> (Q,).

    Items are sorted by decreasing similarity (stable sort: ties keep gallery order).
    """
    if similarity.shape != relevant.shape:
        raise ValueError(f"similarity {tuple(similarity.shape)} and relevant "
                         f"{tuple(relevant.shape)} must have the same shape")
    if not bool(relevant.any(dim=1).all()):
        raise ValueError("every query needs at least one relevant gallery item")
    order = torch.argsort(similarity.float(), dim=1, descending=True, stable=True)
    hits = relevant.gather(1, order)
    return hits.float().argmax(dim=1) + 1  # argmax finds the first True


def recall_at_k(ranks: torch.Tensor, k: int) -> float:
    """Share of queries whose first relevant item is in the top k: ranks (Q,) -> float."""
    return float((ranks <= k).float().mean())


def class_precision_at_k(similarity: torch.Tensor, query_labels: Sequence[int],
                         gallery_labels: Sequence[int], k: int = PRECISION_K) -> float:
    """Mean share of the top k gallery items that have the query's class: similarity (Q, G)."""
    top = similarity.float().topk(min(k, similarity.shape[1]), dim=1).indices
    gallery = torch.as_tensor(list(gallery_labels))
    queries = torch.as_tensor(list(query_labels)).unsqueeze(1)
    return float((gallery[top] == queries).float().mean())


def retrieval_metrics(similarity: torch.Tensor, relevant: torch.Tensor,
                      query_labels: Sequence[int] | None, gallery_labels: Sequence[int] | None,
                      ks: Sequence[int] = RECALL_KS) -> dict[str, float | None]:
    """R@k, median rank and class precision@5 of one retrieval direction (rates in [0, 1]);
    class precision is None without labels."""
    ranks = first_relevant_rank(similarity, relevant)
    metrics = {f"R@{k}": recall_at_k(ranks, k) for k in ks}
    metrics["median_rank"] = float(np.median(ranks.numpy()))
    metrics[f"class_precision@{PRECISION_K}"] = None if query_labels is None else \
        class_precision_at_k(similarity, query_labels, gallery_labels)
    return metrics


def chance_recall(n_gallery: int, n_relevant: int, k: int) -> float:
    """Probability that a random ordering puts one of n_relevant items in its top k."""
    k = min(k, n_gallery)
    return 1.0 - math.comb(n_gallery - n_relevant, k) / math.comb(n_gallery, k)


def chance_median_rank(n_gallery: int, n_relevant: int) -> float:
    """Median of the first relevant rank under a random ordering (n_relevant among n_gallery)."""
    if n_relevant == 1:
        return (n_gallery + 1) / 2  # uniform rank on 1..G
    for rank in range(1, n_gallery + 1):
        if chance_recall(n_gallery, n_relevant, rank) >= 0.5:
            return float(rank)
    return float(n_gallery)


def chance_metrics(relevant: torch.Tensor, query_labels: Sequence[int] | None,
                   gallery_labels: Sequence[int] | None, ks: Sequence[int] = RECALL_KS
                   ) -> dict[str, float | None]:
    """What a random ranking scores on average, with the same keys as retrieval_metrics."""
    n_gallery = relevant.shape[1]
    n_relevant = relevant.sum(dim=1).tolist()
    metrics = {f"R@{k}": float(np.mean([chance_recall(n_gallery, r, k) for r in n_relevant]))
               for k in ks}
    metrics["median_rank"] = float(np.median([chance_median_rank(n_gallery, r)
                                              for r in n_relevant]))
    metrics[f"class_precision@{PRECISION_K}"] = None
    if query_labels is not None:
        gallery = np.asarray(list(gallery_labels))
        shares = [(gallery == label).mean() for label in query_labels]
        metrics[f"class_precision@{PRECISION_K}"] = float(np.mean(shares))
    return metrics


def relevance_matrix(query_items: Sequence[int], gallery_items: Sequence[int]) -> torch.Tensor:
    """relevant[q, g] is True when query q and gallery item g belong to the same image: (Q, G)."""
    return torch.as_tensor(list(query_items)).unsqueeze(1) == \
        torch.as_tensor(list(gallery_items)).unsqueeze(0)


def evaluate_retrieval(image_embeds: torch.Tensor, text_embeds: torch.Tensor,
                       text_image: Sequence[int], image_labels: Sequence[int] | None) -> dict:
    """Both directions + their chance levels: image_embeds (N, E), text_embeds (T, E).

    text_image[t] is the row of caption t's image in image_embeds. Text -> image: the caption's
    own image is the one right answer. Image -> text: a hit is ANY caption of that image.
    ``image_labels`` None (an unlabelled dataset), or a single class (any result would then
    be 1.0, which says nothing): class precision is None.
    """
    if image_labels is not None and len(set(image_labels)) < 2:
        image_labels = None
    scores = similarity(image_embeds.float(), text_embeds.float()).T  # (T, N)
    text_labels = None if image_labels is None else [image_labels[i] for i in text_image]
    t2i_relevant = relevance_matrix(text_image, range(len(image_embeds)))
    i2t_relevant = t2i_relevant.T
    return {
        "text_to_image": retrieval_metrics(scores, t2i_relevant, text_labels, image_labels),
        "image_to_text": retrieval_metrics(scores.T, i2t_relevant, image_labels, text_labels),
        "chance": {
            "text_to_image": chance_metrics(t2i_relevant, text_labels, image_labels),
            "image_to_text": chance_metrics(i2t_relevant, image_labels, text_labels),
        },
    }


def text_to_image_ranks(image_embeds: torch.Tensor, text_embeds: torch.Tensor,
                        text_image: Sequence[int]) -> torch.Tensor:
    """Rank (1-based) of each caption's own image among all images: (N,E), (T,E) -> (T,)."""
    scores = similarity(image_embeds.float(), text_embeds.float()).T  # (T, N)
    return first_relevant_rank(scores, relevance_matrix(text_image, range(len(image_embeds))))


def query_gains(ranks: dict[str, torch.Tensor], baseline: str, labels: Sequence[str],
                k: int = 5) -> pd.DataFrame:
    """Which text->image queries each run helps, against ``baseline`` (same queries, ranks (T,)
    per run): per class and in all, the queries whose image enters the top k ("gained"),
    leaves it ("lost"), and the R@k of each run."""
    frame = pd.DataFrame({name: r.numpy() for name, r in ranks.items()})
    frame["class"] = list(labels)
    rows = []
    for group, part in [*frame.groupby("class", sort=True), ("all", frame)]:
        before = part[baseline] <= k
        for name in ranks:
            after = part[name] <= k
            rows.append({"class": group, "run": name, "queries": len(part),
                         f"R@{k}": float(after.mean()), "gained": int((after & ~before).sum()),
                         "lost": int((before & ~after).sum())})
    return pd.DataFrame(rows)


def metrics_table(result: dict) -> pd.DataFrame:
    """evaluate_retrieval's result as a table: one row per metric, each direction beside its
    chance level."""
    columns = {}
    for direction in ("text_to_image", "image_to_text"):
        columns[direction] = pd.Series(result[direction])
        columns[f"{direction} (hasard)"] = pd.Series(result["chance"][direction])
    return pd.DataFrame(columns)
