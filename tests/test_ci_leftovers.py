"""CI's check for processes left running sees only the run's own (``.ci/leftovers.py``)."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "leftovers.py"
pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self") or not shutil.which("sleep"),
                                reason="needs Linux /proc and sleep")


def _load():
    spec = importlib.util.spec_from_file_location("ci_leftovers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _postgres_lookalike(env: dict, tag: str) -> subprocess.Popen:
    """A process whose command line looks like the project's embedded PostgreSQL."""
    argv0 = f"/tmp/workbench-pg-{tag}/bin/postgres"  # what the old name pattern matched
    return subprocess.Popen([argv0, "60"], executable=shutil.which("sleep"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_only_the_runs_own_processes_are_reported():
    leftovers = _load()
    run_id = f"test-{uuid.uuid4().hex}"
    others = {k: v for k, v in os.environ.items() if k != leftovers.MARK}  # e.g. another project's
    unrelated = _postgres_lookalike(others, "other")
    ours = _postgres_lookalike({**others, leftovers.MARK: run_id}, "ours")
    try:
        found = leftovers.marked(run_id)
        assert [pid for pid, _ in found] == [ours.pid]
        assert "workbench-pg-ours" in found[0][1]
        proc = subprocess.run([sys.executable, str(SCRIPT), "--run-id", run_id, "--grace", "0"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1
        assert str(ours.pid) in proc.stderr and str(unrelated.pid) not in proc.stderr
        # the lookalike of another project is still running, and the old name check would match it
        assert unrelated.poll() is None
        with open(f"/proc/{unrelated.pid}/cmdline", "rb") as f:
            assert b"workbench-pg-" in f.read()
    finally:
        for p in (ours, unrelated):
            p.kill()
            p.wait(timeout=10)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--run-id", run_id, "--grace", "5"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr  # once ours has ended, the run is clean
