"""Every notebook runs top to bottom (quick mode), so none of them rots."""
from __future__ import annotations

import pytest

from workbench import notebooks

NOTEBOOKS = notebooks.discover()


@pytest.mark.skipif(not NOTEBOOKS, reason="no notebooks yet")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, database_url):
    nb = notebooks.execute(path, tmp_path / path.name, mode="quick",
                           env={"DATABASE_URL": database_url})
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert errors == []
