"""What an enrichment keeps and what it invents (notebook 05).

Three measures per enriched caption, summarised over a set:

- ``kept_class_word``: it still names the class (dog, bike/bicycle, ball, water) when the
  original did;
- ``cosine``: the cosine of the original and the enriched caption as all-MiniLM-L6-v2 sentence
  vectors (1.0: the same meaning to that model);
- ``invented``: the object words it names that no human caption of the image names (the
  original and, where Flickr8k is there, its four sibling captions). A caption with one is
  counted in the hallucination rate.

Object words: ``OBJECT_WORDS``, a list of concrete nouns frequent in Flickr8k captions written
by hand (no part-of-speech tagger is installed offline), with a few synonyms folded together
(bicycle = bike) so that a human "bike" covers an enriched "bicycle".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd
import torch

from utils.data.enrich import content_words, has_class_word, split_words

OBJECT_WORDS = frozenset("""
man woman boy girl child baby person people player crowd team dog cat horse cow sheep bird
duck animal ball frisbee stick toy rope leash collar bike motorcycle helmet car truck bus boat
kayak canoe raft surfboard board skateboard snowboard ski sled hat cap shirt jacket coat dress
jersey uniform sunglasses glass bag backpack umbrella bench chair table fence wall building
house tree flower rock sand snow grass field park beach ocean sea lake river pool pond wave
mountain hill road street sidewalk path trail track ramp stair bridge sky sun cloud net goal
basket racket bat glove stage camera phone book food stroller swing slide playground tent
fountain puddle mud dirt forest wood yard garden city window door bottle cup sign flag bucket
shovel kite balloon costume mask ice log waterfall shore dock stream creek
""".split())
SYNONYMS = {"bicycle": "bike", "bicyclist": "bike", "cyclist": "bike", "biker": "bike",
            "puppy": "dog", "kid": "child", "children": "child", "men": "man", "women": "woman",
            "ocean": "sea", "road": "street", "pathway": "path", "boulder": "rock",
            "stone": "rock", "lawn": "grass", "meadow": "field", "ground": "dirt",
            "forest": "wood", "tree": "wood", "hillside": "hill", "surf": "wave",
            "sunglasses": "glass", "glasses": "glass", "stairs": "stair", "steps": "stair"}


def object_words(text: str) -> set[str]:
    """The object words a text names, stemmed and folded to one synonym."""
    words = {SYNONYMS.get(word, word) for word in content_words(text)}
    return {word for word in words if word in OBJECT_WORDS or word in SYNONYMS.values()}


def invented_objects(enriched: str, references: Sequence[str]) -> list[str]:
    """Object words of ``enriched`` that none of the human ``references`` names, sorted."""
    named = set().union(*(object_words(text) for text in references)) if references else set()
    return sorted(object_words(enriched) - named)


def pair_cosines(originals: list[str], enriched: list[str],
                 embed: Callable[[list[str]], torch.Tensor]) -> list[float]:
    """Cosine of each (original, enriched) pair; ``embed``: texts -> unit vectors (N,D)."""
    a, b = embed(list(originals)), embed(list(enriched))
    return (a * b).sum(dim=1).tolist()


def score_enrichment(enriched: pd.DataFrame, references: dict[str, list[str]] | None = None,
                     embed: Callable[[list[str]], torch.Tensor] | None = None,
                     column: str = "caption") -> pd.DataFrame:
    """The rows of ``enriched`` (enrich_captions' output) whose ``column`` holds a text, with
    kept_class_word, invented and (``embed`` given) cosine columns for that text.

    ``column``: "caption" (what training uses: the guards let it through or kept the original)
    or "generated" (the model's raw answer). ``references``: image_path -> its human captions;
    the original is always one of them."""
    references = references or {}
    rows = enriched[enriched[column].astype(str).str.strip() != ""].copy()
    rows["text"] = rows[column]
    triples = list(zip(rows["text"], rows["original"], rows["label"], strict=True))
    rows["kept_class_word"] = [has_class_word(text, label) or not has_class_word(original, label)
                               for text, original, label in triples]
    rows["invented"] = [invented_objects(text, [original, *references.get(path, [])])
                        for text, original, path in zip(rows["text"], rows["original"],
                                                        rows["image_path"], strict=True)]
    if embed is not None and len(rows):
        rows["cosine"] = pair_cosines(rows["original"].tolist(), rows["text"].tolist(), embed)
    return rows


def enrichment_quality(scored: pd.DataFrame) -> dict:
    """Shares over scored rows: class word kept, hallucination (an invented object), cosine."""
    if not len(scored):
        return {"rows": 0}
    summary = {"rows": len(scored), "kept_class_word": float(scored["kept_class_word"].mean()),
               "hallucination_rate": float(scored["invented"].map(bool).mean())}
    if "cosine" in scored:
        summary["cosine_mean"] = float(scored["cosine"].mean())
        summary["cosine_min"] = float(scored["cosine"].min())
    return summary


def best_and_worst_enrichments(scored: pd.DataFrame, n: int = 3) -> pd.DataFrame:
    """The n texts that add words, invent nothing and stay closest in meaning (a copy of the
    original is no enrichment), and the n worst (something invented, or the farthest)."""
    rows = scored.assign(n_invented=scored["invented"].map(len))
    if "cosine" not in rows:
        rows = rows.assign(cosine=float("nan"))
    adds = rows["text"].map(lambda t: len(split_words(t))) > rows["original"].map(
        lambda t: len(split_words(t)))
    ranked = rows.sort_values(["n_invented", "cosine"], ascending=[True, False], kind="stable")
    good = ranked[(adds & (rows["n_invented"] == 0)).loc[ranked.index]]
    columns = ["label", "original", "text", "cosine", "invented"]
    return pd.concat({"best": good.head(n)[columns],
                      "worst": ranked.iloc[::-1].head(n)[columns]}).rename(
        columns={"text": "enriched"})
