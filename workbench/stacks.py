"""The two stacks the evidence runs on: the task's own ("2020") and today's.

The task says "assume Python 3.8.5". Its stack is CPython 3.8 with the library versions current
in mid-2020 (NumPy 1.19, Pillow 7.2, Flask 1.1.2 with Werkzeug 1.0.1, peewee 3.13.3, requests
2.24, ... exactly as ``requirements-2020.lock`` pins them), installed in ``.venv2020`` by
``make test`` when a Python 3.8 is found. Today's stack is the main environment (``.venv``,
``requirements.lock``).

Every as-given and patched evidence test runs on both: the pytest plugin of today's run starts
pytest itself under the 2020 interpreter (``Stack2020Run``), on the same embedded PostgreSQL
server (``DATABASE_URL``), and merges the two per-stack results into one evidence matrix. A test is
written once; where a library behaves differently, it asserts the behaviour of the stack it runs
on (the ``stack`` fixture) and its finding describes both (``stacks:`` in the registry).

    python -m workbench.stacks find-python   # print a Python 3.8 interpreter, exit 1 if none
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STACKS = ("2020", "today")
TASK_STACK = "2020"  # the stack the task names; it sets a finding's severity
STACK_TITLES = {"2020": "the task's stack (CPython 3.8, mid-2020 libraries)",
                "today": "today's stack (CPython 3.11, current libraries)"}
VENV2020 = ROOT / ".venv2020"
LOCK2020 = ROOT / "requirements-2020.lock"
# Plugins the 2020 run loads explicitly: it does not install the project (which needs 3.11), so
# no entry point announces the workbench plugin there, and autoloading stays off to keep the set
# of plugins exactly this one.
CHILD_PLUGINS = ("workbench.pytest_plugin", "pytest_timeout", "pytest_benchmark.plugin")
CHILD_TIMEOUT = 1200  # seconds; the whole 2020 run, a safety net well above its usual length


def current() -> str:
    """The stack this interpreter is: "2020" on CPython 3.8, "today" otherwise."""
    return "2020" if sys.version_info[:2] <= (3, 8) else "today"


def today_only() -> None:
    """Skip the calling test module on the 2020 stack.

    Call it at the top of a module whose tests only concern the redesigned programs
    (``reference/*/fixed`` needs Python 3.11), before importing them: the 2020 run collects every
    module, so the module must not fail to import there.
    """
    if current() != "today":
        import pytest

        pytest.skip("the redesigned code runs on today's stack only", allow_module_level=True)


def environment() -> dict:
    """Python and the versions of the packages under study, as the matrix shows them per stack."""
    from .machine import package_versions

    return {"python": platform.python_version(), "packages": package_versions()}


# --------------------------------------------------------------------------- finding Python 3.8


def _runs_as_38(executable: str) -> bool:
    try:
        proc = subprocess.run([executable, "-c", "import sys; sys.exit(sys.version_info[:2] != (3, 8))"],
                              capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def find_python38() -> str | None:
    """A working CPython 3.8: ``python3.8`` on PATH (a pyenv shim counts only if it runs),
    pyenv's installed versions, then uv's managed Pythons."""
    candidates = [shutil.which("python3.8")]
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates += sorted(glob.glob(os.path.join(pyenv_root, "versions", "3.8*", "bin", "python3.8")),
                         reverse=True)
    uv = shutil.which("uv")
    if uv:
        try:
            found = subprocess.run([uv, "python", "find", "3.8"], capture_output=True, text=True,
                                   timeout=30)
            candidates.append(found.stdout.strip() if found.returncode == 0 else None)
        except (OSError, subprocess.TimeoutExpired):
            pass
    return next((c for c in candidates if c and _runs_as_38(c)), None)


def python2020(venv: Path = VENV2020) -> tuple[str | None, str]:
    """(interpreter of the 2020 environment, or None; why it is missing)."""
    python = venv / "bin" / "python"
    if not python.exists():
        return None, (f"no 2020 environment at {venv.name}/ (`make test` builds it when it finds "
                      "Python 3.8; see README, 'The task's 2020 stack')")
    if not (venv / ".installed").exists():
        return None, f"{venv.name}/ is incomplete (its install did not finish): run `make stack2020`"
    if not _runs_as_38(str(python)):
        return None, f"{python} does not run as Python 3.8 (its base interpreter is gone?)"
    return str(python), ""


# --------------------------------------------------------------------------- the 2020 run


class Stack2020Run:
    """pytest under the 2020 interpreter, in the background of today's run.

    ``start()`` returns at once; a watcher thread takes a PostgreSQL server (``database_url``, or
    a throwaway embedded one started here, since pgserver has no build for 3.8), launches the run
    in its own process group with the given pytest arguments and a results folder of its own,
    waits for it and stops the server. ``wait()`` returns its report: the stack report it wrote
    (``report_path``) plus how the process ended. ``stop()`` kills the whole group at any time.
    """

    def __init__(self, python: str, args: list[str], report_path: Path, log_path: Path,
                 results_dir: Path, database_url: str | None = None, timeout: float = CHILD_TIMEOUT):
        self.python = python
        self.args = args
        self.database_url = database_url
        self.report_path = Path(report_path)
        self.log_path = Path(log_path)
        self.results_dir = Path(results_dir)
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None
        self.error = ""
        self.started = self.ended = 0.0
        self._lock = threading.Lock()
        self._stopping = False
        self._done = threading.Event()

    @property
    def command(self) -> list[str]:
        plugins = [a for p in CHILD_PLUGINS for a in ("-p", p)]
        return [self.python, "-m", "pytest", *plugins, "--evidence-stack-report",
                str(self.report_path), *self.args]

    def start(self) -> "Stack2020Run":
        for path in (self.report_path, self.log_path):
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                path.unlink()
        self.started = time.monotonic()
        threading.Thread(target=self._watch, name="stack2020-run", daemon=True).start()
        return self

    def _watch(self) -> None:
        from . import pg

        try:
            with open(self.log_path, "wb") as log:
                if self.database_url:
                    self._run(self.database_url, log)
                else:
                    with pg.embedded_server() as url:
                        self._run(url, log)
        except Exception as exc:  # noqa: BLE001 - reported by wait()
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.ended = time.monotonic()
            self._done.set()

    def _run(self, database_url: str, log) -> None:
        env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", DATABASE_URL=database_url,
                   WORKBENCH_RESULTS_DIR=str(self.results_dir),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        env.pop("PYTEST_ADDOPTS", None)  # options meant for today's pytest may not exist in 8.3
        with self._lock:
            if self._stopping:
                return
            self.proc = subprocess.Popen(self.command, cwd=str(ROOT), env=env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        try:
            self.returncode = self.proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            self.returncode = self.proc.wait()
            self.error = f"killed: the 2020 run took longer than {self.timeout:.0f} s"

    def stop(self) -> None:
        """Kill the run's process group (its servers included) if it still runs."""
        with self._lock:
            self._stopping = True
            proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=10)
                return
            except subprocess.TimeoutExpired:
                continue

    def close(self, timeout: float = 60) -> None:
        """Stop the run and wait until its PostgreSQL server (if it started one) is stopped too."""
        self.stop()
        self._done.wait(timeout)

    def wait(self) -> dict:
        """Block until the run ends; its report (the stack report plus how the process ended)."""
        self._done.wait()
        report = {}
        if self.report_path.is_file():
            report = json.loads(self.report_path.read_text(encoding="utf-8"))
        log = self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""
        lines = [line.strip("= ") for line in log.splitlines() if line.strip()]
        report["process"] = {"returncode": self.returncode, "seconds": round(self.ended - self.started, 1),
                             "summary": self.error or (lines[-1] if lines else "no output"),
                             "log": str(self.log_path), "command": " ".join(self.command)}
        return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.stacks", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("find-python",))
    parser.parse_args(argv)
    found = find_python38()
    if not found:
        print("no Python 3.8 found (python3.8 on PATH, pyenv, uv)", file=sys.stderr)
        return 1
    print(found)
    return 0


if __name__ == "__main__":
    sys.exit(main())
