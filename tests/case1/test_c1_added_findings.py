"""Evidence for the Case 1 findings added by the completeness review (C1-31 .. C1-39).

Each finding has its as-given (or patched) half, where the defect is observed, and its fixed
half, where the redesigned pipeline (``reference/case1/fixed``) is run as users run it: through its
CLI, in a subprocess or in process. The fixed package needs Python 3.11, so it is imported inside
the tests that use it: this module stays importable on the task's Python 3.8.
"""
from __future__ import annotations

import ast
import gc
import io
import json
import os
import pickle
import re
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import pytest
import requests
from PIL import Image, ImageOps

from case1_support import (AS_GIVEN, CLI_TIMEOUT, FAILURE_MESSAGE, FIXED_PACKAGE, PATCHED, args_namespace,
                           run_script, swallowed)
from workbench import results
from workbench.image_corpus import make_images, pixels
from reference.case1.as_given import process_images as as_given
from reference.case1.patched import process_images as patched

EXIF_ORIENTATION = 0x0112
ROTATE_90_CW_TO_DISPLAY = 6  # EXIF: the stored pixels must be turned 90 degrees clockwise for display
TCP_TIME_WAIT = "06"  # state code in /proc/net/tcp


def run_fixed(cwd, *args, timeout=CLI_TIMEOUT):
    """The redesigned CLI as a user runs it (``-X dev`` shows resource warnings)."""
    return subprocess.run([sys.executable, "-X", "dev", "-m", FIXED_PACKAGE, *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def run_fixed_on(tmp_path, write, url):
    """The fixed CLI on a fresh folder filled by ``write(folder)``; it must exit 0."""
    (tmp_path / "in").mkdir()
    write(tmp_path / "in")
    proc = run_fixed(tmp_path, "--input-dir", tmp_path / "in", "--no-progress", url)
    assert proc.returncode == 0, proc.stderr
    return proc


def main_function_source() -> str:
    """The text of the as-given ``main()``."""
    text = AS_GIVEN.read_text(encoding="utf-8")
    main = next(n for n in ast.parse(text).body if isinstance(n, ast.FunctionDef) and n.name == "main")
    return "\n".join(text.splitlines()[main.lineno - 1:main.end_lineno])


def animated_png(path: Path) -> Path:
    """A two-frame APNG: a ``.png`` that Pillow keeps open after ``load()`` (it may seek frames)."""
    frames = [pixels(40, 30, "RGB", seed) for seed in (1, 2)]
    frames[0].save(path, format="PNG", save_all=True, append_images=frames[1:])
    return path


def camera_jpeg(path: Path, size=(64, 48)) -> Path:
    """A JPEG stored sideways with EXIF Orientation 6, as phones write portrait photos."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATE_90_CW_TO_DISPLAY
    pixels(size[0], size[1], "RGB", 7).save(path, format="JPEG", exif=exif.tobytes())
    return path


def time_wait_sockets(port: int) -> int:
    """TCP sockets in TIME_WAIT whose local or remote port is ``port`` (IPv4, this namespace)."""
    count = 0
    with open("/proc/net/tcp", encoding="ascii") as table:
        next(table)
        for line in table:
            local, remote, state = line.split()[1:4]
            ports = {int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16)}
            count += state == TCP_TIME_WAIT and port in ports
    return count


def sysctl(name: str) -> str:
    return Path("/proc/sys", name).read_text(encoding="ascii").strip()


needs_proc_net_tcp = pytest.mark.skipif(not os.path.exists("/proc/net/tcp"),
                                        reason="counts sockets through Linux's /proc/net/tcp")


# --- C1-31: class_count by hand instead of collections.Counter ---------------------------------


@pytest.mark.finding("C1-31", side="as_given")
def test_class_count_is_a_hand_written_counter():
    source = main_function_source()
    # the three-line idiom and a report in first-seen order ...
    assert "class_count = {}" in source
    assert re.search(r"if cls not in class_count:\s+class_count\[cls\] = 0\s+"
                     r"class_count\[cls\] = class_count\[cls\] \+ 1", source)
    assert re.search(r'for k in class_count:\s+print\(k, "--", class_count\[k\]\)', source)
    assert "Counter" not in source
    # ... which collections.Counter replaces, counts equal, with the ranking the report lacks
    classes = ["dog", "cat", "cat", "bird", "cat", "dog"]
    by_hand: dict = {}
    for cls in classes:
        if cls not in by_hand:
            by_hand[cls] = 0
        by_hand[cls] = by_hand[cls] + 1
    assert Counter(classes) == by_hand
    assert list(by_hand) == ["dog", "cat", "bird"]  # first seen, not most frequent
    assert [c for c, _ in Counter(classes).most_common()] == ["cat", "dog", "bird"]


@pytest.mark.finding("C1-31", side="fixed")
def test_fixed_summary_counts_with_counter_and_ranks_classes(tmp_path):
    from reference.case1.fixed.report import Result, Summary
    summary = Summary()
    for i, cls in enumerate(["dog", "cat", "cat", "bird", "cat", "dog"]):
        summary.add(Result(f"/{cls}{i}.jpg", f"{cls}{i}.jpg".encode(), cls=cls, score=0.5, elapsed=0.01,
                           image_size=100))
    assert isinstance(summary.classes, Counter)
    out = io.StringIO()
    summary.report(out)
    lines = out.getvalue().splitlines()
    start = lines.index("Classification results:") + 1
    assert lines[start:start + 3] == ["cat -- 3", "dog -- 2", "bird -- 1"]


# --- C1-32: Image.open without `with` ------------------------------------------------------------


@pytest.mark.finding("C1-32", side="as_given")
def test_image_file_is_left_to_the_garbage_collector(tmp_path):
    path = animated_png(tmp_path / "anim.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        result = as_given.process_image(str(path), {}, args_namespace("http://127.0.0.1:9", skip_resize=True))
        gc.collect()
    assert result == (None, None, None)
    unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert unclosed == [f"unclosed file <_io.BufferedReader name='{path}'>"]


@pytest.mark.finding("C1-32", side="fixed")
def test_fixed_closes_every_image_file(tmp_path, server):
    proc = run_fixed_on(tmp_path, lambda folder: animated_png(folder / "anim.png"), server.url)
    assert "ResourceWarning" not in proc.stderr
    assert server.counters.snapshot()["accepted"] == 1


# --- C1-33: --threads-num is not validated -------------------------------------------------------


@pytest.mark.finding("C1-33", side="as_given")
@pytest.mark.parametrize("threads", ["0", "-3"])
def test_zero_or_negative_threads_end_in_a_traceback(tmp_path, threads):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(b"x")
    proc = run_script(AS_GIVEN, "--input-dir", str(tmp_path / "in"), "--threads-num", threads,
                      "http://127.0.0.1:9", cwd=tmp_path)
    assert proc.returncode == 1
    assert "ValueError: Number of processes must be at least 1" in proc.stderr
    assert "usage:" not in proc.stderr  # argparse accepted the number
    assert f"{tmp_path / 'in'}/a.jpg is not an image" in proc.stdout  # the directory was read first


@pytest.mark.finding("C1-33", side="fixed")
@pytest.mark.parametrize("workers", ["0", "-3"])
def test_fixed_rejects_zero_or_negative_workers_as_usage_error(tmp_path, workers):
    (tmp_path / "in").mkdir()
    proc = run_fixed(tmp_path, "--input-dir", tmp_path / "in", f"--workers={workers}", "http://127.0.0.1:9")
    assert proc.returncode == 2
    assert "usage:" in proc.stderr and "expected a whole number >= 1" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- C1-34: a lambda instead of functools.partial ------------------------------------------------


@pytest.mark.finding("C1-34", side="patched")
def test_lambda_blocks_the_move_to_processes(tmp_path, server, monkeypatch):
    import multiprocessing

    make_images(tmp_path / "in", 2, size=(8, 8), mode="L")
    # The C1-09 remedy "use processes for the CPU stages", tried by swapping the pool class:
    # a process pool must pickle the function it runs, and a lambda defined in main() cannot be.
    monkeypatch.setattr(patched, "ThreadPool", multiprocessing.get_context("fork").Pool)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["process_images.py", "--input-dir", str(tmp_path / "in"), server.url,
                                      "--threads-num", "2"])
    with pytest.raises((AttributeError, pickle.PicklingError), match=r"local object 'main\.<locals>\.<lambda>'"):
        patched.main()
    assert server.counters.snapshot()["accepted"] == 0


@pytest.mark.finding("C1-34", side="fixed")
def test_fixed_submits_a_named_picklable_function(tmp_path, monkeypatch, start_server):
    from concurrent.futures import ThreadPoolExecutor

    from reference.case1.fixed.cli import main
    server = start_server(latency_ms=0, stats_latency_ms=0)
    make_images(tmp_path / "in", 2, size=(8, 8), mode="L")
    submitted = []
    original = ThreadPoolExecutor.submit

    def recording_submit(self, fn, *args, **kwargs):
        submitted.append(fn)
        return original(self, fn, *args, **kwargs)

    monkeypatch.setattr(ThreadPoolExecutor, "submit", recording_submit)
    monkeypatch.chdir(tmp_path)
    assert main(["--input-dir", str(tmp_path / "in"), "--no-progress", server.url]) == 0
    assert len(submitted) == 2
    for fn in submitted:
        assert fn.__name__ != "<lambda>" and "<locals>" not in fn.__qualname__
        assert pickle.loads(pickle.dumps(fn)) is fn  # importable by name: a process pool could run it


# --- C1-35: EXIF orientation ignored before rotating ---------------------------------------------


@pytest.mark.finding("C1-35", side="patched")
def test_camera_photo_is_rotated_from_its_stored_pixels(tmp_path, server, monkeypatch):
    path = camera_jpeg(tmp_path / "portrait.jpg")
    stored = Image.open(path)
    assert stored.size == (64, 48) and ImageOps.exif_transpose(stored).size == (48, 64)  # shown upright
    sent = []
    original_post = requests.post
    monkeypatch.setattr(requests, "post",
                        lambda url, **kw: sent.append(kw.get("data")) or original_post(url, **kw))
    result = patched.process_image(str(path), {}, args_namespace(server.url, skip_resize=True))
    assert result[1] is not None
    # As viewed, the photo is 48x64; turned 90 degrees it is 64x48. The script turned the raw
    # pixels (64x48), so the classifier got a 48x64 picture lying on its side.
    assert server.counters.snapshot()["images"] == [[48, 64, "RGB"]]
    with Image.open(io.BytesIO(sent[0])) as received:
        assert EXIF_ORIENTATION not in received.getexif()  # and nothing tells the server so


@pytest.mark.finding("C1-35", side="fixed")
def test_fixed_rotates_what_a_viewer_sees(tmp_path, server):
    run_fixed_on(tmp_path, lambda folder: camera_jpeg(folder / "portrait.jpg"), server.url)
    # upright 48x64, rotated 64x48, halved 32x24
    assert server.counters.snapshot()["images"] == [[32, 24, "RGB"]]


# --- C1-36: print instead of logging -------------------------------------------------------------


@pytest.mark.finding("C1-36", side="as_given")
def test_diagnostics_go_to_stdout_with_the_results(tmp_path, start_server):
    make_images(tmp_path / "in", 2, size=(8, 8), mode="L")
    (tmp_path / "in" / "broken.jpg").write_bytes(b"not a jpeg")
    server = start_server(latency_ms=0, stats_latency_ms=0)
    given = run_script(AS_GIVEN, "--input-dir", str(tmp_path / "in"), server.url, cwd=tmp_path)
    assert given.stdout.count(" is not an image\n") == 3 and " is not an image" not in given.stderr
    proc = run_script(PATCHED, "--input-dir", str(tmp_path / "in"), server.url, "--threads-num", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    # one stream for everything: a bare failure line (no time, level or file) among the results
    assert "Connection to classification API failed" in lines and "Classification results:" in lines
    assert not any("broken.jpg" in line for line in lines)
    assert not re.search(r"\d\d:\d\d:\d\d|WARNING|ERROR", proc.stdout)


@pytest.mark.finding("C1-36", side="fixed")
def test_fixed_keeps_stdout_for_the_summary(tmp_path, start_server):
    make_images(tmp_path / "in", 2, size=(8, 8), mode="L")
    (tmp_path / "in" / "broken.jpg").write_bytes(b"not a jpeg")
    server = start_server(latency_ms=0, stats_latency_ms=0)
    proc = run_fixed(tmp_path, "--input-dir", tmp_path / "in", server.url)
    assert proc.returncode == 1  # one image failed
    summary = re.compile(r"(Images classified: .*|Classification results:|\S+ -- \d+|"
                         r"Request time min/avg/max: .*|Image size min/avg/max: .*|Results: .*)$")
    assert all(summary.match(line) for line in proc.stdout.splitlines()), proc.stdout
    assert "images done" in proc.stderr  # progress goes to stderr
    errors = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    broken = [r for r in errors if r["path"].endswith("broken.jpg")]
    assert len(broken) == 1 and "cannot identify image file" in broken[0]["error"]


# --- C1-37: a new TCP connection per request leaves TIME_WAIT sockets ----------------------------


def time_wait_left_by(run, images: Path, start_server, n: int):
    """``run(images, url)`` over ``n`` images; return (the server, TIME_WAIT sockets the run left)."""
    make_images(images, n, size=(8, 8), mode="L")
    server = start_server(latency_ms=0, stats_latency_ms=0)
    port = int(server.url.rsplit(":", 1)[1])
    before = time_wait_sockets(port)
    proc = run(images, server.url)
    assert proc.returncode == 0, proc.stderr
    return server, time_wait_sockets(port) - before


@needs_proc_net_tcp
@pytest.mark.finding("C1-37", side="patched")
def test_every_request_leaves_a_time_wait_socket(tmp_path, start_server):
    n = 6
    server, left = time_wait_left_by(lambda images, url: run_script(PATCHED, "--input-dir", str(images), url,
                                                                   cwd=tmp_path),
                                     tmp_path / "in", start_server, n)
    connections = server.counters.snapshot()["connections"]
    results.record("case1_time_wait", {"images": n, "connections": connections, "time_wait_left": left,
                                       "ip_local_port_range": sysctl("net/ipv4/ip_local_port_range"),
                                       "tcp_tw_reuse": sysctl("net/ipv4/tcp_tw_reuse")})
    assert connections == 2 * n  # classify + stats, each a new connection
    assert left >= 2 * n  # each closed by the client, each holding its port in TIME_WAIT


@needs_proc_net_tcp
@pytest.mark.finding("C1-37", side="fixed")
def test_fixed_leaves_at_most_one_time_wait_per_worker(tmp_path, start_server):
    n = 12
    server, left = time_wait_left_by(lambda images, url: run_fixed(tmp_path, "--input-dir", images, "--workers", 2,
                                                                  "--no-progress", url),
                                     tmp_path / "in", start_server, n)
    assert server.counters.snapshot()["accepted"] == n
    assert left <= 2


# --- C1-38: the API URL is never checked --------------------------------------------------------


@pytest.mark.finding("C1-38", side="patched")
def test_malformed_url_fails_every_image_as_a_connection_error(tmp_path, server):
    make_images(tmp_path / "in", 2, size=(8, 8), mode="L")
    no_scheme = server.url.replace("http://", "")  # "127.0.0.1:PORT", as people type it
    result, caught = swallowed(patched.process_image, str(tmp_path / "in" / "img_00000.jpg"), {},
                               args_namespace(no_scheme))
    assert result == (None, None, None, None)
    assert len(caught) == 1  # requests refuses the URL before any connection ...
    assert isinstance(caught[0], (requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema))
    proc = run_script(PATCHED, "--input-dir", str(tmp_path / "in"), no_scheme, cwd=tmp_path)
    # The whole directory is read, decoded and encoded; each image ends as a "connection" failure,
    # the run exits 0, and nothing says that the URL itself is wrong.
    assert proc.returncode == 0
    # (worker threads print concurrently, so two messages can share a line: count the text)
    assert proc.stdout.count(FAILURE_MESSAGE) == 2
    assert "url" not in (proc.stdout + proc.stderr).lower().replace("urllib", "")
    assert server.counters.snapshot()["connections"] == 0


@pytest.mark.finding("C1-38", side="fixed")
def test_fixed_rejects_a_malformed_url_before_reading_images(tmp_path, server):
    make_images(tmp_path / "in", 1, size=(8, 8), mode="L")
    bad = run_fixed(tmp_path, "--input-dir", tmp_path / "in", server.url.replace("http://", ""))
    assert bad.returncode == 2 and "expected an http:// or https:// URL" in bad.stderr
    assert not (tmp_path / "results.jsonl").exists()
    slash = run_fixed(tmp_path, "--input-dir", tmp_path / "in", "--no-progress", server.url + "/")
    assert slash.returncode == 0, slash.stderr
    assert server.counters.snapshot()["accepted"] == 1


# --- C1-39: the exit code does not report failures -----------------------------------------------


def _one_good_one_broken(directory: Path) -> None:
    make_images(directory, 1, size=(8, 8), mode="L")
    (directory / "broken.jpg").write_bytes(b"not a jpeg")


@pytest.mark.finding("C1-39", side="patched")
def test_failed_images_still_exit_0(tmp_path, start_server):
    server = start_server(latency_ms=0, stats_latency_ms=0)
    _one_good_one_broken(tmp_path / "some")
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "broken.jpg").write_bytes(b"not a jpeg")
    some = run_script(PATCHED, "--input-dir", str(tmp_path / "some"), server.url, cwd=tmp_path)
    none = run_script(PATCHED, "--input-dir", str(tmp_path / "none"), server.url, cwd=tmp_path)
    assert FAILURE_MESSAGE in some.stdout and FAILURE_MESSAGE in none.stdout
    # half failed, or all failed: a scheduler or a shell `&&` sees success either way
    assert (some.returncode, none.returncode) == (0, 0)


@pytest.mark.finding("C1-39", side="fixed")
def test_fixed_exit_code_says_whether_everything_was_classified(tmp_path, start_server):
    server = start_server(latency_ms=0, stats_latency_ms=0)
    _one_good_one_broken(tmp_path / "some")
    make_images(tmp_path / "good", 1, size=(8, 8), mode="L")
    some = run_fixed(tmp_path, "--input-dir", tmp_path / "some", "--no-progress", "--output",
                     tmp_path / "some.jsonl", server.url)
    good = run_fixed(tmp_path, "--input-dir", tmp_path / "good", "--no-progress", "--output",
                     tmp_path / "good.jsonl", server.url)
    assert (some.returncode, good.returncode) == (1, 0), some.stderr + good.stderr


def test_helpers_see_what_they_claim(tmp_path):
    """The corpus helpers of this module: the APNG really has frames, the JPEG its orientation."""
    with Image.open(animated_png(tmp_path / "a.png")) as apng:
        assert getattr(apng, "n_frames", 1) == 2
    with Image.open(camera_jpeg(tmp_path / "c.jpg")) as jpeg:
        assert jpeg.getexif()[EXIF_ORIENTATION] == ROTATE_90_CW_TO_DISPLAY
