"""The pipeline as a whole: threads, progress, statistics, HTTP connections, shared state."""
from __future__ import annotations

import gc
import multiprocessing
import os
import subprocess
import sys
import time
from functools import partial
from multiprocessing.pool import ThreadPool

import numpy as np
import pytest

from case1_support import CLI_TIMEOUT, PATCHED, args_namespace, run_script, write_variant
from workbench.image_corpus import make_images, pixels
from reference.case1.as_given import process_images as as_given
from reference.case1.patched import process_images as patched


def run_patched_in_process(monkeypatch, tmp_path, input_dir, url, *extra):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["process_images.py", "--input-dir", str(input_dir), url, *extra])
    patched.main()


@pytest.mark.finding("C1-02", side="patched")
def test_default_threads_cap_concurrency_at_cpu_count(tmp_path, start_server):
    make_images(tmp_path / "in", 3 * os.cpu_count(), size=(8, 8), mode="L")
    server = start_server(latency_ms=150, stats_latency_ms=0)
    proc = run_script(PATCHED, "--input-dir", str(tmp_path / "in"), server.url, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert server.counters.snapshot()["max_in_flight"]["classify"] == os.cpu_count()


@pytest.mark.finding("C1-02", side="patched")
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or os.cpu_count() < 2,
                    reason="needs CPU affinity (Linux) and at least two CPUs")
def test_default_threads_ignore_cpu_affinity(tmp_path, start_server):
    make_images(tmp_path / "in", 3 * os.cpu_count(), size=(8, 8), mode="L")
    server = start_server(latency_ms=150, stats_latency_ms=0)
    one_cpu = {min(os.sched_getaffinity(0))}
    proc = subprocess.run([sys.executable, str(PATCHED), "--input-dir", str(tmp_path / "in"), server.url],
                          cwd=tmp_path, capture_output=True, text=True, timeout=CLI_TIMEOUT,
                          preexec_fn=lambda: os.sched_setaffinity(0, one_cpu))  # like `taskset -c 0`
    assert proc.returncode == 0, proc.stderr
    # allowed one CPU, the script still sized its pool by every CPU of the machine
    assert server.counters.snapshot()["max_in_flight"]["classify"] == os.cpu_count() > len(one_cpu)


@pytest.mark.finding("C1-07", side="patched")
def test_pool_is_left_to_the_garbage_collector(tmp_path, server, monkeypatch):
    make_images(tmp_path / "in", 2, size=(8, 8), mode="L")
    with pytest.warns(ResourceWarning) as warned:
        run_patched_in_process(monkeypatch, tmp_path, tmp_path / "in", server.url, "--threads-num", "5")
        gc.collect()
    messages = [str(w.message) for w in warned]
    assert any(m.startswith("unclosed running multiprocessing pool <multiprocessing.pool.ThreadPool state=RUN "
                            "pool_size=5>") for m in messages), messages


@pytest.mark.finding("C1-08", side="patched")
def test_progress_bar_counts_submissions(tmp_path, start_server, monkeypatch):
    make_images(tmp_path / "in", 6, size=(8, 8), mode="L")
    server = start_server(latency_ms=300, stats_latency_ms=0)
    at_close = []

    class RecordingTqdm(patched.tqdm):
        def close(self):
            at_close.append((self.n, server.counters.snapshot()["accepted"]))
            super().close()

    monkeypatch.setattr(patched, "tqdm", RecordingTqdm)
    run_patched_in_process(monkeypatch, tmp_path, tmp_path / "in", server.url, "--threads-num", "2")
    n_shown, answered = at_close[0]
    assert n_shown == 6 and answered < 6  # 100 % shown while requests were still to come
    assert server.counters.snapshot()["accepted"] == 6


@pytest.mark.finding("C1-10", side="patched")
def test_main_unpacks_three_of_four_values(tmp_path, server):
    make_images(tmp_path / "in", 1, size=(8, 8), mode="L")
    script = write_variant(tmp_path, "C1-05", "C1-16", "C1-21", "C1-29")
    proc = run_script(script, "--input-dir", str(tmp_path / "in"), server.url, cwd=tmp_path)
    assert proc.returncode == 1
    assert "ValueError: too many values to unpack (expected 3)" in proc.stderr
    assert server.counters.snapshot()["accepted"] == 1  # the request was made, the result is lost


@pytest.mark.finding("C1-11", side="patched")
def test_send_stats_is_serialised_in_main_thread(tmp_path, start_server, monkeypatch):
    n = 12
    make_images(tmp_path / "in", n, size=(8, 8), mode="L")
    server = start_server(latency_ms=30, stats_latency_ms=80)
    calls = []
    original = patched.send_stats

    def timed(*args, **kwargs):
        started = time.perf_counter()
        original(*args, **kwargs)
        calls.append((started, time.perf_counter()))

    monkeypatch.setattr(patched, "send_stats", timed)
    started = time.perf_counter()
    run_patched_in_process(monkeypatch, tmp_path, tmp_path / "in", server.url, "--threads-num", "8")
    wall = time.perf_counter() - started
    received = server.counters.snapshot()
    assert received["stats_calls"] == n == len(calls)
    assert received["max_in_flight"]["stats"] == 1 < received["max_in_flight"]["classify"]
    calls.sort()
    assert all(end <= next_start for (_, end), (next_start, _) in zip(calls, calls[1:]))  # one after another
    # ratio of two measurements of this run: the main thread's time in send_stats over the run's
    # wall time; serial calls can never exceed 1, and here they are most of the run
    busy = sum(end - start for start, end in calls)
    assert 0.6 < busy / wall <= 1, (busy, wall)


@pytest.mark.finding("C1-11", side="patched")
def test_results_pile_up_in_the_pool_while_main_thread_sends_stats(tmp_path, start_server, monkeypatch):
    n = 8
    make_images(tmp_path / "in", n, size=(8, 8), mode="L")
    server = start_server(latency_ms=30, stats_latency_ms=200)
    iterators, at_stats_call = [], []
    original_imap, original_send = ThreadPool.imap_unordered, patched.send_stats

    def recording_imap(self, *args, **kwargs):
        iterators.append(original_imap(self, *args, **kwargs))
        return iterators[-1]

    def recording_send(*args, **kwargs):
        # results finished but not yet taken by the main thread (the pool's unbounded deque),
        # and how many images the server has classified so far
        at_stats_call.append((len(iterators[0]._items), server.counters.snapshot()["accepted"]))
        return original_send(*args, **kwargs)

    monkeypatch.setattr(ThreadPool, "imap_unordered", recording_imap)
    monkeypatch.setattr(patched, "send_stats", recording_send)
    run_patched_in_process(monkeypatch, tmp_path, tmp_path / "in", server.url, "--threads-num", "8")
    waiting, classified = zip(*at_stats_call)
    assert len(at_stats_call) == n
    assert classified[3] == n  # every image was classified before the 4th stats call: no worker waited
    assert max(waiting) >= n - 3  # their results waited in memory instead


@pytest.mark.finding("C1-14", side="patched")
def test_average_of_timedeltas_raises(tmp_path, server):
    make_images(tmp_path / "in", 2, size=(8, 8), mode="L")
    script = write_variant(tmp_path, "C1-05", "C1-10", "C1-16", "C1-21", "C1-29")
    proc = run_script(script, "--input-dir", str(tmp_path / "in"), server.url, cwd=tmp_path)
    assert proc.returncode == 1
    assert "TypeError: unsupported operand type(s) for +: 'int' and 'datetime.timedelta'" in proc.stderr
    assert (tmp_path / "output.json").exists() and server.counters.snapshot()["accepted"] == 2


@pytest.mark.finding("C1-24", side="patched")
def test_every_request_opens_a_new_connection(tmp_path, server):
    make_images(tmp_path / "in", 5, size=(8, 8), mode="L")
    proc = run_script(PATCHED, "--input-dir", str(tmp_path / "in"), server.url, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    received = server.counters.snapshot()
    assert received["accepted"] == received["stats_calls"] == 5
    assert received["connections"] == 10  # keep-alive offered by the server, never reused


@pytest.mark.finding("C1-27", side="patched")
def test_results_dict_is_a_side_channel_only_threads_share(tmp_path, server):
    paths = [str(p) for p in make_images(tmp_path / "in", 2, size=(8, 8), mode="L")]
    args = args_namespace(server.url)
    in_threads, in_processes = {}, {}
    with ThreadPool(2) as pool:
        returned_t = pool.map(partial(patched.process_image, res=in_threads, args=args), paths)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        returned_p = pool.map(partial(patched.process_image, res=in_processes, args=args), paths)
    assert all(r[1] for r in returned_t + returned_p)  # every call succeeded
    assert sorted(in_threads) == paths and in_processes == {}  # processes' writes are lost


def _best_time(func, *args, repeat: int) -> tuple[float, object]:
    """(the shortest of ``repeat`` timings, the result): the run least disturbed by other load."""
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = func(*args)
        best = min(best, time.perf_counter() - started)
    return best, result


def _vectorised_magic(image):
    rows = np.arange(1, image.shape[0] + 1, dtype=np.int64)
    cols = np.arange(1, image.shape[1] + 1, dtype=np.int64)
    return int(rows @ image @ cols) / image.size


@pytest.mark.finding("C1-30", side="as_given")
def test_python_loop_is_far_slower_than_numpy():
    image = np.asarray(pixels(96, 96, "L", 1)).astype(np.int64)
    loop_time, loop = _best_time(as_given.calc_magic_number, image, repeat=3)
    numpy_time, vectorised = _best_time(_vectorised_magic, image, repeat=20)
    assert vectorised == loop
    assert loop_time / numpy_time > 10  # two measurements of this run: their ratio, not a time
