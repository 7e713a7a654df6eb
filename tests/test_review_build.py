"""The review renders from the real registry: every finding gets its card with its code excerpt."""
from __future__ import annotations

import json
import shutil

from workbench import findings, site


def test_site_renders_every_finding_with_its_excerpt(tmp_path):
    build = tmp_path / "build"
    (build / "evidence").mkdir(parents=True)
    found, errors = findings.check()
    assert errors == []
    # A matrix as a test run would leave it: the first finding demonstrated, fixed pending.
    first = found[0]
    matrix = {"generated_at": "now", "complete_run": True, "findings": {first.id: {
        "title": first.title, "severity": first.severity, "category": first.category,
        "as_given": "demonstrated", "fixed": "pending",
        "tests": {"as_given": [{"test": "tests/x.py::test_x", "outcome": "passed"}],
                  "patched": [], "fixed": []}}}}
    (build / "evidence" / "matrix.json").write_text(json.dumps(matrix), encoding="utf-8")

    index = site.build(build) / "index.html"

    assert index.is_file()
    for case in (1, 2):
        html = (build / "site" / f"case{case}.html").read_text(encoding="utf-8")
        for f in (f for f in found if f.case == case):
            assert f'id="{f.id.lower()}"' in html, f"no card for {f.id}"
            first_code_line = next(line.strip() for line in f.excerpt() if line.strip())
            words = [w for w in first_code_line.replace("(", " ").split() if w.isidentifier()]
            assert all(w in html for w in words[:3]), f"excerpt of {f.id} missing"
    case_html = (build / "site" / f"case{first.case}.html").read_text(encoding="utf-8")
    assert "tests/x.py::test_x" in case_html
    shutil.rmtree(build)
