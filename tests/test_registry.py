"""The registry checks catch what they promise to catch, in a throwaway project run by pytester."""
from __future__ import annotations

import json
import textwrap

import pytest

from workbench.findings import lines_hash

pytest_plugins = ["pytester"]

CODE = "def f(x):\n    return x / 0\n\n\ndef g():\n    pass\n"


def _entry(fid: str, lines: tuple[int, int], sha: str, stacks: bool = False) -> str:
    described = textwrap.indent(textwrap.dedent("""\
        stacks:
          "2020": На стеке задачи так.
          today: Сегодня иначе.
        """), "  ") if stacks else ""
    return textwrap.dedent(f"""\
        - id: {fid}
          title: Проверочная находка {fid}
          severity: minor
          category: correctness
          location:
            file: sample.py
            lines: [{lines[0]}, {lines[1]}]
            sha: "{sha}"
          problem: Деление на ноль.
          fix: Не делить на ноль.
        """) + described


@pytest.fixture
def project(pytester):
    """A minimal workbench-shaped project: one source file, a registry, a tests folder."""
    pytester.makefile(".ini", pytest=textwrap.dedent("""\
        [pytest]
        testpaths = tests
        findings_registry = findings.yaml
        evidence_matrix = out/matrix.json
        pythonpath = .
        """))
    pytester.path.joinpath("sample.py").write_text(CODE)
    pytester.mkdir("tests")
    sha = lines_hash(CODE.splitlines()[0:2])

    def write(registry: str, tests: str, *args: str):
        pytester.path.joinpath("findings.yaml").write_text(registry, encoding="utf-8")
        pytester.path.joinpath("tests", "test_evidence.py").write_text(textwrap.dedent(tests))
        return pytester.runpytest(*args)

    write.sha = sha
    write.pytester = pytester
    return write


TEST_C1_01 = """
    import pytest

    @pytest.mark.finding("C1-01", side="as_given")
    def test_divides_by_zero():
        from sample import f
        with pytest.raises(ZeroDivisionError):
            f(1)

    @pytest.mark.finding("C1-01", side="fixed")
    @pytest.mark.pending("fixed code not built yet")
    def test_fixed():
        raise AssertionError("never runs")
"""


def test_clean_registry_passes_and_matrix_is_written(project):
    result = project(_entry("C1-01", (1, 2), project.sha), TEST_C1_01)
    result.assert_outcomes(passed=5, skipped=1)
    matrix = json.loads(project.pytester.path.joinpath("out", "matrix.json").read_text())
    row = matrix["findings"]["C1-01"]
    assert (row["as_given"], row["fixed"]) == ({"2020": "not run", "today": "demonstrated"}, "pending")
    assert row["behaviour_differs"] is False
    assert matrix["complete_run"] is True
    assert matrix["stacks"]["2020"] == {"ran": False, "reason": "no 2020 environment configured"}


def test_finding_without_evidence_fails_the_run(project):
    registry = _entry("C1-01", (1, 2), project.sha) + _entry("C1-02", (1, 2), project.sha)
    result = project(registry, TEST_C1_01)
    result.assert_outcomes(passed=4, failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*every-finding-has-evidence*",
                                 "*C1-02 (Проверочная находка C1-02) has no evidence test*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_only_fixed_side_is_not_evidence(project):
    tests = TEST_C1_01.replace('side="as_given"', 'side="fixed"')
    result = project(_entry("C1-01", (1, 2), project.sha), tests)
    result.stdout.fnmatch_lines(["*C1-01 * has no evidence test on the as-given or patched code*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_unknown_id_fails_the_run(project):
    tests = TEST_C1_01 + """
    @pytest.mark.finding("C1-99", side="as_given")
    def test_other():
        pass
    """
    result = project(_entry("C1-01", (1, 2), project.sha), tests)
    result.stdout.fnmatch_lines(["*test_other names C1-99, which is not in the registry*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_marker_without_side_fails_the_run(project):
    tests = TEST_C1_01.replace('side="as_given"', "")
    result = project(_entry("C1-01", (1, 2), project.sha), tests)
    result.stdout.fnmatch_lines(["*test_divides_by_zero: use @pytest.mark.finding*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


@pytest.mark.parametrize("lines, sha, message", [
    ((1, 2), "000000000000", "*lines 1-2 of sample.py changed*"),
    ((5, 9), "000000000000", "*lines 5-9 are outside sample.py (1-6)*"),
    ((1, 2), "", "*location has no sha*"),
])
def test_stale_or_impossible_location_fails_the_run(project, lines, sha, message):
    result = project(_entry("C1-01", lines, sha), TEST_C1_01)
    result.stdout.fnmatch_lines(["*registry-is-valid*", message])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_partial_run_skips_the_coverage_check_but_not_the_id_check(project):
    registry = _entry("C1-01", (1, 2), project.sha) + _entry("C1-02", (1, 2), project.sha)
    project(registry, TEST_C1_01)
    result = project.pytester.runpytest("-k", "divides")
    result.assert_outcomes(passed=3)
    assert "every-finding-has-evidence" not in result.stdout.str()
    assert project.pytester.path.joinpath("out", "matrix-partial.json").is_file()


TESTS_BY_SIDE = """
    import pytest

    @pytest.mark.finding("C1-01", side="as_given")
    def test_a(): pass

    @pytest.mark.finding("C1-01", side="patched")
    def test_b(): pass

    @pytest.mark.finding("C1-01", side="fixed")
    def test_c(): pass

    @pytest.mark.finding("C1-02", side="as_given")
    def test_d(): pass
"""


def test_finding_option_selects_one_findings_tests_on_one_side(project):
    registry = _entry("C1-01", (1, 2), project.sha) + _entry("C1-02", (1, 2), project.sha)
    result = project(registry, TESTS_BY_SIDE, "--finding", "C1-01", "--side", "as_given", "-v")
    result.assert_outcomes(passed=2, deselected=2)  # as_given takes the patched marks too
    result.stdout.fnmatch_lines(["*test_a PASSED*", "*test_b PASSED*"])
    assert "registry::" not in result.stdout.str()  # the registry checks are not part of it
    project.pytester.runpytest("--finding", "C1-01", "--side", "fixed").assert_outcomes(passed=1, deselected=3)


def test_finding_option_refuses_an_empty_selection(project):
    registry = _entry("C1-01", (1, 2), project.sha) + _entry("C1-02", (1, 2), project.sha)
    result = project(registry, TESTS_BY_SIDE, "--finding", "C1-02", "--side", "fixed")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*no test is marked with finding C1-02 on side fixed*"])
    assert project.pytester.runpytest("--finding", "C1-02").ret == pytest.ExitCode.USAGE_ERROR  # needs --side


TEST_STACK_DEPENDENT = """
    import pytest

    @pytest.mark.finding("C1-01", side="as_given")
    def test_divides_by_zero(stack):
        assert stack == "today"

    @pytest.mark.finding("C1-01", side="fixed")
    def test_fixed():
        pass
"""


def test_stack_dependent_evidence_must_describe_both_stacks(project):
    result = project(_entry("C1-01", (1, 2), project.sha), TEST_STACK_DEPENDENT)
    result.stdout.fnmatch_lines(["*stack-differences-are-described*",
                                 "*C1-01: its as-given evidence depends on the stack; describe both*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result = project(_entry("C1-01", (1, 2), project.sha, stacks=True), TEST_C1_01)
    result.stdout.fnmatch_lines(["*C1-01: the registry describes two stacks, but no as-given test*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_defect_of_the_2020_stack_only_is_absent_today(project):
    tests = TEST_C1_01.replace('side="as_given")', 'side="as_given", stacks=("2020",))')
    result = project(_entry("C1-01", (1, 2), project.sha, stacks=True), tests)
    result.assert_outcomes(passed=5, skipped=1)
    row = json.loads(project.pytester.path.joinpath("out", "matrix.json").read_text())["findings"]["C1-01"]
    assert row["as_given"] == {"2020": "not run", "today": "absent"} and row["behaviour_differs"] is True
    result.stdout.fnmatch_lines(["*2020 stack NOT RUN (no 2020 environment configured): 1 findings "
                                 "checked on today's stack only: C1-01*"])


def test_stacks_mark_names_known_stacks_on_a_demonstrating_side(project):
    tests = TEST_C1_01.replace('side="as_given")', 'side="as_given", stacks=("2019",))')
    result = project(_entry("C1-01", (1, 2), project.sha), tests)
    result.stdout.fnmatch_lines(["*stacks= names the stacks an as-given defect is on*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED
