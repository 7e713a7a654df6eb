"""`make lab`: JupyterLab starts (as root too), serves the notebooks on 127.0.0.1, and stops with
everything it started, the embedded PostgreSQL included."""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from workbench import lab

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback only
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if text in cmdline:
            found.append(f"{proc.info['pid']}: {cmdline[:200]}")
    return found


@pytest.mark.parametrize("euid, wanted", [(0, True), (1000, False)], ids=["root", "user"])
def test_allow_root_only_for_root(monkeypatch, euid, wanted):
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    cmd = lab.lab_command(8888, [])
    assert ("--allow-root" in cmd) is wanted
    assert "--ServerApp.ip=127.0.0.1" in cmd


def test_lab_serves_notebooks_and_stops_everything(tmp_path):
    port, token = _free_port(), secrets.token_hex(16)
    # The embedded PostgreSQL's data directory lands under TMPDIR: a path only this run uses.
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(TMPDIR=str(tmp_path), JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"))
    log = (tmp_path / "lab.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "workbench.lab", "--port", str(port),
                             f"--IdentityProvider.token={token}"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status, body = _get(f"{base}/lab?token={token}")
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert status == 200, (proc.poll(), (tmp_path / "lab.log").read_text(errors="replace")[-3000:])
        assert b"JupyterLab" in body

        status, body = _get(f"{base}/api/contents/case1_memory.ipynb?token={token}")
        assert status == 200
        notebook = json.loads(body)
        assert notebook["type"] == "notebook" and notebook["content"]["cells"]
        assert _get(f"{base}/api/contents/case1_memory.ipynb")[0] == 403  # the token is required

        assert _processes_mentioning(str(tmp_path)), "the embedded PostgreSQL should be running"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        log.close()
    assert code == 0, (tmp_path / "lab.log").read_text(errors="replace")[-3000:]
    time.sleep(0.5)
    assert _processes_mentioning(str(tmp_path)) == []
    assert _processes_mentioning(f"--ServerApp.port={port}") == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert "XDG_RUNTIME_DIR is not set" not in (tmp_path / "lab.log").read_text(errors="replace")
