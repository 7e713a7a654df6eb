"""Decoding and preprocessing one image (findings C1-16..C1-19, C1-21, C1-22).

* The file is opened in a ``with`` block and fully decoded there, so a truncated or unreadable
  file raises here (``OSError``, ``UnidentifiedImageError``...) with Pillow's own message.
* The EXIF orientation is applied first (``ImageOps.exif_transpose``), so "rotate 90 degrees" turns
  the picture a viewer sees, not the sensor's raw pixel grid (finding C1-35).
* The mode is normalised to one JPEG can hold: ``L`` and ``RGB`` stay; other grey modes (``1``,
  ``I``, ``I;16``, ``F``) become ``L``; transparent images are composited on white (a classifier
  sees what a viewer sees, not a black background); everything else becomes ``RGB``.
* Rotation (90 degrees counter-clockwise) and resizing (half size) are independent steps; all four
  flag combinations mean what they say. The resize uses the size *after* rotation, in integers,
  never below 1 pixel, so a 1 x 1 image stays 1 x 1.
* The magic number is computed on the luminance of the final image (:mod:`.magic`).
* The JPEG is encoded with ``format="JPEG"`` and an explicit quality.

Pillow releases the GIL while decoding, rotating and resizing, so this runs well in threads; JPEG
encoding into a ``BytesIO`` holds it (``ImagingEncoder.encode``, finding C1-09).
"""
from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO

import numpy as np
from PIL import Image, ImageOps

from .magic import calc_magic_number

JPEG_QUALITY = 90
_GREY_MODES = {"1", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
IMAGE_ERRORS: tuple[type[BaseException], ...] = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
"""What a bad input file can raise while being decoded and prepared (``UnidentifiedImageError``
is an ``OSError``; some Pillow decoders raise ``SyntaxError`` or ``ValueError`` for broken data)."""


@dataclass(frozen=True)
class Prepared:
    jpeg: bytes
    magic: float
    size: tuple[int, int]  # (width, height) of the image that is sent
    mode: str


def jpeg_compatible(image: Image.Image) -> Image.Image:
    """``image`` in a mode JPEG can store: L or RGB (transparency composited on white)."""
    if image.mode in ("L", "RGB"):
        return image
    if image.mode in _GREY_MODES:
        return image.convert("L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def half_size(size: tuple[int, int]) -> tuple[int, int]:
    """Half of (width, height) in whole pixels, at least 1 each."""
    width, height = size
    return max(1, width // 2), max(1, height // 2)


def transform(image: Image.Image, rotate: bool = True, resize: bool = True) -> Image.Image:
    """Rotate 90 degrees, then halve the (post-rotation) size; each step only when asked."""
    if rotate:
        image = image.transpose(Image.Transpose.ROTATE_90)
    if resize:
        image = image.resize(half_size(image.size), Image.Resampling.BICUBIC)
    return image


def encode_jpeg(image: Image.Image) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def prepare(path: str, rotate: bool = True, resize: bool = True) -> Prepared:
    """Decode ``path`` and return what is sent to the API; raises one of ``IMAGE_ERRORS``."""
    with Image.open(path) as opened:  # everything inside: closing the file invalidates `opened`
        opened.load()
        upright = ImageOps.exif_transpose(opened)
        image = transform(jpeg_compatible(upright), rotate=rotate, resize=resize)
        grey = image if image.mode == "L" else image.convert("L")
        return Prepared(encode_jpeg(image), calc_magic_number(np.asarray(grey)), image.size, image.mode)
