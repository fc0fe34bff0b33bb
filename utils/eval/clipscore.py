"""CLIPScore and RefCLIPScore (Hessel et al. 2021, "CLIPScore: A Reference-free Evaluation
Metric for Image Captioning"): how well a caption fits an image, by a CLIP model's cosine.

    CLIP-S(c, v)        = w * max(cos(c, v), 0)                    with w = 2.5
    RefCLIP-S(c, R, v)  = harmonic mean of CLIP-S(c, v) and max(max_r cos(c, r), 0)

Every embedding is L2-normalised (a row of ``ClipModel.encode_image`` / ``encode_text``), so a
dot product is the cosine.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from utils.core.device import autocast
from utils.data.datasets import ImageFiles, make_loader

CLIP_S_WEIGHT = 2.5  # Hessel et al.'s w: stretches the cosines of CLIP ViT-B/32 towards [0, 1]


def clip_score(image_embeds: torch.Tensor, text_embeds: torch.Tensor,
               weight: float = CLIP_S_WEIGHT) -> torch.Tensor:
    """CLIP-S of each (image, caption) pair: image_embeds (N,E), text_embeds (N,E) -> (N,)."""
    if image_embeds.shape != text_embeds.shape:
        raise ValueError(f"image_embeds {tuple(image_embeds.shape)} and text_embeds "
                         f"{tuple(text_embeds.shape)}: one caption per image, same size")
    cosine = (image_embeds.float() * text_embeds.float()).sum(dim=-1)
    return weight * cosine.clamp(min=0)


def reference_similarity(text_embeds: torch.Tensor, ref_embeds: Sequence[torch.Tensor]
                         ) -> torch.Tensor:
    """max(max over references of cos(caption, reference), 0): (N,E), N x (R_i,E) -> (N,)."""
    if len(ref_embeds) != len(text_embeds):
        raise ValueError(f"{len(text_embeds)} captions but {len(ref_embeds)} reference sets")
    best = [(refs.float() @ text.float()).max() if len(refs) else torch.tensor(0.0)
            for text, refs in zip(text_embeds, ref_embeds, strict=True)]
    return torch.stack(best).clamp(min=0)


def ref_clip_score(image_embeds: torch.Tensor, text_embeds: torch.Tensor,
                   ref_embeds: Sequence[torch.Tensor], weight: float = CLIP_S_WEIGHT
                   ) -> torch.Tensor:
    """RefCLIP-S: harmonic mean of CLIP-S and the best reference cosine (0 when either is 0):
    image_embeds (N,E), text_embeds (N,E), ref_embeds N x (R_i,E) -> (N,)."""
    clip_s = clip_score(image_embeds, text_embeds, weight)
    refs = reference_similarity(text_embeds, ref_embeds)
    total = clip_s + refs
    return torch.where(total > 0, 2 * clip_s * refs / total.clamp(min=1e-12),
                       torch.zeros_like(total))


@torch.no_grad()
def embed_clip_images(model: torch.nn.Module, files: Sequence[Path], image_size: int,
                      batch_size: int = 64) -> torch.Tensor:
    """Image files -> CLIP unit embeddings (N,E) float32 on the CPU, decoded like CLIP's
    evaluation images (resize to ``image_size``, ImageNet normalisation)."""
    model.eval()
    device = next(model.parameters()).device
    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: image not found ({len(missing)} missing); "
                                "give existing image files")
    chunks = []
    for (batch,) in make_loader(ImageFiles(files, image_size), batch_size, shuffle=False):
        with autocast(device):
            chunks.append(model.encode_image(batch.to(device, non_blocking=True)).float())
    return torch.cat(chunks).cpu()
