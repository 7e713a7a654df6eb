"""A deterministic image corpus for Case 1: every kind of file the script can meet in a directory.

The content comes from seeded NumPy generators, so two builds are byte-identical.

Python API: ``build_corpus(dest)`` returns the list of ``Entry`` it wrote; ``make_images(dest, n, ...)``
writes ``n`` similar images for throughput runs. CLI: ``python -m workbench.image_corpus DEST``.
"""
from __future__ import annotations

import argparse
import json
import zlib
from dataclasses import asdict, dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Entry:
    name: str  # path relative to the corpus root, "/" separated
    kind: str  # image | corrupt | not_image | directory
    format: str | None = None  # Pillow format of a valid image
    mode: str | None = None
    size: tuple[int, int] | None = None  # (width, height)


# Pillow 9.1 moved the dithering constants into an enum; Pillow 7/8 (the 2020 stack) has Image.NONE.
_NO_DITHER = Image.Dither.NONE if hasattr(Image, "Dither") else Image.NONE


def pixels(width: int, height: int, mode: str, seed: int) -> Image.Image:
    """A smooth gradient with seeded noise: compresses like a photo, not like white noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    base = 127 + 100 * np.sin(xx / max(width, 1) * 3.1 + rng.uniform(0, 6)) * np.cos(yy / max(height, 1) * 2.3)
    channels = {"L": 1, "P": 1, "RGB": 3, "RGBA": 4}[mode]
    layers = [np.clip(base + rng.normal(0, 12, base.shape) + 40 * c, 0, 255) for c in range(channels)]
    array = np.stack(layers, axis=-1).astype(np.uint8)
    if mode in ("L", "P"):
        image = Image.fromarray(array[..., 0], "L")
        return image.quantize(colors=32, dither=_NO_DITHER) if mode == "P" else image
    return Image.fromarray(array, mode)


def _seed(name: str) -> int:
    return zlib.crc32(name.encode())


def encode(image: Image.Image, fmt: str) -> bytes:
    buf = BytesIO()
    image.save(buf, format=fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return buf.getvalue()


# name, format, mode, (width, height)
IMAGES = (
    ("photo_1024x768.jpg", "JPEG", "RGB", (1024, 768)),
    ("rgb_256x256.png", "PNG", "RGB", (256, 256)),
    ("gray_301x199.jpg", "JPEG", "L", (301, 199)),
    ("gray_64x64.png", "PNG", "L", (64, 64)),
    ("gray_odd_31x17.jpg", "JPEG", "L", (31, 17)),
    ("rgba_120x80.png", "PNG", "RGBA", (120, 80)),
    ("palette_97x61.png", "PNG", "P", (97, 61)),
    ("tiny_1x1.jpg", "JPEG", "RGB", (1, 1)),
    ("bitmap_64x48.bmp", "BMP", "RGB", (64, 48)),
    ("UPPER_80x60.JPG", "JPEG", "RGB", (80, 60)),
    ("UPPER_80x60.PNG", "PNG", "RGB", (80, 60)),
    ("long_ext_80x60.jpeg", "JPEG", "RGB", (80, 60)),
    ("nested/inner_40x30.jpg", "JPEG", "RGB", (40, 30)),
    ("album.png/inside_40x30.jpg", "JPEG", "RGB", (40, 30)),
)


def build_corpus(dest: Path | str) -> list[Entry]:
    """Write the corpus under ``dest`` (created if needed) and describe every entry."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, fmt, mode, (w, h) in IMAGES:
        path = dest / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(pixels(w, h, mode, _seed(name)), fmt))
        entries.append(Entry(name, "image", fmt, mode, (w, h)))
    for directory in ("nested", "album.png"):
        entries.append(Entry(directory, "directory"))
    # a JPEG cut short: the header parses, decoding fails
    whole = encode(pixels(64, 64, "RGB", _seed("corrupt")), "JPEG")
    (dest / "corrupt_truncated.jpg").write_bytes(whole[: len(whole) // 3])
    entries.append(Entry("corrupt_truncated.jpg", "corrupt", "JPEG", "RGB", (64, 64)))
    (dest / "notes_not_image.png").write_text("these are notes, not a picture\n", encoding="utf-8")
    entries.append(Entry("notes_not_image.png", "not_image"))
    (dest / "readme.txt").write_text("a text file without an image extension\n", encoding="utf-8")
    entries.append(Entry("readme.txt", "not_image"))
    return entries


def make_images(dest: Path | str, count: int, size: tuple[int, int] = (64, 48), mode: str = "RGB",
                fmt: str = "JPEG", ext: str = ".jpg", prefix: str = "img") -> list[Path]:
    """``count`` distinct images of one kind, for throughput runs."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = dest / f"{prefix}_{i:05d}{ext}"
        path.write_bytes(encode(pixels(size[0], size[1], mode, _seed(path.name)), fmt))
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the deterministic Case 1 image corpus")
    parser.add_argument("dest")
    args = parser.parse_args(argv)
    for entry in build_corpus(args.dest):
        print(json.dumps(asdict(entry)))


if __name__ == "__main__":
    main()
