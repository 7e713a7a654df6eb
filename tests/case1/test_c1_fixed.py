"""The "fixed" half of the Case 1 evidence: the redesigned pipeline must not show the defects.

The redesigned pipeline (``reference/case1/fixed/``) offers a CLI
``python -m reference.case1.fixed --input-dir DIR [--output FILE] [--workers N] [--timeout S] URL``
that writes one JSON object per image to FILE (default ``results.jsonl`` in the CWD), recursing into
subdirectories by default, and a function ``calc_magic_number(array) -> float``. Its unit tests are
in ``test_c1_fixed_unit.py``.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from case1_support import CLI_TIMEOUT, FIXED_PACKAGE
from workbench.image_corpus import make_images, pixels

def run_fixed(cwd, *args, timeout=CLI_TIMEOUT):
    return subprocess.run([sys.executable, "-X", "dev", "-m", FIXED_PACKAGE, *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def fixed_results(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def fixed_corpus_run(corpus, server, tmp_path):
    root, _ = corpus
    proc = run_fixed(tmp_path, "--input-dir", root, "--output", tmp_path / "out.jsonl", server.url)
    return proc, server.counters.snapshot(), fixed_results(tmp_path / "out.jsonl"), root


def by_name(results):
    return {r["path"].rsplit("/", 1)[-1]: r for r in results}


@pytest.mark.finding("C1-01", side="fixed")
def test_fixed_requires_input_dir(tmp_path, server):
    proc = run_fixed(tmp_path, server.url)
    assert proc.returncode == 2 and "--input-dir" in proc.stderr


@pytest.mark.finding("C1-02", side="fixed")
@pytest.mark.finding("C1-11", side="fixed")
def test_fixed_concurrency_is_set_by_workers_and_stats_do_not_serialise(tmp_path, start_server):
    make_images(tmp_path / "in", 24, size=(8, 8), mode="L")
    # Long latencies so that the 8 workers overlap even on a loaded 2-core machine; the bound is
    # exact (never above --workers), the floor well above cpu_count() shows the knob is not cores.
    server = start_server(latency_ms=300, stats_latency_ms=300)
    proc = run_fixed(tmp_path, "--input-dir", tmp_path / "in", "--workers", 8, server.url)
    assert proc.returncode == 0, proc.stderr
    peaks = server.counters.snapshot()["max_in_flight"]
    assert 6 <= peaks["classify"] <= 8 and peaks["stats"] > 1


@pytest.mark.finding("C1-03", side="fixed")
@pytest.mark.finding("C1-06", side="fixed")
@pytest.mark.finding("C1-19", side="fixed")
@pytest.mark.finding("C1-22", side="fixed")
def test_fixed_takes_every_real_image_and_only_images(fixed_corpus_run):
    proc, received, results, root = fixed_corpus_run
    ok = {name for name, r in by_name(results).items() if r.get("class")}
    assert ok == {"photo_1024x768.jpg", "rgb_256x256.png", "gray_301x199.jpg", "gray_64x64.png",
                  "gray_odd_31x17.jpg", "rgba_120x80.png", "palette_97x61.png", "tiny_1x1.jpg",
                  "bitmap_64x48.bmp", "UPPER_80x60.JPG", "UPPER_80x60.PNG", "long_ext_80x60.jpeg",
                  "inner_40x30.jpg", "inside_40x30.jpg"}
    assert received["rejected"] == {}


@pytest.mark.finding("C1-04", side="fixed")
def test_fixed_paths_are_joined_properly(tmp_path, server):
    make_images(tmp_path / "in", 1, size=(8, 8), mode="L")
    run_fixed(tmp_path, "--input-dir", "in/", "--output", "out.jsonl", server.url)
    assert [r["path"] for r in fixed_results(tmp_path / "out.jsonl")] == ["in/img_00000.jpg"]


@pytest.mark.finding("C1-05", side="fixed")
@pytest.mark.finding("C1-10", side="fixed")
@pytest.mark.finding("C1-14", side="fixed")
@pytest.mark.finding("C1-16", side="fixed")
@pytest.mark.finding("C1-21", side="fixed")
def test_fixed_processes_jpg_and_png_and_reports_stats(tmp_path, server):
    make_images(tmp_path / "in", 2, size=(40, 30), mode="RGB")
    make_images(tmp_path / "in", 2, size=(40, 30), mode="L", fmt="PNG", ext=".png", prefix="png")
    proc = run_fixed(tmp_path, "--input-dir", tmp_path / "in", server.url)
    assert proc.returncode == 0, proc.stderr
    assert server.counters.snapshot()["accepted"] == 4
    assert "Request time min/avg/max:" in proc.stdout


@pytest.mark.finding("C1-07", side="fixed")
@pytest.mark.finding("C1-12", side="fixed")
@pytest.mark.finding("C1-13", side="fixed")
def test_fixed_clean_exit_on_empty_dir_without_resource_warnings(tmp_path, server):
    (tmp_path / "in").mkdir()
    proc = run_fixed(tmp_path, "--input-dir", tmp_path / "in", "--output", tmp_path / "out.jsonl", server.url)
    assert proc.returncode == 0 and "ResourceWarning" not in proc.stderr
    assert fixed_results(tmp_path / "out.jsonl") == []


@pytest.mark.finding("C1-08", side="fixed")
def test_fixed_progress_counts_completions(tmp_path, start_server):
    make_images(tmp_path / "in", 4, size=(8, 8), mode="L")
    server = start_server(latency_ms=200)
    proc = run_fixed(tmp_path, "--input-dir", tmp_path / "in", "--workers", 1, server.url)
    assert proc.returncode == 0 and server.counters.snapshot()["accepted"] == 4
    assert "4/4" in proc.stderr.splitlines()[-1]


@pytest.mark.finding("C1-09", side="fixed")
@pytest.mark.finding("C1-30", side="fixed")
def test_fixed_magic_is_vectorised_and_exact():
    from reference.case1.fixed import calc_magic_number
    image = np.asarray(pixels(512, 384, "L", 3))
    rows, cols = np.arange(1, 385), np.arange(1, 513)
    expected = int(rows @ image.astype(np.int64) @ cols) / image.size
    started = time.perf_counter()
    assert calc_magic_number(image) == expected
    assert time.perf_counter() - started < 0.5


@pytest.mark.finding("C1-15", side="fixed")
@pytest.mark.finding("C1-28", side="fixed")
def test_fixed_reports_the_real_cause(fixed_corpus_run):
    results = by_name(fixed_corpus_run[2])
    assert "cannot identify image file" in results["notes_not_image.png"]["error"]
    assert "Connection" not in results["corrupt_truncated.jpg"]["error"]


@pytest.mark.finding("C1-17", side="fixed")
@pytest.mark.finding("C1-18", side="fixed")
def test_fixed_rotation_keeps_aspect_and_flags_compose(corpus, start_server, tmp_path):
    root, _ = corpus
    for flags, size in [((), [384, 512]), (("--skip-rotation", "--skip-resize"), [1024, 768])]:
        server = start_server()
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / "p.jpg").write_bytes((root / "photo_1024x768.jpg").read_bytes())
        run_fixed(tmp_path, "--input-dir", tmp_path / "in", *flags, server.url)
        assert server.counters.snapshot()["images"] == [size + ["RGB"]]


@pytest.mark.finding("C1-20", side="fixed")
@pytest.mark.finding("C1-29", side="fixed")
def test_fixed_magic_is_one_exact_number(fixed_corpus_run):
    proc, received, results, root = fixed_corpus_run
    assert all(len(values) == 1 for values in received["magic_values"])
    assert "magic_multiple" not in received["rejected"]


@pytest.mark.finding("C1-23", side="fixed")
def test_fixed_gives_up_on_a_silent_server(tmp_path, silent_endpoint):
    url, _ = silent_endpoint
    make_images(tmp_path / "in", 1, size=(8, 8), mode="L")
    proc = run_fixed(tmp_path, "--input-dir", tmp_path / "in", "--timeout", 1, url, timeout=30)
    assert proc.returncode != 0 or "timed out" in (tmp_path / "results.jsonl").read_text()


@pytest.mark.finding("C1-24", side="fixed")
def test_fixed_reuses_connections(tmp_path, server):
    make_images(tmp_path / "in", 10, size=(8, 8), mode="L")
    run_fixed(tmp_path, "--input-dir", tmp_path / "in", "--workers", 2, server.url)
    assert server.counters.snapshot()["connections"] <= 4


@pytest.mark.finding("C1-25", side="fixed")
def test_fixed_treats_error_status_as_failure(tmp_path, start_server):
    make_images(tmp_path / "in", 2, size=(8, 8), mode="L")
    server = start_server(error_status=503)
    proc = run_fixed(tmp_path, "--input-dir", tmp_path / "in", server.url)
    assert "None --" not in proc.stdout
    assert all("503" in r["error"] for r in fixed_results(tmp_path / "results.jsonl"))


@pytest.mark.finding("C1-26", side="fixed")
@pytest.mark.finding("C1-27", side="fixed")
def test_fixed_records_full_request_time_in_seconds(tmp_path, start_server):
    make_images(tmp_path / "in", 1, size=(8, 8), mode="L")
    server = start_server(latency_ms=0, body_delay_ms=300)
    run_fixed(tmp_path, "--input-dir", tmp_path / "in", server.url)
    (result,) = fixed_results(tmp_path / "results.jsonl")
    assert isinstance(result["elapsed"], float) and result["elapsed"] >= 0.3

