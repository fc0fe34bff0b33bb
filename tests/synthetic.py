"""A small course-format dataset the tests generate when Flickr8k is absent (a fresh clone).

Each class gets its own colours and shape, so the models of the fast tests have something real
to learn; captions name the class like the course's do ("A dog runs ...").
"""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw

from utils.data.course import CLASSES

SUBJECTS = {"ball": ("A red ball", "Two kids kick a ball", "A ball on the sand"),
            "bike": ("A man rides a bike", "A cyclist on a bike path", "Two bikers race"),
            "dog": ("A dog runs on the grass", "A black dog jumps", "Two dogs play together"),
            "water": ("A boy swims in the water", "People splash in the water",
                      "A surfer rides the water")}
ENDINGS = ("in the park .", "near the trees .", "on a sunny day .", "at the beach .", ".")
COLOURS = {"ball": (200, 40, 40), "bike": (40, 160, 40), "dog": (120, 80, 40),
           "water": (30, 90, 210)}


def draw_image(label: str, rng: random.Random, size: int = 64) -> Image.Image:
    """A background of the class colour with noise, and a class-specific shape."""
    base = COLOURS[label]
    image = Image.new("RGB", (size, size), tuple(min(255, c + rng.randint(-30, 30)) for c in base))
    draw = ImageDraw.Draw(image)
    x, y = rng.randint(4, size // 2), rng.randint(4, size // 2)
    box = [x, y, x + size // 3, y + size // 3]
    shape = {"ball": draw.ellipse, "bike": draw.rectangle, "dog": draw.polygon,
             "water": draw.line}[label]
    if label == "dog":
        shape([(x, y + size // 3), (x + size // 6, y), (x + size // 3, y + size // 3)],
              fill=(250, 250, 250))
    elif label == "water":
        shape(box, fill=(250, 250, 250), width=4)
    else:
        shape(box, fill=(250, 250, 250))
    return image


def make_synthetic_subset(out: Path, per_class: int = 150, captions_per_image: int = 1,
                          seed: int = 0) -> Path:
    """Write ``out`` in the course layout: captions.csv, captions/, images/<class>/."""
    rng = random.Random(seed)
    rows = []
    for label in CLASSES:
        (out / "images" / label).mkdir(parents=True, exist_ok=True)
        for number in range(1, per_class + 1):
            stem = f"{label}_{number:03d}"
            draw_image(label, rng).save(out / "images" / label / f"{stem}.jpg", quality=90)
            combos = [f"{s} {e}" for s in SUBJECTS[label] for e in ENDINGS]
            captions = rng.sample(combos, captions_per_image)  # distinct, as Flickr8k's are
            rows += [(f"images/{label}/{stem}.jpg", label, c) for c in captions]
            (out / "captions").mkdir(exist_ok=True)
            (out / "captions" / f"{stem}.txt").write_text("\n".join(captions) + "\n",
                                                          encoding="utf-8")
    frame = pd.DataFrame(rows, columns=["image_path", "label", "caption"])
    frame.to_csv(out / "captions.csv", index=False, encoding="utf-8", lineterminator="\n")
    return out
