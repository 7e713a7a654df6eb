"""Decoding and preprocessing one image (findings C1-16..C1-19, C1-21, C1-22).

* The file is opened with ``O_NONBLOCK`` and must be a regular file (``fstat``): a FIFO or device
  that replaced it since the directory was read cannot block the worker.
* Its decoded size is estimated from the header and reserved in the shared :class:`MemoryBudget`
  before decoding, so many workers cannot decode many huge images at once (:mod:`.budget`).
* It is fully decoded inside the ``with`` block, so a truncated or unreadable file raises here
  (``OSError``, ``UnidentifiedImageError``...) with Pillow's own message.
* The EXIF orientation is applied first (``ImageOps.exif_transpose``): a phone photo stored sideways
  is rotated from the way it is shown, not from the way its pixels are stored (finding C1-35).
* A JPEG that is to be halved is decoded at half scale by libjpeg (``Image.draft``): the profile of
  the client showed the full decode and the bicubic resize as its largest CPU cost.
* The mode is normalised to one JPEG can hold: ``L`` and ``RGB`` stay; 16- and 32-bit grey is scaled
  to 8 bits (not clipped: a 16-bit scan would otherwise be all white); other grey modes become ``L``;
  transparent images are composited on white (a classifier sees what a viewer sees, not a black
  background); everything else (CMYK, YCbCr, LAB, HSV...) becomes ``RGB``.
* Rotation (90 degrees counter-clockwise) and resizing (half size) are independent steps; all four
  flag combinations mean what they say. The resize uses the size *after* rotation, in integers,
  never below 1 pixel, so a 1 x 1 image stays 1 x 1.
* The magic number is computed on the luminance of the final image (:mod:`.magic`).
* The JPEG is encoded with ``format="JPEG"`` and an explicit quality.

Pillow releases the GIL while decoding, rotating and resizing, so this runs well in threads; JPEG
encoding into a ``BytesIO`` holds it (``ImagingEncoder.encode``, finding C1-09).
"""
from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass
from io import BytesIO

import numpy as np
from PIL import Image, ImageOps

from .budget import WORKING_SET_FACTOR, MemoryBudget
from .magic import calc_magic_number

JPEG_QUALITY = 90
ORIENTATION_TAG = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}  # orientations that transpose the stored image
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}
_GREY_MODES = {"1", "I", "F", *_SIXTEEN_BIT}
_TRANSPARENT_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
IMAGE_ERRORS: tuple[type[BaseException], ...] = (OSError, SyntaxError, ValueError, MemoryError,
                                                 Image.DecompressionBombError)
"""What a bad input file can raise while being decoded and prepared (``UnidentifiedImageError``
is an ``OSError``; some Pillow decoders raise ``SyntaxError`` or ``ValueError`` for broken data)."""
_EXIF_ERRORS = (ValueError, TypeError, KeyError, IndexError, SyntaxError, struct.error, OSError)


class NotARegularFile(OSError):
    """The path no longer names a regular file."""


@dataclass(frozen=True)
class Prepared:
    jpeg: bytes
    magic: float
    size: tuple[int, int]  # (width, height) of the image that is sent
    mode: str


def decoded_bytes(image: Image.Image) -> int:
    """Bytes Pillow needs for the decoded pixels of ``image`` (from the header, before decoding)."""
    width, height = image.size
    per_pixel = {"1": 1, "L": 1, "P": 1, "I": 4, "F": 4, "LA": 4, "PA": 4, "La": 4}.get(image.mode)
    if per_pixel is None:
        per_pixel = 2 if image.mode in _SIXTEEN_BIT else 4  # Pillow stores 3- and 4-band images in 4 bytes
    return width * height * per_pixel


def to_eight_bit_grey(image: Image.Image) -> Image.Image:
    """16- and 32-bit grey scaled to 0..255 (``F`` is clipped: its range is not defined)."""
    array = np.asarray(image)
    if image.mode in _SIXTEEN_BIT or (image.mode == "I" and array.size and array.max() > 255):
        scaled = np.clip(array.astype(np.int64), 0, 65535) >> 8
    else:
        scaled = np.clip(array, 0, 255)
    return Image.fromarray(scaled.astype(np.uint8), "L")


def jpeg_compatible(image: Image.Image) -> Image.Image:
    """``image`` in a mode JPEG can store: L or RGB (transparency composited on white)."""
    if image.mode in ("L", "RGB"):
        return image
    if image.mode in _SIXTEEN_BIT or image.mode in ("I", "F"):
        return to_eight_bit_grey(image)
    if image.mode in _GREY_MODES:
        return image.convert("L")
    if image.mode in _TRANSPARENT_MODES or "transparency" in image.info:
        if image.mode in ("RGBa", "La"):  # premultiplied alpha: Pillow converts these only to their straight form
            image = image.convert("RGBA" if image.mode == "RGBa" else "LA")
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def orientation(image: Image.Image) -> int:
    """The EXIF orientation (1..8; 1 when absent or unreadable)."""
    try:
        value = image.getexif().get(ORIENTATION_TAG, 1)
    except _EXIF_ERRORS:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; broken EXIF data is ignored (the pixels are still an image)."""
    if orientation(image) == 1:
        return image  # exif_transpose would return a copy: a full-size allocation for nothing
    try:
        return ImageOps.exif_transpose(image)
    except _EXIF_ERRORS:
        return image


def half_size(size: tuple[int, int]) -> tuple[int, int]:
    """Half of (width, height) in whole pixels, at least 1 each."""
    width, height = size
    return max(1, width // 2), max(1, height // 2)


def transform(image: Image.Image, rotate: bool = True, resize: bool = True,
              source_size: tuple[int, int] | None = None) -> Image.Image:
    """Rotate 90 degrees, then halve the (post-rotation) size; each step only when asked.

    ``source_size`` is the upright size of the image as stored, when ``image`` was decoded at a
    reduced scale (JPEG draft mode): the result is still half of the full size.
    """
    width, height = source_size or image.size
    if rotate:
        image = image.transpose(Image.Transpose.ROTATE_90)
        width, height = height, width
    if resize:
        target = half_size((width, height))
        if image.size != target:
            image = image.resize(target, Image.Resampling.BICUBIC)
    return image


def encode_jpeg(image: Image.Image) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _nonblocking(path, flags):
    return os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC)


def open_regular(path: str):
    """A binary file object for ``path``, which must be a regular file; never blocks on a FIFO."""
    file = open(path, "rb", opener=_nonblocking)  # noqa: SIM115 - returned to the caller
    try:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise NotARegularFile(f"not a regular file: {path!r}")
    except BaseException:
        file.close()
        raise
    return file


_UNLIMITED = MemoryBudget(1 << 62)


def prepare(path: str, rotate: bool = True, resize: bool = True, budget: MemoryBudget | None = None) -> Prepared:
    """Decode ``path`` and return what is sent to the API; raises one of ``IMAGE_ERRORS``.

    A JPEG that is to be halved is decoded at half scale (``draft``: libjpeg scales while it
    decodes, about a quarter of the work and memory of a full decode followed by a bicubic resize).
    """
    with open_regular(path) as file, Image.open(file) as opened:  # everything inside: closing invalidates `opened`
        width, height = opened.size
        upright_size = (height, width) if orientation(opened) in _SWAPS_AXES else (width, height)
        if resize and opened.format == "JPEG":
            opened.draft(opened.mode, half_size((width, height)))
        with (budget or _UNLIMITED).reserve(decoded_bytes(opened) * WORKING_SET_FACTOR):
            opened.load()
            image = transform(jpeg_compatible(upright(opened)), rotate=rotate, resize=resize,
                              source_size=upright_size)
            grey = image if image.mode == "L" else image.convert("L")
            return Prepared(encode_jpeg(image), calc_magic_number(np.asarray(grey)), image.size, image.mode)
