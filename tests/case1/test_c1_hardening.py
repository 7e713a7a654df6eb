"""The redesigned Case 1 CLI against a hostile tester's attacks: each attack, reproduced, must now
end in a clear error or a result line with its cause, lose nothing, and never end in a traceback.

Sections follow the program's promises: earlier results are never destroyed by a rerun (H1, M7),
memory stays in the budget (H2), a timeout bounds the whole request (H3), the server cannot make
the client misbehave (M1, M2, M4, redirects), every input gets its line (M3), a temporary failure is
retried by a rerun, exactly once (M5), a broken terminal costs only text (M6), and bad arguments
are usage errors. Timing is asserted as a bound far from both outcomes (a 1 s deadline against the
5 s or more it took), memory as the estimate of each conversion path against the peak measured.
"""
from __future__ import annotations

import errno
import io
import json
import os
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from case1_support import FIXED_PACKAGE, ROOT, as_nobody
from workbench.stacks import today_only

today_only()  # the redesigned code needs Python 3.11: skipped on the 2020 stack, before importing it

from reference.case1.fixed import imaging  # noqa: E402
from reference.case1.fixed.cli import main  # noqa: E402
from reference.case1.fixed.client import MAX_ATTEMPTS, Client, DeadlineExceeded  # noqa: E402
from reference.case1.fixed.discovery import Candidate, iter_images  # noqa: E402
from reference.case1.fixed.journal import Journal, JournalError  # noqa: E402
from reference.case1.fixed.pipeline import Options, run  # noqa: E402
from workbench.fault_server import OK_CLASSIFY, OK_STATS, FaultServer, Reply  # noqa: E402
from workbench.image_corpus import make_images  # noqa: E402

CONFIG = {"input_dir": "/in", "rotate": True}


def default_sigint():
    """In the child, before exec: Ctrl-C as in a terminal (a shell starts background jobs with SIGINT
    ignored, and Python then installs no KeyboardInterrupt handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(cwd, *args, timeout=120, **popen):
    """The CLI as a user runs it (``-X dev``: resource warnings shown), without a progress bar unless asked."""
    return subprocess.run([sys.executable, "-X", "dev", "-m", FIXED_PACKAGE, *map(str, args)], cwd=cwd,
                          capture_output="stdout" not in popen and "stderr" not in popen, timeout=timeout, **popen)


def records(path):
    return [json.loads(line) for line in path.read_bytes().decode("utf-8").splitlines()]


def rows(*keys):
    return [(key, json.dumps({"path": key.decode()}), False, False) for key in keys]


def complete_lines(*paths):
    """Every complete line of the files (a file that does not exist has none)."""
    out = []
    for path in paths:
        if os.path.exists(path):
            data = open(path, "rb").read()
            out += data[: data.rfind(b"\n") + 1].splitlines()
    return out


def set_aside(out):
    return sorted(out.parent.glob(out.name + ".replaced-*"))


@pytest.fixture
def fast_server(start_server):
    return start_server(latency_ms=0, stats_latency_ms=0)


# --- H1, M7: a rerun never destroys results; a damaged index is a clear error ---------------------------------


@pytest.mark.finding("C1-12", side="fixed")
def test_a_stale_index_never_truncates_the_results_it_does_not_know(tmp_path):
    out = tmp_path / "out.jsonl"
    index = tmp_path / "out.jsonl.index.sqlite"
    with Journal(out, CONFIG) as journal:
        journal.record(rows(b"a"))
    stale = tmp_path / "stale.sqlite"
    shutil.copy(index, stale)  # a backup of the index, taken after one result
    with Journal(out, CONFIG) as journal:
        journal.record(rows(b"b", b"c"))
    written = complete_lines(out)
    assert len(written) == 3
    os.replace(stale, index)  # the index restored from the backup: it knows one of the three results
    with Journal(out, CONFIG) as journal:
        assert journal.done([b"a", b"b", b"c"]) == {b"a"}  # the other two are done again...
    kept = complete_lines(out, *set_aside(out))
    assert all(line in kept for line in written)  # ...and their results are still there, set aside
    assert complete_lines(out) == written[:1]  # while the output is again what the index holds


@pytest.mark.finding("C1-12", side="fixed")
def test_an_empty_index_or_one_moved_without_its_wal_is_refused(tmp_path):
    out = tmp_path / "out.jsonl"
    index = tmp_path / "out.jsonl.index.sqlite"
    with Journal(out, CONFIG):
        pass
    before_any_result = index.read_bytes()  # closed: the settings are in the main file, there are no rows
    with Journal(out, CONFIG) as journal:
        journal.record(rows(b"a", b"b"))
        main_file_only = index.read_bytes()  # the rows are still in the -wal file
    written = out.read_bytes()
    for broken in (b"", main_file_only, before_any_result):
        for suffix in ("-wal", "-shm"):
            index.with_name(index.name + suffix).unlink(missing_ok=True)
        index.write_bytes(broken)
        with pytest.raises(JournalError, match="holds no|holds none"):
            Journal(out, CONFIG).__enter__()
        assert out.read_bytes() == written  # nothing truncated, nothing set aside
        assert set_aside(out) == []


@pytest.mark.finding("C1-12", side="fixed")
@pytest.mark.parametrize("damage", ["not sqlite", "malformed page", "checkpoint not JSON", "other program",
                                    "other format"])
def test_a_damaged_index_is_a_usage_error_naming_the_cause(tmp_path, monkeypatch, capsys, damage):
    (tmp_path / "in").mkdir()
    out = tmp_path / "out.jsonl"
    index = tmp_path / "out.jsonl.index.sqlite"
    settings = {"input_dir": os.path.realpath(tmp_path / "in"), "recursive": True, "rotate": True, "resize": True,
                "url": "http://127.0.0.1:9"}  # what the CLI below stores
    with Journal(out, settings) as journal:
        journal.record([(b"k%d" % i, json.dumps({"n": i, "pad": "x" * 300}), False, False) for i in range(200)])
    if damage == "not sqlite":
        index.write_bytes(b"this is not a database, " * 100)
    elif damage == "malformed page":
        data = bytearray(index.read_bytes())
        data[4096 + 8:4096 + 200] = b"\xff" * 192  # the second page's header and cell pointers
        index.write_bytes(bytes(data))
    else:
        db = sqlite3.connect(index, isolation_level=None)
        if damage == "checkpoint not JSON":
            db.execute("UPDATE meta SET value = '[1, ' WHERE name = 'checkpoint'")
        elif damage == "other program":
            db.executescript("DROP TABLE meta; DROP TABLE results; CREATE TABLE songs (title TEXT);")
        else:
            db.executescript("ALTER TABLE results ADD COLUMN note TEXT;")
        db.close()
    written = out.read_bytes()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["--input-dir", "in", "--output", "out.jsonl", "--no-progress", "http://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "cannot be written or resumed" in err, err
    assert {"not sqlite": "not a database", "malformed page": "malformed", "checkpoint not JSON": "checkpoint",
            "other program": "another program", "other format": "another format"}[damage] in err, err
    assert out.read_bytes() == written


@pytest.mark.finding("C1-12", side="fixed")
def test_a_disk_that_fills_while_recording_says_so(tmp_path):
    with Journal(tmp_path / "out.jsonl", CONFIG) as journal:
        journal.record(rows(b"a"))
        pages = journal._db.execute("PRAGMA page_count").fetchone()[0]
        journal._db.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own "disk full", exactly as ENOSPC
        with pytest.raises(sqlite3.OperationalError, match="full"):  # not "cannot rollback"
            journal.record([(b"k%d" % i, "x" * 1000, False, False) for i in range(100)])


@pytest.fixture
def full_disk():
    """A tiny tmpfs filled to the last byte (needs root and mount): a real ENOSPC."""
    where = tempfile.mkdtemp(prefix="case1-full-")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", where], capture_output=True,
                      timeout=30).returncode != 0:
        os.rmdir(where)
        pytest.skip("cannot mount a tmpfs here")
    try:
        with open(os.path.join(where, "filler"), "wb", buffering=0) as filler:
            try:
                while True:
                    filler.write(b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        yield where
    finally:
        subprocess.run(["umount", where], capture_output=True, timeout=30)
        os.rmdir(where)


@pytest.mark.finding("C1-12", side="fixed")
def test_a_full_disk_at_start_is_exit_3_with_the_cause(tmp_path, full_disk, monkeypatch, capsys):
    make_images(tmp_path / "in", 1, size=(8, 8), mode="L")
    code = main(["--input-dir", str(tmp_path / "in"), "--output", os.path.join(full_disk, "out.jsonl"),
                 "--no-progress", "http://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 3 and "full" in err, err


# --- H2: memory stays in the budget ------------------------------------------------------------------------------


def png_with_private_chunk(path, chunk_bytes, sparse=False):
    """A 1 x 1 PNG whose private chunk ``prVt`` (before the image data) holds ``chunk_bytes`` zeros."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    png = buffer.getvalue()
    at = png.index(b"IDAT") - 4
    with open(path, "wb") as file:
        file.write(png[:at] + struct.pack(">I", chunk_bytes) + b"prVt")
        if sparse:
            file.seek(chunk_bytes, os.SEEK_CUR)
        else:
            file.write(b"\0" * chunk_bytes)
        file.write(struct.pack(">I", zlib.crc32(b"\0" * chunk_bytes if not sparse else b"", zlib.crc32(b"prVt"))))
        file.write(png[at:])


def traced_peak(func):
    tracemalloc.start()
    try:
        func()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_a_huge_png_chunk_is_refused_without_being_read(tmp_path):
    path = tmp_path / "chunky.png"
    png_with_private_chunk(path, 64 << 20)

    def prepare():
        with pytest.raises(imaging.MetadataTooLarge, match="prVt"):
            imaging.prepare(str(path))

    assert traced_peak(prepare) < 1 << 20  # Pillow would have read all 64 MiB, twice


def test_any_format_stops_reading_metadata_at_the_limit(tmp_path):
    path = tmp_path / "described.tif"
    Image.new("L", (4, 4)).save(path, tiffinfo={270: "x" * (imaging.MAX_METADATA_BYTES + (4 << 20))})

    def prepare():
        with pytest.raises(imaging.MetadataTooLarge):
            imaging.prepare(str(path))

    assert traced_peak(prepare) < 2 * imaging.MAX_METADATA_BYTES


def test_four_links_to_a_chunky_png_stay_in_a_small_budget(tmp_path, fast_server):
    """The attack itself: four links to a 1 x 1 PNG with a 256 MiB private chunk, --memory-budget 16M."""
    root = tmp_path / "in"
    root.mkdir()
    png_with_private_chunk(root / "chunky.png", 256 << 20, sparse=True)
    for i in range(3):
        os.symlink("chunky.png", root / f"link{i}.png")
    code = ("import resource, runpy, sys; sys.argv = sys.argv[1:]\n"
            "try:\n    runpy.run_module('reference.case1.fixed', run_name='__main__')\n"
            "finally:\n    print('maxrss', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, "x", "--input-dir", str(root), "--workers", "4",
                           "--memory-budget", "16M", "--output", str(tmp_path / "out.jsonl"), "--no-progress",
                           fast_server.url], capture_output=True, text=True, timeout=120, cwd=ROOT)
    peak = int(proc.stderr.rsplit("maxrss", 1)[1].split()[0]) * 1024
    results = records(tmp_path / "out.jsonl")
    assert proc.returncode == 1 and len(results) == 4, proc.stderr[-2000:]
    assert all("prVt" in r["error"] and not r["retryable"] for r in results)
    assert peak < 256 << 20, peak  # one chunk read whole would be 256 MiB; four at once, 2 GiB


MEMORY_PROBE = """
import gc, json, sys
from reference.case1.fixed import imaging
from reference.case1.fixed.budget import MemoryBudget, return_freed_memory

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))

class Recording(MemoryBudget):
    def reserve(self, nbytes):
        self.asked = nbytes
        return super().reserve(nbytes)

return_freed_memory()  # large blocks are unmapped when freed, so VmRSS falls back between images
budget = Recording(1 << 62)
cases = json.loads(sys.argv[1])
imaging.prepare(cases[0][0], budget=budget)  # Pillow's plugins, NumPy, the JPEG encoder: loaded once
out = []
for path, rotate, resize in cases:
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM, the peak resident size, to the current one
    before = status("VmRSS")
    imaging.prepare(path, rotate=rotate, resize=resize, budget=budget)
    out.append([status("VmHWM") - before, budget.asked])
print(json.dumps(out))
"""


def _mode_images(root, width=2400, height=1800):
    """One file per conversion path: (name, image) saved in a format that keeps the mode."""
    rng = np.random.default_rng(7)
    rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    grey = rgb.convert("L")
    palette = Image.fromarray(rng.integers(0, 64, (height, width), dtype=np.uint8), "P")
    palette.putpalette(list(rng.integers(0, 256, 64 * 3, dtype=np.uint8)))
    wide = np.asarray(grey).astype(np.uint16) * 257
    exif = Image.Exif()
    exif[imaging.ORIENTATION_TAG] = 6
    files = {
        "L.png": (grey, {}), "RGB.png": (rgb, {}), "RGBA.png": (rgb.convert("RGBA"), {}),
        "LA.png": (rgb.convert("LA"), {}), "P.png": (palette, {}), "P_transparent.png": (palette, {"transparency": 0}),
        "1.png": (rgb.convert("1"), {}), "I16.png": (Image.fromarray(wide), {}),
        "I.tif": (Image.fromarray(wide.astype(np.int32)), {}), "F.tif": (grey.convert("F"), {}),
        "CMYK.tif": (rgb.convert("CMYK"), {}), "RGB.jpg": (rgb, {"quality": 90}), "RGB.webp": (rgb, {"quality": 80}),
        "P.gif": (palette, {}), "RGB_turned.png": (rgb, {"exif": exif}),
    }
    for name, (image, params) in files.items():
        if name.endswith(".png"):
            params = {**params, "compress_level": 0}
        image.save(root / name, **params)
    return sorted(files)


def test_the_reservation_follows_each_modes_conversion_path(tmp_path):
    """Peak resident memory of prepare() per mode and flags, measured in a fresh process, against what
    it reserved: never more (the budget holds), and not a blanket over-estimate either."""
    names = _mode_images(tmp_path)
    cases = [[str(tmp_path / name), rotate, resize] for name in names
             for rotate, resize in ((True, True), (True, False))]
    proc = subprocess.run([sys.executable, "-c", MEMORY_PROBE, json.dumps(cases)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    measured = json.loads(proc.stdout)
    slack = 2 << 20  # page and allocator granularity
    report = {f"{os.path.basename(p)} rotate={r} resize={s}": (round(m / 2 ** 20, 1), round(e / 2 ** 20, 1))
              for (p, r, s), (m, e) in zip(cases, measured)}
    assert all(m <= e + slack for m, e in measured), report  # measured MiB, reserved MiB
    assert all(e <= 1.5 * m + slack for m, e in measured), report


# --- H3: the deadline bounds connecting too ---------------------------------------------------------------------


@pytest.fixture
def backlogged():
    """A loopback listener whose accept queue is full: a new connection's SYN is dropped, so connecting
    hangs until the server accepts. Yields (url, accept_after(seconds, trickle))."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    stop = threading.Event()
    threads = []

    def serve(conn):
        with conn:
            conn.settimeout(1)
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n")
                for _ in range(40):  # a byte every 0.2 s: 8 s in all, unless the client hangs up
                    if stop.wait(0.2):
                        break
                    conn.sendall(b" ")
            except OSError:
                pass

    def accept_after(seconds):
        def accept():
            if stop.wait(seconds):
                return
            listener.settimeout(0.1)
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                thread = threading.Thread(target=serve, args=(conn,), daemon=True)
                thread.start()
                threads.append(thread)

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        threads.append(thread)

    time.sleep(0.1)
    yield f"http://127.0.0.1:{port}", accept_after
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    for sock in fillers + [listener]:
        sock.close()


@pytest.mark.finding("C1-23", side="fixed")
def test_the_deadline_bounds_connect_attempts(backlogged):
    url, _ = backlogged
    started = time.monotonic()
    with Client(url, timeout=1) as client, pytest.raises(DeadlineExceeded):
        client.classify(b"jpeg", 1.0)
    assert time.monotonic() - started < 2.5  # urllib3 alone: 4 attempts of 1 s and the backoff between, 5 s


@pytest.mark.finding("C1-23", side="fixed")
def test_a_late_accept_and_a_trickled_answer_are_still_cut_at_the_deadline(backlogged):
    url, accept_after = backlogged
    accept_after(0.7)  # after the deadline: the retried connect succeeds, then the answer trickles for 8 s
    started = time.monotonic()
    with Client(url, timeout=0.5) as client, pytest.raises(DeadlineExceeded):
        client.classify(b"jpeg", 1.0)
    assert time.monotonic() - started < 2.5


# --- M1, M2, M4, redirects: what the server sends -----------------------------------------------------------------


@pytest.mark.finding("C1-25", side="fixed")
@pytest.mark.parametrize("header", ["0", "Thu, 01 Jan 1970 00:00:00 GMT"])
def test_retry_after_zero_or_past_is_no_licence_for_a_hot_loop(header):
    with FaultServer(lambda e, n: Reply(429, b"slow down", {"Retry-After": header})) as server, \
            Client(server.url, timeout=5, retry_budget=3) as client:
        with pytest.raises(requests.HTTPError, match="429"):
            client.classify(b"jpeg", 1.0)
        calls = server.calls("classify")
    # waits of 0.1-0.2, 0.2-0.4, 0.4-0.8, 0.8-1.6 s...: at most 5 calls fit in the 3 s budget (a slow machine
    # makes fewer); taking Retry-After at its word would spend all MAX_ATTEMPTS at once
    assert 2 <= calls <= 5 < MAX_ATTEMPTS, calls


@pytest.mark.finding("C1-25", side="fixed")
def test_retries_stop_after_the_attempt_limit_even_within_the_budget():
    with FaultServer(lambda e, n: Reply(503, b"busy", {"Retry-After": "0"})) as server, \
            Client(server.url, timeout=5, retry_budget=3600) as client, \
            pytest.MonkeyPatch.context() as patch:
        from reference.case1.fixed import client as client_module
        patch.setattr(client_module, "BACKOFF_SECONDS", 0.001)
        with pytest.raises(requests.HTTPError, match=f"gave up after {MAX_ATTEMPTS} attempts"):
            client.classify(b"jpeg", 1.0)
        assert server.calls("classify") == MAX_ATTEMPTS


HOSTILE_ANSWERS = {
    "status 999": Reply(999, OK_CLASSIFY),
    "status 600": Reply(600, OK_CLASSIFY),
    "Retry-After superscript": Reply(429, b"{}", {"Retry-After": "\u00b2"}),
    "Content-Length superscript": Reply(200, OK_CLASSIFY, content_length="\u00b2"),
    "score with 401 digits": Reply(200, b'{"class": "cat", "score": 1' + b"0" * 400 + b"}"),
    "redirect to a broken URL": Reply(307, b"", {"Location": "http://[::1"}),
}


@pytest.mark.finding("C1-25", side="fixed")
@pytest.mark.parametrize("name", list(HOSTILE_ANSWERS))
def test_odd_answers_are_request_errors_with_a_cause(tmp_path, name):
    """A RequestException with its cause (or, for a length that is no number, the body read to its end);
    never a ValueError, OverflowError or AssertionError from inside the client."""
    with FaultServer(lambda e, n: HOSTILE_ANSWERS[name]) as server, \
            Client(server.url, timeout=2, retry_budget=1) as client:
        try:
            answer = client.classify(b"jpeg", 1.0)
        except requests.RequestException as exc:
            assert str(exc)
        else:
            assert name == "Content-Length superscript" and answer.cls == "cat"


@pytest.mark.finding("C1-25", side="fixed")
def test_a_redirect_to_another_origin_is_not_followed(tmp_path):
    with FaultServer() as elsewhere:
        with FaultServer(lambda e, n: Reply(307, b"", {"Location": elsewhere.url + "/api/classify"})) as server, \
                Client(server.url, timeout=2) as client:
            with pytest.raises(requests.HTTPError, match="not followed"):
                client.classify(b"jpeg", 1.0)
        assert elsewhere.calls("classify") == 0  # the image never left for the other server


@pytest.mark.finding("C1-38", side="fixed")
def test_credentials_in_the_url_never_reach_the_results_or_the_terminal(tmp_path):
    make_images(tmp_path / "in", 2, size=(8, 8), mode="L")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    with FaultServer(lambda e, n: Reply(404, b"no such API")) as server:
        wrong_path = server.url.replace("http://", "http://alice:s3cret%21@") + "/v0"
        for url, output in ((wrong_path, "404.jsonl"), (f"http://alice:s3cret%21@127.0.0.1:{closed_port}", "down.jsonl"),
                            ("http://alice:s3cret!@127.0.0.1:99999", "badport.jsonl")):
            proc = run_cli(tmp_path, "--input-dir", "in", "--output", output, "--no-progress", "--timeout", 2, url)
            shown = proc.stdout + proc.stderr + ((tmp_path / output).read_bytes() if (tmp_path / output).exists()
                                                 else b"")
            assert proc.returncode in (1, 2) and b"Traceback" not in proc.stderr, proc.stderr
            assert b"s3cret" not in shown and b"alice" not in shown, shown


def test_control_characters_from_the_server_are_escaped_in_the_summary(tmp_path):
    make_images(tmp_path / "in", 1, size=(8, 8), mode="L")
    evil = '{"class": "cat\\u001b]0;owned\\u0007\\u001b[2J\\u009b31m\\u202e", "score": 0.5}'.encode()
    with FaultServer(lambda e, n: Reply(200, evil if e == "classify" else OK_STATS)) as server:
        proc = run_cli(tmp_path, "--input-dir", "in", "--no-progress", server.url)
    assert proc.returncode == 0, proc.stderr
    summary = proc.stdout.decode("utf-8")
    assert "cat\\x1b]0;owned\\x07\\x1b[2J\\x9b31m\\u202e -- 1" in summary, summary
    assert not any(ch in summary for ch in "\x1b\x07\x9b\u202e")


# --- M3: every input gets its line ----------------------------------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="needs POSIX permissions")
@pytest.mark.finding("C1-03", side="fixed")
def test_an_unreadable_subdirectory_is_a_line_with_its_cause(tmp_path):
    base = tempfile.mkdtemp(prefix="case1-sub-")  # under /tmp, so "nobody" can reach it
    try:
        os.chmod(base, 0o777)
        make_images(os.path.join(base, "in"), 1, size=(8, 8), mode="L", prefix="outer")
        make_images(os.path.join(base, "in", "locked"), 1, size=(8, 8), mode="L", prefix="inner")
        os.chmod(os.path.join(base, "in", "locked"), 0o311)  # can be entered, cannot be listed
        next(iter_images(str(tmp_path)), None)  # Pillow's plugins loaded before the fork
        argv = ["--input-dir", os.path.join(base, "in"), "--output", os.path.join(base, "out.jsonl"), "--no-progress",
                "--timeout", "2", "http://127.0.0.1:9"]
        code, err = as_nobody(lambda: main(argv)) if os.geteuid() == 0 else (main(argv), "")
        results = {os.path.relpath(r["path"], os.path.join(base, "in")): r for r in records(Path(base, "out.jsonl"))}
        assert code == 1, err
        assert set(results) == {"outer_00000.jpg", "locked"}
        assert "Permission denied" in results["locked"]["error"] and results["locked"]["retryable"]
    finally:
        os.chmod(os.path.join(base, "in", "locked"), 0o700)
        shutil.rmtree(base)


@pytest.mark.finding("C1-03", side="fixed")
def test_a_directory_too_deep_to_name_is_a_line_with_its_cause(tmp_path, fast_server):
    root = tmp_path / "in"
    make_images(root, 1, size=(8, 8), mode="L")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(20):  # 20 levels of 250 characters: a path longer than PATH_MAX (4096)
            os.mkdir("d" * 250, dir_fd=fd)
            inner = os.open("d" * 250, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)
    results = list(iter_images(str(root)))
    problems = [c for c in results if c.problem]
    assert len(results) == 2 and len(problems) == 1, results
    assert "File name too long" in problems[0].problem


@pytest.mark.finding("C1-03", side="fixed")
def test_discovery_memory_does_not_grow_with_the_subdirectories(tmp_path):
    peaks = {}
    for count in (500, 5000):
        root = tmp_path / str(count)
        root.mkdir()
        for i in range(count):
            (root / ("sub%06d" % i)).mkdir()
        (root / ("sub%06d" % (count - 1)) / "last.jpg").write_bytes(b"")
        found = []
        peaks[count] = traced_peak(lambda: found.extend(iter_images(str(root))))
        assert len(found) == 1
    assert peaks[5000] < 2 * peaks[500] + 50_000, peaks  # listing them all first: ten times as much


# --- M5: a temporary failure is retried by the rerun, exactly once --------------------------------------------------


def _http_error(status):
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status} for url: http://127.0.0.1:9/api/classify", response=response)


@pytest.mark.finding("C1-12", side="fixed")
@pytest.mark.parametrize("exc, retryable", [
    (OSError(errno.EMFILE, "Too many open files"), True),  # ulimit -n 128 with --workers 200
    (OSError(errno.EACCES, "Permission denied"), True),  # mended, the same command reads it
    (OSError(errno.ENOENT, "No such file or directory"), False),
    (Image.UnidentifiedImageError("cannot identify image file"), False),
    (Image.DecompressionBombError("too many pixels"), False),
    (MemoryError(), True),
    (_http_error(404), True),  # a wrong URL path prefix
    (_http_error(401), True),
    (_http_error(400), False),  # the server refuses this image
    (_http_error(413), False),
    (_http_error(500), True),
    (_http_error(503), True),
    (requests.ConnectionError("connection refused"), True),
    (DeadlineExceeded("request exceeded its 2 s deadline"), True),
], ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value))
def test_failures_of_the_environment_are_retryable_and_failures_of_the_input_final(exc, retryable):
    from reference.case1.fixed.report import is_retryable
    assert is_retryable(exc) is retryable


@pytest.mark.finding("C1-12", side="fixed")
def test_failures_of_the_server_are_retried_by_a_rerun_and_stay_one_line_each(tmp_path, start_server):
    make_images(tmp_path / "in", 6, size=(8, 8), mode="L")
    (tmp_path / "in" / "text.png").write_text("not a picture", encoding="utf-8")
    server = start_server(latency_ms=0, stats_latency_ms=0, error_status=500)  # the server is broken...
    args = ("--input-dir", "in", "--no-progress", server.url)
    first = run_cli(tmp_path, *args)
    assert first.returncode == 1
    failed = records(tmp_path / "results.jsonl")
    assert len(failed) == 7 and all(r["error"] for r in failed)
    assert [r["retryable"] for r in failed].count(True) == 6  # the picture that is not one is final
    server.config.error_status = 0  # ...and mended
    second = run_cli(tmp_path, *args)
    assert second.returncode == 1, second.stderr  # the text file stays a failure
    results = records(tmp_path / "results.jsonl")
    names = sorted(os.path.basename(r["path"]) for r in results)
    assert names == sorted(os.path.basename(r["path"]) for r in failed)  # one line per image, still
    assert sum(1 for r in results if r["class"]) == 6 and not any(r["retryable"] for r in results)
    assert server.counters.snapshot()["accepted"] == 6
    third = run_cli(tmp_path, *args)  # nothing left to retry: nothing is sent again
    assert third.returncode == 1 and records(tmp_path / "results.jsonl") == results
    assert server.counters.snapshot()["accepted"] == 6 and "done by an earlier run: 7" in third.stdout.decode()


@pytest.mark.finding("C1-12", side="fixed")
def test_a_rerun_can_keep_failures_and_a_moved_server_is_explicit(tmp_path, start_server):
    make_images(tmp_path / "in", 2, size=(8, 8), mode="L")
    broken = start_server(latency_ms=0, stats_latency_ms=0, error_status=503)
    run_cli(tmp_path, "--input-dir", "in", "--no-progress", "--retry-budget", "0.1", broken.url)
    before = (tmp_path / "results.jsonl").read_bytes()
    kept = run_cli(tmp_path, "--input-dir", "in", "--no-progress", "--no-retry-failed", "--retry-budget", "0.1",
                   broken.url)
    assert kept.returncode == 1 and (tmp_path / "results.jsonl").read_bytes() == before
    good = start_server(latency_ms=0, stats_latency_ms=0)
    refused = run_cli(tmp_path, "--input-dir", "in", "--no-progress", good.url)
    assert refused.returncode == 2 and b"--change-url" in refused.stderr
    moved = run_cli(tmp_path, "--input-dir", "in", "--no-progress", "--change-url", good.url)
    assert moved.returncode == 0, moved.stderr
    assert all(r["class"] for r in records(tmp_path / "results.jsonl")) and good.counters.snapshot()["accepted"] == 2


@pytest.mark.finding("C1-12", side="fixed")
def test_the_tail_of_retryable_failures_is_cut_only_when_the_index_holds_it(tmp_path):
    out = tmp_path / "out.jsonl"
    with Journal(out, CONFIG) as journal:
        journal.record(rows(b"a") + [(b"b", json.dumps({"path": "b", "error": "503"}), True, False, True)])
    assert [json.loads(line)["path"] for line in complete_lines(out)] == ["a", "b"]  # b waits in the tail
    with Journal(out, CONFIG) as journal:  # a rerun: the tail is cut, b is retried and becomes final
        assert journal.done([b"a", b"b"]) == {b"a"}
        journal.record(rows(b"b"))
    assert [json.loads(line) for line in complete_lines(out)] == [{"path": "a"}, {"path": "b"}]
    out.write_bytes(out.read_bytes() + b'{"path": "typed by hand"}\n')  # not a tail the index holds
    with Journal(out, CONFIG):
        pass
    assert b"typed by hand" in b"".join(complete_lines(*set_aside(out)))


# --- M6: a broken terminal costs only text --------------------------------------------------------------------------


@pytest.mark.finding("C1-36", side="fixed")
@pytest.mark.parametrize("stderr", ["closed", "full", "broken pipe"])
def test_a_closed_or_full_stderr_costs_the_progress_bar_not_the_results(tmp_path, fast_server, stderr):
    """``2>&-``, ``2>/dev/full``, and ``2>&1 | head -c 100`` once head has gone (EPIPE on every write)."""
    make_images(tmp_path / "in", 5, size=(8, 8), mode="L")
    if stderr == "broken pipe":
        reader, writer = os.pipe()
        os.close(reader)
        full = os.fdopen(writer, "wb")
    else:
        full = open(os.devnull if stderr == "closed" else "/dev/full", "wb")
    try:
        proc = subprocess.run([sys.executable, "-m", FIXED_PACKAGE, "--input-dir", "in", fast_server.url],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=full, timeout=120,
                              preexec_fn=(lambda: os.close(2)) if stderr == "closed" else None)
    finally:
        full.close()
    assert proc.returncode == 0 and b"Images classified: 5" in proc.stdout
    assert len(records(tmp_path / "results.jsonl")) == 5


@pytest.mark.finding("C1-36", side="fixed")
def test_a_stdout_closed_before_the_summary_is_no_traceback(tmp_path, fast_server):
    make_images(tmp_path / "in", 5, size=(8, 8), mode="L")
    proc = subprocess.Popen([sys.executable, "-X", "dev", "-m", FIXED_PACKAGE, "--input-dir", "in", "--no-progress",
                             fast_server.url], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # like `| head -0`: the summary meets a broken pipe
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and not err, err.decode()
    assert len(records(tmp_path / "results.jsonl")) == 5


# --- Ctrl-C ----------------------------------------------------------------------------------------------------


def test_ctrl_c_while_the_program_loads_is_exit_130_without_a_traceback(tmp_path):
    (tmp_path / "in").mkdir()
    for delay in (0.0, 0.05, 0.15):
        proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", FIXED_PACKAGE, "--input-dir", "in",
                                 "http://127.0.0.1:9"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=default_sigint)
        seen = b""
        deadline = time.monotonic() + 60
        while b"reference.case1.fixed\n" not in seen and time.monotonic() < deadline:  # the package is imported:
            seen += proc.stderr.readline()  # its __main__ runs next, inside its try
        time.sleep(0.02 + delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        # 130 from the program; -SIGINT when the signal came as the interpreter was exiting (the shell shows 130)
        assert proc.returncode in (130, -signal.SIGINT) and b"Traceback" not in err, (delay, err.decode()[-2000:])


def test_ctrl_c_at_each_start_up_step_is_exit_130(tmp_path, monkeypatch):
    from reference.case1.fixed import cli
    (tmp_path / "in").mkdir()

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    for target in ("iter_images", "Journal", "default_budget"):
        with monkeypatch.context() as patch:
            patch.setattr(cli, target, interrupt)
            assert main(["--input-dir", str(tmp_path / "in"), "--output", str(tmp_path / "o.jsonl"),
                         "http://127.0.0.1:9"]) == 130


def test_a_second_ctrl_c_stops_waiting_for_the_running_requests(tmp_path, start_server):
    make_images(tmp_path / "in", 4, size=(8, 8), mode="L")
    server = start_server(latency_ms=6000, stats_latency_ms=0)
    proc = subprocess.Popen([sys.executable, "-m", FIXED_PACKAGE, "--input-dir", "in", "--no-progress",
                             "--workers", "2", server.url], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=default_sigint)
    deadline = time.monotonic() + 60
    while server.counters.snapshot()["max_in_flight"].get("classify", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    took = time.monotonic() - started
    assert proc.returncode == 130 and b"Traceback" not in err, err.decode()[-2000:]
    assert took < 3, took  # the requests had 5.7 s left to run
    assert records(tmp_path / "results.jsonl") == []  # cut requests are not results: a rerun does them


# --- images that cannot be JPEGs as they are ------------------------------------------------------------------------


def test_source_metadata_is_not_copied_into_the_jpeg(tmp_path):
    gif = tmp_path / "commented.gif"
    Image.new("P", (16, 8)).save(gif, comment=b"c" * 200_000)  # larger than a JPEG comment can be
    jpeg = tmp_path / "commented.jpg"
    Image.new("RGB", (16, 8), "red").save(jpeg, comment=b"secret " * 8000)
    for path in (gif, jpeg):
        prepared = imaging.prepare(str(path))
        with Image.open(io.BytesIO(prepared.jpeg)) as sent:
            assert "comment" not in sent.info and len(prepared.jpeg) < 2000


def test_an_image_wider_than_a_jpeg_is_an_error_with_that_cause(tmp_path):
    path = tmp_path / "strip.png"
    Image.new("L", (70_000, 1)).save(path)
    assert imaging.prepare(str(path), rotate=False).size == (35_000, 1)  # halved, it fits
    with pytest.raises(imaging.TooLargeForJpeg, match="65500"):
        imaging.prepare(str(path), resize=False)


# --- bad arguments and environments are usage errors ------------------------------------------------------------


@pytest.mark.finding("C1-33", side="fixed")
@pytest.mark.parametrize("args, message", [
    (["--memory-budget", "9" * 400], "--memory-budget"),
    (["--output", ""], "does not name a file"),
    (["--output", "."], "does not name a file"),
    (["--output", "/"], "does not name a file"),
    (["--output", "somedir"], "is a directory"),
    (["--timeout", "1e10"], "at most"),
    (["--retry-budget", "1e300"], "at most"),
    (["--scheduler", "foo"], "scheduler address"),
    (["--scheduler", "http://10.0.0.5:8786"], "scheduler address"),
    (["--scheduler", "tcp://[::1"], "bad scheduler address"),
    (["--scheduler", "tcp://10.0.0.5"], "has no port"),
])
def test_bad_arguments_are_usage_errors(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "somedir").mkdir()
    with pytest.raises(SystemExit) as exited:
        main(["--input-dir", ".", *args, "http://127.0.0.1:9"])
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_a_ca_bundle_that_does_not_exist_is_a_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "nonexistent.pem"))
    with pytest.raises(SystemExit) as exited:
        main(["--input-dir", str(tmp_path), "https://127.0.0.1:9"])
    assert exited.value.code == 2 and "nonexistent.pem" in capsys.readouterr().err


@pytest.mark.finding("C1-23", side="fixed")
def test_a_huge_timeout_cannot_overflow_the_watchdog(fast_server, tmp_path):
    make_images(tmp_path / "in", 1, size=(8, 8), mode="L")
    paths = [Candidate(str(p), p.name.encode()) for p in (tmp_path / "in").iterdir()]
    summary = run(paths, Options(fast_server.url, workers=1, timeout=1e12, retry_budget=1e12, progress=False))
    assert summary.succeeded == 1
