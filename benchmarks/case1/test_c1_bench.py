"""Case 1 benchmarks: the as-given magic-number loop against NumPy, and the per-stage cost of one image.

Collected by the test command with ``--benchmark-disable`` (each body runs once); the main job runs
them with timing into build/benchmarks/case1.json.
"""
from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
from PIL import Image

from reference.case1.as_given import process_images as as_given
from workbench.image_corpus import encode, pixels

# (width, height): small, medium, and a realistic photo after the script's halving of 1024x768
SIZES = [(64, 64), (256, 256), (512, 384)]


def magic_vectorised(image: np.ndarray) -> float:
    """The as-given formula, sum((row+1) * (col+1) * pixel) / pixels, exact in int64."""
    rows = np.arange(1, image.shape[0] + 1, dtype=np.int64)
    cols = np.arange(1, image.shape[1] + 1, dtype=np.int64)
    return int(rows @ image.astype(np.int64) @ cols) / (image.shape[0] * image.shape[1])


def grey(size):
    # int64 so the as-given loop does not overflow uint8 (finding C1-29) and the two agree exactly
    return np.asarray(pixels(size[0], size[1], "L", seed=7)).astype(np.int64)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_magic_loop_as_given(benchmark, size):
    image = grey(size)
    benchmark.group = f"magic {size[0]}x{size[1]}"
    benchmark.extra_info.update(width=size[0], height=size[1], mode="L", impl="loop")
    result = benchmark.pedantic(as_given.calc_magic_number, args=(image,), rounds=3, iterations=1)
    assert result == magic_vectorised(image)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_magic_numpy(benchmark, size):
    image = grey(size)
    benchmark.group = f"magic {size[0]}x{size[1]}"
    benchmark.extra_info.update(width=size[0], height=size[1], mode="L", impl="numpy")
    result = benchmark(magic_vectorised, image)
    rows, cols = np.arange(1, size[1] + 1), np.arange(1, size[0] + 1)
    assert result == int(np.einsum("i,ij,j->", rows, image, cols)) / image.size


STAGE_SIZE = (1024, 768)


@pytest.fixture(scope="module")
def photo():
    data = encode(pixels(*STAGE_SIZE, "RGB", seed=11), "JPEG")
    image = Image.open(BytesIO(data))
    image.load()
    return data, image


def _stage(benchmark, name, func, *args, slow=False):
    benchmark.group = f"stages {STAGE_SIZE[0]}x{STAGE_SIZE[1]} RGB"
    benchmark.extra_info.update(stage=name, width=STAGE_SIZE[0], height=STAGE_SIZE[1], mode="RGB")
    if slow:
        return benchmark.pedantic(func, args=args, rounds=3, iterations=1)
    return benchmark(func, *args)


def _decode(data):
    image = Image.open(BytesIO(data))
    image.load()
    return image


def _encode(image):
    buf = BytesIO()
    image.save(buf, format="JPEG")
    return buf.getvalue()


def test_stage_decode(benchmark, photo):
    assert _stage(benchmark, "decode", _decode, photo[0]).size == STAGE_SIZE


def test_stage_rotate(benchmark, photo):
    assert _stage(benchmark, "rotate", photo[1].transpose, Image.Transpose.ROTATE_90).size == STAGE_SIZE[::-1]


def test_stage_resize(benchmark, photo):
    half = (STAGE_SIZE[0] // 2, STAGE_SIZE[1] // 2)
    assert _stage(benchmark, "resize", photo[1].resize, half).size == half


def test_stage_magic_numpy(benchmark, photo):
    small = np.asarray(photo[1].resize((512, 384)).convert("L"))
    assert _stage(benchmark, "magic_numpy", magic_vectorised, small) > 0


def test_stage_magic_loop(benchmark, photo):
    small = np.asarray(photo[1].resize((512, 384)).convert("L")).astype(np.int64)
    assert _stage(benchmark, "magic_loop", as_given.calc_magic_number, small, slow=True) > 0


def test_stage_encode(benchmark, photo):
    half = photo[1].resize((STAGE_SIZE[0] // 2, STAGE_SIZE[1] // 2))
    assert _stage(benchmark, "encode", _encode, half)[:2] == b"\xff\xd8"
