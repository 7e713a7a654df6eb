"""Unit tests of the redesigned Case 1 pipeline (``reference/case1/fixed``), in process.

They run against the real local classification server over HTTP on 127.0.0.1, every request with
a timeout. The CLI-level evidence for the findings is in ``test_c1_fixed.py``.
"""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import threading
import tempfile
import time

import numpy as np
import pytest
import requests
from PIL import Image

from case1_support import as_nobody
from workbench.stacks import today_only

today_only()  # the redesigned code needs Python 3.11: skipped on the 2020 stack, before importing it

from reference.case1.fixed import calc_magic_number  # noqa: E402
from reference.case1.fixed.cli import main  # noqa: E402
from reference.case1.fixed.client import Client  # noqa: E402
from reference.case1.fixed.discovery import Candidate, iter_images  # noqa: E402
from reference.case1.fixed.imaging import half_size, jpeg_compatible, prepare, transform  # noqa: E402
from reference.case1.fixed.journal import Journal  # noqa: E402
from reference.case1.fixed.pipeline import EXIT_INTERRUPTED, Options, run  # noqa: E402
from reference.case1.fixed.report import RunningStats  # noqa: E402
from workbench.image_corpus import make_images, pixels  # noqa: E402


def candidates(paths):
    """Candidates for these paths, lazily; the key is the file name."""
    return (Candidate(str(p), os.path.basename(str(p)).encode()) for p in paths)


def collect():
    """A result sink and the list it fills."""
    seen = []
    return seen, seen.append


def run_cli(tmp_path, monkeypatch, *args):
    """``main()`` in this process, in ``tmp_path``; returns (exit code, {file name: result})."""
    monkeypatch.chdir(tmp_path)
    code = main(["--no-progress", *map(str, args)])
    lines = (tmp_path / "results.jsonl").read_text(encoding="utf-8").splitlines()
    return code, {os.path.basename(r["path"]): r for r in map(json.loads, lines)}


@pytest.fixture
def fast_server(start_server):
    return start_server(latency_ms=0, stats_latency_ms=0)


# --- bad input: clear errors, nothing lost ---------------------------------------------------


def test_bad_files_are_error_lines_and_the_rest_is_classified(tmp_path, monkeypatch, fast_server):
    make_images(tmp_path / "in", 2, size=(16, 12))
    whole = (tmp_path / "in" / "img_00000.jpg").read_bytes()
    (tmp_path / "in" / "cut.jpg").write_bytes(whole[: len(whole) // 3])
    (tmp_path / "in" / "text.png").write_text("not a picture", encoding="utf-8")
    (tmp_path / "in" / "notes.txt").write_text("ignored: no image extension", encoding="utf-8")
    code, results = run_cli(tmp_path, monkeypatch, "--input-dir", tmp_path / "in", fast_server.url)
    assert code == 1  # some images failed
    assert set(results) == {"img_00000.jpg", "img_00001.jpg", "cut.jpg", "text.png"}
    assert results["img_00000.jpg"]["class"] and results["img_00001.jpg"]["class"]
    assert results["cut.jpg"]["error"].startswith("OSError: ") and results["cut.jpg"]["class"] is None
    assert "cannot identify image file" in results["text.png"]["error"]
    counters = fast_server.counters.snapshot()
    assert counters["accepted"] == 2 and counters["stats_calls"] == 2 and counters["rejected"] == {}


def test_server_error_is_an_error_line_with_the_status(tmp_path, monkeypatch, capsys, start_server):
    make_images(tmp_path / "in", 2, size=(8, 8), mode="L")
    server = start_server(latency_ms=0, error_status=500)
    code, results = run_cli(tmp_path, monkeypatch, "--input-dir", tmp_path / "in", server.url)
    assert code == 1
    for result in results.values():
        assert result["error"].startswith("HTTPError: 500 Server Error") and "forced_error" in result["error"]
        assert result["class"] is None
    assert server.counters.snapshot()["stats_calls"] == 0  # failures are not counted as requests
    out = capsys.readouterr().out
    assert "None" not in out and "Request time min/avg/max: n/a" in out


def test_timeout_against_a_silent_server(tmp_path, silent_endpoint):
    url, _ = silent_endpoint
    jpeg = prepare(str(make_images(tmp_path, 1, size=(8, 8))[0])).jpeg
    started = time.perf_counter()
    with Client(url, timeout=0.5) as client, pytest.raises(requests.Timeout):
        client.classify(jpeg, 1.0)
    assert time.perf_counter() - started < 3  # one attempt: a POST that may have arrived is not retried


def test_a_malformed_answer_is_an_error_not_a_class(tmp_path):
    from workbench.fault_server import FaultServer, Reply
    jpeg = prepare(str(make_images(tmp_path, 1, size=(8, 8))[0])).jpeg
    with FaultServer(lambda endpoint, n: Reply(200, b'{"class": null, "score": 0.5}')) as server, \
            Client(server.url, timeout=5) as client, pytest.raises(requests.RequestException, match="unexpected"):
        client.classify(jpeg, 1.0)


def test_unreachable_server_is_an_error_line(tmp_path, monkeypatch):
    make_images(tmp_path / "in", 1, size=(8, 8))
    with socket.socket() as sock:  # a port that was free a moment ago: nobody listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, results = run_cli(tmp_path, monkeypatch, "--input-dir", tmp_path / "in", "--timeout", 2,
                            f"http://127.0.0.1:{port}")
    assert code == 1 and results["img_00000.jpg"]["error"].startswith("ConnectionError: ")


@pytest.mark.parametrize("args, message", [
    (["--input-dir", "missing", "http://127.0.0.1:1"], "is not a directory"),
    (["--input-dir", "file.txt", "http://127.0.0.1:1"], "is not a directory"),
    (["--input-dir", ".", "ftp://127.0.0.1"], "expected an http:// or https:// URL"),
    (["--input-dir", ".", "127.0.0.1:8000"], "expected an http:// or https:// URL"),
    (["--input-dir", ".", "http://127.0.0.1:99999"], "bad port"),
    (["--input-dir", ".", "--workers", "0", "http://127.0.0.1:1"], "expected a whole number >= 1"),
    (["--input-dir", ".", "--timeout", "-1", "http://127.0.0.1:1"], "expected a number of seconds > 0"),
    (["--input-dir", ".", "--output", "no/such/dir/out.jsonl", "http://127.0.0.1:1"], "cannot be written"),
])
def test_usage_errors_exit_2_with_a_clear_message(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.txt").write_text("x", encoding="utf-8")
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.skipif(os.name != "posix", reason="needs POSIX permissions")
def test_unreadable_input_dir_is_a_usage_error(tmp_path, monkeypatch, capsys):
    # As root (CI here) permissions do not apply, so the check runs as "nobody" in a forked child;
    # as any other user it runs as that user.
    base = tempfile.mkdtemp(prefix="case1-locked-")  # under /tmp, so "nobody" can reach it
    locked = os.path.join(base, "locked")
    try:
        os.chmod(base, 0o711)
        os.mkdir(locked, 0o311)  # can be entered, cannot be listed
        next(iter_images(str(tmp_path)), None)  # load the discovery's imports (Pillow's plugins) before the fork
        argv = ["--input-dir", locked, "--output", os.path.join(base, "out.jsonl"), "http://127.0.0.1:1"]
        if os.geteuid() == 0:
            code, err = as_nobody(lambda: main(argv))
        else:
            with pytest.raises(SystemExit) as exited:
                main(argv)
            code, err = exited.value.code, capsys.readouterr().err
        assert code == 2 and "cannot be read" in err and "Permission denied" in err, err
    finally:
        os.chmod(locked, 0o700)
        for name in os.listdir(base):
            os.rmdir(os.path.join(base, name)) if os.path.isdir(os.path.join(base, name)) else os.unlink(
                os.path.join(base, name))
        os.rmdir(base)


# --- the pipeline: bounded, streaming, interruptible ------------------------------------------


@pytest.mark.finding("C1-03", side="fixed")
@pytest.mark.finding("C1-08", side="fixed")
def test_submission_window_is_bounded(tmp_path, start_server):
    from reference.case1.fixed.pipeline import LOOKUP_BATCH
    server = start_server(latency_ms=0, stats_latency_ms=0)
    image = str(make_images(tmp_path, 1, size=(8, 8), mode="L")[0])
    total, workers = 2 * LOOKUP_BATCH + 50, 3
    seen, sink = collect()
    ahead = []

    def lazy():  # the same file under many names: a long input that costs little
        for number in range(total):
            ahead.append(number - len(seen))  # taken from the input but not yet recorded
            yield Candidate(image, b"%d.jpg" % number)

    summary = run(lazy(), Options(server.url, workers=workers, timeout=5, progress=False), sink=sink)
    assert summary.succeeded == total == len(seen)
    # never more than one lookup batch plus the window ahead of the results, however long the input
    assert max(ahead) <= LOOKUP_BATCH + 2 * workers < total


def test_keyboard_interrupt_keeps_what_was_written(tmp_path, start_server):
    server = start_server(latency_ms=400, stats_latency_ms=0)
    paths = [str(p) for p in make_images(tmp_path, 6, size=(8, 8), mode="L")]
    seen, sink = collect()
    ctrl_c = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))  # while two requests are running
    ctrl_c.start()
    try:
        summary = run(candidates(paths), Options(server.url, workers=2, timeout=5, progress=False), sink=sink)
    finally:
        ctrl_c.cancel()
    assert summary.interrupted and summary.exit_code == EXIT_INTERRUPTED
    # the two running requests finish and are recorded; the queued ones are cancelled, not faked
    assert len(seen) == 2 and all(r.cls for r in seen) and {r.path for r in seen} <= set(paths)
    assert server.counters.snapshot()["accepted"] == 2


def test_one_session_per_worker_for_classify_and_stats(tmp_path, fast_server):
    paths = [str(p) for p in make_images(tmp_path, 12, size=(8, 8), mode="L")]
    run(candidates(paths), Options(fast_server.url, workers=3, timeout=5, progress=False))
    counters = fast_server.counters.snapshot()
    assert counters["accepted"] == counters["stats_calls"] == 12
    assert counters["connections"] <= 3
    payload = counters["stats_payloads"][0]
    assert set(payload) == {"elapsed", "class", "image_size"} and isinstance(payload["elapsed"], float)


@pytest.mark.finding("C1-07", side="fixed")
def test_no_thread_outlives_the_run(tmp_path, fast_server):
    paths = [str(p) for p in make_images(tmp_path, 4, size=(8, 8), mode="L")]
    summary = run(candidates(paths), Options(fast_server.url, workers=3, timeout=5, progress=False))
    assert summary.succeeded == 4
    left = [t.name for t in threading.enumerate() if t.name.startswith(("classify", "http-deadlines"))]
    assert left == []  # the pool and the deadline watchdog are shut down and joined by run()


@pytest.mark.finding("C1-03", side="fixed")
def test_discovery_reads_the_directory_lazily(tmp_path, monkeypatch):
    from reference.case1.fixed import discovery
    for i in range(300):
        (tmp_path / f"{i}.jpg").write_bytes(b"")
    consumed = []
    real_scandir = os.scandir

    class Counting:
        def __init__(self, path):
            self.inner = real_scandir(path)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.inner.close()

        def __iter__(self):
            for entry in self.inner:
                consumed.append(entry.name)
                yield entry

    monkeypatch.setattr(discovery.os, "scandir", Counting)
    found = iter_images(str(tmp_path))
    first = next(found)
    assert first.path.endswith(".jpg") and len(consumed) <= 2  # the first name, not the whole listing
    assert 1 + sum(1 for _ in found) == 300 == len(consumed)


def test_running_stats():
    stats = RunningStats()
    assert stats.summary() == "n/a"
    for value in (0.5, 0.25, 1.0):
        stats.add(value)
    assert (stats.low, stats.high, stats.count) == (0.25, 1.0, 3)
    assert stats.summary("{:.3f}") == "0.250/0.583/1.000"


# --- discovery --------------------------------------------------------------------------------


def test_discovery_is_lazy_case_insensitive_and_recursion_is_optional(tmp_path):
    for name in ("a.JPG", "b.jpeg", "c.Png", "d.bmp", "e.txt", "f", "sub/g.jpg", "album.png/h.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = iter_images(str(tmp_path), recursive=False)
    assert iter(found) is found  # a generator, not a list
    names = lambda found: sorted(os.path.relpath(c.path, tmp_path) for c in found)  # noqa: E731
    assert names(found) == ["a.JPG", "b.jpeg", "c.Png", "d.bmp"]
    assert names(iter_images(str(tmp_path))) == ["a.JPG", "album.png/h.jpg", "b.jpeg", "c.Png", "d.bmp",
                                                  "sub/g.jpg"]
    with pytest.raises(FileNotFoundError):
        next(iter_images(str(tmp_path / "missing")))


# --- imaging ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size, expected", [((1024, 768), (512, 384)), ((1, 1), (1, 1)), ((3, 1), (1, 1)),
                                             ((31, 17), (15, 8))])
def test_half_size_is_whole_and_never_zero(size, expected):
    assert half_size(size) == expected


@pytest.mark.parametrize("rotate, resize, expected", [(True, True, (15, 20)), (True, False, (30, 40)),
                                                      (False, True, (20, 15)), (False, False, (40, 30))])
def test_rotation_and_resize_are_independent(rotate, resize, expected):
    assert transform(pixels(40, 30, "RGB", 1), rotate=rotate, resize=resize).size == expected


def test_modes_become_jpeg_compatible():
    transparent = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert jpeg_compatible(transparent).getpixel((0, 0)) == (255, 255, 255)  # white, not black
    assert jpeg_compatible(pixels(8, 8, "P", 1)).mode == "RGB"
    assert jpeg_compatible(Image.new("I;16", (4, 4))).mode == "L"
    grey = pixels(8, 8, "L", 1)
    assert jpeg_compatible(grey) is grey


def test_prepare_sends_a_jpeg_with_the_magic_of_its_luminance(tmp_path):
    path = tmp_path / "rgba.png"
    pixels(40, 30, "RGBA", 2).save(path)
    prepared = prepare(str(path))
    with Image.open(io.BytesIO(prepared.jpeg)) as sent:
        assert (sent.format, sent.mode, sent.size) == ("JPEG", "RGB", (15, 20)) == ("JPEG", prepared.mode,
                                                                                   prepared.size)
    assert isinstance(prepared.magic, float) and np.isfinite(prepared.magic)


# --- magic ------------------------------------------------------------------------------------


def slow_magic(image) -> float:
    """The definition, with Python integers."""
    return sum((x + 1) * (y + 1) * int(v) for (x, y), v in np.ndenumerate(image)) / image.size


def test_magic_matches_the_definition_without_uint8_overflow():
    image = np.full((7, 5), 255, dtype=np.uint8)
    assert calc_magic_number(image) == slow_magic(image)
    small = np.asarray(pixels(13, 9, "L", 4))
    assert calc_magic_number(small) == slow_magic(small)


def test_magic_falls_back_to_exact_integers_beyond_int64():
    image = np.full((4, 3), 2**60, dtype=np.int64)  # the weighted sum is far beyond int64
    assert calc_magic_number(image) == slow_magic(image)


def test_magic_of_a_colour_image_is_its_luminance():
    rgb = pixels(20, 10, "RGB", 5)
    expected = calc_magic_number(np.asarray(rgb.convert("L")))
    assert calc_magic_number(np.asarray(rgb)) == expected
    assert calc_magic_number(np.asarray(rgb.convert("RGBA"))) == expected
    assert isinstance(expected, float)


@pytest.mark.parametrize("bad", [np.zeros((0, 3), np.uint8), np.zeros((2, 2, 2), np.uint8),
                                 np.zeros((2, 2, 3), np.float32), np.array([["a"]])])
def test_magic_rejects_what_it_cannot_define(bad):
    with pytest.raises(ValueError):
        calc_magic_number(bad)

