"""The checker pointed at three real services, each run by the workbench's runner on the
session's PostgreSQL: the service as given (gunicorn gthread), our fixed one (gunicorn gthread)
and a half-fixed candidate answer (Flask's thread-per-request server). It must find the
review's races, authorization holes and 500s in the first, nothing in the second, exactly the
races in the third; a replay of a recorded history must give the same verdict; faults done to
the fixed service must leave nothing behind. The anomaly counts are recorded for the review."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from taskcheck import checks, cli
from taskcheck.history import History
from workbench import results

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["--rounds", "4", "--concurrency", "6", "--mix-ops", "48", "--time-limit", "90", "--quiet"]
# The request timeout is also the hang threshold: short where hangs are expected (C2-05), long
# where none is, so that a loaded test machine is not mistaken for a hanging service.
TARGETS = {
    "as_given": {"app": "reference.case2.as_given.app", "server": "gunicorn", "api": "original",
                 "request_timeout": 4},
    "fixed": {"app": "reference.case2.fixed.app", "server": "gunicorn", "api": "fixed",
              "request_timeout": 15},
    "half_fixed": {"app": "reference.case2.half_fixed.app", "server": "flask-dev",
                   "api": "taskcheck/examples/half_fixed.yaml", "request_timeout": 15},
}
_recorded: dict = {"params": QUICK[:-1], "targets": {}}


def published(name: str) -> Path:
    """Where a target's report and history are kept after the run (next to the recorded
    results, so that the main job can publish them): build/taskcheck/<target>/."""
    out = results.results_dir().parent / "taskcheck" / name
    shutil.rmtree(out, ignore_errors=True)
    return out


def _check(name: str, database_url: str, out: Path, extra=()) -> tuple:
    t = TARGETS[name]
    args = ["--serve", t["app"], "--server", t["server"], "--api", str(ROOT / t["api"]) if "/" in t["api"]
            else t["api"], "--database-url", database_url, "--out", str(out),
            "--request-timeout", str(t["request_timeout"]), *QUICK, *extra]
    started = time.monotonic()
    code = cli.main(args)
    wall = time.monotonic() - started
    summary = json.loads((out / "result.json").read_text(encoding="utf-8"))
    _recorded["targets"][name] = {
        **t, "exit_status": code, "wall_s": round(wall, 1), "ops": summary["coverage"]["ops"],
        "total": summary["total"], "kinds": len(summary["counts"]),
        # Every kind, zero included: the review's table cites each of them per target.
        "counts": {k.replace("-", "_"): summary["counts"].get(k, 0) for k in checks.KINDS},
        "findings": sorted({f for row in summary["anomalies"] for f in row["findings"]}),
        "coverage": summary["coverage"]}
    results.record("taskcheck", _recorded)
    return code, summary


def test_as_given_service_races_authorization_holes_and_500s(database_url, tmp_path):
    out = published("as_given")
    code, s = _check("as_given", database_url, out)
    assert code == cli.EXIT_ANOMALIES
    found = s["counts"]
    for kind in ("duplicate-grant", "lost-increment",                      # races: C2-01, C2-02
                 "foreign-list", "foreign-read", "impersonation", "data-leak",  # C2-08..C2-10, C2-32
                 "server-error", "server-error-hostile",                 # the 500s
                 "invalid-accepted", "image-roundtrip", "counter-decreased",
                 "file-without-row", "counter-below-rows", "open-transaction"):
        assert found.get(kind, 0) > 0, (kind, found)
    hostile = next(r for r in s["anomalies"] if r["kind"] == "server-error-hostile")
    assert {"C2-12", "C2-13", "C2-14", "C2-15"} <= set(hostile["findings"])
    grant = next(r for r in s["anomalies"] if r["kind"] == "duplicate-grant")["examples"][0]
    assert grant["request"].startswith("GET /take_free_task?user_id=") and grant["response"].startswith("200")
    # The history replays to the same verdict, and the report files are there.
    for name in ("report.md", "report.html", "history.jsonl"):
        assert (out / name).is_file()
    replay_out = tmp_path / "replay"
    assert cli.main(["--replay", str(out / "history.jsonl"), "--out", str(replay_out), "--quiet"]) == code
    again = json.loads((replay_out / "result.json").read_text(encoding="utf-8"))
    assert again["counts"] == s["counts"]


def test_fixed_service_shows_nothing(database_url):
    out = published("fixed")
    code, s = _check("fixed", database_url, out)
    assert s["counts"] == {}, [r["examples"][0] for r in s["anomalies"]]
    assert s["warnings"] == [] and code == cli.EXIT_CLEAN
    for key in checks.REQUIRED_COVERAGE:  # every check had something to check
        assert s["coverage"][key] > 0, key
    assert s["coverage"]["snapshots"] == 1
    # Its claim endpoint was probed: the redesigned one answers 204 with nothing free.
    history = History.read(out / "history.jsonl")
    probe = next(op for op in history.ops if op.args.get("probe"))
    assert history.meta["api"] == ("fixed" if probe.status == 204 else "fixed-take"), probe.status


def test_half_fixed_service_shows_exactly_the_races(database_url):
    code, s = _check("half_fixed", database_url, published("half_fixed"))
    assert code == cli.EXIT_ANOMALIES
    assert set(s["counts"]) <= checks.RACES, s["counts"]
    assert s["counts"].get("duplicate-grant", 0) > 0 and s["counts"].get("lost-increment", 0) > 0
    assert s["warnings"] == []


def test_faults_on_the_fixed_service_leave_no_anomaly():
    """kill -9 of the worker, a PostgreSQL restart and a full image disk, each while a short
    workload runs, then the same workload after healing: the fixed service recovers. The
    checker starts its own PostgreSQL here: it restarts only a server it started itself."""
    out = published("fixed_faults")
    proc = subprocess.run(
        [sys.executable, "-m", "taskcheck", "--serve", TARGETS["fixed"]["app"], "--api", "fixed",
         "--workloads", "claims,counter", "--rounds", "2", "--concurrency", "4",
         "--faults", "kill-worker,pg-restart,disk-full", "--out", str(out), "--time-limit", "120",
         "--request-timeout", "4"],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    summary = json.loads((out / "result.json").read_text(encoding="utf-8"))
    history = History.read(out / "history.jsonl")
    during = [op for op in history.ops if str(op.tags.get("phase", "")).startswith("during:")]
    _recorded["faults"] = {
        "app": TARGETS["fixed"]["app"], "server": "gunicorn", "faults": [f["fault"] for f in summary["faults"]],
        "total": summary["total"], "ops": summary["coverage"]["ops"],
        "indeterminate_during_faults": sum(1 for op in during if op.type == "info"),
        "unavailable": [n["text"] for n in summary["notes"] if "unavailable" in n["text"]]}
    results.record("taskcheck", _recorded)
    faults = {f["fault"] for f in summary["faults"]}
    assert faults == {"kill-worker", "pg-restart", "disk-full"}
    unavailable = [n["text"] for n in summary["notes"] if "unavailable" in n["text"]]
    if unavailable:  # mounting the tmpfs needs root; the note says so, and that is all it skips
        assert all("disk-full" in t for t in unavailable), unavailable
    assert summary["counts"] == {}, (proc.stderr[-2000:], summary["anomalies"])
    assert proc.returncode == cli.EXIT_CLEAN, proc.stderr[-2000:]
    assert any(op.type == "info" for op in during)  # the faults did hurt while they lasted
