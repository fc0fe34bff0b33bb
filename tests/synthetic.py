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


FLICKR_SUBJECTS = ("dog", "man", "boy", "girl", "child", "woman")
FLICKR_SCENES = {"ball": "plays with a ball on the grass", "bike": "rides a bike in the park",
                 "dog": "runs on the beach", "water": "swims in the water near a rock"}
FLICKR_EXTRAS = ("in the snow", "near a tree", "by the street", "with a hat", "")


def flickr_caption(label: str, subject: str, extra: str) -> str:
    """One Flickr8k-style caption: 'A boy rides a bike in the park near a tree .'"""
    if label == "dog":
        subject = "dog"
    return " ".join(f"A {subject} {FLICKR_SCENES[label]} {extra} .".split())


def make_synthetic_flickr8k(out: Path, per_split: dict[str, int] | None = None,
                            seed: int = 0) -> Path:
    """Write ``out`` in Flickr8k's layout (Flicker8k_Dataset/, Flickr8k_text/ with the token,
    lemma and split files): small drawn images, 5 captions each naming visible nouns."""
    per_split = per_split or {"train": 40, "val": 12, "test": 12}
    rng = random.Random(seed)
    images, text = out / "Flicker8k_Dataset", out / "Flickr8k_text"
    images.mkdir(parents=True, exist_ok=True)
    text.mkdir(parents=True, exist_ok=True)
    lines, split_lists, number = [], {}, 0
    for split, count in per_split.items():
        split_lists[split] = []
        for _ in range(count):
            label = CLASSES[number % len(CLASSES)]
            name = f"{1000 + number}_{rng.getrandbits(40):010x}.jpg"
            draw_image(label, rng).save(images / name, quality=90)
            for index in range(5):
                caption = flickr_caption(label, rng.choice(FLICKR_SUBJECTS),
                                         rng.choice(FLICKR_EXTRAS))
                lines.append(f"{name}#{index}\t{caption}")
            split_lists[split].append(name)
            number += 1
    token = "\n".join(lines) + "\n"
    (text / "Flickr8k.token.txt").write_text(token, encoding="utf-8")
    (text / "Flickr8k.lemma.token.txt").write_text(token.lower(), encoding="utf-8")
    files = {"train": "Flickr_8k.trainImages.txt", "val": "Flickr_8k.devImages.txt",
             "test": "Flickr_8k.testImages.txt"}
    for split, names in split_lists.items():
        (text / files[split]).write_text("\n".join(names) + "\n", encoding="utf-8")
    return out
