"""pytest plugin: ties evidence tests to the findings registry, runs the as-given evidence on both
stacks and writes the evidence matrix.

Markers (registered here and in pyproject.toml):

* ``@pytest.mark.finding("C2-07", side="as_given")`` — the test proves finding C2-07;
  ``side`` says on which code: ``as_given`` or ``patched`` (the defect is observed) or ``fixed``
  (the redesigned code does not have it). ``stacks=("2020",)`` says the defect exists only on
  those stacks: elsewhere the same test passes by checking that it is absent.
* ``@pytest.mark.pending("why")`` — the half of the evidence that is still to come; skipped and
  shown as pending in the matrix.
* ``@pytest.mark.slow`` — long measurements, run only with ``--run-slow``.
* ``@pytest.mark.both_stacks`` — a test without a demonstrating finding mark that the 2020 run
  keeps too (it otherwise keeps only as-given and patched evidence).

The fixture ``stack`` names the stack a test runs on ("2020" or "today"; ``workbench.stacks``).

Two stacks: today's run (CPython 3.11) starts pytest under the 2020 environment in the background
(``--stack2020``, default ``auto``: when ``.venv2020`` exists), with the same selection; that run
keeps the as-given and patched evidence, collects every module (so the evidence code stays
importable on 3.8) and writes its stack report. Today's run waits for it in a last item,
``stack2020::evidence``, and merges both reports into the matrix (``workbench.matrix``).

``--finding C1-09 --side fixed`` keeps only the tests of that finding on that side (``as_given``
also takes the ``patched`` marks) and deselects everything else, the registry checks included;
the run is a usage error when nothing is selected, or when ``reference``/``workbench`` are not
imported from the tree under test. The mutation runner (``workbench/mutation.py``) runs each
mutant's tests this way in a scratch copy of the tree.

Registry checks run as ordinary test items under ``registry::`` so that they fail the run like
any test: the registry must be well formed with every location still pinned to its lines, every
ID a test names must exist, and (on a run of the whole suite) every finding must have a test and
every finding whose evidence depends on the stack must describe both stacks (``stacks:``).
"""
from __future__ import annotations

import importlib
import json
import os
import pkgutil
import re
import sys
from pathlib import Path

import pytest

from . import findings as registry_mod
from . import matrix as matrix_mod
from . import stacks

SIDES = matrix_mod.SIDES
DEMONSTRATING_SIDES = matrix_mod.DEMONSTRATING_SIDES
SELECTABLE_SIDES = ("as_given", "fixed")  # as --side: as_given covers the patched marks too
STACK2020_MODES = ("auto", "require", "off")
NOTHING_FOR_2020 = "no as-given evidence selected"
_KEY = pytest.StashKey[dict]()


def pytest_addoption(parser):
    parser.addini("findings_registry", "findings registry: a YAML file or a folder of them",
                  default="review/findings")
    parser.addini("evidence_matrix", "where the evidence matrix JSON is written",
                  default="build/evidence/matrix.json")
    parser.addini("stack2020_venv", "virtual environment of the task's 2020 stack; empty: no 2020 run",
                  default="")
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run tests marked slow (long measurements)")
    group = parser.getgroup("workbench", "evidence selection")
    group.addoption("--finding", action="append", default=[], metavar="ID",
                    help="run only the tests of this finding (repeatable); needs --side")
    group.addoption("--side", choices=SELECTABLE_SIDES, default=None,
                    help="with --finding: as_given (as_given and patched marks) or fixed")
    group = parser.getgroup("workbench stacks")
    group.addoption("--stack2020", choices=STACK2020_MODES,
                    default=os.environ.get("WORKBENCH_STACK2020") or "auto",
                    help="run the as-given evidence on the 2020 stack too: auto (when its "
                         "environment exists), require (fail without it), off "
                         "(default: $WORKBENCH_STACK2020 or auto)")
    group.addoption("--evidence-stack-report", default=None, metavar="PATH",
                    help="where this run writes its stack report (set by today's run for the 2020 run)")


def pytest_configure(config):
    config.addinivalue_line("markers", "finding(id, side, stacks=None): evidence for a registry finding")
    config.addinivalue_line("markers", "pending(reason): evidence still to come; skipped")
    config.addinivalue_line("markers", "slow: long measurements; run with --run-slow")
    config.addinivalue_line("markers", "both_stacks: the 2020 run keeps this test too")
    root = Path(config.rootpath)
    state = {"registry_path": root / config.getini("findings_registry"),
             "matrix_path": root / config.getini("evidence_matrix"),
             "root": root, "findings": [], "load_errors": [], "links": {}, "outcomes": {},
             "uses_stack": set(), "bad_marks": [], "full_run": False,
             "stack": stacks.current(), "stack2020": None, "stack2020_report": None,
             "stack2020_note": None}
    try:
        state["findings"], errors = registry_mod.check(state["registry_path"], root)
        state["load_errors"] = errors
    except registry_mod.RegistryError as exc:
        state["load_errors"] = [str(exc)]
    config.stash[_KEY] = state
    config.pluginmanager.register(OutcomeRecorder(state), "workbench-outcomes")


@pytest.fixture(scope="session")
def stack() -> str:
    """The stack this run is on: "2020" (the task's: CPython 3.8, mid-2020 libraries) or "today"."""
    return stacks.current()


def _finding_marks(item) -> list[tuple[str, str, tuple | None]]:
    """(finding ID, side, stacks the defect is on or None) named by an item; malformed marks are
    reported, not raised."""
    state = item.config.stash[_KEY]
    triples = []
    for mark in item.iter_markers("finding"):
        side = mark.kwargs.get("side")
        present_on = mark.kwargs.get("stacks")
        if not mark.args or side not in SIDES:
            state["bad_marks"].append(
                f"{item.nodeid}: use @pytest.mark.finding('C1-01', side=one of {SIDES})")
            continue
        if present_on is not None and (side == "fixed" or not set(present_on) <= set(stacks.STACKS)):
            state["bad_marks"].append(
                f"{item.nodeid}: stacks= names the stacks an as-given defect is on, from {stacks.STACKS}")
            continue
        triples.extend((str(fid), side, tuple(present_on) if present_on else None) for fid in mark.args)
    return triples


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


def _runs_on_2020(item, links) -> bool:
    return any(side in DEMONSTRATING_SIDES for _, side, _ in links) \
        or item.get_closest_marker("both_stacks") is not None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    state = config.stash[_KEY]
    run_slow = config.getoption("--run-slow")
    for item in items:
        state["links"][item.nodeid] = _finding_marks(item)
        if "stack" in getattr(item, "fixturenames", ()):
            state["uses_stack"].add(item.nodeid)
        pending = item.get_closest_marker("pending")
        if pending is not None:
            reason = pending.args[0] if pending.args else "evidence still to come"
            item.add_marker(pytest.mark.skip(reason=f"pending: {reason}"))
        if item.get_closest_marker("slow") is not None and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: run with --run-slow"))
    if config.getoption("--finding") or config.getoption("--side"):
        _select_finding(config, items)
        if state["stack"] == "today" and config.getoption("--side") == "as_given":
            _start_stack2020(session, config, items, state)  # the same finding on the 2020 stack
        return  # one finding's evidence only: the registry checks are not part of it
    state["full_run"] = _is_full_run(config, items)
    if state["stack"] == "2020":
        kept = [i for i in items if _runs_on_2020(i, state["links"][i.nodeid])]
        dropped = [i for i in items if i not in kept]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = kept
            for item in dropped:
                del state["links"][item.nodeid]
    checks = [("registry-is-valid", _check_registry), ("finding-ids-are-known", _check_known_ids)]
    if state["full_run"] and state["stack"] == "today":
        checks.append(("every-finding-has-evidence", _check_coverage))
        checks.append(("stack-differences-are-described", _check_stack_descriptions))
    for name, func in checks:
        items.append(RegistryCheck.from_parent(session, name=f"registry::{name}", check=func))
    if state["stack"] == "2020":
        items.append(RegistryCheck.from_parent(session, name="stack2020::workbench-imports",
                                               check=_check_workbench_imports))
    else:
        _start_stack2020(session, config, items, state)


def _select_finding(config, items) -> None:
    """Keep only the items marked with one of ``--finding`` on ``--side``; deselect the rest."""
    ids, side = set(config.getoption("--finding")), config.getoption("--side")
    if not ids or side is None:
        raise pytest.UsageError("--finding and --side go together")
    sides = DEMONSTRATING_SIDES if side == "as_given" else (side,)
    links = config.stash[_KEY]["links"]
    keep = [item for item in items
            if any(fid in ids and s in sides for fid, s, _ in links.get(item.nodeid, ()))]
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
    for nodeid, links in state["links"].items():
        problems += [f"{nodeid} names {fid}, which is not in the registry"
                     for fid, _, _ in links if fid not in known]
    return problems


def _check_coverage(state) -> list[str]:
    covered = {fid for links in state["links"].values() for fid, side, _ in links
               if side in DEMONSTRATING_SIDES}
    return [f"{f.id} ({f.title}) has no evidence test on the as-given or patched code"
            for f in state["findings"] if f.id not in covered]


def _check_stack_descriptions(state) -> list[str]:
    """A finding whose as-given evidence depends on the stack (a test asks for the ``stack``
    fixture, or its mark names ``stacks=``) describes both stacks in the registry, and only such
    a finding does."""
    dependent = {fid for nodeid, links in state["links"].items() for fid, side, present_on in links
                 if side in DEMONSTRATING_SIDES and (nodeid in state["uses_stack"] or present_on)}
    described = {f.id for f in state["findings"] if f.extra.get("stacks")}
    return ([f"{fid}: its as-given evidence depends on the stack; describe both in the registry "
             "(stacks: {\"2020\": ..., \"today\": ...})" for fid in sorted(dependent - described)]
            + [f"{fid}: the registry describes two stacks, but no as-given test checks the "
               "stack it runs on (the `stack` fixture or stacks= in its mark)"
               for fid in sorted(described - dependent)])


def _check_workbench_imports(state) -> list[str]:
    """Every workbench module imports on this interpreter (the 2020 run: Python 3.8)."""
    problems = []
    package = importlib.import_module("workbench")
    for module in pkgutil.iter_modules(package.__path__, "workbench."):
        try:
            importlib.import_module(module.name)
        except Exception as exc:  # noqa: BLE001 - every failure is reported
            problems.append(f"{module.name} does not import on Python "
                            f"{sys.version.split()[0]}: {type(exc).__name__}: {exc}")
    return problems


# --------------------------------------------------------------------------- the 2020 run


def _child_args(config) -> list[str]:
    """The selection of today's run, for the 2020 run (which keeps the demonstrating tests)."""
    opt = config.option
    args = [str(a) for a in config.args]
    args += ["-q", "-rfE"]
    if opt.keyword:
        args += ["-k", opt.keyword]
    if opt.markexpr:
        args += ["-m", opt.markexpr]
    for nodeid in getattr(opt, "deselect", None) or []:
        args += ["--deselect", nodeid]
    if config.getoption("--run-slow"):
        args.append("--run-slow")
    for fid in config.getoption("--finding"):
        args += ["--finding", fid]
    if config.getoption("--side"):
        args += ["--side", config.getoption("--side")]
    return args


def _start_stack2020(session, config, items, state) -> None:
    mode = config.getoption("--stack2020")
    venv = os.environ.get("WORKBENCH_VENV2020") or config.getini("stack2020_venv")
    wanted = [i for i in items if isinstance(i, pytest.Function)
              and _runs_on_2020(i, state["links"].get(i.nodeid, []))]
    if config.option.collectonly:
        return
    if mode == "off" or not venv or not wanted:
        reason = ("--stack2020=off" if mode == "off" else
                  "no 2020 environment configured" if not venv else NOTHING_FOR_2020)
        state["stack2020_note"] = {"ran": False, "reason": reason}
        return
    python, why = stacks.python2020(state["root"] / venv)
    if python is None:
        state["stack2020_note"] = {"ran": False, "reason": why}
        items.append(Stack2020Item.from_parent(session, name="stack2020::evidence",
                                               missing=why, required=mode == "require"))
        return
    evidence_dir = state["matrix_path"].parent
    from . import results  # lazily: it describes the machine, which needs psutil
    run = stacks.Stack2020Run(
        python, _child_args(config), database_url=os.environ.get("DATABASE_URL"),
        report_path=_partial(evidence_dir / "stack-2020.json", state["full_run"]),
        log_path=evidence_dir / "stack-2020.log",
        results_dir=results.results_dir() / "stack2020").start()
    state["stack2020"] = run
    items.append(Stack2020Item.from_parent(session, name="stack2020::evidence", run=run))


class Stack2020Item(pytest.Item):
    """Waits for the 2020 run and fails when it failed (its failed tests listed), or when it is
    required and cannot run; skipped, with the reason, when it cannot run."""

    def __init__(self, *, run=None, missing: str = "", required: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.run, self.missing, self.required = run, missing, required
        # it waits for a whole run: pytest-timeout's per-test limit must not cut it short
        self.add_marker(pytest.mark.timeout(stacks.CHILD_TIMEOUT + 60))

    def runtest(self):
        state = self.config.stash[_KEY]
        if self.run is None:
            message = f"2020 stack not run: {self.missing}"
            if self.required:
                raise RegistryProblem([message + " (--stack2020=require)"])
            pytest.skip(message)
        report = self.run.wait()
        proc = report["process"]
        ok = proc["returncode"] in (0, 5) and report.get("tests") is not None
        state["stack2020_report"] = report if report.get("tests") is not None else None
        state["stack2020_note"] = {"ran": state["stack2020_report"] is not None,
                                   "environment": report.get("environment", {}),
                                   "summary": proc["summary"], "seconds": proc["seconds"],
                                   "log": proc["log"],
                                   **({} if ok else {"reason": f"the 2020 run failed: {proc['summary']}"})}
        if not ok:
            log = Path(proc["log"]).read_text(encoding="utf-8", errors="replace")
            failed = [line for line in log.splitlines() if re.match(r"^(FAILED|ERROR) ", line)]
            raise RegistryProblem([f"the 2020 run failed ({proc['summary']}; exit code "
                                   f"{proc['returncode']}); log: {proc['log']}", *failed[:50],
                                   f"command: {proc['command']}"])

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, RegistryProblem):
            return "\n".join(excinfo.value.problems)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.config.stash[_KEY]["root"] / "requirements-2020.lock", None, self.name


# --------------------------------------------------------------------------- outcomes and matrix


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


def _environment() -> dict:
    return stacks.environment()


def _own_report(state) -> dict:
    tests = {nodeid: {"outcome": state["outcomes"][nodeid],
                      "findings": [list(link) for link in links],
                      "uses_stack": nodeid in state["uses_stack"]}
             for nodeid, links in state["links"].items() if nodeid in state["outcomes"]}
    return matrix_mod.stack_report(state["stack"], tests, state["full_run"], _environment())


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")


def _partial(path: Path, complete: bool) -> Path:
    """The review reads only complete runs; partial ones are kept aside."""
    return path if complete else path.with_name(path.stem + "-partial" + path.suffix)


def pytest_sessionfinish(session, exitstatus):
    if hasattr(session.config, "workerinput"):  # xdist worker: the controller writes
        return
    state = session.config.stash[_KEY]
    run = state.get("stack2020")
    if run is not None and state["stack2020_report"] is None:  # interrupted before its item ran
        run.stop()
        state["stack2020_note"] = state["stack2020_note"] or {"ran": False,
                                                              "reason": "today's run ended before it"}
    if not state["outcomes"] or not state["findings"]:
        return
    own = _own_report(state)
    explicit = session.config.getoption("--evidence-stack-report")
    stack_path = Path(explicit) if explicit else _partial(
        state["matrix_path"].with_name(f"stack-{state['stack']}.json"), state["full_run"])
    _write_json(stack_path, own)
    state["written_to"] = stack_path
    if state["stack"] != "today":
        return
    reports = {"today": own, "2020": state["stack2020_report"]}
    notes = {"today": {"ran": True, "environment": own["environment"]},
             "2020": state["stack2020_note"] or {"ran": False, "reason": "not run"}}
    matrix = matrix_mod.merge(state["findings"], reports, notes)
    path = _partial(state["matrix_path"], matrix["complete_run"] and state["full_run"])
    _write_json(path, matrix)
    path.with_suffix(".md").write_text(matrix_mod.markdown(matrix), encoding="utf-8")
    state["written_to"] = path
    state["matrix_summary"] = matrix


def pytest_unconfigure(config):
    run = config.stash.get(_KEY, {}).get("stack2020")
    if run is not None:
        run.close()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    state = config.stash[_KEY]
    write = terminalreporter.write_line
    if state["stack"] == "2020":
        if state.get("written_to"):
            write(f"evidence on the 2020 stack: {len(state['outcomes'])} tests; stack report "
                  f"written to {state['written_to']}")
        return
    matrix = state.get("matrix_summary")
    if not matrix:
        return
    c = matrix_mod.counts(matrix)
    write(f"evidence matrix: {c['findings']} findings; as-given demonstrated on the 2020 stack "
          f"{c['demonstrated_2020']}, on today's {c['demonstrated_today']} (absent today "
          f"{c['absent_today']}), behaviour differs {c['behaviour_differs']}; fixed passes "
          f"{c['fixed_passes']}, pending {c['fixed_pending']}; written to {state['written_to']}")
    note = matrix["stacks"]["2020"]
    if note.get("reason") == NOTHING_FOR_2020:
        return
    if note.get("ran"):
        env = note.get("environment", {})
        write(f"2020 stack (Python {env.get('python')}, run in the background, "
              f"{note.get('seconds')} s): {note.get('summary')}; log {note.get('log')}")
    else:
        only = c["one_stack_only"]
        write(f"2020 stack NOT RUN ({note.get('reason')}): {len(only)} findings checked on "
              f"today's stack only: {', '.join(only)}", red=True, bold=True)
