"""The one image loader of the project: every image that enters it (a dataset and its check,
training, a gallery, the captioner, an upload on the search page) is opened by ``open_rgb``.

* Any mode becomes 8-bit RGB: transparency is laid on white; 16-bit and 32-bit integer greys
  are scaled to 0-255 (a 16-bit PNG is not clipped to white), float greys by their range; a
  mode with no RGB form is refused by name.
* An image of more than ``MAX_IMAGE_PIXELS`` pixels is refused by name before it is decoded:
  a small file can declare huge dimensions (a decompression bomb) and fill the memory.
* Paths of a dataset stay inside its folder (``inside_folder``).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError
from torchvision.transforms.v2 import functional as F

MAX_IMAGE_PIXELS = 50_000_000  # 50 megapixels: any camera photo; 8k x 8k is refused
INTEGER_GREYS = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class ImageError(ValueError):
    """An image the project will not decode; the message names the file and the fix."""


def source_name(source: str | Path | BinaryIO, name: str | None) -> str:
    """How to name an image in a message: its given name, else its path."""
    return name or (str(source) if isinstance(source, (str, Path)) else "the image")


def check_size(image: Image.Image, name: str) -> None:
    """Refuse an image whose declared size exceeds MAX_IMAGE_PIXELS (nothing decoded yet)."""
    pixels = image.width * image.height
    if pixels > MAX_IMAGE_PIXELS:
        raise ImageError(f"{name}: {image.width} x {image.height} pixels ({pixels / 1e6:.0f} "
                         f"megapixels), over the {MAX_IMAGE_PIXELS // 1_000_000} megapixels "
                         "this project decodes (a larger image may be a decompression bomb). "
                         "Fix: resize it, e.g. to 2000 pixels on its long side.")


def scaled_grey(image: Image.Image) -> Image.Image:
    """A 16/32-bit integer or float grey image -> 8-bit 'L', its range scaled, not clipped."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16"):
        top = 65535.0
    elif image.mode == "I":
        top = 255.0 if values.max(initial=0) <= 255 else \
            65535.0 if values.max() <= 65535 else float(values.max())
    else:  # "F": [0, 1] floats, or any other range
        top = 1.0 if values.max(initial=0) <= 1.0 else float(values.max())
    scaled = np.clip(values, 0, None) * (255.0 / max(top, 1e-12))
    return Image.fromarray(np.rint(scaled).clip(0, 255).astype(np.uint8), mode="L")


def to_rgb(image: Image.Image, name: str = "the image") -> Image.Image:
    """Any PIL image -> 8-bit RGB (see the module's rules)."""
    if image.mode in INTEGER_GREYS or image.mode == "F":
        image = scaled_grey(image)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise ImageError(f"{name}: a {image.mode} image, which has no RGB form here. Fix: "
                         "save it as an RGB (or grey) JPEG or PNG.") from error


def open_image(source: str | Path | BinaryIO, label: str) -> Image.Image:
    """Open an image lazily (its header only) and refuse it by name when oversized."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(source)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageError(f"{label}: {error}. Fix: resize it, e.g. to 2000 pixels on its "
                             "long side.") from error
    try:
        check_size(image, label)
    except ImageError:
        image.close()
        raise
    return image


def open_rgb(source: str | Path | BinaryIO, name: str | None = None) -> Image.Image:
    """Open an image file (or bytes stream) as 8-bit RGB, refusing oversized ones by name."""
    label = source_name(source, name)
    with open_image(source, label) as image:
        image.load()
        return to_rgb(image, label)


def decode_image(path: Path, size: int) -> torch.Tensor:
    """One image file -> uint8 tensor (3,size,size), any mode converted to RGB."""
    return F.pil_to_tensor(resized(open_rgb(path), size))


def resized(image: Image.Image, size: int) -> Image.Image:
    """An RGB image resized to (size, size) the way every image of the project is."""
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
    return image


def image_error(path: Path) -> str | None:
    """Why an image file cannot be used, or None: not decodable to the end (a cut JPEG
    fails even if a library relaxed that), too large, or a mode without RGB form."""
    relaxed = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        open_rgb(path)
    except ImageError as error:
        return str(error).removeprefix(f"{path}: ")
    except Exception as error:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError...
        return f"{type(error).__name__}: {error}"
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = relaxed
    return None


def image_from_bytes(data: bytes, name: str, formats: tuple[str, ...] = ()) -> Image.Image:
    """Uploaded bytes -> RGB image; ImageError naming the upload when it is not an image, not
    one of ``formats`` (PIL's names, e.g. "JPEG"; empty: any) or too large."""
    try:
        with open_image(io.BytesIO(data), name) as probe:
            kind = probe.format
        if formats and kind not in formats:
            raise ImageError(f"{name}: a {kind} image; give a {' or '.join(formats[:2])} file "
                             "instead")
        return open_rgb(io.BytesIO(data), name)
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ImageError(f"{name}: not a readable image ({error}). Fix: give a JPEG or PNG "
                         "file.") from error


def inside_folder(root: Path, relative: str) -> bool:
    """True when ``root / relative`` stays inside ``root`` (no absolute path, no '..' out)."""
    if not relative or Path(relative).is_absolute():
        return False
    base = Path(root).resolve()
    return (base / relative).resolve().is_relative_to(base)
