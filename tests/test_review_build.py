"""The committed review: its markers match their sources, and the renderer fails loudly."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from workbench import review

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(os.environ.get("WORKBENCH_MAIN_JOB") == "1",
                    reason="inside the main job, which promotes new figures and then re-renders the review")
def test_committed_review_is_up_to_date_with_its_data():
    stale = review.render(check=True)
    assert stale == [], ("committed text or plots differ from review/data and the registry; run "
                         f"`python -m workbench.review render`: {stale}")


def test_committed_pages_have_no_template_syntax_or_placeholders():
    for page in review.pages():
        text = page.read_text(encoding="utf-8")
        for bad in ("{%", "{{", "нет данных (тесты не запускались)", "ещё не выполнен", "ещё не построен"):
            assert bad not in text, f"{page.name} contains {bad!r}"


@pytest.fixture
def scratch(tmp_path):
    """A copy of review/ and review/data to break on purpose."""
    pages = tmp_path / "review"
    shutil.copytree(review.REVIEW, pages, ignore=shutil.ignore_patterns("img", "data"))
    shutil.copytree(review.DATA, tmp_path / "data")
    return pages, tmp_path / "data"


def _render(pages: Path, data: Path):
    return review.render(review=pages, data=data, plots=False)


def test_a_changed_figure_makes_the_page_stale(scratch):
    pages, data = scratch
    assert review.render(review=pages, data=data, check=True, plots=False) == []
    path = data / "case1_memory.json"
    payload = json.loads(path.read_text(encoding="utf-8"))
    payload["data"]["magic_loop_s_512x384"] *= 2
    path.write_text(json.dumps(payload), encoding="utf-8")
    assert review.render(review=pages, data=data, check=True, plots=False) != []
    assert any(p.endswith("case1_volume.md") for p in _render(pages, data))
    assert review.render(review=pages, data=data, check=True, plots=False) == []


@pytest.mark.parametrize("marker, message", [
    ("x <!-- v case1_memory.data.no_such_key :.1f -->1<!-- /v -->", "no recorded value"),
    ("x <!-- v no_such_result.data :.1f -->1<!-- /v -->", "no recorded value"),
    ("x <!-- v case1_memory.data.magic_loop_s_512x384 -->1<!-- /v -->", "needs a format spec"),
    ("<!-- v case1_memory.data.mode -->full<!-- /v --> at the start of a line", "must not start a line"),
    ("<!-- block no_such_block -->\n<!-- /block -->", "unknown block"),
    ("<!-- block cards case=1 -->\nnever closed", "unbalanced"),
])
def test_renderer_fails_loudly(scratch, marker, message):
    pages, data = scratch
    (pages / "broken.md").write_text(f"# Broken\n\n{marker}\n", encoding="utf-8")
    with pytest.raises(review.RenderError, match=message):
        _render(pages, data)


def test_numbers_are_written_the_russian_way():
    assert review.format_number(1234.5, ",.1f") == "1\u00a0234,5"
    assert review.format_number(-0.25, ".2f") == "−0,25"
    assert review.format_number(7) == "7"
    assert review.format_number(0.512, ".0%") == "51\u00a0%"
    assert review.format_number("4000x3000") == "4000x3000"  # labels the data carries
    with pytest.raises(review.RenderError):
        review.format_number(0.1)


def test_promote_refuses_a_partial_run_and_keeps_older_results_out(tmp_path):
    build, data = tmp_path / "build", tmp_path / "data"
    (build / "evidence").mkdir(parents=True)
    (build / "results").mkdir()
    matrix = {"generated_at": "2026-01-01T00:00:00Z", "complete_run": False, "findings": {}}
    (build / "evidence" / "matrix.json").write_text(json.dumps(matrix))
    with pytest.raises(review.RenderError, match="partial"):
        review.promote(build, data)
    matrix["complete_run"] = True
    (build / "evidence" / "matrix.json").write_text(json.dumps(matrix))
    (build / "results" / "stack2020").mkdir()
    for name, stamp in (("old", "2020-01-01T00:00:00Z"), ("new", "2030-01-01T00:00:00Z")):
        for folder in (build / "results", build / "results" / "stack2020"):
            (folder / f"{name}.json").write_text(json.dumps(
                {"name": name, "recorded_at": stamp, "machine": {}, "data": {"x": 1}}))
    with pytest.raises(review.RenderError, match="earlier run"):
        review.promote(build, data, since=review._epoch("2026-06-01T00:00:00Z"))
    matrix["generated_at"] = "2026-07-01T00:00:00Z"
    (build / "evidence" / "matrix.json").write_text(json.dumps(matrix))
    review.promote(build, data, since=review._epoch("2026-06-01T00:00:00Z"))
    # The 2020 stack's results keep their names with a suffix: today's are never overwritten.
    assert sorted(p.name for p in data.iterdir()) == ["evidence.json", "new.json", "new_2020.json"]


def test_every_result_the_review_reads_is_recorded_by_the_main_job():
    from workbench import build

    produced = {name for names in build.RECORDS.values() for name in names}
    read = review.used_names()
    assert "evidence" in read and "mutation" in read
    assert set(read) <= produced, f"the review reads results no step of the main job records: {sorted(set(read) - produced)}"


def test_cards_read_the_per_stack_evidence_shape_and_the_old_one():
    from workbench import findings, review_context

    found, _ = findings.check()
    f = found[0]
    per_stack = {"as_given": {"2020": "demonstrated", "today": "demonstrated"}, "fixed": "passes",
                 "behaviour_differs": True,
                 "tests": {"as_given": {"2020": [{"test": "t::a", "outcome": "passed"}],
                                        "today": [{"test": "t::b", "outcome": "passed"}]},
                           "fixed": [{"test": "t::c", "outcome": "passed"}]}}
    old = {"as_given": "demonstrated", "fixed": "pending",
           "tests": {"as_given": [{"test": "t::a", "outcome": "passed"}], "patched": [], "fixed": []}}
    for row, expect in ((per_stack, "стек задачи"), (old, "ожидается")):
        ctx = review_context.Context(data={"evidence": {"data": {"findings": {f.id: row}}}},
                                     findings=found, page_list=[], review=review.REVIEW)
        text = review_context._evidence_text(ctx, f)
        assert expect in text and "t::a" in text
    ctx = review_context.Context(data={}, findings=found, page_list=[], review=review.REVIEW)
    with pytest.raises(review_context.Missing):
        review_context._evidence_text(ctx, f)


def test_anchors_are_unique_across_pages_and_every_link_to_one_resolves():
    """The single-file export joins every page, so an anchor must be unique across all of them;
    a link to ``page.md#anchor`` must find that anchor (explicit, or a finding card) on that page."""
    import re

    anchors: dict = {}
    for page in review.pages():
        text = page.read_text(encoding="utf-8")
        for anchor in re.findall(r'<a id="([^"]+)"></a>', text):
            assert anchor not in anchors, f"#{anchor} is on both {anchors[anchor]} and {page.name}"
            anchors[anchor] = page.name
    broken = []
    for page in review.pages():
        for target, anchor in re.findall(r"\]\(([\w.]+\.md)?#([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if anchors.get(anchor) != (target or page.name):
                broken.append(f"{page.name}: {target}#{anchor}")
    assert broken == [], broken
