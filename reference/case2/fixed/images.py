"""What counts as an image: decoded, not sniffed.

An upload is accepted when Pillow identifies it as one of ``FORMATS``, its declared size is
within the pixel limit (checked on the header, before any pixel is decoded, so a
decompression bomb costs nothing), its pixels decode completely (a truncated or corrupt file
fails here), and the file ends where the format says the image ends (a polyglot, an image with
another file appended, is refused). A signature check accepts all three of those.
"""
from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from .errors import InvalidField


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


def _png_end(data: bytes) -> int:
    pos = 8
    while True:
        length, kind = struct.unpack_from(">I4s", data, pos)
        pos += 12 + length
        if kind == b"IEND":
            return pos


def _jpeg_end(data: bytes) -> int:
    pos = 2
    while True:
        if data[pos] != 0xFF:
            raise MalformedImage("expected a JPEG marker")
        while data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        marker = data[pos + 1]
        if marker == 0xD9:  # EOI
            return pos + 2
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # no length
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        pos += 2 + length
        if marker == 0xDA:  # SOS: entropy-coded data up to the next real marker
            while not (data[pos] == 0xFF and data[pos + 1] != 0x00
                       and not 0xD0 <= data[pos + 1] <= 0xD7):
                pos += 1


def _gif_end(data: bytes) -> int:
    def skip_sub_blocks(pos: int) -> int:
        while data[pos]:
            pos += 1 + data[pos]
        return pos + 1

    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while True:
        block = data[pos]
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


def inspect_image(data: bytes, max_pixels: int, field: str = "image") -> ImageKind:
    """The kind of a valid image; ``InvalidField`` (400) naming why it is not one."""
    try:
        with Image.open(io.BytesIO(data), formats=list(FORMATS)) as image:
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
        raise InvalidField(field, "image is not in a supported format "
                                  f"({', '.join(k.mime for k in FORMATS.values())})") from None
    except Exception as exc:  # noqa: BLE001 - hostile input may break a decoder in any way
        raise InvalidField(field, f"image does not decode: {type(exc).__name__}: {exc}") from None
    try:
        end = _END[image.format](data)
    except (MalformedImage, IndexError, struct.error):
        raise InvalidField(field, "image structure is broken") from None
    if end != len(data):
        raise InvalidField(field, f"image ends at byte {end} but the upload has {len(data)} "
                                  "bytes: data outside the image is refused")
    return kind
