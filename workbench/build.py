"""The main job: build the whole review with its evidence (``make review``).

Steps, in order (``--only`` picks some):
  evidence    the full test suite with the slow measurements: evidence matrix (build/evidence) and recorded figures (build/results)
  mutation    every declared mutant (mutants/*.yaml) in a scratch copy: can each finding's evidence fail? -> results["mutation"]
  benchmarks  each benchmarks/<suite>/ timed by pytest-benchmark -> build/benchmarks/<suite>.json
  notebooks   notebooks/*.ipynb executed in full mode -> build/notebooks/
  loadtests   loadtests/run.py, bounded Locust runs on loopback -> build/loadtests/
  site        the Russian review rendered by MkDocs Material -> build/site/index.html

A failing step does not hide the others: the site still shows what was measured, and the job
exits non-zero naming the steps that failed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import notebooks, pg, site

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
STEPS = ("evidence", "mutation", "benchmarks", "notebooks", "loadtests", "site")


def _run(cmd: list[str], **kwargs) -> int:
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT, **kwargs)


def step_evidence(ns) -> bool:
    # The review cites the long measurements (race frequencies), so the main job always runs them.
    return _run([sys.executable, "-m", "pytest", "-q", "--run-slow"]) == 0


def step_mutation(ns) -> bool:
    # All mutants, one at a time (the timing evidence must not compete with a second run).
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


def step_site(ns) -> bool:
    index = site.build(BUILD) / "index.html"
    print(f"review: {index}")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.build", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=STEPS, help="run only these steps")
    parser.add_argument("--full", action="store_true", help="longer benchmarks and load runs")
    ns = parser.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    failed = []
    for name in ns.only or STEPS:
        started = time.monotonic()
        print(f"== {name}", flush=True)
        try:
            ok = globals()[f"step_{name}"](ns)
        except Exception as exc:
            print(f"step {name} failed: {exc}", file=sys.stderr)
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
