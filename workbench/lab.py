"""JupyterLab on ``notebooks/`` with an embedded PostgreSQL for the session (``make lab``).

    python -m workbench.lab [--port 8888] [JUPYTER OPTIONS...]

The server listens on 127.0.0.1 only and opens no browser (print the URL it logs, with its token).
It runs as root too, as it does in containers: ``--allow-root`` is passed when the effective user
is root, since Jupyter otherwise refuses to start. The notebooks find the database through
``DATABASE_URL`` (an embedded throwaway server unless ``DATABASE_URL`` is already set).

Ctrl-C or SIGTERM stops JupyterLab cleanly (SIGTERM, then SIGKILL after a grace period, to its
whole process group: kernels included) and then the PostgreSQL server, so nothing outlives it.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from . import pg

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
HOST = "127.0.0.1"
STOP_GRACE_S = 20.0


def lab_command(port: int, extra: list[str]) -> list[str]:
    """The ``jupyter lab`` command line for this session."""
    jupyter = Path(sys.executable).with_name("jupyter")
    cmd = [str(jupyter) if jupyter.exists() else "jupyter", "lab", f"--notebook-dir={NOTEBOOKS}",
           f"--ServerApp.ip={HOST}", f"--ServerApp.port={port}", "--ServerApp.open_browser=False"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    return cmd + extra


def _stop(proc: subprocess.Popen) -> int:
    """SIGTERM the server's process group, wait, then SIGKILL what is left; return its code."""
    for sig, wait_s in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            return proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.lab", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8888, help="port on 127.0.0.1 (default 8888)")
    ns, extra = parser.parse_known_args(argv)
    stopping = []

    def request_stop(signum, frame):
        stopping.append(signum)

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pg.database_url() as url:
            # Its own session: Ctrl-C reaches only this wrapper, which stops the server cleanly
            # (Jupyter would otherwise stop at its interactive "Shutdown this server?" prompt).
            proc = subprocess.Popen(lab_command(ns.port, extra), start_new_session=True,
                                    env=dict(os.environ, **{pg.ENV_VAR: url}))
            while proc.poll() is None and not stopping:
                try:
                    proc.wait(0.5)
                except subprocess.TimeoutExpired:
                    pass
            code = _stop(proc) if proc.poll() is None else proc.returncode
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if stopping else code


if __name__ == "__main__":
    sys.exit(main())
