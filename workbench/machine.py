"""What machine and software a figure was measured on, so the review can state it beside the figure."""
from __future__ import annotations

import os
import platform
from importlib import metadata

import psutil

# Packages whose versions change what the evidence shows.
RELEVANT_PACKAGES = (
    "numpy", "pillow", "requests", "flask", "werkzeug", "peewee", "psycopg2-binary",
    "gunicorn", "pgserver", "locust", "pytest-benchmark",
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_versions() -> dict:
    """Installed versions of the packages that matter (the ones installed)."""
    versions = {}
    for name in RELEVANT_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def describe() -> dict:
    """A JSON-ready description of this machine and the versions that matter."""
    versions = package_versions()
    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages": versions,
    }


def summary(info: dict | None = None) -> str:
    """One line for a caption: CPU, cores, memory, Python and the key versions."""
    info = info or describe()
    pk = info["packages"]
    keys = [k for k in ("numpy", "pillow", "flask", "peewee", "gunicorn") if k in pk]
    libs = ", ".join(f"{k} {pk[k]}" for k in keys)
    return (f"{info['cpu']}, {info['logical_cores']} logical cores, {info['memory_gib']} GiB; "
            f"{info['os']}; Python {info['python']}; {libs}")
