"""pytest plugin: ties evidence tests to the findings registry and writes the evidence matrix.

Markers (registered here and in pyproject.toml):

* ``@pytest.mark.finding("C2-07", side="as_given")`` — the test proves finding C2-07;
  ``side`` says on which code: ``as_given`` or ``patched`` (the defect is observed) or ``fixed``
  (the redesigned code does not have it).
* ``@pytest.mark.pending("why")`` — the half of the evidence that is still to come; skipped and
  shown as pending in the matrix.
* ``@pytest.mark.slow`` — long measurements, run only with ``--run-slow``.

``--finding C1-09 --side fixed`` keeps only the tests of that finding on that side (``as_given``
also takes the ``patched`` marks) and deselects everything else, the registry checks included;
the run is a usage error when nothing is selected, or when ``reference``/``workbench`` are not
imported from the tree under test. The mutation runner (``workbench/mutation.py``) runs each
mutant's tests this way in a scratch copy of the tree.

Registry checks run as ordinary test items under ``registry::`` so that they fail the run like
any test: the registry must be well formed with every location still pinned to its lines, every
ID a test names must exist, and (on a run of the whole suite) every finding must have a test.
"""
from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import pytest

from . import findings as registry_mod

SIDES = ("as_given", "patched", "fixed")
DEMONSTRATING_SIDES = ("as_given", "patched")
SELECTABLE_SIDES = ("as_given", "fixed")  # as --side: as_given covers the patched marks too
_KEY = pytest.StashKey[dict]()


def pytest_addoption(parser):
    parser.addini("findings_registry", "findings registry: a YAML file or a folder of them",
                  default="review/findings")
    parser.addini("evidence_matrix", "where the evidence matrix JSON is written",
                  default="build/evidence/matrix.json")
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run tests marked slow (long measurements)")
    group = parser.getgroup("workbench", "evidence selection")
    group.addoption("--finding", action="append", default=[], metavar="ID",
                    help="run only the tests of this finding (repeatable); needs --side")
    group.addoption("--side", choices=SELECTABLE_SIDES, default=None,
                    help="with --finding: as_given (as_given and patched marks) or fixed")


def pytest_configure(config):
    config.addinivalue_line("markers", "finding(id, side): evidence for a registry finding")
    config.addinivalue_line("markers", "pending(reason): evidence still to come; skipped")
    config.addinivalue_line("markers", "slow: long measurements; run with --run-slow")
    root = Path(config.rootpath)
    state = {"registry_path": root / config.getini("findings_registry"),
             "matrix_path": root / config.getini("evidence_matrix"),
             "root": root, "findings": [], "load_errors": [], "links": {}, "outcomes": {},
             "bad_marks": [], "full_run": False}
    try:
        state["findings"], errors = registry_mod.check(state["registry_path"], root)
        state["load_errors"] = errors
    except registry_mod.RegistryError as exc:
        state["load_errors"] = [str(exc)]
    config.stash[_KEY] = state
    config.pluginmanager.register(OutcomeRecorder(state), "workbench-outcomes")


def _finding_marks(item) -> list[tuple[str, str]]:
    """(finding ID, side) pairs named by an item; malformed marks are reported, not raised."""
    state = item.config.stash[_KEY]
    pairs = []
    for mark in item.iter_markers("finding"):
        side = mark.kwargs.get("side")
        if not mark.args or side not in SIDES:
            state["bad_marks"].append(
                f"{item.nodeid}: use @pytest.mark.finding('C1-01', side=one of {SIDES})")
            continue
        pairs.extend((str(fid), side) for fid in mark.args)
    return pairs


def _is_full_run(config, items) -> bool:
    """True when the whole configured suite was collected (no path subset, -k, -m or deselect)."""
    opt = config.option
    if opt.keyword or opt.markexpr or getattr(opt, "deselect", None):
        return False
    testpaths = [(config.rootpath / p).resolve() for p in config.getini("testpaths")]
    args = [Path(a.split("::")[0]).resolve() for a in config.args] if config.args else []
    if not args or args == [config.rootpath.resolve()]:
        return True
    return bool(testpaths) and sorted(args) == sorted(testpaths)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    state = config.stash[_KEY]
    run_slow = config.getoption("--run-slow")
    for item in items:
        state["links"][item.nodeid] = _finding_marks(item)
        pending = item.get_closest_marker("pending")
        if pending is not None:
            reason = pending.args[0] if pending.args else "evidence still to come"
            item.add_marker(pytest.mark.skip(reason=f"pending: {reason}"))
        if item.get_closest_marker("slow") is not None and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: run with --run-slow"))
    if config.getoption("--finding") or config.getoption("--side"):
        _select_finding(config, items)
        return  # one finding's evidence only: the registry checks are not part of it
    state["full_run"] = _is_full_run(config, items)
    checks = [("registry-is-valid", _check_registry), ("finding-ids-are-known", _check_known_ids)]
    if state["full_run"]:
        checks.append(("every-finding-has-evidence", _check_coverage))
    for name, func in checks:
        items.append(RegistryCheck.from_parent(session, name=f"registry::{name}", check=func))


def _select_finding(config, items) -> None:
    """Keep only the items marked with one of ``--finding`` on ``--side``; deselect the rest."""
    ids, side = set(config.getoption("--finding")), config.getoption("--side")
    if not ids or side is None:
        raise pytest.UsageError("--finding and --side go together")
    sides = DEMONSTRATING_SIDES if side == "as_given" else (side,)
    links = config.stash[_KEY]["links"]
    keep = [item for item in items
            if any(fid in ids and s in sides for fid, s in links.get(item.nodeid, ()))]
    if not keep:
        raise pytest.UsageError(f"no test is marked with finding {', '.join(sorted(ids))} "
                                f"on side {side} (among {len(items)} collected)")
    _check_tree_under_test(config)
    kept = set(map(id, keep))
    dropped = [item for item in items if id(item) not in kept]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep


def _check_tree_under_test(config) -> None:
    """The code under test must be the rootdir's: a scratch copy that silently imported the
    installed (editable) tree would run the unmutated code and report a false survivor."""
    import importlib

    root = Path(config.rootpath).resolve()
    for package in ("reference", "workbench"):
        if not (root / package / "__init__.py").is_file():
            continue  # a project without that package (the plugin's own tests)
        origin = Path(importlib.import_module(package).__file__).resolve()
        if root not in origin.parents:
            raise pytest.UsageError(f"{package} is imported from {origin}, not from the tree under "
                                    f"test {root}; put {root} first on PYTHONPATH")


class RegistryCheck(pytest.Item):
    def __init__(self, *, check, **kwargs):
        super().__init__(**kwargs)
        self._check = check

    def runtest(self):
        problems = self._check(self.config.stash[_KEY])
        if problems:
            raise RegistryProblem(problems)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, RegistryProblem):
            return "\n".join(excinfo.value.problems)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.config.stash[_KEY]["registry_path"], None, self.name


class RegistryProblem(Exception):
    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def _check_registry(state) -> list[str]:
    return list(state["load_errors"])


def _check_known_ids(state) -> list[str]:
    known = {f.id for f in state["findings"]}
    problems = list(state["bad_marks"])
    for nodeid, pairs in state["links"].items():
        problems += [f"{nodeid} names {fid}, which is not in the registry"
                     for fid, _ in pairs if fid not in known]
    return problems


def _check_coverage(state) -> list[str]:
    covered = {fid for pairs in state["links"].values() for fid, side in pairs
               if side in DEMONSTRATING_SIDES}
    return [f"{f.id} ({f.title}) has no evidence test on the as-given or patched code"
            for f in state["findings"] if f.id not in covered]


class OutcomeRecorder:
    """Per-config plugin object: keeps each test's outcome for the matrix."""

    def __init__(self, state: dict):
        self.state = state

    def pytest_runtest_logreport(self, report):
        outcomes = self.state["outcomes"]
        if report.failed:
            outcome = "failed"
        elif report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
            outcome = "pending" if "pending:" in str(reason) else "skipped"
        elif report.when == "call":
            outcome = "passed"
        else:
            return
        if outcomes.get(report.nodeid) != "failed":  # a failed setup/call/teardown stays failed
            outcomes[report.nodeid] = outcome


def _side_status(outcomes: list[str], fixed: bool) -> str:
    if not outcomes:
        return "no test"
    if "failed" in outcomes:
        return "fails" if fixed else "failed"
    if "passed" in outcomes:
        return "passes" if fixed else "demonstrated"
    if "pending" in outcomes:
        return "pending"
    return "skipped"


def build_matrix(state) -> dict:
    per = defaultdict(lambda: {s: [] for s in SIDES})
    for nodeid, pairs in state["links"].items():
        outcome = state["outcomes"].get(nodeid)
        if outcome is None:  # deselected or not run
            continue
        for fid, side in pairs:
            per[fid][side].append({"test": nodeid, "outcome": outcome})
    rows = {}
    for f in state["findings"]:
        tests = per.get(f.id, {s: [] for s in SIDES})
        demo = tests["as_given"] + tests["patched"]
        rows[f.id] = {
            "title": f.title, "severity": f.severity, "category": f.category,
            "as_given": _side_status([t["outcome"] for t in demo], fixed=False),
            "fixed": _side_status([t["outcome"] for t in tests["fixed"]], fixed=True),
            "tests": tests,
        }
    return {"generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "complete_run": state["full_run"], "findings": rows}


def _matrix_markdown(matrix: dict) -> str:
    lines = ["# Evidence matrix", "",
             f"Generated {matrix['generated_at']}; complete run: {matrix['complete_run']}.", "",
             "| ID | severity | as-given | fixed | tests |", "|---|---|---|---|---|"]
    for fid, row in matrix["findings"].items():
        n = sum(len(v) for v in row["tests"].values())
        lines.append(f"| {fid} | {row['severity']} | {row['as_given']} | {row['fixed']} | {n} |")
    return "\n".join(lines) + "\n"


def pytest_sessionfinish(session, exitstatus):
    if hasattr(session.config, "workerinput"):  # xdist worker: the controller writes
        return
    state = session.config.stash[_KEY]
    if not state["outcomes"] or not state["findings"]:
        return
    matrix = build_matrix(state)
    path: Path = state["matrix_path"]
    if not matrix["complete_run"]:  # the review reads only complete runs; keep partial ones aside
        path = path.with_name(path.stem + "-partial" + path.suffix)
    state["written_to"] = path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(matrix, indent=2, ensure_ascii=False), encoding="utf-8")
    path.with_suffix(".md").write_text(_matrix_markdown(matrix), encoding="utf-8")
    state["matrix_summary"] = matrix


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    matrix = config.stash[_KEY].get("matrix_summary")
    if not matrix:
        return
    rows = matrix["findings"].values()
    count = lambda key, val: sum(1 for r in rows if r[key] == val)  # noqa: E731
    terminalreporter.write_line(
        f"evidence matrix: {len(matrix['findings'])} findings; as-given demonstrated "
        f"{count('as_given', 'demonstrated')}; fixed passes {count('fixed', 'passes')}, "
        f"pending {count('fixed', 'pending')}; written to {config.stash[_KEY]['written_to']}")
