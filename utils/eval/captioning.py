"""Scores of generated captions against human references: BLEU-1..4, ROUGE-L, CIDEr (and METEOR
when Java is present) with pycocoevalcap's scorers, and CLIPScore / RefCLIPScore (Hessel et al.
2021) with this project's CLIP model.

pycocoevalcap's PTBTokenizer runs Java, so captions are tokenised here in Python (lower-case,
punctuation dropped: ``utils.data.words.split_words``) and handed to the scorers
directly. Every score is a fraction as pycocoevalcap gives it (BLEU 0.195, not 19.5).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge

from utils.data.course import CLASSES, classify_caption
from utils.data.words import normalize_caption
from utils.eval.clipscore import clip_score, embed_clip_images, ref_clip_score
from utils.eval.index import embed_texts
from utils.models.clip import load_clip

# Published Flickr8k figures to print beside ours (fractions, like the scores).
ANCHORS = {
    "Show-Attend-Tell, soft attention (Xu et al. 2015)":
        {"BLEU-1": 0.670, "BLEU-2": 0.448, "BLEU-3": 0.299, "BLEU-4": 0.195, "METEOR": 0.189},
    "frozen-ResNet re-implementations": {"BLEU-4": 0.165},
}


def prepare(candidates: Sequence[str], references: Sequence[Sequence[str]]
            ) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """N candidates and N reference lists -> pycocoevalcap's (gts, res) dicts, tokenised."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference lists")
    gts = {i: [normalize_caption(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [normalize_caption(c)] for i, c in enumerate(candidates)}
    return gts, res


def java_missing_reason() -> str | None:
    """Why METEOR cannot run here (no working ``java``), or None when it can."""
    java = shutil.which("java")
    if java is None:
        return "METEOR skipped: it needs Java (the `java` command), not found on this machine"
    try:
        subprocess.run([java, "-version"], capture_output=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError) as error:
        return f"METEOR skipped: `java -version` failed ({error})"
    return None


def meteor_score(gts: dict, res: dict) -> float:
    """Corpus METEOR 1.5 (pycocoevalcap's jar, run by Java) of tokenised (gts, res)."""
    scorer = Meteor()
    try:
        score, _ = scorer.compute_score(gts, res)
    finally:
        del scorer
    return float(score)


def caption_scores(candidates: Sequence[str], references: Sequence[Sequence[str]],
                   meteor: bool = True) -> tuple[dict, np.ndarray]:
    """N candidates against their references -> ({BLEU-1..4, ROUGE-L, CIDEr, METEOR (None
    when skipped or not asked)}, per-caption CIDEr (N,)). Prints why METEOR is skipped."""
    gts, res = prepare(candidates, references)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, per_caption = Cider().compute_score(gts, res)
    scores = {f"BLEU-{n}": float(b) for n, b in enumerate(bleu, start=1)}
    scores.update({"ROUGE-L": float(rouge), "CIDEr": float(cider), "METEOR": None})
    reason = java_missing_reason() if meteor else "METEOR not asked"
    if reason is None:
        scores["METEOR"] = meteor_score(gts, res)
    elif meteor:
        print(reason)
    return scores, np.asarray(per_caption, dtype=float)


def clip_scores(model: torch.nn.Module, tokenizer, image_embeds: torch.Tensor,
                candidates: Sequence[str], references: Sequence[Sequence[str]]
                ) -> dict[str, float]:
    """Mean CLIP-S = w max(cos(image, candidate), 0) and RefCLIP-S = harmonic mean of CLIP-S
    and max(max over references of cos(candidate, reference), 0); image_embeds (N,E) unit."""
    texts = embed_texts(model, tokenizer, list(candidates))
    ref_embeds = embed_texts(model, tokenizer, [r for refs in references for r in refs])
    per_image = list(ref_embeds.split([len(refs) for refs in references]))
    clip_s = clip_score(image_embeds, texts)
    ref_clip_s = ref_clip_score(image_embeds, texts, per_image)
    return {"CLIPScore": clip_s.mean().item(), "RefCLIPScore": ref_clip_s.mean().item()}


def best_and_worst(frame: pd.DataFrame, score: str = "CIDEr", n: int = 5) -> pd.DataFrame:
    """The ``n`` best and ``n`` worst rows of ``frame`` by ``score``, with a ``rank`` column."""
    ordered = frame.sort_values(score, ascending=False, kind="stable")
    best = ordered.head(n).assign(rank="best")
    worst = ordered.tail(n).assign(rank="worst")
    return pd.concat([best, worst]).reset_index(drop=True)


def clip_score_report(checkpoint: Path, files: Sequence[Path], candidates: Sequence[str],
                      references: Sequence[Sequence[str]]) -> dict[str, float | None]:
    """CLIPScore / RefCLIPScore of the candidates (against all references) and of one held-out
    human caption per image (#0 against #1..), with the CLIP model saved in ``checkpoint``;
    every value None, with the reason printed, when that file is missing."""
    keys = ("CLIPScore", "RefCLIPScore", "human_CLIPScore", "human_RefCLIPScore")
    if not Path(checkpoint).is_file():
        print(f"CLIPScore skipped: {checkpoint} not found (notebook 03 writes it: run it first)")
        return dict.fromkeys(keys)
    model, tokenizer, _ = load_clip(Path(checkpoint))
    images = embed_clip_images(model, files, model.config.image_size)
    generated = clip_scores(model, tokenizer, images, candidates, references)
    human = clip_scores(model, tokenizer, images, [refs[0] for refs in references],
                        [refs[1:] for refs in references])
    return {**generated, "human_CLIPScore": human["CLIPScore"],
            "human_RefCLIPScore": human["RefCLIPScore"]}


def pick_examples(references: Sequence[Sequence[str]], n: int = 6, per_class: int = 2
                  ) -> list[int]:
    """Indices of ``n`` images, ``per_class`` per course class (read from caption #0 with
    classify_caption) in CLASSES order where possible, completed by the first others."""
    chosen: list[int] = []
    for name in CLASSES:
        found = [i for i, refs in enumerate(references) if classify_caption(refs[0]) == name]
        chosen += found[:per_class][:n - len(chosen)]
    chosen += [i for i in range(len(references)) if i not in chosen][:n - len(chosen)]
    return chosen
