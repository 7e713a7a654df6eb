"""Execute the workbench notebooks headlessly (nbclient), for the tests and for the review build.

Notebooks read ``WORKBENCH_MODE`` (``quick`` in the tests, ``full`` in the main job) to size their
measurements, and ``DATABASE_URL`` when they need PostgreSQL. The main job commits them with the
outputs of its run, so no per-cell timing metadata is kept (it would change every run); figure
resolution comes from notebooks/matplotlibrc.
"""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def discover() -> list[Path]:
    return sorted(p for p in NOTEBOOKS.glob("*.ipynb") if not p.name.startswith("_"))


def execute(path: Path, out: Path | None = None, mode: str = "quick",
            timeout: int = 600, env: dict | None = None) -> "nbformat.NotebookNode":
    """Run every cell of ``path`` in a fresh kernel with cwd = notebooks/; optionally save it."""
    # Imported here: the Jupyter tooling is today's stack only, and workbench must import on 3.8.
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    saved = {k: os.environ.get(k) for k in ("WORKBENCH_MODE", *(env or {}))}
    os.environ["WORKBENCH_MODE"] = mode
    os.environ.update(env or {})
    try:  # the kernel inherits this process's environment
        NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out)
    return nb


def write_committed(executed: Path, target: Path) -> None:
    """Copy an executed notebook over the committed one, without per-cell timing metadata."""
    import nbformat  # today's stack only, as in execute()

    nb = nbformat.read(executed, as_version=4)
    for cell in nb.cells:
        cell.get("metadata", {}).pop("execution", None)
    nbformat.write(nb, target)
