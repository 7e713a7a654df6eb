"""The evidence matrix: what each stack's test run showed, per finding, merged into one table.

Each pytest run writes a *stack report* for the stack it ran on (``stack_report``): every test's
outcome and the findings it names. Today's run merges its own report with the 2020 run's into
``build/evidence/matrix.json`` (``merge``) and ``matrix.md`` (``markdown``). Per finding::

    {"title", "severity", "category",
     "as_given": {"2020": status, "today": status},   # the as-given and patched evidence
     "fixed": status,                                  # the redesigned code (today's stack only)
     "behaviour_differs": bool,                        # the registry describes both stacks, or
                                                       # the two stacks gave different statuses
     "tests": {"as_given": [{"test", "outcome", "stacks": {"2020": o, "today": o}}, ...],
               "patched": [...], "fixed": [{"test", "outcome"}]}}

Statuses of a demonstrating side: ``demonstrated`` (a test observed the defect), ``absent`` (the
defect is not on this stack, and a test checked that: the finding's mark names the stacks it is
on), ``failed``, ``pending``, ``skipped``, ``no test``, ``not run`` (the stack's run did not
happen). The fixed side: ``passes``, ``fails``, ``pending``, ``skipped``, ``no test``.
"""
from __future__ import annotations

import time

from .stacks import STACKS

DEMONSTRATING_SIDES = ("as_given", "patched")
SIDES = DEMONSTRATING_SIDES + ("fixed",)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def stack_report(stack: str, tests: dict, complete_run: bool, environment: dict) -> dict:
    """One stack's run. ``tests``: {nodeid: {"outcome", "findings": [[id, side, stacks|None]],
    "uses_stack": bool}} for every test that ran (deselected tests are left out)."""
    return {"stack": stack, "generated_at": _now(), "complete_run": complete_run,
            "environment": environment, "tests": tests}


def _demonstrating_status(entries: list[tuple[str, bool]]) -> str:
    """``entries``: (outcome, the defect is expected on this stack) of one finding's tests."""
    if not entries:
        return "no test"
    outcomes = [o for o, _ in entries]
    if "failed" in outcomes:
        return "failed"
    if any(o == "passed" and present for o, present in entries):
        return "demonstrated"
    if "passed" in outcomes:
        return "absent"
    return "pending" if "pending" in outcomes else "skipped"


def _fixed_status(outcomes: list[str]) -> str:
    if not outcomes:
        return "no test"
    if "failed" in outcomes:
        return "fails"
    if "passed" in outcomes:
        return "passes"
    return "pending" if "pending" in outcomes else "skipped"


def _combined(per_stack: dict) -> str:
    ran = {s: o for s, o in per_stack.items() if o is not None}
    values = set(ran.values())
    return values.pop() if len(values) == 1 else "; ".join(f"{s}: {o}" for s, o in ran.items())


def merge(findings: list, reports: dict, stack_notes: dict) -> dict:
    """The matrix from the per-stack reports. ``reports``: {stack: report or None (not run)};
    ``stack_notes``: {stack: {"ran": bool, "reason"?, ...}} shown as the matrix's ``stacks``."""
    by_test: dict = {}
    for stack, report in reports.items():
        for nodeid, t in (report or {}).get("tests", {}).items():
            entry = by_test.setdefault(nodeid, {"findings": t["findings"], "outcomes": {}})
            entry["outcomes"][stack] = t["outcome"]
    rows = {}
    for f in findings:
        tests = {side: [] for side in SIDES}
        evidence = {stack: [] for stack in STACKS}
        fixed_outcomes = []
        for nodeid, entry in by_test.items():
            for fid, side, present_on in entry["findings"]:
                if fid != f.id:
                    continue
                if side == "fixed":
                    outcome = entry["outcomes"].get("today")
                    if outcome is not None:
                        fixed_outcomes.append(outcome)
                        tests["fixed"].append({"test": nodeid, "outcome": outcome})
                    continue
                per_stack = {s: entry["outcomes"].get(s) for s in STACKS}
                tests[side].append({"test": nodeid, "outcome": _combined(per_stack), "stacks": per_stack})
                for s, outcome in per_stack.items():
                    if outcome is not None:
                        evidence[s].append((outcome, present_on is None or s in present_on))
        as_given = {s: _demonstrating_status(evidence[s]) if reports.get(s) else "not run"
                    for s in STACKS}
        ran = [v for s, v in as_given.items() if reports.get(s)]
        rows[f.id] = {
            "title": f.title, "severity": f.severity, "category": f.category,
            "as_given": as_given, "fixed": _fixed_status(fixed_outcomes),
            "behaviour_differs": bool(f.extra.get("stacks")) or len(set(ran)) > 1,
            "tests": tests,
        }
    complete = all(r.get("complete_run") for r in reports.values() if r)
    return {"generated_at": _now(), "complete_run": complete and bool(reports.get("today")),
            "stacks": stack_notes, "findings": rows}


def counts(matrix: dict) -> dict:
    """The per-stack outcome counts the summary line and the report quote."""
    rows = matrix["findings"].values()
    demo = {s: sum(1 for r in rows if r["as_given"].get(s) == "demonstrated") for s in STACKS}
    return {"findings": len(matrix["findings"]),
            **{f"demonstrated_{s}": n for s, n in demo.items()},
            "absent_today": sum(1 for r in rows if r["as_given"].get("today") == "absent"),
            "absent_2020": sum(1 for r in rows if r["as_given"].get("2020") == "absent"),
            "behaviour_differs": sum(1 for r in rows if r["behaviour_differs"]),
            "fixed_passes": sum(1 for r in rows if r["fixed"] == "passes"),
            "fixed_pending": sum(1 for r in rows if r["fixed"] == "pending"),
            "one_stack_only": [fid for fid, r in matrix["findings"].items()
                               if r["as_given"].get("2020") == "not run"
                               and r["as_given"].get("today") not in ("no test", "not run")]}


def markdown(matrix: dict) -> str:
    notes = matrix.get("stacks", {})
    lines = ["# Evidence matrix", "",
             f"Generated {matrix['generated_at']}; complete run: {matrix['complete_run']}.", ""]
    for stack in STACKS:
        note = notes.get(stack, {})
        if note.get("ran"):
            env = note.get("environment", {})
            libs = ", ".join(f"{k} {v}" for k, v in sorted(env.get("packages", {}).items()))
            lines.append(f"- {stack}: Python {env.get('python', '?')}; {libs}")
        else:
            lines.append(f"- {stack}: not run ({note.get('reason', 'no report')})")
    lines += ["", "| ID | severity | as-given, 2020 | as-given, today | differs | fixed | tests |",
              "|---|---|---|---|---|---|---|"]
    for fid, row in matrix["findings"].items():
        n = sum(len(v) for v in row["tests"].values())
        differs = "yes" if row["behaviour_differs"] else ""
        lines.append(f"| {fid} | {row['severity']} | {row['as_given']['2020']} | "
                     f"{row['as_given']['today']} | {differs} | {row['fixed']} | {n} |")
    return "\n".join(lines) + "\n"
