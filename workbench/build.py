"""The main job: measure everything again and refresh the committed review (``make review``).

Steps, in order (``--only`` picks some):
  evidence    the full test suite with the slow measurements: evidence matrix (build/evidence) and recorded figures (build/results)
  mutation    every declared mutant (mutants/*.yaml) in a scratch copy: can each finding's evidence fail? -> results["mutation"]
  benchmarks  each benchmarks/<suite>/ timed by pytest-benchmark -> build/benchmarks/<suite>.json
  notebooks   notebooks/*.ipynb executed in full mode -> build/notebooks/
  loadtests   loadtests/run.py, bounded Locust runs on loopback -> build/loadtests/
  promote     a complete run's figures -> review/data (committed; the 2020 stack's as <name>_2020), executed notebooks -> notebooks/
  render      review/*.md and review/img/*.svg refreshed from review/data and the registry
  site        the review rendered by MkDocs Material -> build/site/index.html (no measuring: seconds)
  export      the whole review as one PDF, printed by headless Chromium -> build/review.pdf

The measuring steps write only under build/. ``promote`` runs only when the benchmark, notebook and
load steps of this invocation succeeded and the evidence matrix is from this run's complete test
session (failing tests are recorded in it, not hidden, as surviving mutants are in the mutation
result); a partial run never replaces the record.

What each measuring step records for the review (``review/data/<name>.json`` after ``promote``)
is listed in ``RECORDS``; ``python -m workbench.review names`` lists the names the committed pages
read, and a test keeps every one of them in ``RECORDS``.
``render``, ``site`` and ``export`` work from what is committed, so ``--only site`` rebuilds the
site without measuring.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import notebooks, pg

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
MEASURING = ("evidence", "mutation", "benchmarks", "notebooks", "loadtests")
# Steps whose failure is itself a result the record shows: a failing evidence test is in the matrix,
# a surviving mutant in results["mutation"]. A failure of the other measuring steps leaves figures
# missing or stale, so then the record keeps the last complete run.
RESULT_STEPS = ("evidence", "mutation")
# The recorded results each measuring step produces (build/results/<name>.json, promoted to
# review/data/<name>.json). The evidence step is the whole test session with --run-slow; the 2020
# stack's run inside it records the same names under build/results/stack2020/, promoted as <name>_2020.
RECORDS = {
    "evidence": ("evidence",  # the per-stack matrix (build/evidence/matrix.json)
                 "case2_races", "case2_perf", "case2_fuzz", "taskcheck", "case1_magic_cost",
                 "case1_time_wait", "case1_magic_cost_2020", "case1_time_wait_2020",
                 "case2_perf_2020", "case2_races_2020"),
    "mutation": ("mutation",),
    "benchmarks": ("benchmarks_case1", "benchmarks_case2", "case2_api_perf"),
    "notebooks": ("case1_throughput", "case1_memory", "case1_designs", "case1_machines",
                  "case2_race_model", "case2_growth"),
    "loadtests": ("case2_load",),
}
STEPS = MEASURING + ("promote", "render", "site", "export")
RUN_FILE = BUILD / "run.json"  # when this main job started measuring (read by review.run_started)


def _run(cmd: list, **kwargs) -> int:
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT, **kwargs)


def step_evidence(ns) -> bool:
    # The review cites the long measurements (race frequencies), so the main job always runs them.
    return _run([sys.executable, "-m", "pytest", "-q", "--run-slow"]) == 0


def step_mutation(ns) -> bool:
    # All mutants, one at a time (the timing evidence must not compete with a second run). A mutant
    # that survives fails the step (and the job) but is recorded: the evidence page shows it.
    return _run([sys.executable, "-m", "workbench.mutation", "--record",
                 "--json", str(BUILD / "mutation" / "report.json")]) == 0


def step_benchmarks(ns) -> bool:
    out = BUILD / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    ok = True
    for suite in sorted(p for p in (ROOT / "benchmarks").iterdir() if p.is_dir()
                        and not p.name.startswith(("_", "."))):
        cmd = [sys.executable, "-m", "pytest", "-q", str(suite.relative_to(ROOT)),
               "--benchmark-enable", f"--benchmark-json={out / (suite.name + '.json')}",
               "--benchmark-max-time", "5.0" if ns.full else "1.0"]
        ok &= _run(cmd) == 0
    return ok


def step_notebooks(ns) -> bool:
    out = BUILD / "notebooks"
    shutil.rmtree(out, ignore_errors=True)  # only this run's notebooks may be written back
    ok = True
    with pg.database_url() as url:
        for path in notebooks.discover():
            print(f"+ execute {path.relative_to(ROOT)}", flush=True)
            try:
                notebooks.execute(path, out / path.name, mode="full", env={"DATABASE_URL": url})
            except Exception as exc:  # a broken notebook must not stop the others
                print(f"notebook {path.name} failed: {exc}", file=sys.stderr)
                ok = False
    return ok


def step_loadtests(ns) -> bool:
    runner = ROOT / "loadtests" / "run.py"
    if not runner.is_file():
        print("no loadtests/run.py yet; skipping load runs")
        return True
    out = BUILD / "loadtests"
    shutil.rmtree(out, ignore_errors=True)  # reports of an earlier run must not be shown as this one's
    cmd = [sys.executable, str(runner), "--out", str(out)]
    if ns.full:
        cmd.append("--full")
    return _run(cmd) == 0


def step_promote(ns) -> bool:
    from . import review

    since = review.run_started(BUILD)
    for line in review.promote(BUILD, since=since):
        print(f"promoted {Path(line).relative_to(ROOT)}")
    for path in sorted((BUILD / "notebooks").glob("*.ipynb")):
        if since is not None and path.stat().st_mtime < since:
            continue
        notebooks.write_committed(path, ROOT / "notebooks" / path.name)
        print(f"promoted notebooks/{path.name} (with the outputs of this run)")
    return True


def step_render(ns) -> bool:
    from . import review

    for line in review.render():
        print(f"rendered {line}")
    return True


def step_site(ns) -> bool:
    from . import site

    index = site.build(BUILD) / "index.html"
    print(f"review: {index}")
    return True


def step_export(ns) -> bool:
    from . import browser

    try:
        print(f"review PDF: {browser.export_pdf(BUILD / 'site', BUILD / 'review.pdf')}")
    except browser.BrowserError as exc:
        print(f"cannot print the review to PDF: {exc}", file=sys.stderr)
        return False
    return True


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.build", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=STEPS, help="run only these steps")
    parser.add_argument("--full", action="store_true", help="longer benchmarks and load runs")
    ns = parser.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    steps = ns.only or STEPS
    if set(MEASURING) <= set(steps):  # a whole run: promote only what this run records
        BUILD.mkdir(parents=True, exist_ok=True)
        RUN_FILE.write_text(json.dumps({"started": time.time()}))
    failed = []
    # The tests read the committed review as it stands; this job re-renders it after promoting.
    os.environ["WORKBENCH_MAIN_JOB"] = "1"
    for name in steps:
        if name == "promote" and any(step in failed for step in MEASURING if step not in RESULT_STEPS):
            print("== promote: skipped, a measuring step failed (the record keeps the last complete run)",
                  flush=True)
            failed.append(name)
            continue
        started = time.monotonic()
        print(f"== {name}", flush=True)
        try:
            ok = globals()[f"step_{name}"](ns)
        except Exception as exc:
            print(f"step {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            ok = False
        print(f"== {name}: {'ok' if ok else 'FAILED'} in {time.monotonic() - started:.0f} s", flush=True)
        if not ok:
            failed.append(name)
    if failed:
        print(f"failed steps: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
