"""Decoding and preprocessing one image (findings C1-16..C1-19, C1-21, C1-22), within a memory budget.

* The file is opened with ``O_NONBLOCK`` and must be a regular file (``fstat``): a FIFO or device
  that replaced it since the directory was read cannot block the worker.
* Metadata is bounded *before* Pillow reads it. Pillow keeps what it reads while opening - a PNG's
  private chunks whole, every JPEG ``APPn`` segment, text, ICC profiles, TIFF tags - before the image's
  size is known, so a 1 x 1 PNG with a 512 MiB private chunk would cost 512 MiB (twice, while
  ``ImageFile._safe_read`` joins its blocks) outside any budget. PNG chunk lengths are read from their
  headers and checked without reading the chunks; for every format, what ``Image.open`` reads is
  metered and cut at :data:`MAX_METADATA_BYTES` (:class:`MetadataTooLarge`, an error line). WebP is
  the exception: Pillow decodes its canvas while opening, so its size is read from the RIFF header and
  its memory reserved first.
* The memory the image needs is then reserved in the shared :class:`MemoryBudget` before decoding,
  so many workers cannot decode many huge images at once (:mod:`.budget`). The reservation is
  :func:`working_set`: the largest sum of images alive at once along the path *this* image takes -
  decoded, turned upright, made JPEG-compatible (each mode has its own conversion and its own cost),
  rotated, resized, its luminance for the magic number, the JPEG - plus the metadata read. Each step
  closes the image it was made from as soon as the next one exists, so at most two are alive at a
  time. ``tests/case1/test_c1_hardening.py`` measures the peak resident memory of each mode against it.
* It is fully decoded inside the ``with`` block, so a truncated or unreadable file raises here
  (``OSError``, ``UnidentifiedImageError``...) with Pillow's own message.
* The EXIF orientation is applied first (``ImageOps.exif_transpose``): a phone photo stored sideways
  is rotated from the way it is shown, not from the way its pixels are stored (finding C1-35).
* A JPEG that is to be halved is decoded at half scale by libjpeg (``Image.draft``): the profile of
  the client showed the full decode and the bicubic resize as its largest CPU cost.
* The mode is normalised to one JPEG can hold: ``L`` and ``RGB`` stay; 16- and 32-bit grey is scaled
  to 8 bits (not clipped: a 16-bit scan would otherwise be all white), in blocks of rows; other grey
  modes become ``L``; transparent images are composited on white (a classifier sees what a viewer
  sees, not a black background) - grey ones stay grey, a palette is composited colour by colour;
  everything else (CMYK, YCbCr, LAB, HSV...) becomes ``RGB``.
* Rotation (90 degrees counter-clockwise) and resizing (half size) are independent steps; all four
  flag combinations mean what they say. The resize uses the size *after* rotation, in integers,
  never below 1 pixel, so a 1 x 1 image stays 1 x 1. An image that would still be wider or taller
  than JPEG allows (65500 pixels) is refused with that cause before it is decoded.
* The magic number is computed on the luminance of the final image (:mod:`.magic`).
* The JPEG is encoded with ``format="JPEG"`` and an explicit quality, without the source's metadata
  (a GIF's 200 KB comment does not fit in a JPEG, and a JPEG's comment or EXIF is not the API's
  business).

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

from .budget import MemoryBudget
from .magic import ROWS_PER_BLOCK_BYTES, calc_magic_number

JPEG_QUALITY = 90
JPEG_MAX_SIDE = 65_500  # libjpeg's JPEG_MAX_DIMENSION
ORIENTATION_TAG = 0x0112
MAX_METADATA_BYTES = 16 << 20  # what Image.open may read before the pixels (Pillow's own PNG text limit is 64 MiB)
CONVERT_BLOCK_BYTES = 1 << 20  # rows converted at once from 16/32-bit grey (bytes of the source rows)
DECODER_BYTES = 1 << 20  # a decoder's own buffers (rows, zlib window, strips) beside the image it fills
_SWAPS_AXES = {5, 6, 7, 8}  # orientations that transpose the stored image
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}
_WIDE_GREY = {"I", "F", *_SIXTEEN_BIT}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_PIXEL_CHUNKS = {b"IDAT", b"fdAT", b"IEND"}
IMAGE_ERRORS: tuple[type[BaseException], ...] = (OSError, SyntaxError, ValueError, MemoryError,
                                                 Image.DecompressionBombError)
"""What a bad input file can raise while being decoded and prepared (``UnidentifiedImageError``
is an ``OSError``; some Pillow decoders raise ``SyntaxError`` or ``ValueError`` for broken data)."""
_EXIF_ERRORS = (ValueError, TypeError, KeyError, IndexError, SyntaxError, struct.error, OSError)


class NotARegularFile(OSError):
    """The path no longer names a regular file."""


class MetadataTooLarge(OSError):
    """The file holds more metadata than :data:`MAX_METADATA_BYTES` before its pixels."""


class TooLargeForJpeg(ValueError):
    """The image to send would be wider or taller than a JPEG can be."""


@dataclass(frozen=True)
class Prepared:
    jpeg: bytes
    magic: float
    size: tuple[int, int]  # (width, height) of the image that is sent
    mode: str


# --- what each step costs ---------------------------------------------------------------------------

def bytes_per_pixel(mode: str) -> int:
    """Bytes Pillow stores per pixel: 1-band 8-bit modes 1, 16-bit grey 2, everything else 4 (Pillow
    keeps 2-, 3- and 4-band 8-bit images in 4 bytes a pixel, like 32-bit ``I`` and ``F``)."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode in _SIXTEEN_BIT else 4


def decoded_bytes(image: Image.Image) -> int:
    """Bytes Pillow needs for the decoded pixels of ``image`` (from the header, before decoding)."""
    width, height = image.size
    return width * height * bytes_per_pixel(image.mode)


def _transparent(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def normalising_cost(mode: str, transparent: bool, pixels: int) -> tuple[int, int]:
    """``(bytes alive at once while jpeg_compatible runs, besides its input; bytes per pixel of its
    result)`` for an image of ``mode`` - the same branches as :func:`jpeg_compatible`."""
    if mode in ("L", "RGB") and not transparent:
        return 0, bytes_per_pixel(mode)  # the image itself
    if mode in _WIDE_GREY:
        return pixels + 4 * CONVERT_BLOCK_BYTES, 1  # the L result; a block: cropped, its bytes twice, clipped
    if mode == "1":
        return pixels, 1
    if mode == "P" and transparent:
        return pixels + 4 * pixels, 4  # a copy of the indices, then RGB
    if mode in ("LA", "La"):
        extra = 4 * pixels if mode == "La" else 0  # La is made LA first
        return extra + 2 * pixels, 1  # the white L canvas and the L pasted on it
    if mode == "RGBA":
        return 4 * pixels, 4  # the white RGB canvas
    if transparent:  # PA, RGBa, and any mode with a transparency key: RGBA first
        return 8 * pixels, 4
    return 4 * pixels, 4  # CMYK, YCbCr, LAB, HSV, RGBX, P ... -> RGB


def working_set(size: tuple[int, int], mode: str, transparent: bool, oriented: bool, rotate: bool,
                target: tuple[int, int] | None) -> int:
    """Peak bytes of :func:`prepare` for an image decoded at ``size`` in ``mode``.

    ``oriented``: an EXIF orientation other than 1 makes an upright copy; ``target``: the size it is resized to
    (None: not resized). The largest of the moments where the most images are alive at once: the
    decoded one (``D``) and its upright copy; ``D`` and whatever :func:`jpeg_compatible` allocates;
    the normalised image and its rotated copy; that and the resized one; the final image with its
    luminance, the NumPy copy of it and the magic number's block; the final image and its JPEG.
    """
    pixels = size[0] * size[1]
    decoded = pixels * bytes_per_pixel(mode)
    extra, per_pixel = normalising_cost(mode, transparent, pixels)
    normal = pixels * per_pixel
    final_pixels = pixels if target is None else target[0] * target[1]
    final = final_pixels * per_pixel
    luminance = final_pixels if per_pixel > 1 else 0  # the L copy of an RGB image, for the magic number
    channels = 3 if per_pixel > 1 else 1
    moments = [decoded, decoded + extra]
    if oriented:
        moments.append(2 * decoded)
    if rotate:
        moments.append(2 * normal)
    if target is not None:
        moments.append(normal + final)
    moments += [
        final + luminance + 2 * final_pixels,  # np.asarray: Image.tobytes() joins a list of chunks
        final + luminance + final_pixels + min(2 * ROWS_PER_BLOCK_BYTES, 8 * final_pixels),  # two int64 blocks
        final + 2 * final_pixels * channels,  # the JPEG (at most the raw samples) in BytesIO, and its bytes
    ]
    return DECODER_BYTES + max(moments)


# --- the steps -------------------------------------------------------------------------------------

def to_eight_bit_grey(image: Image.Image) -> Image.Image:
    """16- and 32-bit grey scaled to 0..255 (``F`` is clipped: its range is not defined), in blocks of
    rows: a whole-image ``int64`` copy would be 4 to 8 times the decoded image."""
    width, height = image.size
    high = image.getextrema()[1] if width and height else 0
    shift = image.mode in _SIXTEEN_BIT or (image.mode == "I" and high > 255)
    out = np.empty((height, width), np.uint8)
    step = max(1, CONVERT_BLOCK_BYTES // (4 * max(1, width)))
    for top in range(0, height, step):
        block = np.asarray(image.crop((0, top, width, min(height, top + step))))
        if shift:
            block = np.clip(block, 0, 65535)
            block >>= 8
        else:
            block = np.clip(block, 0, 255)
        out[top:top + step] = block
    return Image.fromarray(out)  # shares the array: no copy


def _on_white_palette(image: Image.Image) -> Image.Image:
    """A palette image with a transparent colour (or per-entry alpha) composited on white, entry by
    entry: the same pixels as compositing each pixel, for the cost of the palette."""
    palette = image.getpalette("RGB") or []
    entries = len(palette) // 3
    transparency = image.info.get("transparency")
    if isinstance(transparency, (bytes, bytearray)):
        alphas = list(transparency[:entries]) + [255] * (entries - len(transparency))
    else:
        alphas = [0 if index == transparency else 255 for index in range(entries)]
    if image.palette is not None and image.palette.mode == "RGBA":
        own = image.getpalette("RGBA") or []
        alphas = [min(a, own[4 * i + 3]) for i, a in enumerate(alphas)]
    flat = []
    for index in range(entries):
        alpha = alphas[index]
        flat += [(palette[3 * index + c] * alpha + 255 * (255 - alpha) + 127) // 255 for c in range(3)]
    copy = image.copy()
    copy.info.pop("transparency", None)
    copy.putpalette(flat, "RGB")
    return copy.convert("RGB")


def jpeg_compatible(image: Image.Image) -> Image.Image:
    """``image`` in a mode JPEG can store: L or RGB (transparency composited on white).

    The cost of each branch is :func:`normalising_cost`'s; keep the two in step.
    """
    if image.mode in ("L", "RGB") and not _transparent(image):
        return image
    if image.mode in _WIDE_GREY:
        return to_eight_bit_grey(image)
    if image.mode == "1":
        return image.convert("L")
    if image.mode == "P" and _transparent(image):
        return _on_white_palette(image)
    if image.mode in ("LA", "La"):
        grey = image.convert("LA") if image.mode == "La" else image  # premultiplied: its straight form first
        canvas = Image.new("L", grey.size, 255)
        canvas.paste(grey, mask=grey)  # the L band blended by the A band
        return canvas
    if _transparent(image):
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba)
        return canvas
    return image.convert("RGB")


def orientation(image: Image.Image, decode: bool = True) -> int:
    """The EXIF orientation (1..8; 1 when absent or unreadable).

    ``decode=False`` never decodes the pixels to find it: Pillow's ``PngImageFile.getexif()`` loads
    the whole image when the EXIF chunk is not before the image data.
    """
    if not decode and image.format == "PNG" and "exif" not in image.info:
        return 1
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


def sent_size(size: tuple[int, int], rotate: bool, resize: bool) -> tuple[int, int]:
    """The size of the image that is sent, from the upright size of the image as stored."""
    width, height = size
    if rotate:
        width, height = height, width
    return half_size((width, height)) if resize else (width, height)


def rotated(image: Image.Image) -> Image.Image:
    return image.transpose(Image.Transpose.ROTATE_90)


def resized(image: Image.Image, target: tuple[int, int]) -> Image.Image:
    return image if image.size == target else image.resize(target, Image.Resampling.BICUBIC)


def transform(image: Image.Image, rotate: bool = True, resize: bool = True,
              source_size: tuple[int, int] | None = None) -> Image.Image:
    """Rotate 90 degrees, then halve the (post-rotation) size; each step only when asked (the steps
    :func:`prepare` takes, all at once, for tests and notebooks).

    ``source_size`` is the upright size of the image as stored, when ``image`` was decoded at a
    reduced scale (JPEG draft mode): the result is still half of the full size.
    """
    final = sent_size(source_size or image.size, rotate, resize)
    if rotate:
        image = rotated(image)
    if resize:
        image = resized(image, final)
    return image


def encode_jpeg(image: Image.Image) -> bytes:
    """The pixels as JPEG, without the source's metadata (comments, EXIF, XMP, ICC profile)."""
    buffer = BytesIO()
    info, image.info = image.info, {}  # Pillow's JPEG writer copies info["comment"] into a COM segment
    try:
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    finally:
        image.info = info
    return buffer.getvalue()


# --- reading the file --------------------------------------------------------------------------------

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


class _Metered:
    """A file object that counts what is read through it and refuses to read past ``limit``."""

    def __init__(self, file, limit: int | None):
        self._file = file
        self.limit = limit
        self.count = 0

    def _take(self, data: bytes) -> bytes:
        self.count += len(data)
        if self.limit is not None and self.count > self.limit:
            raise MetadataTooLarge(f"more than {self.limit} bytes of headers and metadata before the pixels "
                                   "(Pillow would hold them in memory before the image's size is known)")
        return data

    def read(self, size: int | None = -1) -> bytes:
        if self.limit is not None and (size is None or size < 0 or size > self.limit - self.count):
            size = self.limit - self.count + 1  # just enough to know it is too much
        return self._take(self._file.read(size))

    def readline(self, size: int | None = -1) -> bytes:
        if self.limit is not None and (size is None or size < 0 or size > self.limit - self.count):
            size = self.limit - self.count + 1
        return self._take(self._file.readline(size))

    def __repr__(self) -> str:  # Pillow names the file in its errors
        return repr(self._file)

    def __getattr__(self, name):  # seek, tell, fileno, close...
        return getattr(self._file, name)


def check_png_chunks(file, limit: int = MAX_METADATA_BYTES) -> None:
    """Walk the chunk headers of a PNG up to its first image data, seeking over the chunks themselves;
    :class:`MetadataTooLarge` when the chunks Pillow would read before the pixels exceed ``limit``."""
    file.seek(len(_PNG_SIGNATURE))
    total = 0
    while True:
        header = file.read(8)
        if len(header) < 8:
            break  # truncated: Pillow says so
        length, name = struct.unpack(">I4s", header)
        if name in _PNG_PIXEL_CHUNKS:
            break
        total += 12 + length
        if total > limit:
            shown = name.decode("latin-1").encode("unicode_escape").decode("ascii")
            raise MetadataTooLarge(f"PNG chunk {shown!r} of {length} bytes: more than {limit} bytes of metadata "
                                   "before the pixels (Pillow would read it whole into memory)")
        file.seek(length + 4, os.SEEK_CUR)
    file.seek(0)


def webp_size(head: bytes) -> tuple[int, int] | None:
    """Canvas (width, height) from the first 30 bytes of a WebP file (VP8X, VP8L or VP8); None if unknown."""
    if len(head) < 30 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return None
    chunk = head[12:16]
    if chunk == b"VP8X":
        return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
    if chunk == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(head[26:28], "little") & 0x3FFF, int.from_bytes(head[28:30], "little") & 0x3FFF
    return None


_UNLIMITED = MemoryBudget(1 << 62)


def _plan(opened: Image.Image, rotate: bool, resize: bool, decode: bool = False) -> tuple[tuple[int, int], bool]:
    """``(size of the image that is sent, whether the EXIF orientation turns it)``; refuses what no
    JPEG can hold before anything is decoded."""
    width, height = opened.size
    turned = orientation(opened, decode) in _SWAPS_AXES
    final = sent_size((height, width) if turned else (width, height), rotate, resize)
    if max(final) > JPEG_MAX_SIDE:
        raise TooLargeForJpeg(f"the image to send would be {final[0]} x {final[1]} pixels: a JPEG holds at most "
                              f"{JPEG_MAX_SIDE} on a side" + ("" if resize else " (it is not resized)"))
    return final, turned


def prepare(path: str, rotate: bool = True, resize: bool = True, budget: MemoryBudget | None = None) -> Prepared:
    """Decode ``path`` and return what is sent to the API; raises one of ``IMAGE_ERRORS``.

    A JPEG that is to be halved is decoded at half scale (``draft``: libjpeg scales while it
    decodes, about a quarter of the work and memory of a full decode followed by a bicubic resize).
    """
    budget = budget or _UNLIMITED
    with open_regular(path) as file:
        head = file.read(30)
        file.seek(0)
        if head.startswith(_PNG_SIGNATURE):
            check_png_chunks(file)
        canvas = webp_size(head)
        if canvas is not None:  # Pillow decodes a WebP while opening it: reserve first, for the costliest mode
            if canvas[0] * canvas[1] > 2 * (Image.MAX_IMAGE_PIXELS or 1 << 62):
                raise Image.DecompressionBombError(f"WebP of {canvas[0]} x {canvas[1]} pixels exceeds twice Pillow's "
                                                   f"limit of {Image.MAX_IMAGE_PIXELS} pixels")
            target = sent_size(canvas, rotate, resize) if resize else None
            # the file's bytes and the decoder's canvas stay with the opened image, beside its frame's bytes
            need = (os.fstat(file.fileno()).st_size + 2 * 4 * canvas[0] * canvas[1]
                    + working_set(canvas, "RGBA", True, True, rotate, target))
            with budget.reserve(need), Image.open(file) as opened:
                return _steps(opened, _plan(opened, rotate, resize, decode=True)[0], rotate, resize)
        metered = _Metered(file, MAX_METADATA_BYTES)
        with Image.open(metered) as opened:  # everything inside: closing invalidates `opened`
            metered.limit = None  # the pixels are read by load(), under the reservation
            final, _ = _plan(opened, rotate, resize)
            if resize and opened.format == "JPEG":
                opened.draft(opened.mode, half_size(opened.size))
            need = metered.count + working_set(opened.size, opened.mode, _transparent(opened),
                                               orientation(opened, decode=False) != 1, rotate,
                                               final if resize else None)
            with budget.reserve(need):
                return _steps(opened, final, rotate, resize)


def _steps(opened: Image.Image, final: tuple[int, int], rotate: bool, resize: bool) -> Prepared:
    """Decode, then each step, closing the image it was made from as soon as the next one exists
    (so :func:`working_set` counts two images at a time, not all of them)."""
    opened.load()
    if opened.format == "PNG":  # its EXIF may come after the pixels: now it is known
        final = _plan(opened, rotate, resize, decode=True)[0]
    steps = [upright, jpeg_compatible]
    if rotate:
        steps.append(rotated)
    if resize:
        steps.append(lambda image: resized(image, final))
    image = opened
    for step in steps:
        following = step(image)
        if following is not image:
            image.close()  # frees its pixels now, not when the function returns
            image = following
    grey = image if image.mode == "L" else image.convert("L")
    magic = calc_magic_number(np.asarray(grey))
    del grey
    return Prepared(encode_jpeg(image), magic, image.size, image.mode)
