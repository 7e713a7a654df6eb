"""Evidence for the Case 1 finding that the at-scale work revealed (C1-35, EXIF orientation; also found by the completeness review), original side.

The fixed side of each is in the redesigned pipeline's tests (``test_c1_hostile.py``).
"""
from __future__ import annotations

import pytest
from PIL import Image

from case1_support import args_namespace
from reference.case1.patched import process_images as patched
from workbench.image_corpus import pixels

ORIENTATION_TAG = 0x0112


@pytest.mark.finding("C1-35", side="patched")
def test_exif_orientation_is_ignored(tmp_path, start_server):
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = 6  # stored 40 x 20, shown 20 x 40 (turned 90 degrees clockwise)
    pixels(40, 20, "RGB", 3).save(tmp_path / "phone.jpg", exif=exif)
    server = start_server(latency_ms=0, stats_latency_ms=0)
    result = patched.process_image(str(tmp_path / "phone.jpg"), {}, args_namespace(server.url, skip_resize=True))
    assert result[1] is not None  # classified
    # the image as shown, rotated by 90 degrees, is 40 x 20; the script rotated the stored pixels
    assert server.counters.snapshot()["images"] == [[20, 40, "RGB"]]
