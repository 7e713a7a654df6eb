"""The Locust load runner: one short real run of both services on loopback (gunicorn), and the
arguments it refuses."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "loadtests" / "run.py"
RUN_TIMEOUT = 120  # two runs of 5 s of load each, plus start and stop
# What is checked is the runner and what it reports: 5 s of 5 users give each service about a
# hundred requests over every endpoint. The measured load runs are the main job's (20 s of 10
# users; 60 s of 50 with --full).


def _run(args: list[str], tmp_path: Path, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, WORKBENCH_RESULTS_DIR=str(tmp_path / "results"))
    return subprocess.run([sys.executable, str(RUNNER), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _gone(pid: int | None, timeout: float = 5.0) -> bool:
    """True once ``pid`` (and the process group it leads) no longer runs."""
    if pid is None:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except (ProcessLookupError, PermissionError):
            alive = psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        else:
            alive = True
        if not alive:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """One runner invocation: the as-given and the fixed service, each 5 s on gunicorn."""
    tmp_path = tmp_path_factory.mktemp("load")
    out = tmp_path / "out"
    proc = _run(["--out", str(out), "--service", "both", "--server", "gunicorn", "--users", "5",
                 "--run-time", "5"], tmp_path, RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "case2_load_summary.json").read_text(encoding="utf-8"))
    assert summary["errors"] == {}
    return tmp_path, out, summary


def test_short_run_reaches_the_server_and_leaves_nothing_running(short_run):
    tmp_path, out, summary = short_run
    run = summary["services"]["as_given"]["servers"]["gunicorn"]
    for key in ("requests", "rps", "failure_ratio", "latency_ms", "endpoints", "failure_kinds",
                "failure_kinds_by_endpoint", "server_exceptions", "takes", "database",
                "connections", "reports"):
        assert key in run, key
    assert run["requests"] > 0 and run["rps"] > 0
    assert {"p50", "p95"} <= run["latency_ms"].keys()
    assert "POST /tasks" in run["endpoints"]
    for key in ("tasks_created", "sum_tasks_number", "lost_counter_updates", "taken_in_db"):
        assert key in run["database"], key
    assert run["database"]["tasks_created"] > 0
    assert run["connections"]["after_stop"] == 0
    # The load run's history was judged by the checker's own functions (taskcheck.checks).
    assert run["api"] == "original" and run["checker"]["coverage"]["ops"] > 0
    assert run["checker"]["counts"].get("duplicate-grant", 0) == run["takes"]["duplicate_grants"]

    for name in run["reports"].values():
        assert (out / name).is_file(), name
    recorded = json.loads((tmp_path / "results" / "case2_load.json").read_text(encoding="utf-8"))
    recorded_run = recorded["data"]["services"]["as_given"]["servers"]["gunicorn"]
    assert recorded_run["requests"] == run["requests"]
    assert recorded["machine"]["cpu"]

    runs = [s["servers"]["gunicorn"] for s in summary["services"].values()]
    pids = [pid for r in runs for pid in r["pids"].values()] + [summary.get("postgres_pid")]
    assert all(_gone(pid) for pid in pids), pids


def test_the_fixed_service_under_the_same_load_loses_nothing(short_run):
    _, out, summary = short_run
    run = summary["services"]["fixed"]["servers"]["gunicorn"]
    assert run["app"] == "reference.case2.fixed.app"
    # The load reached it: requests on every kind of call, the claim included.
    assert run["requests"] > 0 and run["takes"]["ok"] > 0
    assert run["claim_endpoint"] in ("POST /take_free_task", "POST /tasks/claim")
    assert run["endpoints"][run["claim_endpoint"]]["requests"] > 0
    assert run["database"]["tasks_created"] > 0
    # ... and it answered without a server error, a duplicate grant or a lost counter update.
    assert run["failure_kinds"].get("http_500", 0) == 0, run["failure_kinds"]
    assert run["failure_kinds"].get("aborted_transaction", 0) == 0, run["failure_kinds"]
    assert run["server_exceptions"]["by_kind"] == {}
    assert run["takes"]["duplicate_grants"] == 0
    assert run["database"]["lost_counter_updates"] == 0
    assert run["database"]["lost_total_updates"] == 0
    assert run["database"]["total_counter_source"] == "stats.tasks_created"
    assert run["connections"]["after_load"]["idle_in_transaction"] == 0
    assert run["connections"]["after_stop"] == 0
    assert (out / run["reports"]["html"]).is_file()
    assert run["checker"]["total"] == 0, run["checker"]["anomalies"]
    assert run["checker"]["coverage"]["grants"] > 0


@pytest.mark.parametrize("args, message", [
    (["--host", "10.1.2.3"], "refusing non-loopback host"),
    (["--host", "example.com"], "loopback"),
    (["--users", "101"], "must be 1..100"),
    (["--run-time", "3m"], "run time must be"),
    (["--server", "uwsgi"], "invalid choice"),
    (["--service", "patched"], "invalid choice"),
])
def test_bad_arguments_are_refused(tmp_path, args, message):
    proc = _run(["--out", str(tmp_path / "out"), *args], tmp_path, 30)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not (tmp_path / "out").exists()
