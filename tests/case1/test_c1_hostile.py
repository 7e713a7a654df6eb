"""Hostile inputs and servers: the redesigned pipeline never ends in a traceback, and every input
gets exactly one result line with a cause.

Inputs are generated here (names that are not UTF-8, symbolic links of every kind, a FIFO, images in
every mode Pillow can write, EXIF orientation, sizes at Pillow's decompression-bomb limit). Servers
are :mod:`workbench.fault_server` scripts: any JSON value, invalid Unicode, huge and trickling
bodies, 429/503 with ``Retry-After``, a failing stats endpoint.
"""
from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
import requests
from PIL import Image

from case1_support import FIXED_PACKAGE
from workbench.fault_server import OK_CLASSIFY, OK_STATS, FaultServer, Reply
from workbench.image_corpus import make_images, pixels

if sys.version_info < (3, 11):  # the redesigned code runs on today's stack only (CONTRIBUTING)
    pytest.skip("reference/case1/fixed needs Python 3.11", allow_module_level=True)

from reference.case1.fixed import imaging  # noqa: E402
from reference.case1.fixed.budget import MemoryBudget  # noqa: E402
from reference.case1.fixed.client import BadResponse, Client, retry_after  # noqa: E402
from reference.case1.fixed.discovery import Candidate  # noqa: E402
from reference.case1.fixed.pipeline import Options, run  # noqa: E402


def run_cli(cwd, *args, timeout=120):
    return subprocess.run([sys.executable, "-X", "dev", "-m", FIXED_PACKAGE, "--no-progress", *map(str, args)],
                          cwd=cwd, capture_output=True, timeout=timeout)


def results_by_key(path, root):
    """{path relative to root as bytes: result}; each line must be valid UTF-8 JSON."""
    out = {}
    for line in path.read_bytes().decode("utf-8").splitlines():
        record = json.loads(line)
        raw = base64.b64decode(record["path_bytes"]) if "path_bytes" in record else record["path"].encode()
        key = os.path.relpath(raw, os.fsencode(str(root)))
        assert key not in out, f"two lines for {key!r}"
        out[key] = record
    return out


def no_traceback(proc):
    err = proc.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err, err[-3000:]


# --- the file system --------------------------------------------------------------------------------------------


def test_names_and_links_of_every_kind(tmp_path, start_server):
    root = tmp_path / "in"
    make_images(root, 1, size=(16, 12), prefix="plain")
    image = (root / "plain_00000.jpg").read_bytes()
    raw_root = os.fsencode(str(root))
    for name in (b"latin1_caf\xe9.jpg", b"bad_\xff\xfe.png", b"new\nline.jpg", "юникод 🙂.jpg".encode()):
        with open(os.path.join(raw_root, name), "wb") as file:
            file.write(image)
    (root / "sub").mkdir()
    (root / "sub" / "inner.jpg").write_bytes(image)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(image)
    links = {
        "to_file.jpg": "plain_00000.jpg",          # processed under its own name
        "to_inner.jpg": "sub/inner.jpg",
        "dangling.jpg": "missing.jpg",
        "loop.jpg": "loop.jpg",
        "loop_a.png": "loop_b.png",
        "loop_b.png": "loop_a.png",
        "outside.jpg": str(outside / "secret.jpg"),
        "to_dir": "sub",
        "dir_named.png": "sub",
        "to_outside_dir": str(outside),
        "sub/up": "..",                            # a directory cycle
    }
    for name, target in links.items():
        os.symlink(target, root / name)
    os.mkfifo(root / "pipe.jpg")  # opening it would block forever
    server = start_server(latency_ms=0, stats_latency_ms=0)
    proc = run_cli(tmp_path, "--input-dir", root, "--output", tmp_path / "out.jsonl", "--timeout", 10, server.url)
    no_traceback(proc)
    assert proc.returncode == 1
    results = results_by_key(tmp_path / "out.jsonl", root)
    classified = {k for k, r in results.items() if r["class"]}
    assert classified == {b"plain_00000.jpg", b"latin1_caf\xe9.jpg", b"bad_\xff\xfe.png", b"new\nline.jpg",
                          "юникод 🙂.jpg".encode(), b"sub/inner.jpg", b"to_file.jpg", b"to_inner.jpg"}
    causes = {k: r["error"] for k, r in results.items() if not r["class"]}
    assert causes.keys() == {b"dangling.jpg", b"loop.jpg", b"loop_a.png", b"loop_b.png", b"outside.jpg",
                             b"to_dir", b"dir_named.png", b"to_outside_dir", b"sub/up", b"pipe.jpg"}
    assert "dangling" in causes[b"dangling.jpg"] and "loop" in causes[b"loop_a.png"]
    assert "outside the input directory" in causes[b"outside.jpg"]
    assert "symbolic link to a directory" in causes[b"sub/up"] and "FIFO" in causes[b"pipe.jpg"]
    assert server.counters.snapshot()["accepted"] == len(classified)  # the secret outside was never sent
    shown = {k: r for k, r in results.items() if "path_bytes" in r}
    assert set(shown) == {b"latin1_caf\xe9.jpg", b"bad_\xff\xfe.png"}
    assert shown[b"bad_\xff\xfe.png"]["path"].endswith("bad_\\xff\\xfe.png")


def _writable_modes():
    """(mode, format) for every mode Pillow opens that some format here can store."""
    out = []
    for mode in ("1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "F", "LA", "PA", "RGBX",
                 "I;16", "I;16B"):
        for fmt in ("PNG", "TIFF", "JPEG", "WEBP", "BMP", "GIF"):
            image = Image.new(mode, (24, 18))
            buffer = io.BytesIO()
            try:
                image.save(buffer, format=fmt)
                buffer.seek(0)
                with Image.open(buffer) as reopened:
                    opened_mode = reopened.mode
            except (OSError, ValueError, KeyError, TypeError):
                continue
            out.append((mode, fmt, opened_mode))
            break
    return out


def _image_in_mode(mode: str) -> Image.Image:
    rgb = pixels(24, 18, "RGB", 7)
    if mode in ("I;16", "I;16B"):
        grey = np.asarray(rgb.convert("L")).astype(np.uint16) * 257  # the full 16-bit range
        return Image.frombytes(mode, rgb.size, grey.astype(">u2" if mode == "I;16B" else "<u2").tobytes())
    if mode == "P":
        image = rgb.quantize(16)
        image.info["transparency"] = 0  # a palette image with a transparent colour
        return image
    return rgb.convert(mode)


def test_every_mode_pillow_opens_is_classified(tmp_path, start_server):
    root = tmp_path / "in"
    root.mkdir()
    modes = _writable_modes()
    assert {"I;16", "CMYK", "P", "RGBA", "LA", "F", "1"} <= {m for m, _, _ in modes}, modes
    for mode, fmt, _ in modes:
        image = _image_in_mode(mode)
        ext = {"PNG": "png", "TIFF": "tif", "JPEG": "jpg", "WEBP": "webp", "BMP": "bmp", "GIF": "gif"}[fmt]
        image.save(root / f"{mode.replace(';', '_')}.{ext}", format=fmt,
                   **({"transparency": 0} if mode == "P" else {}))
    server = start_server(latency_ms=0, stats_latency_ms=0)
    proc = run_cli(tmp_path, "--input-dir", root, "--output", tmp_path / "out.jsonl", server.url)
    no_traceback(proc)
    results = results_by_key(tmp_path / "out.jsonl", root)
    assert len(results) == len(modes)
    assert {k: r["error"] for k, r in results.items() if r["error"]} == {}
    assert proc.returncode == 0
    assert {tuple(i[:2]) for i in server.counters.snapshot()["images"]} == {(9, 12)}


def test_sixteen_bit_grey_is_scaled_not_clipped():
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    image = Image.frombytes("I;16", (8, 8), ramp.astype("<u2").tobytes())
    assert np.array_equal(np.asarray(imaging.jpeg_compatible(image)), (ramp >> 8).astype(np.uint8))


@pytest.mark.finding("C1-35", side="fixed")
def test_exif_orientation_is_applied_before_rotating(tmp_path, start_server):
    root = tmp_path / "in"
    root.mkdir()
    exif = Image.Exif()
    exif[imaging.ORIENTATION_TAG] = 6  # stored landscape, shown portrait (rotated 90 degrees clockwise)
    pixels(40, 20, "RGB", 3).save(root / "phone.jpg", exif=exif)
    server = start_server(latency_ms=0, stats_latency_ms=0)
    for flags in ((), ("--skip-resize",)):
        proc = run_cli(tmp_path, "--input-dir", root, "--output", tmp_path / f"out{len(flags)}.jsonl", *flags,
                       server.url)
        assert proc.returncode == 0, proc.stderr
    # shown 20 x 40; rotated 90 degrees: 40 x 20; halved: 20 x 10. Rotating the stored pixels instead
    # would send 20 x 40 without the resize (and a squeezed 20 x 10 with it)
    assert server.counters.snapshot()["images"] == [[20, 10, "RGB"], [40, 20, "RGB"]]


def test_a_decompression_bomb_is_an_error_line(tmp_path, start_server):
    root = tmp_path / "in"
    root.mkdir()
    side = int((2 * Image.MAX_IMAGE_PIXELS) ** 0.5) + 100  # over twice the limit: Pillow refuses to open it
    header = io.BytesIO()
    Image.new("L", (1, 1)).save(header, format="PNG")
    data = bytearray(header.getvalue())
    data[16:24] = side.to_bytes(4, "big") * 2  # IHDR width and height, then its checksum again
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    (root / "bomb.png").write_bytes(bytes(data))
    make_images(root, 1, size=(8, 8))
    server = start_server(latency_ms=0, stats_latency_ms=0)
    proc = run_cli(tmp_path, "--input-dir", root, "--output", tmp_path / "out.jsonl", server.url)
    no_traceback(proc)
    results = results_by_key(tmp_path / "out.jsonl", root)
    assert proc.returncode == 1 and results[b"img_00000.jpg"]["class"]
    assert results[b"bomb.png"]["error"].startswith("DecompressionBombError")


def test_memory_budget_limits_images_decoded_at_once(tmp_path, start_server, monkeypatch):
    from reference.case1.fixed import pipeline
    paths = make_images(tmp_path, 6, size=(600, 500), mode="RGB", fmt="PNG", ext=".png")  # decoded in full
    per_image = imaging.working_set((600, 500), "RGB", False, False, True, (250, 300))  # what each reserves
    budgets = []

    class Recording(MemoryBudget):
        def __init__(self, limit):
            super().__init__(limit)
            budgets.append(self)

    monkeypatch.setattr(pipeline, "MemoryBudget", Recording)
    server = start_server(latency_ms=0, stats_latency_ms=0)
    peaks = {}
    for limit in (2 * per_image + per_image // 2, 100 * per_image):
        cands = [Candidate(str(p), p.name.encode()) for p in paths]
        summary = run(cands, Options(server.url, workers=6, timeout=10, progress=False, memory_budget=limit))
        assert summary.succeeded == 6
        peaks[limit] = budgets[-1].peak
    small, large = sorted(peaks)
    assert peaks[small] <= small  # never more than the budget at once: two images here
    assert peaks[small] < peaks[large]  # without a tight budget more are decoded together


@pytest.mark.slow
def test_images_at_the_bomb_limit_with_many_workers_stay_in_the_budget(tmp_path, start_server):
    """Peak memory of the CLI on four images just under Pillow's limit, four workers: a tight budget
    against an ample one, measured in the same test (a ratio)."""
    root = tmp_path / "in"
    root.mkdir()
    side = int(Image.MAX_IMAGE_PIXELS ** 0.5) - 10
    for i in range(4):
        Image.new("L", (side, side), 40 * i).save(root / f"huge_{i}.png")
    server = start_server(latency_ms=0, stats_latency_ms=0)
    peak = {}
    for budget in ("300M", "8G"):
        code = ("import resource, runpy, sys; sys.argv = sys.argv[1:]\n"
                "try:\n    runpy.run_module('reference.case1.fixed', run_name='__main__')\n"
                "finally:\n    print('maxrss', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)")
        proc = subprocess.run([sys.executable, "-c", code, "x", "--input-dir", str(root), "--workers", "4",
                               "--memory-budget", budget, "--output", str(tmp_path / f"{budget}.jsonl"),
                               "--no-progress", server.url], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        peak[budget] = int(proc.stderr.rsplit("maxrss", 1)[1].split()[0]) * 1024
    assert peak["300M"] < 0.6 * peak["8G"], peak


# --- the server -------------------------------------------------------------------------------------------------

HOSTILE_BODIES = {
    "null": b"null",
    "list": b"[]",
    "string": b'"cat"',
    "number": b"42",
    "true": b"true",
    "class not a string": b'{"class": 5, "score": 0.5}',
    "empty class": b'{"class": "", "score": 0.5}',
    "score NaN": b'{"class": "cat", "score": NaN}',
    "score infinite": b'{"class": "cat", "score": 1e999}',
    "score a bool": b'{"class": "cat", "score": true}',
    "lone surrogate": b'{"class": "\\ud800", "score": 0.5}',
    "invalid UTF-8": b'{"class": "\xff\xfe", "score": 0.5}',
    "not JSON": b"<html>502 Bad Gateway</html>",
    "deep nesting": b"[" * 100_000,
    "huge number": b'{"class": "cat", "score": ' + b"9" * 5000 + b"}",
    "huge body": b'{"class": "cat", "pad": "' + b"x" * (2 << 20) + b'"}',
}


@pytest.mark.parametrize("name", list(HOSTILE_BODIES))
def test_any_answer_body_is_an_error_not_a_crash(name):
    with FaultServer(lambda endpoint, n: Reply(200, HOSTILE_BODIES[name])) as server, \
            Client(server.url, timeout=5) as client:
        with pytest.raises(BadResponse):
            client.classify(b"jpeg", 1.0)


def test_a_body_longer_than_declared_or_cut_short_is_an_error():
    with FaultServer(lambda endpoint, n: Reply(200, OK_CLASSIFY, close_after=5)) as server, \
            Client(server.url, timeout=5) as client, pytest.raises(requests.RequestException):
        client.classify(b"jpeg", 1.0)


def test_a_trickling_body_is_cut_at_the_deadline():
    trickle = Reply(200, OK_CLASSIFY, trickle=0.1, chunk=1)  # 31 bytes: about 3 s in all, 0.1 s per read
    full = trickle.trickle * len(OK_CLASSIFY)
    with FaultServer(lambda endpoint, n: trickle) as server, Client(server.url, timeout=0.5) as client:
        started = time.perf_counter()
        with pytest.raises(requests.Timeout, match="deadline"):
            client.classify(b"jpeg", 1.0)
        took = time.perf_counter() - started
    assert took < full / 2  # every read was quick, the whole answer was not: the deadline bounds the whole


def test_retry_after_is_honoured_within_the_budget():
    times = []

    def script(endpoint, n):
        times.append(time.monotonic())
        return Reply(429, b'{"error": "slow down"}', {"Retry-After": "1"}) if n == 1 else Reply(200, OK_CLASSIFY)

    with FaultServer(script) as server, Client(server.url, timeout=5, retry_budget=5) as client:
        assert client.classify(b"jpeg", 1.0).cls == "cat"
    assert len(times) == 2 and times[1] - times[0] >= 0.95


def test_retry_after_beyond_the_budget_gives_up_at_once():
    with FaultServer(lambda e, n: Reply(503, b"busy", {"Retry-After": "120"})) as server, \
            Client(server.url, timeout=5, retry_budget=2) as client:
        started = time.perf_counter()
        with pytest.raises(requests.HTTPError, match="Retry-After 120 s exceeds"):
            client.classify(b"jpeg", 1.0)
        assert time.perf_counter() - started < 1.5
        assert server.calls("classify") == 1


def test_503_without_retry_after_backs_off_until_the_budget():
    with FaultServer(lambda e, n: Reply(503, b"busy")) as server, \
            Client(server.url, timeout=5, retry_budget=1.5) as client:
        with pytest.raises(requests.HTTPError, match="503"):
            client.classify(b"jpeg", 1.0)
        assert 2 <= server.calls("classify") <= 8


def test_retry_after_header_forms():
    assert retry_after("7") == 7.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after("soon") is None and retry_after(None) is None


def test_a_run_against_a_hostile_server_gives_every_image_one_line(tmp_path):
    bodies = list(HOSTILE_BODIES.values())
    make_images(tmp_path / "in", len(bodies) + 4, size=(8, 8), mode="L")

    def script(endpoint, n):
        if endpoint == "stats":
            return Reply(200, OK_STATS)
        if n % 7 == 0:
            return Reply(200, OK_CLASSIFY, trickle=0.2, chunk=1)
        return Reply(200, bodies[n % len(bodies)]) if n % 5 else Reply(500, b"\xff\xfe broken \xc0")

    with FaultServer(script) as server:
        proc = run_cli(tmp_path, "--input-dir", tmp_path / "in", "--output", tmp_path / "out.jsonl",
                       "--workers", 4, "--timeout", 1, server.url)
    no_traceback(proc)
    results = results_by_key(tmp_path / "out.jsonl", tmp_path / "in")
    assert len(results) == len(bodies) + 4 and proc.returncode == 1
    assert all(r["error"] for r in results.values() if not r["class"])
    assert sum(1 for r in results.values() if r["error"]) >= len(bodies)


def test_stats_failures_are_reported_in_the_summary_and_the_exit_code(tmp_path):
    make_images(tmp_path / "in", 3, size=(8, 8), mode="L")

    def script(endpoint, n):
        return Reply(200, OK_CLASSIFY) if endpoint == "classify" else Reply(500, b"stats store down")

    with FaultServer(script) as server:
        proc = run_cli(tmp_path, "--input-dir", tmp_path / "in", "--output", tmp_path / "out.jsonl", server.url)
    out = proc.stdout.decode()
    results = results_by_key(tmp_path / "out.jsonl", tmp_path / "in")
    assert proc.returncode == 1 and "Stats reports not delivered: 3" in out, out
    assert all(r["class"] == "cat" and "500" in r["stats_error"] for r in results.values())


def test_an_unexpected_exception_is_a_line_not_the_end_of_the_run(tmp_path, start_server, capsys):
    server = start_server(latency_ms=0, stats_latency_ms=0)
    paths = make_images(tmp_path, 3, size=(8, 8), mode="L")

    def preparer(path, **kwargs):
        if path.endswith("1.jpg"):
            raise ZeroDivisionError("a bug")
        return imaging.prepare(path, **kwargs)

    seen = []
    summary = run((Candidate(str(p), p.name.encode()) for p in paths), Options(server.url, workers=2, progress=False),
                  preparer=preparer, sink=seen.append)
    assert len(seen) == 3 and summary.unexpected == 1 and summary.succeeded == 2
    assert [r.error for r in seen if r.error] == ["unexpected ZeroDivisionError: a bug"]
    assert "ZeroDivisionError: a bug" in capsys.readouterr().err  # the traceback is kept for the bug report
