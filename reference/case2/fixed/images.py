"""What counts as an image: decoded, not sniffed, at a bounded cost.

An upload is accepted when Pillow identifies it as one of ``FORMATS``, its declared size is
within the pixel limit (checked on the header, before any pixel is decoded, so a
decompression bomb costs nothing), its pixels decode completely (a truncated or corrupt file
fails here), and the file ends where the format says the image ends (a polyglot, an image with
another file appended, is refused). A signature check accepts all three of those.

Cost. What a decoder spends is not bounded by the pixel limit alone: each scan of a
progressive JPEG passes over every block of the image again (a 5000 x 5000 file of 1.1 MB with
one scan repeated 24 000 times took 95 s of CPU to decode), and the container parsers of
Pillow walk JPEG markers and PNG chunks in Python, holding the GIL (7 MB of empty COM segments
or of empty PNG chunks cost seconds each). So the container is walked first, by this module,
in bounded steps (C-speed searches through entropy-coded data, counted segments) before Pillow
sees it, and refused when it has more than ``MAX_JPEG_SCANS`` scans, ``MAX_JPEG_SEGMENTS``
markers, ``MAX_PNG_CHUNKS`` chunks or ``MAX_GIF_BLOCKS`` GIF blocks. Ordinary images are far
below these: a progressive JPEG has about 10 scans, a 10 MiB PNG in libpng's 8 KiB IDAT chunks
about 1300 chunks. With the pixel limit, the caps bound the decoding work of any accepted
upload to a few times that of a plain image of the largest size
(``test_hostile_input.py`` measures it as that ratio).

Why caps rather than a decode in a separate process with a time limit: a time limit refuses
the same file or not depending on how loaded the machine is, a fork and a copy of up to 10 MiB
per upload cost more than the check itself, and the expensive inputs are known structures that
can be counted. What a process would add is isolation from a crash of a decoder (a memory bug
in libjpeg or libwebp takes the worker down; gunicorn starts another, the reconciler cleans
up): that is kept updated Pillow, not this module.
"""
from __future__ import annotations

import io
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from .errors import InvalidField

MAX_JPEG_SCANS = 100
MAX_JPEG_SEGMENTS = 1024
MAX_PNG_CHUNKS = 4096
MAX_GIF_BLOCKS = 100_000


@dataclass(frozen=True)
class ImageKind:
    mime: str
    ext: str


FORMATS = {
    "PNG": ImageKind("image/png", "png"),
    "JPEG": ImageKind("image/jpeg", "jpg"),
    "GIF": ImageKind("image/gif", "gif"),
    "WEBP": ImageKind("image/webp", "webp"),
    "BMP": ImageKind("image/bmp", "bmp"),
}


class MalformedImage(ValueError):
    """The container structure is broken (the walk ran off the end of the data)."""


class TooComplex(ValueError):
    """The container has more parts than any ordinary image (the caps above)."""


def _count(counter: list[int], cap: int, what: str) -> None:
    counter[0] += 1
    if counter[0] > cap:
        raise TooComplex(f"more than {cap} {what}")


def _png_end(data: bytes) -> int:
    pos, chunks = 8, [0]
    while True:
        length, kind = struct.unpack_from(">I4s", data, pos)
        _count(chunks, MAX_PNG_CHUNKS, "PNG chunks")
        pos += 12 + length
        if kind == b"IEND":
            return pos


_FILL = re.compile(rb"\xff+")  # a marker's 0xFF, with any fill bytes before it
# The end of entropy-coded data: 0xFF not followed by a stuffed 0x00 or a restart marker.
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7]")


def _jpeg_end(data: bytes) -> int:
    pos, segments, scans = 2, [0], [0]
    while True:
        fill = _FILL.match(data, pos)
        if fill is None:
            raise MalformedImage("expected a JPEG marker")
        marker = data[fill.end()]
        pos = fill.end() + 1
        _count(segments, MAX_JPEG_SEGMENTS, "JPEG markers")
        if marker == 0xD9:  # EOI
            return pos
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # no length
            continue
        (length,) = struct.unpack_from(">H", data, pos)
        pos += length
        if marker == 0xDA:  # SOS: entropy-coded data up to the next real marker
            _count(scans, MAX_JPEG_SCANS, "JPEG scans")
            end = _SCAN_END.search(data, pos)
            if end is None:
                raise MalformedImage("scan data runs to the end of the file")
            pos = end.start()


def _gif_end(data: bytes) -> int:
    blocks = [0]

    def skip_sub_blocks(pos: int) -> int:
        while data[pos]:
            _count(blocks, MAX_GIF_BLOCKS, "GIF blocks")
            pos += 1 + data[pos]
        return pos + 1

    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while True:
        block = data[pos]
        _count(blocks, MAX_GIF_BLOCKS, "GIF blocks")
        if block == 0x3B:  # trailer
            return pos + 1
        if block == 0x21:  # extension: label, sub-blocks
            pos = skip_sub_blocks(pos + 2)
        elif block == 0x2C:  # image descriptor, local colour table, LZW code size, data
            flags = data[pos + 9]
            pos += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
            pos = skip_sub_blocks(pos + 1)
        else:
            raise MalformedImage("unknown GIF block")


def _webp_end(data: bytes) -> int:
    (size,) = struct.unpack_from("<I", data, 4)
    return 8 + size + (size & 1)


def _bmp_end(data: bytes) -> int:
    (size,) = struct.unpack_from("<I", data, 2)
    return size


_END: dict[str, Callable[[bytes], int]] = {
    "PNG": _png_end, "JPEG": _jpeg_end, "GIF": _gif_end, "WEBP": _webp_end, "BMP": _bmp_end}

# The signature of each format, for walking the container before Pillow reads it.
_SIGNATURES = (("PNG", b"\x89PNG\r\n\x1a\n"), ("JPEG", b"\xff\xd8"), ("GIF", b"GIF87a"),
               ("GIF", b"GIF89a"), ("WEBP", b"RIFF"), ("BMP", b"BM"))


def _unsupported(field: str) -> InvalidField:
    return InvalidField(field, "image is not in a supported format "
                               f"({', '.join(k.mime for k in FORMATS.values())})")


def _walk(data: bytes, field: str) -> tuple[str, int]:
    """(format by signature, where the image ends by the container's structure); refused
    when the structure is broken or has more parts than the caps allow."""
    fmt = next((f for f, signature in _SIGNATURES if data.startswith(signature)), None)
    if fmt is None:
        raise _unsupported(field)
    try:
        return fmt, _END[fmt](data)
    except TooComplex as exc:
        raise InvalidField(field, f"image structure is too complex: {exc}") from None
    except (MalformedImage, IndexError, struct.error):
        raise InvalidField(field, "image structure is broken") from None


def inspect_image(data: bytes, max_pixels: int, field: str = "image") -> ImageKind:
    """The kind of a valid image; ``InvalidField`` (400) naming why it is not one."""
    fmt, end = _walk(data, field)  # bounded work, before any decoder runs
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as image:
            kind = FORMATS[image.format]
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidField(field, f"image has {width}x{height} pixels, "
                                          f"more than the limit of {max_pixels}")
            image.load()  # decode every pixel of the (first) frame
    except InvalidField:
        raise
    except Image.DecompressionBombError:
        raise InvalidField(field, f"image has more than {max_pixels} pixels") from None
    except UnidentifiedImageError:
        raise _unsupported(field) from None
    except Exception as exc:  # noqa: BLE001 - hostile input may break a decoder in any way
        raise InvalidField(field, f"image does not decode: {type(exc).__name__}: {exc}") from None
    if end != len(data):
        raise InvalidField(field, f"image ends at byte {end} but the upload has {len(data)} "
                                  "bytes: data outside the image is refused")
    return kind
