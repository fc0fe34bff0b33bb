"""Run settings of each stage: how a model is trained, on which data, with which switches.

The architecture configs (``utils.models``: ``CnnConfig``, ``SmallBertConfig``, ``ClipConfig``)
say what rebuilds a model and go into its checkpoint; these say how it was trained and go into
the metrics JSON and the checkpoint's metadata (``training``). A notebook builds both with
``utils.core.make_configs`` from one OVERRIDES dict: each name goes to the class that has it.
``GPU`` and ``SMOKE`` are the class-level values of the GPU recipe and of the smoke mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from utils.core.common import require_positive

SCHEDULES = ("onecycle", "plateau")
MONITORS = {"val_acc": "max", "val_loss": "min"}
IMAGE_SOURCES = ("checkpoint", "checkpoint_pretrained", "scratch", "efficientnet_lite0",
                 "efficientnet_lite2", "efficientnet_lite0+lite2")
TEXT_SOURCES = ("checkpoint", "scratch")


@dataclass
class CnnTrainConfig:
    """How step 1's image classifier is trained (its architecture: CnnConfig)."""

    seed: int = 0  # seeds weights, augmentation and shuffling
    augment: bool = True  # random resized crop + horizontal flip + colour jitter on training
    crop_scale: tuple[float, float] = (0.35, 1.0)  # area range of the random crops
    color_jitter: float = 0.3  # brightness, contrast, saturation +- this
    batch_size: int = 32  # images per batch (a ragged last training batch is dropped)
    epochs: int = 40  # epochs of the one-cycle schedule (the best validation epoch is kept)
    lr: float = 3e-3  # peak AdamW learning rate of the one-cycle schedule
    warmup: float = 0.2  # share of the steps spent warming the learning rate up
    weight_decay: float = 5e-4  # AdamW weight decay
    label_smoothing: float = 0.1  # training targets 0.9 + 0.1/4 (less over-confident logits)
    schedule: str = "onecycle"  # "onecycle" (per batch) | "plateau" (halve lr when val stalls)
    monitor: str = "val_acc"  # the kept epoch: best "val_acc" (max) or "val_loss" (min)
    patience: int = 40  # epochs without a better monitored value before stopping
    report_seeds: tuple[int, ...] = (0, 1, 2)  # notebook 01: mean +- std over these seeds
    freeze_trunk: bool = True  # pretrained trunks only: train the head on frozen features
    feature_batch_size: int = 8  # frozen trunk: images per batch when caching its features
    # (small batches: on CPU, big 224x224 activations cost more in page faults than in compute)
    limit_batches: int = 0  # training batches per epoch (0: all)
    per_class_limit: int = 0  # images kept per class in each split (0: all); smoke mode: few

    # GPU recipe (T4, not yet measured): twice the batch and the epochs; frozen features cached
    # in big batches (the 128 px input: CnnConfig.GPU).
    GPU: ClassVar[dict] = {"batch_size": 64, "epochs": 80, "patience": 80,
                           "feature_batch_size": 64}
    SMOKE: ClassVar[dict] = {"epochs": 2, "per_class_limit": 8, "batch_size": 16,
                             "report_seeds": (0, 1)}

    def __post_init__(self) -> None:
        """Check the names and sizes, type what JSON gives as lists."""
        require_positive(self, ("batch_size", "epochs", "lr", "patience", "feature_batch_size"))
        if self.schedule not in SCHEDULES or self.monitor not in MONITORS:
            raise ValueError(f"CnnTrainConfig: schedule {self.schedule!r} / monitor "
                             f"{self.monitor!r}: choose among {SCHEDULES} / {sorted(MONITORS)}")
        self.crop_scale = tuple(self.crop_scale)
        self.report_seeds = tuple(self.report_seeds)


@dataclass
class SmallBertTrainConfig:
    """How step 2's SmallBERT classifier is trained (its architecture: SmallBertConfig)."""

    seed: int = 0  # seeds weights, dropout and shuffling
    max_tokens: int = 10_000  # vocabulary cap of the TextVectorizer (most frequent train words)
    batch_size: int = 32  # captions per batch
    epochs: int = 20  # maximum epochs (early stopping usually ends sooner)
    lr: float = 1e-3  # AdamW learning rate
    weight_decay: float = 1e-2  # AdamW weight decay
    patience: int = 5  # epochs without a better validation loss before stopping
    limit_batches: int = 0  # training batches per epoch (0: all)
    per_class_limit: int = 0  # captions kept per class in each split (0: all); smoke mode: few

    GPU: ClassVar[dict] = {"batch_size": 64, "epochs": 40, "patience": 8}  # T4, not measured
    SMOKE: ClassVar[dict] = {"epochs": 2, "per_class_limit": 8, "batch_size": 16}

    def __post_init__(self) -> None:
        """Reject meaningless sizes, naming the field."""
        require_positive(self, ("max_tokens", "batch_size", "epochs", "lr", "patience"))


@dataclass
class ClipTrainConfig:
    """How step 3's CLIP is trained: where its towers come from, its data, its optimiser (its
    architecture: ClipConfig)."""

    seed: int = 0  # seeds weights, caption draws, augmentation and shuffling
    image_source: str = "checkpoint"  # "checkpoint" (step 1's CNN from scratch, 01_cnn.pt) |
    # "checkpoint_pretrained" (step 1's EfficientNet-Lite0 + head, 01_cnn_pretrained.pt) |
    # "scratch" | "efficientnet_lite0" / "_lite2" (ImageNet weights)
    text_source: str = "checkpoint"  # "checkpoint" (02_smallbert.pt encoder) | "scratch"
    freeze_image: bool = False  # freeze the image encoder (its projection still trains)
    freeze_text: bool = False  # freeze the text encoder (its projection still trains)
    captions_per_image: int = 1  # 1: the course subset; 5: Flickr8k's five captions per image
    dataset: str = "course"  # "course" | "flickr8k" (official split) | a CSV/TSV/JSONL file
    augment: bool = True  # crop/flip/colour jitter on training images (trainable image encoder)
    batch_size: int = 32  # image-text pairs per batch: each pair has batch_size - 1 negatives
    epochs: int = 15  # maximum epochs (3-seed validation R@5, issue 23; 2-core CPU: ~11 s)
    lr: float = 1e-3  # AdamW learning rate of the projections and the logit scale
    encoder_lr_scale: float = 1.0  # encoders train at lr * this (0.3 tried: lower val R@5)
    weight_decay: float = 0.05  # AdamW weight decay (matrices only: no biases, norms, scale)
    patience: int = 5  # epochs without a better validation R@5 before stopping (3: lower)
    cache_frozen_features: bool = True  # frozen image encoder: compute its features once
    max_images_per_split: int = 0  # 0: every image; smoke mode keeps a few per split
    compare_variants: bool = True  # also train the "is reuse worth it?" variants

    # GPU recipe (T4, not measured): more negatives per pair.
    GPU: ClassVar[dict] = {"batch_size": 64}
    SMOKE: ClassVar[dict] = {"epochs": 1, "batch_size": 8, "max_images_per_split": 16}

    def __post_init__(self) -> None:
        """Reject unknown tower sources and meaningless sizes, naming the field."""
        require_positive(self, ("batch_size", "epochs", "lr", "patience"), {"batch_size": 2})
        for name, valid in (("image_source", IMAGE_SOURCES), ("text_source", TEXT_SOURCES)):
            if getattr(self, name) not in valid:
                raise ValueError(f"ClipTrainConfig.{name}={getattr(self, name)!r}: choose one "
                                 f"of {valid}")


@dataclass
class CaptionerTrainConfig:
    """How notebook 06's captioner is trained and scored (its architecture: CaptionerConfig)."""

    seed: int = 0  # seeds weights, dropout and shuffling
    min_word_count: int = 5  # a training word seen fewer times reads <unk>
    max_words: int = 25  # training captions cut at this many words (0.2% are longer)
    glove: bool = True  # embeddings start from GloVe 6B-50d; False: random, trained from scratch
    alpha_c: float = 1.0  # weight of the doubly stochastic attention penalty
    batch_size: int = 32  # images per batch, each with its 5 captions
    epochs: int = 5  # maximum epochs (CPU recipe: about 2 min each on 2 cores)
    lr: float = 4e-3  # Adam learning rate
    lr_step: int = 2  # StepLR: the learning rate is multiplied by lr_gamma every lr_step epochs
    lr_gamma: float = 0.5  # StepLR factor
    grad_clip: float = 5.0  # gradients clipped to this global L2 norm
    patience: int = 3  # epochs without a better validation BLEU-4 before stopping
    meteor: bool = True  # METEOR too when Java is present (smoke mode skips its JVM start)
    train_images: int = 0  # images of each split kept (0: all); smoke mode: a few
    val_images: int = 0  # 0: all 1,000 dev images
    test_images: int = 0  # 0: all 1,000 test images
    limit_batches: int = 0  # training batches per epoch (0: all)

    GPU: ClassVar[dict] = {"epochs": 12, "batch_size": 64}  # T4, not measured
    SMOKE: ClassVar[dict] = {"epochs": 1, "train_images": 40, "val_images": 10,
                             "test_images": 10, "batch_size": 8, "meteor": False}

    def __post_init__(self) -> None:
        """Reject meaningless sizes, naming the field."""
        require_positive(self, ("batch_size", "epochs", "lr", "patience"))


@dataclass
class FusionTrainConfig:
    """How notebook 07's networks are trained, on which tags and seeds (their architecture:
    FusionConfig)."""

    seed: int = 0  # first seed; the course runs use seeds seed, seed+1, ...
    seeds: int = 3  # seeds per course variant (the table gives mean and std over them)
    glove: bool = True  # start the word embeddings from GloVe 6B-50d (False: random)
    max_tokens: int = 10_000  # vocabulary cap (most frequent training words)
    batch_size: int = 32  # items per batch (course subset)
    epochs: int = 30  # maximum epochs (early stopping on the validation loss ends sooner)
    lr: float = 2e-3  # AdamW learning rate
    weight_decay: float = 1e-4  # AdamW weight decay
    patience: int = 5  # epochs without a better validation loss before stopping
    n_tags: int = 30  # tags: the most frequent visual nouns of the training captions
    min_mentions: int = 2  # a tag is on when at least this many rule captions mention it
    held_out_caption: int = 0  # the caption the models read; the tags come from the others
    focal_gamma: float = 2.0  # focal loss exponent (0 = binary cross-entropy)
    label_smoothing: float = 0.1  # class head of the multi-task network
    task_weight: float = 1.0  # lambda of L = L_class + lambda * L_tags
    tag_batch_size: int = 128  # items per batch on Flickr8k (tags, multi-task)
    tag_epochs: int = 20  # maximum epochs on Flickr8k
    tag_lr: float = 3e-3  # AdamW learning rate on Flickr8k
    threads: int = 1  # CPU threads while training (0: torch's default); these models are so
    # small that more intra-op threads only add waiting, a lot of it on a busy machine
    per_class_limit: int = 0  # course images kept per class and split (0: all); smoke: few
    flickr_per_split: int = 0  # Flickr8k images kept per official split (0: all); smoke: few

    GPU: ClassVar[dict] = {"threads": 0}  # tiny models: the GPU recipe only frees the threads
    SMOKE: ClassVar[dict] = {"seeds": 2, "epochs": 2, "tag_epochs": 2, "per_class_limit": 4,
                             "flickr_per_split": 16, "n_tags": 8, "batch_size": 16,
                             "tag_batch_size": 16}

    def __post_init__(self) -> None:
        """Reject meaningless sizes, naming the field."""
        require_positive(self, ("seeds", "batch_size", "epochs", "lr", "patience", "n_tags",
                                "tag_batch_size", "tag_epochs", "tag_lr"))
