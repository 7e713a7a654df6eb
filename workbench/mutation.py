"""Declared mutants: evidence that can fail, checked by putting each defect back (or fixing it).

    python -m workbench.mutation                       # every mutant in mutants/*.yaml
    python -m workbench.mutation --finding C1-09       # only that finding's mutants
    python -m workbench.mutation --side fixed --file reference/case1/fixed/magic.py
    python -m workbench.mutation --sample 4            # a seeded sample plus the always-run ones
    python -m workbench.mutation --coverage            # only: which finding lacks a mutant per side
    python -m workbench.mutation --list                # the mutants, without running them

A mutant (format in CONTRIBUTING.md, "Declared mutants") names a finding, a side and a list of
exact text edits. ``side: as_given`` is the minimal fix applied to the as-given (or patched) code:
the finding's as-given/patched tests must then fail. ``side: fixed`` re-introduces the defect into
the redesigned code: the finding's fixed-side tests must then fail. For each mutant the runner

1. copies the tree under test (git's tracked files plus the untracked ones git does not ignore)
   into a fresh scratch directory and checks that the copy is byte-identical;
2. applies the edits there (each ``find`` must occur exactly once, or the mutant is an error);
3. runs ``pytest --finding ID --side SIDE`` in the copy (the plugin deselects every other test
   and refuses to run when nothing is selected or when the code under test is not the copy's),
   with one PostgreSQL server for the whole run (``DATABASE_URL``) and this interpreter's venv;
4. reads the outcome from pytest's JUnit report:

   * ``caught``   - a selected test failed in its call phase;
   * ``survived`` - every selected test that ran passed;
   * ``error``    - the edit does not apply, nothing was selected or nothing ran, collection or
     fixture setup failed (no verdict from the evidence itself), or the same tests fail in a
     scratch copy without the edit: that baseline runs first for one (finding, side), as a canary
     of the copy and the environment, or for every selected one with ``--baseline``;
   * ``timeout``  - pytest-timeout stopped a test, or the whole run exceeded ``--timeout`` and its
     process group was killed. A timeout is never counted as caught: every wait in the evidence
     has its own, shorter bound, so a test that catches a hang does so with its own assertion, and a
     timeout means something outside the evidence hung.

Only ``caught`` counts for the score (caught / mutants, per side). The run fails (exit 1) on any
mutant that is not caught, and ``--coverage`` fails when a registry finding lacks a mutant on a
side. ``--record`` stores the report as ``results["mutation"]`` (``workbench.results``).

Why not mutmut or Cosmic Ray: both generate *operator* mutants (flip ``<`` to ``<=``, change a
constant, ...) over whole modules and judge them by the whole suite. Here each mutant is *declared*:
a specific fix or defect tied to one finding, often spanning two files (the as-given script and its
patched variant), judged only by that finding's tests on one side. mutmut 3 also rewrites the code
into trampolines inside functions (module-level code is not mutated) in its own ``mutants/``
directory, and Cosmic Ray's operators are AST rewrites chosen by plugin: neither applies a given
text edit, and neither selects tests by a finding marker. A small runner does exactly that.
"""
from __future__ import annotations

import argparse
import contextlib
import filecmp
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

from . import findings as registry

ROOT = Path(__file__).resolve().parent.parent
MUTANTS_DIR = ROOT / "mutants"
SIDES = ("as_given", "fixed")
OUTCOMES = ("caught", "survived", "error", "timeout")
# The sample always includes a mutant of each of these (finding, side): their evidence is the most
# fragile (a measurement of GIL waits, a wait on a silent server), so every test run re-checks it.
ALWAYS_SAMPLED = (("C1-09", "as_given"), ("C1-09", "fixed"), ("C1-23", "as_given"), ("C1-23", "fixed"))
DEFAULT_TIMEOUT = 600.0  # seconds for one mutant's pytest run, its whole process group
TEST_TIMEOUT = 240  # pytest-timeout per test inside a mutant run
SCRATCH_PREFIX = "workbench-mutant-"


class MutantFileError(Exception):
    """A mutants file cannot be read or has entries of the wrong shape."""


@dataclass(frozen=True)
class Edit:
    file: str
    find: str
    replace: str


@dataclass(frozen=True)
class Mutant:
    finding: str
    side: str
    why: str
    edits: Tuple[Edit, ...]
    source: str  # the mutants file it came from, relative to the root
    index: int  # 1-based position in that file

    @property
    def key(self) -> str:
        return f"{Path(self.source).stem}#{self.index}"

    @property
    def files(self) -> List[str]:
        return sorted({e.file for e in self.edits})


@dataclass
class Result:
    mutant: str
    finding: str
    side: str
    why: str
    files: List[str]
    outcome: str
    seconds: float
    detail: str = ""
    failed_tests: List[str] = field(default_factory=list)
    tests_run: int = 0


# --------------------------------------------------------------------------- loading and checking


def _mutant_files(folder: Path) -> List[Path]:
    return sorted(folder.glob("*.yaml")) if folder.is_dir() else []


def load(folder: Path = MUTANTS_DIR, root: Path = ROOT) -> Tuple[List[Mutant], List[str]]:
    """Every mutant in ``folder/*.yaml`` and the problems with the entries (shape, paths)."""
    mutants, problems = [], []
    for path in _mutant_files(folder):
        rel = path.relative_to(root).as_posix() if root in path.parents else str(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or []
        except yaml.YAMLError as exc:
            problems.append(f"{rel}: not valid YAML: {exc}")
            continue
        if not isinstance(data, list):
            problems.append(f"{rel}: expected a list of mutants at the top level")
            continue
        for i, raw in enumerate(data, 1):
            mutant, errs = _parse(raw, rel, i, root)
            problems += errs
            if mutant is not None:
                mutants.append(mutant)
    return mutants, problems


def _parse(raw: object, source: str, index: int, root: Path) -> Tuple[Optional[Mutant], List[str]]:
    where = f"{source} entry #{index}"
    if not isinstance(raw, dict):
        return None, [f"{where}: expected a mapping"]
    unknown = set(raw) - {"finding", "side", "why", "edits"}
    errs = [f"{where}: unknown keys {sorted(unknown)}"] if unknown else []
    finding, side, why = raw.get("finding"), raw.get("side"), raw.get("why")
    where = f"{source} entry #{index} ({finding} {side})"
    if not isinstance(finding, str) or not registry.ID_PATTERN.match(finding):
        errs.append(f"{where}: finding must be an ID like C1-09")
    if side not in SIDES:
        errs.append(f"{where}: side must be one of {', '.join(SIDES)}")
    if not isinstance(why, str) or not why.strip():
        errs.append(f"{where}: why must say what the mutant does")
    edits = raw.get("edits")
    if not isinstance(edits, list) or not edits:
        errs.append(f"{where}: edits must be a non-empty list")
        edits = []
    parsed = []
    for k, e in enumerate(edits, 1):
        if not isinstance(e, dict) or set(e) != {"file", "find", "replace"} \
                or not all(isinstance(e[key], str) for key in ("file", "find", "replace")):
            errs.append(f"{where} edit {k}: needs exactly file, find and replace, all text")
            continue
        rel = Path(e["file"])
        if rel.is_absolute() or ".." in rel.parts:
            errs.append(f"{where} edit {k}: file must be a path inside the repository")
        elif not (root / rel).is_file():
            errs.append(f"{where} edit {k}: {e['file']} does not exist")
        if not e["find"]:
            errs.append(f"{where} edit {k}: find is empty")
        if e["find"] == e["replace"]:
            errs.append(f"{where} edit {k}: replace equals find (the edit changes nothing)")
        parsed.append(Edit(e["file"], e["find"], e["replace"]))
    if errs:
        return None, errs
    return Mutant(finding, side, why.strip(), tuple(parsed), source, index), []


def coverage(mutants: Sequence[Mutant], finding_ids: Sequence[str]) -> List[str]:
    """``"C1-09 fixed"`` for every registry finding and side without a declared mutant."""
    have = {(m.finding, m.side) for m in mutants}
    return [f"{fid} {side}" for fid in finding_ids for side in SIDES if (fid, side) not in have]


def unknown_findings(mutants: Sequence[Mutant], finding_ids: Sequence[str]) -> List[str]:
    known = set(finding_ids)
    return sorted({f"{m.key}: {m.finding} is not in the registry" for m in mutants if m.finding not in known})


def apply_edits(mutant: Mutant, tree: Path) -> None:
    """Apply the edits in ``tree``; ValueError names the edit that does not apply exactly once."""
    for k, edit in enumerate(mutant.edits, 1):
        path = tree / edit.file
        if not path.is_file():
            raise ValueError(f"edit {k}: {edit.file} is not in the tree")
        text = path.read_text(encoding="utf-8")
        count = text.count(edit.find)
        if count != 1:
            raise ValueError(f"edit {k}: the find text occurs {count} times in {edit.file} (needs exactly 1)")
        path.write_text(text.replace(edit.find, edit.replace), encoding="utf-8")


# --------------------------------------------------------------------------- selection


def select(mutants: Sequence[Mutant], findings: Sequence[str] = (), sides: Sequence[str] = (),
           files: Sequence[str] = ()) -> List[Mutant]:
    """Mutants of any of ``findings``, on any of ``sides``, editing a file under any of ``files``."""
    def touches(m: Mutant) -> bool:
        return any(f == p or f.startswith(p.rstrip("/") + "/") for f in m.files for p in files)

    return [m for m in mutants
            if (not findings or m.finding in findings) and (not sides or m.side in sides)
            and (not files or touches(m))]


def sample(mutants: Sequence[Mutant], n: int, seed: str,
           always: Sequence[Tuple[str, str]] = ALWAYS_SAMPLED) -> List[Mutant]:
    """The first mutant of each ``always`` (finding, side) plus ``n`` others drawn with ``seed``."""
    chosen = []
    for pair in always:
        first = next((m for m in sorted(mutants, key=lambda m: m.key) if (m.finding, m.side) == pair), None)
        if first is not None:
            chosen.append(first)
    rest = sorted((m for m in mutants if m not in chosen), key=lambda m: m.key)
    drawn = random.Random(seed).sample(rest, min(n, len(rest)))
    return sorted(chosen + drawn, key=lambda m: (m.finding, m.side, m.key))


def default_seed(root: Path = ROOT) -> str:
    """The commit under test: a sample is the same on every run of one commit, and moves on."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=30)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "0"


# --------------------------------------------------------------------------- the scratch tree


_SKIP_DIRS = {".git", ".venv", ".venv2020", ".lockenv", ".lockenv2020", "build", "__pycache__", ".pytest_cache", ".benchmarks",
              ".ipynb_checkpoints", "node_modules"}


def tree_files(root: Path = ROOT) -> List[str]:
    """Files of the tree under test: tracked plus untracked-but-not-ignored (git), else a walk."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=root, capture_output=True, timeout=60)
        if out.returncode == 0:
            names = {n for n in out.stdout.decode("utf-8", "surrogateescape").split("\0") if n}
            return sorted(n for n in names if (root / n).is_file())  # deleted-but-tracked left out
    except (OSError, subprocess.SubprocessError):
        pass
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.endswith(".egg-info")]
        for name in filenames:
            if not name.endswith((".pyc", ".pyo")):
                found.append((Path(dirpath) / name).relative_to(root).as_posix())
    return sorted(found)


def copy_tree(root: Path, files: Sequence[str], dest: Path) -> None:
    """Copy ``files`` from ``root`` to ``dest`` and check the copy byte for byte."""
    for name in files:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target)
    bad = [n for n in files if not filecmp.cmp(root / n, dest / n, shallow=False)]
    if bad:
        raise OSError(f"scratch copy differs from the tree for {bad[:5]}")


def test_files_for(tree: Path, finding: str, testpaths: Sequence[str] = ("tests", "benchmarks")) -> List[str]:
    """Test modules that name ``finding`` (quoted); the plugin then selects by marker among them.

    Collecting only these keeps a mutant's run short. A test that built the ID at run time would be
    missed here, which can only turn a catch into a survivor (reported), never the other way.
    """
    pattern = re.compile(r"""["']%s["']""" % re.escape(finding))
    found = []
    for base in testpaths:
        for path in sorted((tree / base).rglob("test_*.py")) if (tree / base).is_dir() else []:
            if pattern.search(path.read_text(encoding="utf-8", errors="replace")):
                found.append(path.relative_to(tree).as_posix())
    return found or [p for p in testpaths if (tree / p).is_dir()]


# --------------------------------------------------------------------------- running one mutant


@dataclass
class RunContext:
    root: Path
    files: List[str]
    database_url: str
    timeout: float
    logs: Optional[Path]
    python: str = sys.executable


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGINT first (pytest runs its teardowns: servers it started are stopped), then SIGKILL."""
    for sig, wait in ((signal.SIGINT, 20), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _kill_strays(tree: Path) -> List[str]:
    """Processes still running from the scratch tree (a server a killed test could not stop: they
    start in sessions of their own). Matched by a command line or working directory inside it."""
    import psutil

    killed, mark = [], str(tree)
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        with contextlib.suppress(psutil.Error):
            cmdline = " ".join(proc.info["cmdline"] or [])
            cwd = proc.info["cwd"] or ""
            if proc.pid != os.getpid() and (mark in cmdline or cwd == mark or cwd.startswith(mark + os.sep)):
                proc.kill()
                killed.append(f"{proc.pid} {cmdline[:120]}")
    return killed


def _junit_outcome(xml_path: Path) -> Tuple[int, List[str], List[str], List[str], str]:
    """(tests that ran, failed in call, errored outside call, timed out, first failure message)."""
    ran, failed, errored, timed_out, message = 0, [], [], [], ""
    root = ET.parse(xml_path).getroot()
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("skipped") is not None and case.find("failure") is None and case.find("error") is None:
            continue
        ran += 1
        for tag, bucket in (("failure", failed), ("error", errored)):
            node = case.find(tag)
            if node is None:
                continue
            text = (node.get("message") or "") + "\n" + (node.text or "")
            if "Timeout" in text and ("pytest-timeout" in text or "Timeout >" in text):
                timed_out.append(name)
            else:
                bucket.append(name)
            if not message:
                message = f"{name}: " + ((node.get("message") or "").strip().splitlines() or [tag])[0][:300]
    return ran, failed, errored, timed_out, message


def run_pytest(tree: Path, finding: str, side: str, ctx: RunContext, log_name: str) -> Result:
    """Run one finding's tests on one side in ``tree``; the Result's mutant fields are filled later."""
    junit = tree / "build" / "mutation-junit.xml"
    cmd = [ctx.python, "-m", "pytest", *test_files_for(tree, finding), "--finding", finding, "--side", side,
           "-x", "-q", "--tb=short", "-p", "no:cacheprovider", f"--timeout={TEST_TIMEOUT}",
           f"--junitxml={junit}"]
    env = dict(os.environ, DATABASE_URL=ctx.database_url, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1",
               WORKBENCH_RESULTS_DIR=str(tree / "build" / "results"), MPLBACKEND="Agg")
    venv2020 = ctx.root / ".venv2020"
    if "WORKBENCH_VENV2020" not in env and venv2020.is_dir():
        # The scratch copy has no environments of its own: the as-given side also runs on the
        # task's 2020 stack from the tree's .venv2020 (a defect of that stack only is caught there).
        env["WORKBENCH_VENV2020"] = str(venv2020)
    log_path = (ctx.logs / f"{log_name}.log") if ctx.logs else tree / "build" / "mutation.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log_path, "wb") as log:
        log.write(("$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            code = proc.wait(timeout=ctx.timeout)
            hung = False
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            code, hung = proc.returncode, True
    strays = _kill_strays(tree)
    seconds = round(time.monotonic() - started, 2)
    res = Result("", finding, side, "", [], "error", seconds)
    if strays:
        res.detail = f"killed processes left running: {strays}; "
    if hung:
        res.outcome = "timeout"
        res.detail += f"the run exceeded {ctx.timeout:.0f} s and was killed"
        return res
    if not junit.is_file():
        res.detail += f"pytest exited {code} without a report (usage or collection error): " + _tail(log_path)
        return res
    ran, failed, errored, timed_out, message = _junit_outcome(junit)
    res.tests_run, res.failed_tests = ran, failed
    if code == 1 and failed:
        res.outcome, res.detail = "caught", res.detail + message
    elif timed_out:
        res.outcome, res.detail = "timeout", res.detail + f"pytest-timeout stopped {timed_out}"
    elif code == 0 and ran and not errored:
        res.outcome = "survived"
        res.detail += f"all {ran} selected tests passed"
    elif errored:
        res.detail += f"errors outside the test body in {errored}: {message}"
    elif not ran:
        res.detail += "every selected test was skipped: nothing ran"
    else:
        res.detail += f"pytest exited {code}: " + _tail(log_path)
    return res


def _tail(path: Path, lines: int = 12) -> str:
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:])


def run_mutant(mutant: Optional[Mutant], ctx: RunContext, finding: str = "", side: str = "") -> Result:
    """Scratch copy, edits (none for a baseline), the finding's tests; the scratch is removed."""
    finding, side = (mutant.finding, mutant.side) if mutant else (finding, side)
    name = mutant.key if mutant else f"baseline-{finding}-{side}"
    started = time.monotonic()
    tree = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX))
    try:
        try:
            copy_tree(ctx.root, ctx.files, tree)
            if mutant:
                apply_edits(mutant, tree)
        except (OSError, ValueError) as exc:
            res = Result("", finding, side, "", [], "error", 0.0, f"the mutant does not apply: {exc}")
        else:
            res = run_pytest(tree, finding, side, ctx, name.replace("#", "-"))
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    res.seconds = round(time.monotonic() - started, 2)
    res.mutant = name
    if mutant:
        res.why, res.files = mutant.why, mutant.files
    return res


# --------------------------------------------------------------------------- the whole run


def score(results: Sequence[Result]) -> Dict[str, dict]:
    """Per side and overall: counts of each outcome and caught / total."""
    out = {}
    for side in (*SIDES, "all"):
        rows = [r for r in results if side == "all" or r.side == side]
        counts = {o: sum(r.outcome == o for r in rows) for o in OUTCOMES}
        out[side] = {"total": len(rows), **counts,
                     "score": round(counts["caught"] / len(rows), 4) if rows else None}
    return out


def per_finding(results: Sequence[Result], finding_ids: Sequence[str], missing: Sequence[str]) -> Dict[str, dict]:
    """For each finding and side: caught (every mutant caught), not caught, missing or not run."""
    table = {}
    for fid in finding_ids:
        row = {}
        for side in SIDES:
            outcomes = [r.outcome for r in results if r.finding == fid and r.side == side]
            if f"{fid} {side}" in missing:
                row[side] = "missing"
            elif not outcomes:
                row[side] = "not run"
            else:
                row[side] = "caught" if all(o == "caught" for o in outcomes) else "not caught"
        table[fid] = row
    return table


def run_all(mutants: Sequence[Mutant], ctx: RunContext, jobs: int = 1, baseline: bool = False,
            progress=print) -> Tuple[List[Result], List[Result]]:
    """(mutant results, baseline results): run the mutants (``jobs`` at a time) after a baseline without edits: of every selected
    (finding, side) with ``baseline``, else of the first one only (a canary for the scratch copy
    and the environment: if it fails, no mutant can be judged)."""
    groups = sorted({(m.finding, m.side) for m in mutants})
    broken, baselines = {}, []
    for finding, side in groups if baseline else groups[:1]:
        res = run_mutant(None, ctx, finding, side)
        baselines.append(res)
        progress(f"baseline {finding} {side}: {'ok' if res.outcome == 'survived' else res.outcome} "
                 f"({res.seconds:.0f} s)")
        if res.outcome != "survived":
            broken[(finding, side)] = f"baseline without the edit: {res.outcome}: {res.detail}"[:600]
    if not baseline and broken:  # the canary failed: the scratch copy itself is not sound
        broken = dict.fromkeys(groups, next(iter(broken.values())))

    def one(m: Mutant) -> Result:
        if (m.finding, m.side) in broken:
            return Result(m.key, m.finding, m.side, m.why, m.files, "error", 0.0, broken[(m.finding, m.side)])
        res = run_mutant(m, ctx)
        progress(f"{res.outcome:8} {m.key:22} {m.finding} {m.side:8} {res.seconds:6.1f} s  {m.why}"
                 + (f"\n         {res.detail[:400]}" if res.outcome != "caught" else ""))
        return res

    if jobs <= 1:
        return [one(m) for m in mutants], baselines
    with ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(one, mutants)), baselines


def report(results: Sequence[Result], baselines: Sequence[Result], mutants_total: int, missing: Sequence[str],
           finding_ids: Sequence[str], selection: dict, seconds: float, problems: Sequence[str]) -> dict:
    return {
        "complete": not any(selection.get(k) for k in ("findings", "sides", "files", "sample")),
        "selection": selection,
        "declared": mutants_total,
        "score": score(results),
        "seconds": round(seconds, 1),
        "coverage": {"missing": list(missing), "complete": not missing},
        "problems": list(problems),
        "findings": per_finding(results, finding_ids, missing),
        "mutants": [asdict(r) for r in results],
        "baselines": [{k: v for k, v in asdict(r).items() if k not in ("why", "files")} for r in baselines],
    }


def _registry_ids(root: Path) -> List[str]:
    found, _ = registry.load(root / "review" / "findings")
    return [f.id for f in found]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.mutation", description=__doc__.splitlines()[0])
    parser.add_argument("--finding", action="append", default=[], metavar="ID", help="only this finding's mutants")
    parser.add_argument("--side", action="append", default=[], choices=SIDES, help="only this side's mutants")
    parser.add_argument("--file", action="append", default=[], metavar="PATH",
                        help="only mutants editing this file (or a file under this folder)")
    always = ", ".join(f"{f} {s}" for f, s in ALWAYS_SAMPLED)
    parser.add_argument("--sample", type=int, metavar="N",
                        help=f"N mutants drawn with --seed, plus one of each of {always}")
    parser.add_argument("--seed", help="seed of --sample (default: the commit under test)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at a time (default 1: timing evidence "
                        "is measured on a quiet machine)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds for one mutant's run")
    parser.add_argument("--baseline", action="store_true",
                        help="first run each selected finding and side in a scratch copy without edits "
                        "(by default only the first, as a canary)")
    parser.add_argument("--coverage", action="store_true", help="only check that every finding has a mutant per side")
    parser.add_argument("--list", action="store_true", help="list the selected mutants and stop")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the report here")
    parser.add_argument("--record", action="store_true", help="record the report as results['mutation']")
    parser.add_argument("--logs", type=Path, default=ROOT / "build" / "mutation", help="folder for each run's log")
    parser.add_argument("--mutants-dir", type=Path, default=MUTANTS_DIR, help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)

    mutants, problems = load(ns.mutants_dir)
    finding_ids = _registry_ids(ROOT)
    problems += unknown_findings(mutants, finding_ids)
    missing = coverage(mutants, finding_ids)
    for problem in problems:
        print(f"mutants: {problem}", file=sys.stderr)
    if ns.coverage:
        if missing:
            print(f"{len(missing)} finding sides have no declared mutant:\n  " + "\n  ".join(missing), file=sys.stderr)
        else:
            print(f"every finding ({len(finding_ids)}) has a mutant on both sides")
        return 1 if missing or problems else 0

    chosen = select(mutants, ns.finding, ns.side, ns.file)
    seed = ns.seed or default_seed()
    if ns.sample is not None:
        chosen = sample(chosen, ns.sample, seed)
    if ns.list:
        for m in chosen:
            print(f"{m.key:24} {m.finding} {m.side:8} {', '.join(m.files)}  {m.why}")
        return 0
    if not chosen:
        print("no mutant matches the selection", file=sys.stderr)
        return 1

    from . import pg, results as results_mod

    selection = {"findings": ns.finding, "sides": ns.side, "files": ns.file, "sample": ns.sample,
                 "seed": seed if ns.sample is not None else None, "baseline": ns.baseline, "jobs": ns.jobs}
    started = time.monotonic()
    with pg.database_url() as url:
        ctx = RunContext(ROOT, tree_files(ROOT), url, ns.timeout, ns.logs)
        print(f"{len(chosen)} mutants of {len(mutants)}; tree of {len(ctx.files)} files; logs in {ns.logs}",
              flush=True)
        results, baselines = run_all(chosen, ctx, jobs=ns.jobs, baseline=ns.baseline,
                                     progress=lambda line: print(line, flush=True))
    data = report(results, baselines, len(mutants), missing, finding_ids, selection, time.monotonic() - started, problems)
    if ns.json:
        ns.json.parent.mkdir(parents=True, exist_ok=True)
        ns.json.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    if ns.record:
        print(f"recorded {results_mod.record('mutation', data)}")
    s = data["score"]
    print("score: " + "; ".join(f"{side} {s[side]['caught']}/{s[side]['total']}" for side in (*SIDES, "all")
                               if s[side]["total"]) + f" in {data['seconds']:.0f} s")
    bad = [r for r in results if r.outcome != "caught"]
    for r in bad:
        print(f"NOT CAUGHT: {r.mutant} ({r.finding} {r.side}, {r.outcome}): {r.why}\n    {r.detail[:600]}",
              file=sys.stderr)
    if missing and data["complete"]:
        print(f"{len(missing)} finding sides have no declared mutant: {', '.join(missing)}", file=sys.stderr)
    return 1 if bad or problems or (missing and data["complete"]) else 0


if __name__ == "__main__":
    sys.exit(main())
