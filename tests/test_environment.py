"""environment.yml (conda) describes the same environment as pyproject.toml + requirements.lock."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _direct_dependencies() -> set[str]:
    import tomllib  # here, not at the top: the 2020 run collects this module on Python 3.8

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {_norm(re.split(r"[<>=!~\[ ;]", d)[0]) for d in deps}


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[_norm(name)] = version.strip()
    return pins


def _conda_pip_section() -> list[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    return next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)


def test_every_direct_dependency_is_locked():
    missing = sorted(_direct_dependencies() - set(_lock()))
    assert missing == [], f"not in requirements.lock (run `make lock`): {missing}"


def test_environment_yml_matches_pyproject_and_lock():
    wanted = _direct_dependencies()
    pip_section = _conda_pip_section()
    assert "-e ." in pip_section, "environment.yml must install the project itself"
    pinned = dict(entry.split("==", 1) for entry in pip_section if "==" in entry)
    assert set(map(_norm, pinned)) == wanted
    lock = _lock()
    stale = {n: (v, lock[_norm(n)]) for n, v in pinned.items() if lock[_norm(n)] != v}
    assert stale == {}, f"environment.yml pins differ from requirements.lock: {stale}"
