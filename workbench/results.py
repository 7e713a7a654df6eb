"""Measured figures that the review cites, one JSON file per topic under build/results/.

The code that measures a figure records it here, with the machine it ran on; review templates
read the files back as ``results["<name>"]``. Nothing is written by hand.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from . import machine

ROOT = Path(__file__).resolve().parent.parent


def results_dir() -> Path:
    return Path(os.environ.get("WORKBENCH_RESULTS_DIR", ROOT / "build" / "results"))


def record(name: str, data: dict) -> Path:
    """Write ``data`` as results/<name>.json with the machine description and a timestamp."""
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"result name must be alphanumeric with - or _: {name!r}")
    path = results_dir() / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"name": name, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "machine": machine.describe(), "data": data}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    tmp.replace(path)
    return path


def load_all(folder: Path | None = None) -> dict:
    """Every recorded result, by name (from ``folder``, default the results dir)."""
    out = {}
    d = folder or results_dir()
    if d.is_dir():
        for p in sorted(d.glob("*.json")):
            out[p.stem] = json.loads(p.read_text(encoding="utf-8"))
    return out
