"""Small, valid, deterministic images in several formats, made with the standard library only
(the checker may run where Pillow is not installed): what the image round-trip sends."""
from __future__ import annotations

import base64
import random
import struct
import zlib
from typing import Dict

# A 3x2 baseline JPEG (made once with Pillow, quality 90): JPEG encoding is too long to write here.
_JPEG_B64 = (
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAMCAgMCAgMDAwMEAwMEBQgFBQQEBQoHBwYIDAoMDAsKCwsNDhIQDQ4RDgsLEBYQ"
    "ERMUFRUVDA8XGBYUGBIUFRT/2wBDAQMEBAUEBQkFBQkUDQsNFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU"
    "FBQUFBQUFBQUFBT/wAARCAACAAMDASIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgED"
    "AwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RF"
    "RkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJ"
    "ytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEBAQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREAAgEC"
    "BAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5OkNE"
    "RUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPExcbH"
    "yMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIRAxEAPwDxvXokhvoljRUU2tsxCjAyYEJP1JJP40UUV8wt"
    "kf2fgP8Ac6P+GP5I/9k="
)

# MIME types a correct service may answer for each format (registries disagree on BMP).
MIME = {"png": ("image/png",), "jpeg": ("image/jpeg", "image/jpg", "image/pjpeg"),
        "gif": ("image/gif",), "bmp": ("image/bmp", "image/x-bmp", "image/x-ms-bmp")}


def png(width: int, height: int, seed: int = 0) -> bytes:
    """An RGB PNG of pseudo-random pixels (incompressible, so its size is about 3*w*h bytes)."""
    rng = random.Random(seed)
    rows = b"".join(b"\x00" + bytes(rng.getrandbits(8) for _ in range(width * 3)) for _ in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 1))
            + chunk(b"IEND", b""))


def gif() -> bytes:
    """A 1x1 GIF89a."""
    return (b"GIF89a\x01\x00\x01\x00\x80\x00\x00" + b"\xff\x00\x00\x00\x00\xff"
            + b"\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00\x3b")


def bmp(width: int = 2, height: int = 2) -> bytes:
    """A 24-bit uncompressed BMP."""
    row = (b"\x10\x80\xf0" * width).ljust((width * 3 + 3) // 4 * 4, b"\x00")
    pixels = row * height
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    header = struct.pack("<2sIHHI", b"BM", 14 + len(info) + len(pixels), 0, 0, 14 + len(info))
    return header + info + pixels


def jpeg() -> bytes:
    return base64.b64decode(_JPEG_B64)


def detect(data: bytes) -> str:
    """The format of ``data`` by its signature: png, jpeg, gif, bmp or ''."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if data.startswith(b"BM"):
        return "bmp"
    return ""


def corpus(large_side: int = 96) -> Dict[str, bytes]:
    """The round-trip set: one image per format plus a larger PNG (~28 KB at 96x96)."""
    return {"png": png(2, 2, 1), "jpeg": jpeg(), "gif": gif(), "bmp": bmp(),
            "png-large": png(large_side, large_side, 2)}


SMALL_PNG = png(1, 1, 3)
