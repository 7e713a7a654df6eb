"""Stage by stage: listing, opening, transforming, the magic number, encoding, the HTTP call.

Where the as-given code stops at an earlier defect, the evidence runs the patched variant, or the
as-given code with only the earlier defects' patches applied (``write_variant``).
"""
from __future__ import annotations

import json
import typing
import warnings
from datetime import timedelta

import numpy as np
import pytest
import requests
from PIL import Image, UnidentifiedImageError

from case1_support import (AS_GIVEN, FAILURE_MESSAGE, PATCHED, args_namespace, exact_magic, load_module,
                           not_image_lines, run_script, swallowed, variant_source, write_variant)
from workbench.classifier_server import ClassifierServer
from workbench.image_corpus import make_images, pixels
from reference.case1.as_given import process_images as as_given
from reference.case1.patched import process_images as patched


# Python 3.10 reworded the error a C function raises for a float where it needs an integer.
FLOAT_SIZE_MESSAGES = ("'float' object cannot be interpreted as an integer",  # Python >= 3.10
                       "integer argument expected, got float")  # Python 3.8 (the 2020 stack)


@pytest.fixture(scope="module")
def patched_run(corpus, tmp_path_factory):
    """One patched run on the corpus against a real server."""
    root, entries = corpus
    cwd = tmp_path_factory.mktemp("patched_cwd")
    with ClassifierServer() as server:
        proc = run_script(PATCHED, "--input-dir", str(root), server.url, cwd=cwd)
        received = server.counters.snapshot()
    assert proc.returncode == 0, proc.stderr
    return proc, received, json.loads((cwd / "output.json").read_text(encoding="utf-8")), root


def test_patched_runs_end_to_end(patched_run):
    proc, received, output, root = patched_run
    sent = {"gray_301x199.jpg", "gray_64x64.png", "gray_odd_31x17.jpg", "rgba_120x80.png",
            "palette_97x61.png", "photo_1024x768.jpg", "rgb_256x256.png"}
    assert set(output) == {f"{root}/{n}" for n in sent}
    assert received["accepted"] == len(sent) == received["stats_calls"]
    assert received["rejected"] == {}
    assert "Request time min/avg/max: 0:00:00.0" in proc.stdout


@pytest.mark.finding("C1-03", side="patched")
def test_listdir_takes_directories_and_does_not_recurse(patched_run):
    proc, received, output, root = patched_run
    assert f"{root}/nested" in not_image_lines(proc.stdout)  # its inner image is never seen
    assert not any("inner" in key or "inside" in key for key in output)
    # the directory "album.png" passes the filter; opening it fails behind the generic message
    result, caught = swallowed(patched.process_image, f"{root}/album.png", {}, args_namespace("http://127.0.0.1:9"))
    assert result == (None, None, None, None)
    assert [type(e) for e in caught] == [IsADirectoryError]


@pytest.mark.finding("C1-06", side="patched")
def test_extension_check_is_narrow_and_trusts_names(patched_run):
    proc, received, output, root = patched_run
    rejected = {line.rsplit("/", 1)[1] for line in not_image_lines(proc.stdout)}
    assert {"UPPER_80x60.JPG", "UPPER_80x60.PNG", "long_ext_80x60.jpeg", "bitmap_64x48.bmp"} <= rejected
    assert "corrupt_truncated.jpg" not in rejected and "notes_not_image.png" not in rejected
    assert f"{root}/corrupt_truncated.jpg" not in output and f"{root}/notes_not_image.png" not in output


@pytest.mark.finding("C1-15", side="as_given")
def test_return_annotation_disagrees_with_returns(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"not a jpeg")
    hint = typing.get_type_hints(as_given.process_image)["return"]
    assert typing.get_args(hint) == (timedelta, str, float, int)
    assert as_given.process_image(str(tmp_path / "x.jpg"), {}, args_namespace("http://127.0.0.1:9")) == (None,) * 3


@pytest.mark.finding("C1-16", side="as_given")
@pytest.mark.parametrize("skip_rotation", [False, True])
def test_resize_gets_float_size(corpus, server, skip_rotation, capsys):
    root, _ = corpus
    result, caught = swallowed(as_given.process_image, f"{root}/gray_64x64.png", {},
                               args_namespace(server.url, skip_rotation=skip_rotation))
    assert result == (None, None, None)
    assert [type(e) for e in caught] == [TypeError]
    assert str(caught[0]) in FLOAT_SIZE_MESSAGES
    assert capsys.readouterr().out == FAILURE_MESSAGE + "\n"
    assert server.counters.snapshot()["connections"] == 0


@pytest.mark.finding("C1-17", side="patched")
def test_both_skip_flags_still_resize(corpus, server):
    root, _ = corpus
    args = args_namespace(server.url, skip_rotation=True, skip_resize=True)
    assert patched.process_image(f"{root}/photo_1024x768.jpg", {}, args)[1] is not None
    assert server.counters.snapshot()["images"] == [[512, 384, "RGB"]]


@pytest.mark.finding("C1-18", side="patched")
def test_rotated_image_is_squeezed_to_old_aspect(patched_run):
    # 1024x768 rotated is 768x1024; halving it must give 384x512, the server got 512x384
    assert [512, 384, "RGB"] in patched_run[1]["images"]
    assert [384, 512, "RGB"] not in patched_run[1]["images"]


@pytest.mark.parametrize("name", ["photo_1024x768.jpg", "gray_301x199.jpg", "gray_odd_31x17.jpg"])
def test_resizing_before_rotating_is_close_but_not_identical(corpus, name):
    """C1-18's fix text: "resize, then rotate" gives the same size, not the same pixels."""
    root, _ = corpus
    with Image.open(f"{root}/{name}") as image:
        image.load()
        rotated = image.transpose(Image.ROTATE_90)
        first_rotate = rotated.resize((rotated.width // 2, rotated.height // 2))
        first_resize = image.resize((image.width // 2, image.height // 2)).transpose(Image.ROTATE_90)
    assert first_rotate.size == first_resize.size
    a = np.asarray(first_rotate, dtype=np.int16)
    b = np.asarray(first_resize, dtype=np.int16)
    diff = np.abs(a - b).reshape(a.shape[0], a.shape[1], -1).max(axis=2)
    # Pillow resizes in two passes (horizontal, then vertical) rounding to 8 bits in between;
    # rotating first swaps which pass comes first, so roundings differ by a level or two.
    assert diff.max() <= 2
    assert (diff > 0).mean() > 0.1


@pytest.mark.finding("C1-19", side="patched")
def test_tiny_image_resizes_to_zero(corpus, server):
    root, _ = corpus
    result, caught = swallowed(patched.process_image, f"{root}/tiny_1x1.jpg", {}, args_namespace(server.url))
    assert result == (None, None, None, None)
    assert [(type(e), str(e)) for e in caught] == [(ValueError, "height and width must be > 0")]


@pytest.mark.finding("C1-20", side="as_given")
def test_magic_of_colour_image_is_an_array_sent_three_times(tmp_path, start_server):
    rgb = np.full((3, 3, 3), 10, np.uint8)
    magic = as_given.calc_magic_number(rgb)
    assert isinstance(magic, np.ndarray) and magic.shape == (3,)
    # behind the earlier defects: requests turns the array into three "magic" parameters, rejected
    module = load_module(write_variant(tmp_path, "C1-16", "C1-21"))
    make_images(tmp_path / "in", 1, size=(30, 30), mode="RGB")
    server = start_server()
    result = module.process_image(str(tmp_path / "in" / "img_00000.jpg"), {}, args_namespace(server.url))
    received = server.counters.snapshot()
    assert received["rejected"] == {"magic_multiple": 1}
    assert len(received["magic_values"][0]) == 3
    assert result[1] is None  # C1-25: the 400 answer is read as a result with class None


@pytest.mark.finding("C1-20", side="as_given")
def test_magic_of_palette_image_uses_palette_indices():
    indices = np.array([[0, 1], [1, 0]], np.uint8)  # what np.array() gives for a "P" image
    image = Image.fromarray(indices, "P")
    image.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)  # index 0 is white, 1 is black
    as_grey = np.array(image.convert("L"))
    assert as_given.calc_magic_number(np.array(image)) == (2 + 2) / 4  # black (index 1) weighs 1, white 0
    assert as_given.calc_magic_number(as_grey.astype(np.int64)) == 255 * (1 + 4) / 4


@pytest.mark.finding("C1-21", side="as_given")
def test_jpg_is_not_a_pillow_format(corpus, server):
    root, _ = corpus
    result, caught = swallowed(as_given.process_image, f"{root}/tiny_1x1.jpg", {},
                               args_namespace(server.url, skip_resize=True))
    assert result == (None, None, None)
    assert [(type(e), e.args) for e in caught] == [(KeyError, ("JPG",))]


@pytest.mark.finding("C1-22", side="as_given")
@pytest.mark.parametrize("name, mode", [("rgba_120x80.png", "RGBA"), ("palette_97x61.png", "P")])
def test_jpeg_cannot_hold_rgba_or_palette(corpus, tmp_path, name, mode):
    root, _ = corpus
    module = load_module(write_variant(tmp_path, "C1-16", "C1-20", "C1-21", "C1-29"))
    result, caught = swallowed(module.process_image, f"{root}/{name}", {}, args_namespace("http://127.0.0.1:9"))
    assert result == (None, None, None)
    assert [(type(e), str(e)) for e in caught] == [(OSError, f"cannot write mode {mode} as JPEG")]


@pytest.mark.finding("C1-25", side="patched")
def test_error_status_is_counted_as_class_none(tmp_path, start_server):
    make_images(tmp_path / "in", 3, mode="L")
    server = start_server(error_status=503)
    proc = run_script(PATCHED, "--input-dir", str(tmp_path / "in"), server.url, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "None -- 3" in proc.stdout.splitlines()
    output = json.loads((tmp_path / "output.json").read_text(encoding="utf-8"))
    assert [v["class"] for v in output.values()] == [None] * 3
    assert server.counters.snapshot()["rejected"] == {"forced_error": 3}


@pytest.mark.finding("C1-26", side="patched")
def test_response_json_is_parsed_four_times(corpus, server, monkeypatch):
    root, _ = corpus
    calls = []
    original = requests.Response.json
    monkeypatch.setattr(requests.Response, "json", lambda self, **kw: calls.append(1) or original(self, **kw))
    patched.process_image(f"{root}/gray_64x64.png", {}, args_namespace(server.url))
    assert len(calls) == 4


@pytest.mark.finding("C1-26", side="patched")
def test_elapsed_excludes_body_and_changes_units(corpus, start_server):
    import time
    root, _ = corpus
    server = start_server(latency_ms=0, body_delay_ms=400)
    results = {}
    started = time.perf_counter()
    elapsed = patched.process_image(f"{root}/gray_64x64.png", results, args_namespace(server.url))[0]
    wall = time.perf_counter() - started
    assert isinstance(elapsed, timedelta)
    assert isinstance(results[f"{root}/gray_64x64.png"]["elapsed"], float)
    assert elapsed.total_seconds() < wall / 2  # the 400 ms spent on the body is not in "elapsed"


@pytest.mark.finding("C1-28", side="as_given")
def test_bare_except_hides_the_cause(corpus, server, capsys):
    root, _ = corpus
    for name, expected in [("notes_not_image.png", UnidentifiedImageError),
                           ("corrupt_truncated.jpg", OSError)]:
        result, caught = swallowed(as_given.process_image, f"{root}/{name}", {}, args_namespace(server.url))
        assert result == (None, None, None)
        assert isinstance(caught[0], expected)
    # a programming error gets the same message
    result, caught = swallowed(as_given.process_image, f"{root}/gray_64x64.png", {}, object())
    assert [type(e) for e in caught] == [AttributeError]
    assert capsys.readouterr().out == (FAILURE_MESSAGE + "\n") * 3
    assert server.counters.snapshot()["connections"] == 0  # the API was never contacted


@pytest.mark.finding("C1-29", side="as_given")
def test_magic_overflows_uint8(stack):
    grey = np.asarray(pixels(64, 48, "L", 1))  # uint8, as np.array(im) gives it
    colour = np.asarray(pixels(64, 48, "RGB", 1))
    small = np.full((3, 3), 200, np.uint8)
    if stack == "2020":
        # NumPy 1.19: a uint8 scalar times a Python int is computed in int64 (value-based casting),
        # so a grey image comes out exact, and nothing warns ...
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert as_given.calc_magic_number(grey) == exact_magic(grey)
            assert as_given.calc_magic_number(small) == 200 * 36 / 9
            wrapped = as_given.calc_magic_number(colour)
        # ... but a pixel of a colour image is an array of 3 uint8: the products and the running
        # sum stay uint8 arrays, and array arithmetic wraps silently, modulo 256 per channel.
        n = colour.shape[0] * colour.shape[1]
        sums = [round(m * n) for m in exact_magic(colour)]
        assert list(wrapped) == [(s % 256) / n for s in sums]
        assert all(w < 256 / n for w in wrapped) and min(exact_magic(colour)) > 90_000
    else:
        # NumPy 2 (NEP 50): the Python int adopts uint8; once (x+1)*(y+1) passes 255 it raises.
        for image in (grey, colour):
            with pytest.raises(OverflowError, match="Python integer 256 out of bounds for uint8"):
                as_given.calc_magic_number(image)
        with pytest.warns(RuntimeWarning, match="overflow encountered in scalar"):
            wrapped = as_given.calc_magic_number(small)
        assert wrapped == 32 / 9  # wrapped modulo 256


@pytest.mark.finding("C1-29", side="as_given")
def test_grey_images_get_through_the_magic_loop_only_on_the_2020_stack(tmp_path, server, stack):
    """The as-given code with only the patches the run needs around the loop (filter, unpacking,
    average, resize, format): the loop itself is the original's."""
    paths = make_images(tmp_path / "in", 3, size=(64, 48), mode="L")
    script = write_variant(tmp_path, "C1-05", "C1-10", "C1-14", "C1-16", "C1-21")
    proc = run_script(script, "--input-dir", str(tmp_path / "in"), server.url, cwd=tmp_path)
    received = server.counters.snapshot()
    if stack == "2020":
        assert proc.returncode == 0, proc.stderr
        assert received["accepted"] == 3 and received["rejected"] == {}
        expected = sorted(exact_magic(np.array(Image.open(p).transpose(Image.ROTATE_90).resize((32, 24))))
                          for p in paths)
        assert sorted(float(v[0]) for v in received["magic_values"]) == expected
    else:
        # every image dies in the loop (OverflowError behind the bare except), none is sent,
        # and the empty statistics end the run (C1-13)
        assert proc.stdout.count(FAILURE_MESSAGE) == 3 and received["connections"] == 0
        assert proc.returncode == 1 and "IndexError: list index out of range" in proc.stderr


def test_variants_apply_only_the_named_patches(tmp_path):
    source = write_variant(tmp_path, "C1-21").read_text(encoding="utf-8")
    assert 'format="JPEG"' in source and "width / 2" in source and AS_GIVEN.read_text().count("width / 2") == 2


def test_variants_carry_changes_made_to_the_as_given_code(tmp_path):
    # a declared mutant edits the as-given file in a scratch copy: every variant must run that edit
    source = AS_GIVEN.read_text(encoding="utf-8")
    changed = tmp_path / "as_given.py"
    changed.write_text(source.replace('            data=image_jpeg_code,\n',
                                      '            data=image_jpeg_code,\n            timeout=30,\n')
                       .replace('    for name in os.listdir(', '    for name in sorted(os.listdir('), encoding="utf-8")
    variant = variant_source({"C1-05", "C1-16", "C1-21"}, as_given=changed)
    assert "            timeout=30,\n" in variant and "sorted(os.listdir(" in variant
    assert 'format="JPEG"' in variant and "int(image[x, y])" not in variant
    assert "def send_stats(elapsed, cls, image_size):" in variant  # C1-11 not asked for: the stub stays
