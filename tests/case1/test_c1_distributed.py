"""Beyond one machine: the redesigned pipeline on a Dask cluster (``LocalCluster``, worker processes).

The results must equal the single-machine run's on the same corpus, and killing a worker process
in the middle of the run must lose nothing and duplicate nothing. Results travel back by value (a part file per partition, imported by the client), never through
state shared between threads: that is also the fixed side of C1-27.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

import pytest

from workbench.image_corpus import make_images

if sys.version_info < (3, 11):  # the redesigned code runs on today's stack only (CONTRIBUTING)
    pytest.skip("reference/case1/fixed needs Python 3.11", allow_module_level=True)

from reference.case1.fixed.discovery import iter_images  # noqa: E402
from reference.case1.fixed.journal import Journal  # noqa: E402
from reference.case1.fixed.pipeline import Options, run  # noqa: E402

STABLE = ("class", "score", "image_size", "error", "stats_error")  # "elapsed" is a timing


@pytest.fixture(scope="module")
def dask_client():
    """A local cluster of two worker processes (each restarted by its nanny if it dies)."""
    from workbench.case1_scale import local_cluster
    with local_cluster(workers=2) as client:
        yield client


def read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def config(root):
    return {"input_dir": os.path.realpath(root), "recursive": True, "rotate": True, "resize": True}


def run_on_dask(client, root, output, url, partition_size, workers=2):
    from reference.case1.fixed.distributed import run_distributed
    with Journal(output, config(root)) as journal:
        return run_distributed(iter_images(str(root)), Options(url, workers=workers, timeout=10, progress=False),
                               journal, partition_size=partition_size, client=client)


@pytest.mark.finding("C1-27", side="fixed")
def test_results_equal_the_single_machine_run(corpus, tmp_path, dask_client, start_server):
    root, _ = corpus
    server = start_server(latency_ms=5, stats_latency_ms=0)
    with Journal(tmp_path / "single.jsonl", config(root)) as journal:
        single = run(iter_images(str(root)), Options(server.url, workers=4, timeout=10, progress=False), journal)
    distributed = run_on_dask(dask_client, root, tmp_path / "dask.jsonl", server.url, partition_size=3)
    one = {r["path"]: {k: r[k] for k in STABLE} for r in read(tmp_path / "single.jsonl")}
    other = {r["path"]: {k: r[k] for k in STABLE} for r in read(tmp_path / "dask.jsonl")}
    assert len(read(tmp_path / "dask.jsonl")) == len(other) == len(one) == 16
    assert other == one
    assert (distributed.succeeded, distributed.failed) == (single.succeeded, single.failed) == (14, 2)
    assert not (tmp_path / "dask.jsonl.parts").exists()  # every part imported, then removed


def test_a_worker_killed_mid_run_loses_nothing_and_duplicates_nothing(tmp_path, dask_client, start_server):
    names = [p.name for p in make_images(tmp_path / "in", 120, size=(16, 12), mode="L")]
    server = start_server(latency_ms=40, stats_latency_ms=0)
    pids = dask_client.run(os.getpid)  # {worker address: pid}
    killed = []

    def kill_one_worker_when_busy():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.counters.snapshot()["accepted"] < 30:
            time.sleep(0.02)
        victim = sorted(pids.values())[0]
        os.kill(victim, signal.SIGKILL)  # mid-partition: the worker dies with its task running
        killed.append((victim, server.counters.snapshot()["accepted"]))

    killer = threading.Thread(target=kill_one_worker_when_busy, daemon=True)
    killer.start()
    summary = run_on_dask(dask_client, tmp_path / "in", tmp_path / "out.jsonl", server.url, partition_size=10)
    killer.join(timeout=60)
    assert killed, "the worker was never killed"
    results = read(tmp_path / "out.jsonl")
    assert sorted(os.path.basename(r["path"]) for r in results) == sorted(names)  # each input exactly once
    assert all(r["class"] and r["error"] is None for r in results)
    assert summary.succeeded == len(names) and summary.left_for_rerun == 0
    # the killed worker's partition was done again elsewhere: the server saw some images twice
    assert server.counters.snapshot()["accepted"] >= len(names)


def test_a_rerun_skips_finished_partitions(tmp_path, dask_client, start_server):
    make_images(tmp_path / "in", 12, size=(8, 8), mode="L")
    server = start_server(latency_ms=0, stats_latency_ms=0)
    first = run_on_dask(dask_client, tmp_path / "in", tmp_path / "out.jsonl", server.url, partition_size=4)
    again = run_on_dask(dask_client, tmp_path / "in", tmp_path / "out.jsonl", server.url, partition_size=4)
    assert (first.succeeded, again.succeeded, again.resumed) == (12, 0, 12)
    assert server.counters.snapshot()["accepted"] == 12 and len(read(tmp_path / "out.jsonl")) == 12


@pytest.mark.finding("C1-12", side="fixed")
def test_leftover_parts_that_do_not_check_out_are_set_aside_not_imported(tmp_path, dask_client, start_server):
    """Parts left in ``<output>.parts``: one cut short, one forged (well formed, a class for every image,
    but not signed with this index's key). Neither is imported, neither ends the run: both are set
    aside and their images processed."""
    import base64
    import hashlib
    import hmac
    from reference.case1.fixed.distributed import parts_dir_for, partition_id
    from reference.case1.fixed.discovery import Candidate
    names = sorted(p.name for p in make_images(tmp_path / "in", 8, size=(8, 8), mode="L"))
    server = start_server(latency_ms=0, stats_latency_ms=0)
    out = tmp_path / "out.jsonl"
    parts = parts_dir_for(out)
    parts.mkdir()
    forged_rows = [json.dumps([base64.b64encode(name.encode()).decode(), False, False, False,
                               json.dumps({"path": name, "class": "forged", "score": 1.0, "elapsed": 0.1,
                                           "image_size": 1, "error": None, "stats_error": None,
                                           "retryable": False})]) for name in names[:4]]
    forged = "".join(row + "\n" for row in forged_rows).encode()
    signature = hmac.new(b"another index's key", forged, hashlib.sha256).hexdigest()  # well formed, wrong key
    (parts / "0123456789abcdef0123456789abcdef.jsonl").write_bytes(forged + json.dumps({"mac": signature}).encode()
                                                                   + b"\n")
    first = [Candidate(str(tmp_path / "in" / name), name.encode()) for name in names[:4]]
    (parts / (partition_id(first) + ".jsonl")).write_text('["not base64", tr', encoding="utf-8")  # a torn write
    summary = run_on_dask(dask_client, tmp_path / "in", out, server.url, partition_size=4)
    results = read(out)
    assert sorted(os.path.basename(r["path"]) for r in results) == names  # each image once...
    assert all(r["class"] and r["class"] != "forged" for r in results)  # ...with its real result
    assert summary.succeeded == 8 and summary.left_for_rerun == 0
    aside = sorted(p.name for p in parts.iterdir()) if parts.exists() else []
    assert len(aside) == 2 and all(".jsonl.invalid-" in name for name in aside), aside


def test_an_unreachable_scheduler_is_an_error_and_leaves_nothing_behind(tmp_path, monkeypatch):
    import dask.distributed
    from reference.case1.fixed import distributed

    def unreachable(address, timeout=None):
        raise OSError(f"Timed out trying to connect to {address}")

    monkeypatch.setattr(dask.distributed, "Client", unreachable)
    make_images(tmp_path / "in", 1, size=(8, 8), mode="L")
    with Journal(tmp_path / "out.jsonl", config(tmp_path / "in")) as journal, \
            pytest.raises(distributed.SchedulerError, match="cannot reach the Dask scheduler"):
        distributed.run_distributed(iter_images(str(tmp_path / "in")), Options("http://127.0.0.1:9", progress=False),
                                    journal, scheduler="tcp://127.0.0.1:1")
    assert not (tmp_path / "out.jsonl.parts").exists()
