"""Declared mutants: the runner's parts, the coverage of every finding, and a sample of the real
mutants, each of which must be caught (``workbench.mutation``). The plugin's ``--finding``
selection is tested with the other plugin tests, in ``test_registry.py``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from workbench import findings, mutation

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_SIZE = 2  # drawn at random (seeded by the commit), besides the always-sampled ones
# Two at a time: every as-given mutant gave the same outcome, failing on the same test, run two at
# a time as one at a time (both Case 1 and Case 2, on a loaded 2-core machine).
JOBS = 2


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def tree(tmp_path):
    """A small tree with one source file and a mutants folder."""
    _write(tmp_path, "pkg/code.py", "def f(x):\n    return x + 1\n")
    return tmp_path


def test_mutant_files_are_checked_entry_by_entry(tree):
    _write(tree, "mutants/a.yaml", """\
        - finding: C1-01
          side: as_given
          why: adds two
          edits:
            - file: pkg/code.py
              find: "x + 1"
              replace: "x + 2"
        - finding: C9-1
          side: sideways
          why: ""
          edits: []
        - finding: C1-02
          side: fixed
          why: edits outside the tree
          extra: 1
          edits:
            - file: ../escape.py
              find: a
              replace: a
        """)
    mutants, problems = mutation.load(tree / "mutants", tree)
    assert [(m.key, m.finding, m.side, m.files) for m in mutants] == [("a#1", "C1-01", "as_given", ["pkg/code.py"])]
    joined = "\n".join(problems)
    for expected in ("finding must be an ID", "side must be one of", "why must say", "edits must be a non-empty",
                     "unknown keys ['extra']", "file must be a path inside", "replace equals find"):
        assert expected in joined, problems


def test_an_edit_must_match_exactly_once(tree):
    edit = mutation.Edit("pkg/code.py", "x", "y")
    mutant = mutation.Mutant("C1-01", "as_given", "why", (edit,), "m.yaml", 1)
    with pytest.raises(ValueError, match="occurs 2 times"):
        mutation.apply_edits(mutant, tree)
    once = mutation.Mutant("C1-01", "as_given", "why", (mutation.Edit("pkg/code.py", "x + 1", "x - 1"),), "m.yaml", 1)
    mutation.apply_edits(once, tree)
    assert (tree / "pkg/code.py").read_text() == "def f(x):\n    return x - 1\n"


def _mutants(*pairs):
    return [mutation.Mutant(f, s, "why", (mutation.Edit(f"reference/{f}.py", "a", "b"),), "m.yaml", i)
            for i, (f, s) in enumerate(pairs, 1)]


def test_coverage_names_exactly_the_missing_sides():
    mutants = _mutants(("C1-01", "as_given"), ("C1-01", "fixed"), ("C1-02", "fixed"))
    assert mutation.coverage(mutants, ["C1-01", "C1-02", "C1-03"]) == [
        "C1-02 as_given", "C1-03 as_given", "C1-03 fixed"]
    assert mutation.unknown_findings(mutants, ["C1-01"]) == ["m#3: C1-02 is not in the registry"]


def test_sample_is_seeded_and_keeps_the_chosen_ones():
    pairs = [(f"C1-{n:02d}", side) for n in range(1, 31) for side in mutation.SIDES]
    mutants = _mutants(*pairs)
    first, again = mutation.sample(mutants, 5, "abc"), mutation.sample(mutants, 5, "abc")
    assert first == again and len(first) == 5 + len(mutation.ALWAYS_SAMPLED)
    assert set(mutation.ALWAYS_SAMPLED) <= {(m.finding, m.side) for m in first}
    assert mutation.sample(mutants, 5, "other") != first
    assert mutation.select(mutants, findings=["C1-02"], sides=["fixed"]) == [mutants[3]]
    assert [m.finding for m in mutation.select(mutants, files=["reference/C1-03.py"])] == ["C1-03", "C1-03"]


def test_processes_left_in_a_scratch_tree_are_killed(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=tmp_path,
                               start_new_session=True)  # as a server started by a killed test would be
    try:
        killed = mutation._kill_strays(tmp_path)
        assert sleeper.wait(timeout=10) != 0 and [int(k.split()[0]) for k in killed] == [sleeper.pid]
    finally:
        sleeper.kill()
        sleeper.wait(timeout=10)


def test_scratch_copy_is_checked_and_test_files_are_found_by_id(tmp_path):
    files = mutation.tree_files(ROOT)
    assert "workbench/mutation.py" in files and not any(f.startswith((".venv/", "build/")) for f in files)
    some = ["workbench/mutation.py", "tests/test_ci_leftovers.py", "tests/case1/test_c1_gil_and_timeouts.py"]
    mutation.copy_tree(ROOT, some, tmp_path)
    assert mutation.test_files_for(tmp_path, "C1-09") == ["tests/case1/test_c1_gil_and_timeouts.py"]


# --------------------------------------------------------------------------- one run's outcome


SAMPLE_TESTS = {
    "caught": "def test_it():\n    assert False\n",
    "survived": "def test_it():\n    assert True\n",
    "error": "def test_it(missing_fixture):\n    pass\n",  # no verdict: the setup failed
    "timeout": "import time\n\ndef test_it():\n    time.sleep(120)\n",
}


@pytest.mark.parametrize("expected", list(SAMPLE_TESTS))
def test_outcome_of_one_run(tmp_path, expected):
    code = "def f():\n    pass\n"
    _write(tmp_path, "pytest.ini", "[pytest]\nfindings_registry = findings.yaml\n")
    _write(tmp_path, "sample.py", code)
    _write(tmp_path, "findings.yaml", f"""\
        - id: C1-01
          title: Проверочная находка
          severity: minor
          category: correctness
          location: {{file: sample.py, lines: [1, 2], sha: "{findings.lines_hash(code.splitlines())}"}}
          problem: Ничего.
          fix: Ничего.
        """)
    body = SAMPLE_TESTS[expected].replace("def test_it", '@pytest.mark.finding("C1-01", side="as_given")\ndef test_it')
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_sample.py").write_text("import pytest\n\n" + body, encoding="utf-8")
    timeout = 8.0 if expected == "timeout" else 120.0  # generous for a loaded machine's start-up
    ctx = mutation.RunContext(tmp_path, [], "postgresql://unused", timeout=timeout, logs=None)
    result = mutation.run_pytest(tmp_path, "C1-01", "as_given", ctx, "sample")
    assert result.outcome == expected, result.detail
    assert not mutation._kill_strays(tmp_path)  # a killed run leaves nothing behind


# --------------------------------------------------------------------------- the real mutants


def _declared():
    mutants, problems = mutation.load()
    ids = [f.id for f in findings.load()[0]]
    return mutants, problems, ids


def test_mutant_files_are_well_formed_and_name_known_findings():
    mutants, problems, ids = _declared()
    assert problems + mutation.unknown_findings(mutants, ids) == []


def test_every_finding_has_a_mutant_on_each_side():
    mutants, _, ids = _declared()
    missing = mutation.coverage(mutants, ids)
    assert not missing, f"{len(missing)} finding sides have no declared mutant: {', '.join(missing)}"


@pytest.mark.timeout(900)
def test_a_sample_of_the_mutants_is_caught(database_url, tmp_path):
    """Each sampled mutant runs in its own scratch copy; survivors and errors fail the test."""
    report = tmp_path / "mutation.json"
    proc = subprocess.run(
        [sys.executable, "-m", "workbench.mutation", "--sample", str(SAMPLE_SIZE), "--jobs", str(JOBS),
         "--json", str(report), "--logs", str(tmp_path / "logs")],
        cwd=ROOT, env=dict(os.environ, DATABASE_URL=database_url), capture_output=True, text=True, timeout=900)
    assert report.is_file(), proc.stderr[-3000:]
    data = json.loads(report.read_text(encoding="utf-8"))
    outcomes = {m["mutant"]: (m["outcome"], m["detail"][:300]) for m in data["mutants"]}
    assert proc.returncode == 0 and data["score"]["all"]["caught"] == len(outcomes) > 0, \
        (outcomes, proc.stderr[-2000:])
