"""CLIP-S / RefCLIP-S, and the human-agreement command on a judgments file the test writes
(real Flickr8k images and captions, made-up ratings: 4 for an image's own caption, 1 for
another image's caption), scored by a small CLIP trained here on Flickr8k images."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from utils.data.course import DataError
from utils.eval.__main__ import main
from utils.eval.clipscore import clip_score, ref_clip_score
from utils.eval.human_agreement import read_judgments
from utils.experiments.benchmark import BenchmarkConfig, run_variant, variant_configs
from utils.models.clip import save_clip
from utils.train.clip import load_clip_frame


def test_clip_score_is_w_times_the_positive_cosine() -> None:
    images = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    texts = F.normalize(torch.tensor([[1.0, 1.0], [-1.0, 0.0], [0.0, 1.0]]), dim=-1)
    assert clip_score(images, texts).tolist() == pytest.approx([2.5 * 2 ** -0.5, 0.0, 2.5])


def test_ref_clip_score_is_the_harmonic_mean_with_the_best_reference() -> None:
    images = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    texts = torch.tensor([[0.6, 0.8], [-1.0, 0.0]])
    refs = [torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([[0.0, 1.0]])]
    clip_s, best_ref = 2.5 * 0.6, 0.8  # second pair: CLIP-S 0 and reference 0 -> 0
    expected = 2 * clip_s * best_ref / (clip_s + best_ref)
    assert ref_clip_score(images, texts, refs).tolist() == pytest.approx([expected, 0.0])


def test_a_bad_rating_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = tmp_path / "judgments.txt"
    path.write_text("a.jpg\tb.jpg#0\t1\t2\t3\na.jpg\tb.jpg#1\t1\t5\t3\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"judgments.txt, line 2: ratings .* 1-4"):
        read_judgments(path)


@pytest.fixture(scope="module")
def small_clip(flickr8k_dir, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A CLIP (frozen Lite0 + MiniLM, trained MLP projections) fitted on 16 Flickr8k training
    images, saved; and the names of those training images."""
    config = BenchmarkConfig(max_images_per_split=16, pretrained_epochs=30,
                             pretrained_batch_size=16, patience=30)
    frame, root = load_clip_frame(variant_configs(config, "pretrained")[1])
    run, index, test = run_variant(config, "pretrained", frame, root)
    path = tmp_path_factory.mktemp("clip") / "small_clip.pt"
    save_clip(path, run.model, run.tokenizer, run.best_epoch, {"test": test}, index)
    return path, sorted(frame.loc[frame["split"] == "train", "image_path"].unique())


def write_judgments(path: Path, images: list[str], own: int, other: int) -> Path:
    """Each image judged twice: its own caption #0 rated ``own``, the next image's #0 ``other``."""
    lines = []
    for image, neighbour in zip(images, images[1:] + images[:1], strict=True):
        lines.append(f"{image}\t{image}#0\t{own}\t{own}\t{own}")
        lines.append(f"{image}\t{neighbour}#0\t{other}\t{other}\t{other}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tau_line(capsys: pytest.CaptureFixture, judgments: Path, checkpoint: Path) -> list[float]:
    """Run the command; the two tau-c values it prints (CLIP-S, RefCLIP-S)."""
    assert main(["human_agreement", "--judgments", str(judgments),
                 "--checkpoint", str(checkpoint)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("Kendall"))
    return [float(line.split("CLIP-S:")[1].split()[0]),
            float(line.split("RefCLIP-S:")[1].split()[0])]


def test_human_agreement_follows_the_ratings(small_clip, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    checkpoint, images = small_clip
    start = time.perf_counter()
    right = tau_line(capsys, write_judgments(tmp_path / "a.txt", images, 4, 1), checkpoint)
    reversed_ = tau_line(capsys, write_judgments(tmp_path / "b.txt", images, 1, 4), checkpoint)
    print(f"tau-c (CLIP-S, RefCLIP-S): {right} / reversed ratings {reversed_} "
          f"({time.perf_counter() - start:.1f} s)")
    assert right[0] > 0.3 and right[1] > 0.3
    assert reversed_ == pytest.approx([-right[0], -right[1]], abs=1e-3)


def test_a_missing_checkpoint_is_a_clear_error(tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    judgments = write_judgments(tmp_path / "j.txt", ["a.jpg", "b.jpg"], 4, 1)
    assert main(["human_agreement", "--judgments", str(judgments),
                 "--checkpoint", str(tmp_path / "none.pt")]) == 1
    assert "none.pt: not found. Fix:" in capsys.readouterr().err
