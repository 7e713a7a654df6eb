"""The "magic number" sent with every image: ``sum((x+1) * (y+1) * L[x, y]) / (h * w)``.

``x`` runs over rows and ``y`` over columns, both from 1; ``L`` is the image's luminance (one value
per pixel). The contract is "one finite float per image" (findings C1-20, C1-29, C1-30):

* a 2-D array is used as it is;
* a 3-D ``uint8`` array with 3 (RGB) or 4 (RGBA, alpha ignored) channels is reduced to luminance
  exactly as Pillow's ``convert("L")`` does (ITU-R 601-2), so ``calc_magic_number(np.asarray(im))``
  equals ``calc_magic_number(np.asarray(im.convert("L")))``; a single-channel 3-D array is squeezed;
* the weighted sum is computed as ``rows @ image @ cols`` in ``int64`` - exact, no ``uint8``
  overflow, O(h*w) in C with the GIL released - in blocks of rows, so the ``int64`` copy stays a few
  MiB however large the image. When the sum could exceed ``int64`` (images of
  roughly 19 000 x 19 000 pixels and more) it is computed with Python integers instead, still exact.
  Floating-point input is accumulated in ``float64``.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

_INT64_MAX = np.iinfo(np.int64).max
ROWS_PER_BLOCK_BYTES = 8 << 20  # bytes of int64 per block of rows


def luminance(image: np.ndarray) -> np.ndarray:
    """A 2-D luminance array for a 2-D array or an H x W x {1, 3, 4} ``uint8`` array."""
    array = np.asarray(image)
    if array.ndim == 2:
        return array
    if array.ndim == 3 and array.shape[2] == 1:
        return array[..., 0]
    if array.ndim == 3 and array.shape[2] in (3, 4) and array.dtype == np.uint8:
        rgb = np.ascontiguousarray(array[..., :3])
        return np.asarray(Image.fromarray(rgb, "RGB").convert("L"))
    raise ValueError(f"expected a 2-D image or an H x W x 3/4 uint8 image, got shape {array.shape} "
                     f"of {array.dtype}")


def calc_magic_number(image: np.ndarray) -> float:
    """``sum((x+1) * (y+1) * L[x, y]) / (h * w)`` over rows ``x`` and columns ``y``; see the module."""
    array = luminance(image)
    height, width = array.shape
    if height == 0 or width == 0:
        raise ValueError(f"cannot compute the magic number of an empty image {array.shape}")
    if array.dtype.kind == "f":
        rows = np.arange(1, height + 1, dtype=np.float64)
        cols = np.arange(1, width + 1, dtype=np.float64)
        return float(rows @ array.astype(np.float64) @ cols) / (height * width)
    if array.dtype.kind not in "biu":
        raise ValueError(f"unsupported pixel type {array.dtype}")
    largest = max(abs(int(array.min())), abs(int(array.max())))
    bound = largest * (height * (height + 1) // 2) * (width * (width + 1) // 2)
    dtype = np.int64 if bound <= _INT64_MAX else object  # object: exact Python ints, slow but rare
    rows = np.arange(1, height + 1).astype(dtype)
    cols = np.arange(1, width + 1).astype(dtype)
    # In blocks of rows: the int64 copy of a whole 9000 x 9000 image would be 8 times its size.
    step = max(1, ROWS_PER_BLOCK_BYTES // (8 * width))
    total = 0
    for start in range(0, height, step):
        block = array[start:start + step].astype(dtype)
        total += int(rows[start:start + step] @ (block @ cols))
    return total / (height * width)  # int / int: the correctly rounded float
