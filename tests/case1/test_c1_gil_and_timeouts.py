"""Two findings whose evidence is about waiting: on the GIL (C1-09) and on a silent server (C1-23).

Both are measured so that a loaded machine cannot decide the verdict:

* GIL (C1-09). Each worker thread's time is split by the kernel into running on a CPU (its CPU
  time), waiting for a CPU (``/proc/thread-self/schedstat``, the run-queue delay) and the rest,
  when it was blocked; the code measured does no I/O, so blocked is waiting for the GIL. Two
  threads running pure-Python code take turns holding the GIL, so each waits about as long as the
  other runs: blocked / CPU is near 1. Code that drops the GIL for its heavy part (NumPy) runs
  in both threads at once: near 0. Both terms come from the same threads in the same run, and the
  run-queue delay that load adds is taken out, so load pushes neither side towards its verdict.
  Each test also measures a control of the other kind, so a probe that saw no contention (or
  contention everywhere) could not pass.
* Timeout (C1-23). While the request waits on a server that accepted the connection and never
  answers, the test reads the timeout of the very socket the request waits on: ``None`` is a
  blocking read with no bound; the fixed client's is the configured number of seconds, and the
  request then ends with a read timeout.
"""
from __future__ import annotations

import hashlib
import statistics
import threading
import time

import numpy as np
import pytest
import urllib3.connection

from case1_support import args_namespace, load_module, write_variant
from reference.case1.as_given import process_images as as_given
from workbench.image_corpus import make_images, pixels

SCHEDSTAT = "/proc/thread-self/schedstat"
def _schedstat_available() -> bool:
    try:
        with open(SCHEDSTAT) as f:
            return len(f.read().split()) == 3
    except OSError:
        return False


needs_schedstat = pytest.mark.skipif(not _schedstat_available(),
                                     reason="needs Linux's per-thread scheduler statistics")

# A photo halved, the size the pipeline computes the magic number on.
MAGIC_SIZE = (512, 384)
ROUNDS = 3
WINDOW_S = 0.3  # each round: both threads call the function until this much time has passed


def _thread_clock() -> tuple[float, float, float]:
    """(wall, this thread's CPU time, this thread's time waiting for a CPU), in seconds."""
    with open(SCHEDSTAT) as f:
        run_queue = int(f.read().split()[1]) / 1e9
    return time.perf_counter(), time.thread_time(), run_queue


def gil_wait_per_cpu_second(func, inputs, threads: int = 2) -> float:
    """Median over rounds of (time blocked) / (CPU time), summed over ``threads`` threads that
    call ``func`` on ``inputs`` at the same time."""
    ratios = []
    for _ in range(ROUNDS):
        start = threading.Barrier(threads, timeout=30)
        spans = []

        def work():
            start.wait()
            before = _thread_clock()
            calls = 0
            while calls == 0 or time.perf_counter() - before[0] < WINDOW_S:
                func(inputs[calls % len(inputs)])
                calls += 1
            spans.append([b - a for a, b in zip(before, _thread_clock())])

        workers = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=120)
            assert not w.is_alive(), "a measuring thread did not finish"
        wall, cpu, run_queue = (sum(s[i] for s in spans) for i in range(3))
        ratios.append(max(wall - cpu - run_queue, 0.0) / cpu)
    return statistics.median(ratios)


def _pure_python(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


_BLOB = bytes(1 << 20)


def _gil_free(_):
    return hashlib.sha256(_BLOB).digest()  # hashlib drops the GIL for large buffers


def _photo_luminance(seed: int) -> np.ndarray:
    return np.asarray(pixels(*MAGIC_SIZE, "L", seed))


@needs_schedstat
@pytest.mark.finding("C1-09", side="as_given")
def test_threads_take_turns_on_the_gil_in_the_magic_loop():
    # int64 pixels: the same loop without the uint8 overflow of C1-29, which is another finding
    images = [_photo_luminance(seed).astype(np.int64) for seed in range(2)]
    magic = gil_wait_per_cpu_second(as_given.calc_magic_number, images)
    control = gil_wait_per_cpu_second(_gil_free, [None])
    # each thread waits for the GIL about as long as the other computes; a GIL-free control does not
    assert magic > 0.4 and control < magic / 4, (magic, control)


@needs_schedstat
@pytest.mark.finding("C1-09", side="fixed")
def test_fixed_magic_runs_without_holding_the_gil():
    from reference.case1.fixed import calc_magic_number

    images = [_photo_luminance(seed) for seed in range(2)]
    magic = gil_wait_per_cpu_second(calc_magic_number, images)
    control = gil_wait_per_cpu_second(_pure_python, [20_000])
    # the pure-Python control shows the probe sees the GIL; the fixed magic number barely waits
    assert control > 0.4 and magic < control / 4, (magic, control)


# --------------------------------------------------------------------------- C1-23


@pytest.fixture
def request_sockets(monkeypatch):
    """Every socket urllib3 opens from now on (the one a request waits on)."""
    opened = []
    original = urllib3.connection.HTTPConnection._new_conn

    def recording(self, *args, **kwargs):
        sock = original(self, *args, **kwargs)
        opened.append(sock)
        return sock

    monkeypatch.setattr(urllib3.connection.HTTPConnection, "_new_conn", recording)
    return opened


def _wait_until(condition, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the request never reached the server"
        time.sleep(0.01)


HOLD_S = 2.0  # how long the test watches the request wait, on top of the socket's own bound


@pytest.mark.finding("C1-23", side="patched")
def test_request_waits_on_a_socket_without_timeout(corpus, tmp_path, silent_endpoint, request_sockets):
    root, _ = corpus
    url, release = silent_endpoint
    # the as-given code with only the patches that let a request leave (resize, format, overflow)
    module = load_module(write_variant(tmp_path, "C1-16", "C1-21", "C1-29"))
    outcome = []
    worker = threading.Thread(target=lambda: outcome.append(
        module.process_image(f"{root}/gray_64x64.png", {}, args_namespace(url))), daemon=True)
    worker.start()
    _wait_until(lambda: request_sockets)
    worker.join(timeout=HOLD_S)
    # the read in progress has no bound at all, and the request is indeed still waiting
    assert [s.gettimeout() for s in request_sockets] == [None]
    assert worker.is_alive() and outcome == []
    release()  # only the server closing the connection ends the wait
    worker.join(timeout=10)
    assert outcome == [(None, None, None)]


@pytest.mark.finding("C1-23", side="fixed")
def test_fixed_request_wait_is_bounded_by_the_timeout(tmp_path, silent_endpoint, request_sockets):
    from reference.case1.fixed.discovery import Candidate
    from reference.case1.fixed.pipeline import Options, run

    url, _ = silent_endpoint
    timeout = 1.0
    candidates = [Candidate(str(p), p.name.encode()) for p in make_images(tmp_path, 1, size=(8, 8), mode="L")]
    results, summaries = [], []
    started = time.perf_counter()
    worker = threading.Thread(target=lambda: summaries.append(
        run(candidates, Options(url, workers=1, timeout=timeout, progress=False), sink=results.append)),
        daemon=True)
    worker.start()
    _wait_until(lambda: request_sockets)
    assert [s.gettimeout() for s in request_sockets] == [timeout]
    worker.join(timeout=timeout + HOLD_S + 10)
    waited = time.perf_counter() - started
    assert not worker.is_alive() and summaries[0].failed == 1
    # it did wait the bound, then gave up: the read timed out or the whole-request deadline cut it
    assert [r.error.split(":")[0] for r in results] in (["ReadTimeout"], ["DeadlineExceeded"])
    assert waited >= timeout
