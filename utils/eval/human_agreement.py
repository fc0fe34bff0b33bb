"""Agreement of a CLIP model with human judgments of captions (Flickr8k-Expert format).

A judgments file has one line per (image, caption) pair, tab-separated::

    IMAGE.jpg <TAB> CAPTION_IMAGE.jpg#N <TAB> r1 <TAB> r2 <TAB> r3      (ratings 1-4)

The caption is caption N of CAPTION_IMAGE in Flickr8k.token.txt. Each pair gets the model's
CLIP-S and RefCLIP-S (references: the judged image's own Flickr8k captions, the candidate left
out), and Kendall's tau-c is computed between the scores and the ratings, each rating counted
separately (a pair appears three times), as in Hessel et al. 2021.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from scipy.stats import kendalltau

from utils.data.course import DataError
from utils.data.flickr8k import FLICKR_IMAGES, read_flickr8k
from utils.eval.clipscore import clip_score, embed_clip_images, ref_clip_score
from utils.eval.index import embed_texts
from utils.models.clip import ClipModel

RATINGS = (1, 2, 3, 4)
COLUMNS = ("image", "caption_image", "caption_index", "ratings", "line")


def parse_judgment(line: str, path: Path, line_no: int) -> tuple:
    """One line -> (image, caption image, caption index, ratings, line number)."""
    fields = line.rstrip("\n").split("\t")
    fix = "Fix: write IMAGE.jpg<TAB>CAPTION_IMAGE.jpg#N<TAB>r1<TAB>r2<TAB>r3, ratings 1-4."
    if len(fields) < 3:
        raise DataError(f"{path}, line {line_no}: {len(fields)} tab-separated field(s). {fix}")
    image, caption_id, *raw = (field.strip() for field in fields)
    caption_image, hash_sign, index = caption_id.rpartition("#")
    if not hash_sign or not index.isdigit():
        raise DataError(f"{path}, line {line_no}: caption id {caption_id!r} is not "
                        f"IMAGE.jpg#N. {fix}")
    if not raw or any(not r.isdigit() or int(r) not in RATINGS for r in raw):
        raise DataError(f"{path}, line {line_no}: ratings {raw} must be integers 1-4. {fix}")
    return image, caption_image, int(index), [int(r) for r in raw], line_no


def read_judgments(path: Path) -> pd.DataFrame:
    """A judgments file as a table: image, caption_image, caption_index, ratings, line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found. Fix: give the judgments file (Flickr8k-Expert "
                        "format: ExpertAnnotations.txt).")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start}). Fix: "
                        "give the judgments file as UTF-8 text (Flickr8k-Expert format).") \
            from error
    rows = [parse_judgment(line, path, n) for n, line in enumerate(lines, 1) if line.strip()]
    if not rows:
        raise DataError(f"{path}: no judgment. Fix: one line per judged (image, caption).")
    return pd.DataFrame(rows, columns=list(COLUMNS))


def judged_texts(judgments: pd.DataFrame, captions: pd.DataFrame, path: Path
                 ) -> tuple[list[str], list[list[str]]]:
    """Each judged caption's text and its references (the image's captions, itself left out)."""
    text_of = {(r.image, r.caption_index): r.caption for r in captions.itertuples()}
    by_image = captions.groupby("image")["caption"].apply(list).to_dict()
    texts, refs = [], []
    for row in judgments.itertuples():
        key = (row.caption_image, row.caption_index)
        if key not in text_of:
            raise DataError(f"{path}, line {row.line}: caption {key[0]}#{key[1]} is not in "
                            "Flickr8k.token.txt. Fix: correct the caption id.")
        texts.append(text_of[key])
        refs.append([c for c in by_image.get(row.image, []) if c != text_of[key]])
    return texts, refs


def check_ratings_vary(ratings: list[list[int]], path: Path | None = None) -> None:
    """A DataError when every rating is the same: no ranking can agree or disagree with it."""
    flat = [r for rs in ratings for r in rs]
    if len(set(flat)) < 2:
        raise DataError(f"{path or 'the judgments'}: all {len(flat)} ratings are {flat[0]}: "
                        "Kendall's tau is undefined when the ratings never vary. Fix: judge "
                        "pairs of different quality (ratings from 1 to 4).")


def kendall_tau_c(scores: torch.Tensor, ratings: list[list[int]], path: Path | None = None
                  ) -> float:
    """Kendall tau-c between scores (N,) and the ratings, each rating counted separately; a
    DataError when either side never varies (tau is then undefined, not a number)."""
    repeated = [float(s) for s, rs in zip(scores.tolist(), ratings, strict=True) for _ in rs]
    flat = [r for rs in ratings for r in rs]
    check_ratings_vary(ratings, path)
    if len(set(repeated)) < 2:
        raise DataError(f"{path or 'the judgments'}: the model gives every pair the same score "
                        f"({repeated[0]:.3f}): Kendall's tau is undefined. Fix: use a trained "
                        "CLIP checkpoint.")
    return float(kendalltau(repeated, flat, variant="c").statistic)


def judgment_scores(model: ClipModel, tokenizer, judgments: pd.DataFrame, flickr8k: Path,
                    path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP-S and RefCLIP-S (N,) of every judged pair, from the images' pixels."""
    texts, refs = judged_texts(judgments, read_flickr8k(flickr8k), path)
    images = sorted(set(judgments["image"]))
    missing = [i for i in images if not (flickr8k / FLICKR_IMAGES / i).is_file()]
    if missing:
        raise DataError(f"{path}: image {missing[0]} not in {flickr8k / FLICKR_IMAGES}. Fix: "
                        "give the Flickr8k folder with --flickr8k (or set FLICKR8K_DIR).")
    embeds = embed_clip_images(model, [flickr8k / FLICKR_IMAGES / i for i in images],
                               model.config.image_size, batch_size=32)
    image_embeds = embeds[[images.index(i) for i in judgments["image"]]]
    text_embeds = embed_texts(model, tokenizer, texts)
    ref_embeds = [embed_texts(model, tokenizer, r) if r else torch.empty(0, text_embeds.shape[1])
                  for r in refs]
    return clip_score(image_embeds, text_embeds), ref_clip_score(image_embeds, text_embeds,
                                                                 ref_embeds)


def human_agreement(model: ClipModel, tokenizer, path: Path, flickr8k: Path) -> dict:
    """Kendall tau-c of CLIP-S and RefCLIP-S with the ratings of a judgments file."""
    judgments = read_judgments(Path(path))
    check_ratings_vary(judgments["ratings"].tolist(), Path(path))  # before any embedding
    clip_s, ref_s = judgment_scores(model, tokenizer, judgments, Path(flickr8k), Path(path))
    ratings = judgments["ratings"].tolist()
    return {"tau_c_clip_s": kendall_tau_c(clip_s, ratings, Path(path)),
            "tau_c_ref_clip_s": kendall_tau_c(ref_s, ratings, Path(path)),
            "pairs": len(judgments), "ratings": sum(len(r) for r in ratings)}
