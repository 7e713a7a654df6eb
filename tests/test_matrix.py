"""Merging the two stacks' reports into the evidence matrix (``workbench.matrix``)."""
from __future__ import annotations

from types import SimpleNamespace

from workbench import matrix


def _finding(fid: str, stacks: dict | None = None):
    return SimpleNamespace(id=fid, title=f"finding {fid}", severity="major", category="correctness",
                           extra={"stacks": stacks} if stacks else {})


def _report(stack: str, tests: dict) -> dict:
    return matrix.stack_report(stack, {n: {"outcome": o, "findings": f, "uses_stack": False}
                                       for n, (o, f) in tests.items()}, True, {"python": "3.x"})


TESTS = {"t::as_given": ("passed", [["C1-01", "as_given", None]]),
         "t::only2020": ("passed", [["C1-02", "as_given", ["2020"]]]),
         "t::fixed": ("passed", [["C1-01", "fixed", None]])}


def test_both_stacks_merge_per_finding():
    reports = {"today": _report("today", TESTS),
               "2020": _report("2020", {k: v for k, v in TESTS.items() if k != "t::fixed"})}
    m = matrix.merge([_finding("C1-01"), _finding("C1-02", {"2020": "a", "today": "b"})], reports,
                     {"2020": {"ran": True}, "today": {"ran": True}})
    one, two = m["findings"]["C1-01"], m["findings"]["C1-02"]
    assert one["as_given"] == {"2020": "demonstrated", "today": "demonstrated"} and one["fixed"] == "passes"
    assert one["behaviour_differs"] is False
    assert one["tests"]["as_given"] == [{"test": "t::as_given", "outcome": "passed",
                                         "stacks": {"2020": "passed", "today": "passed"}}]
    assert two["as_given"] == {"2020": "demonstrated", "today": "absent"} and two["behaviour_differs"]
    assert m["complete_run"] is True
    assert matrix.counts(m)["demonstrated_2020"] == 2 and matrix.counts(m)["absent_today"] == 1


def test_a_failure_on_one_stack_shows_on_that_stack_only():
    failing = dict(TESTS, **{"t::as_given": ("failed", [["C1-01", "as_given", None]])})
    m = matrix.merge([_finding("C1-01")], {"today": _report("today", TESTS), "2020": _report("2020", failing)},
                     {})
    row = m["findings"]["C1-01"]
    assert row["as_given"] == {"2020": "failed", "today": "demonstrated"} and row["behaviour_differs"]
    assert row["tests"]["as_given"][0]["outcome"] == "2020: failed; today: passed"


def test_a_stack_that_did_not_run_is_named_in_the_markdown():
    m = matrix.merge([_finding("C1-01")], {"today": _report("today", TESTS), "2020": None},
                     {"2020": {"ran": False, "reason": "no Python 3.8"}, "today": {"ran": True}})
    assert m["findings"]["C1-01"]["as_given"] == {"2020": "not run", "today": "demonstrated"}
    assert matrix.counts(m)["one_stack_only"] == ["C1-01"]
    text = matrix.markdown(m)
    assert "- 2020: not run (no Python 3.8)" in text
    assert "| C1-01 | major | not run | demonstrated |  | passes | 2 |" in text
