"""The completeness map (review/coverage.yaml) covers both originals line by line, and its checks
catch what they promise: gaps, overlaps, stale hashes, unknown IDs, missing findings."""
from __future__ import annotations

import textwrap

import pytest

from workbench import coverage
from workbench.findings import Finding, lines_hash

SOURCE = "import os\n\n\ndef f(x):\n    return x / 0\n\n\nprint(f(1))\n"


def test_map_of_both_originals_is_complete_current_and_consistent():
    maps, errors = coverage.check()
    assert errors == []
    assert {m.file for m in maps} == {"reference/case1/as_given/process_images.py",
                                      "reference/case2/as_given/app.py"}


def test_counts_add_up_to_every_line():
    for name, t in coverage.counts().items():
        assert t["findings"] + t["nothing"] + t["blank"] == t["lines"], name
        assert t["findings"] > t["nothing"]


def test_table_has_a_row_per_range_and_links_every_finding():
    maps = coverage.load()
    table = coverage.coverage_table(link=lambda fid: f"<{fid}>")
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| строки")]
    assert len(rows) == sum(len(m.ranges) for m in maps)
    for fid in {i for m in maps for r in m.ranges for i in r.findings}:
        assert f"<{fid}>" in table
    one = coverage.coverage_table("reference/case2/as_given/app.py")
    assert "process_images.py" not in one and "[C2-01](#c2-01)" in one


@pytest.fixture
def project(tmp_path):
    """A source file, one finding located in it, and a function validating a map text."""
    (tmp_path / "src.py").write_text(SOURCE, encoding="utf-8")
    lines = SOURCE.splitlines()
    finding = Finding("C1-01", "t", "minor", "correctness", "src.py", (4, 5),
                      lines_hash(lines[3:5]), "p", "f", tmp_path / "r.yaml")

    def sha(a, b):
        return lines_hash(lines[a - 1:b])

    def problems(ranges: str) -> list[str]:
        path = tmp_path / "map.yaml"
        path.write_text("- file: src.py\n  ranges:\n" + textwrap.indent(textwrap.dedent(ranges), "    "),
                        encoding="utf-8")
        return coverage.validate(coverage.load(path), [finding], tmp_path)

    problems.sha = sha
    return problems


def _good(sha) -> str:
    return f"""\
        - lines: [1, 1]
          sha: "{sha(1, 1)}"
          nothing: "Импорт без замечаний."
        - lines: [4, 5]
          sha: "{sha(4, 5)}"
          findings: [C1-01]
        - lines: [8, 8]
          sha: "{sha(8, 8)}"
          nothing: "Вызов для примера."
        """


def test_a_complete_map_passes(project):
    assert project(_good(project.sha)) == []


@pytest.mark.parametrize("change, message", [
    (lambda m: m.replace("- lines: [8, 8]", "- lines: [7, 7]"), "src.py:8-8: no range covers these lines"),
    (lambda m: m.replace("[C1-01]", "[C1-01, C1-99]"), "C1-99 is not in the findings registry"),
    (lambda m: m.replace("findings: [C1-01]", 'nothing: "Ничего."'), "C1-01 (src.py:4-5) is not on the map"),
    (lambda m: m.replace("Вызов для примера.", "just a call"), "must be one line of Russian text"),
    (lambda m: m.replace('nothing: "Вызов для примера."', "findings: []"), "src.py:8-8: unmapped"),
    (lambda m: m.replace("- lines: [4, 5]", "- lines: [1, 5]"), "overlaps or precedes"),
    (lambda m: m.replace("- lines: [8, 8]", "- lines: [8, 9]"), "outside the file"),
])
def test_each_kind_of_problem_is_reported(project, change, message):
    found = project(change(_good(project.sha)))
    assert any(message in p for p in found), found


def test_a_changed_line_makes_the_map_stale(project, tmp_path):
    good = _good(project.sha)
    (tmp_path / "src.py").write_text(SOURCE.replace("x / 0", "x / 1"), encoding="utf-8")
    assert any("src.py:4-5: the lines changed" in p for p in project(good))


def test_rehash_pins_every_range(tmp_path):
    (tmp_path / "src.py").write_text(SOURCE, encoding="utf-8")
    path = tmp_path / "map.yaml"
    path.write_text('- file: src.py\n  ranges:\n    - lines: [1, 1]\n      sha: ""\n'
                    '      nothing: "Импорт."\n    - lines: [4, 8]\n      sha: "x"\n'
                    '      nothing: "Остальное."\n', encoding="utf-8")
    assert len(coverage.rehash(path, tmp_path)) == 2
    assert coverage.validate(coverage.load(path), [], tmp_path) == []
    assert coverage.rehash(path, tmp_path) == []
