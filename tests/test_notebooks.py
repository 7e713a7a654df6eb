"""Every notebook runs top to bottom (quick mode), so none of them rots; the committed ones read
completely: they carry the outputs of the recorded run, small enough to keep in git."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from workbench import notebooks

NOTEBOOKS = notebooks.discover()
ROOT = Path(__file__).resolve().parent.parent
MAX_IMAGE_BYTES = 150_000  # one PNG output at the matplotlibrc resolution
MAX_NOTEBOOK_BYTES = 1_500_000


@pytest.mark.skipif(not NOTEBOOKS, reason="no notebooks yet")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, database_url):
    # Executed into build/ (never over the committed notebook); figures into a scratch folder, so
    # quick-mode numbers never reach build/results, where the main job promotes from.
    out = ROOT / "build" / "test-notebooks" / path.name
    nb = notebooks.execute(path, out, mode="quick",
                           env={"DATABASE_URL": database_url, "WORKBENCH_RESULTS_DIR": str(tmp_path)})
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert errors == []
    assert list(tmp_path.glob("*.json")), f"{path.name} recorded no figures"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_carries_its_outputs(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, f"{path.name} has no code cells"
    not_run = [i for i, c in enumerate(code) if c.get("execution_count") is None]
    assert not_run == [], f"{path.name}: code cells {not_run} were committed without running (make review)"
    outputs = [o for c in code for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"], f"{path.name} committed with an error"
    images = [base64.b64decode(o["data"]["image/png"]) for o in outputs if "image/png" in o.get("data", {})]
    big = [len(img) for img in images if len(img) > MAX_IMAGE_BYTES]
    assert big == [], f"{path.name}: PNG outputs too large {big} (see notebooks/matplotlibrc)"
    assert path.stat().st_size < MAX_NOTEBOOK_BYTES, f"{path.name} is {path.stat().st_size} bytes"


def test_write_committed_keeps_outputs_and_drops_timing(tmp_path):
    """The main job's promote step: the executed notebook over the committed one, minus timings."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("1 + 1", execution_count=1,
                                     outputs=[nbformat.v4.new_output("execute_result", {"text/plain": "2"},
                                                                     execution_count=1)])
    cell.metadata["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00Z"}
    nb.cells.append(cell)
    executed, target = tmp_path / "run.ipynb", tmp_path / "committed.ipynb"
    nbformat.write(nb, executed)
    notebooks.write_committed(executed, target)
    back = nbformat.read(target, as_version=4).cells[0]
    assert back.outputs[0]["data"]["text/plain"] == "2" and "execution" not in back.metadata
