"""The nemesis: a service run under the workbench's runner, and the faults done to it.

``ServedService`` starts an app module with ``workbench.service_runner`` (gunicorn gthread or
Flask's threaded server) on 127.0.0.1, on a fresh database (of the embedded PostgreSQL it
starts itself, or of ``--database-url``), in a scratch work directory, and stops all of it on
exit. Faults:

* ``kill-worker`` — SIGKILL of the gunicorn worker (the master starts a new one), or of the
  whole server under Flask's server, which is then started again on the same port, as a
  supervisor would;
* ``pg-restart`` — ``pg_ctl restart -m fast`` of the embedded PostgreSQL (only a server the
  checker started itself: it never restarts a server it was only given the address of);
* ``disk-full`` — the image folder is a small tmpfs mounted for the run; a filler file takes
  every free byte, and is removed to heal. Mounting needs root; without it the fault is reported
  unavailable, not silently skipped.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional
from unittest import mock

FAULTS = ("kill-worker", "pg-restart", "disk-full")
STORAGE_MIB = 8  # size of the tmpfs that the disk-full fault fills
FILLER = ".taskcheck-filler"
SCHEMA_TIMEOUT_S = 60


class FaultUnavailable(Exception):
    """The fault cannot be done here (reason in the message)."""


def _children(pid: int) -> List[int]:
    """Direct children of ``pid`` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def _wait_http(base_url: str, timeout: float) -> float:
    """Seconds until the service answers anything over HTTP (any status)."""
    import requests

    start = time.monotonic()
    while time.monotonic() - start < timeout:
        with contextlib.suppress(requests.RequestException):
            requests.get(base_url + "/", timeout=1.0)
            return time.monotonic() - start
        time.sleep(0.05)
    raise TimeoutError(f"{base_url} did not answer within {timeout}s")


class ServedService:
    """An app module served by the workbench's runner, with the faults above."""

    def __init__(self, app: str, server: str = "gunicorn", threads: int = 4,
                 database_url: Optional[str] = None, faults: tuple = (), log_dir: Optional[Path] = None):
        self.app, self.server, self.threads = app, server, threads
        self.given_database_url = database_url
        self.faults = tuple(faults)
        self.log_dir = log_dir
        self.unavailable: Dict[str, str] = {}
        self._stack = contextlib.ExitStack()
        self._pg_restarted = False

    # ------------------------------------------------------------------ start and stop

    def __enter__(self) -> "ServedService":
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def _start(self) -> None:
        from workbench import pg
        from workbench import service_runner as runner

        if self.given_database_url:
            self.admin_url, self.owns_pg = self.given_database_url, False
        else:
            self.admin_url = self._stack.enter_context(pg.embedded_server())
            self.owns_pg = True
            self._stack.callback(self._stop_restarted_pg)
        dbname = "tc_" + uuid.uuid4().hex[:12]
        self.database_url = pg.create_database(self.admin_url, dbname)
        self._stack.callback(pg.drop_database, self.admin_url, dbname)
        scratch = Path(tempfile.mkdtemp(prefix="taskcheck-serve-"))
        self._stack.callback(shutil.rmtree, scratch, True)
        self.workdir = runner.prepare_workdir(scratch / "work")
        self.image_dir = self.workdir / "storage" / "task_images"
        if "disk-full" in self.faults:
            self._mount_tmpfs()
        if "pg-restart" in self.faults and not self.owns_pg:
            self.unavailable["pg-restart"] = ("only a PostgreSQL the checker started itself is restarted; "
                                              "run without --database-url")
        self.env = {"IMAGE_STORAGE_DIR": str(self.image_dir), "DATABASE_URL": self.database_url}
        self._deploy(scratch)
        self.log_path = (self.log_dir or scratch) / f"service-{self.server}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._serve(runner, port=None)
        self._stack.callback(lambda: self.srv.stop())

    def _serve(self, runner, port: Optional[int]) -> None:
        self.srv = runner.SubprocessServer(self.server, self.database_url, self.workdir, app=self.app,
                                           threads=self.threads, port=port, log_path=self.log_path)
        with mock.patch.dict(os.environ, self.env):  # the runner passes its environment on
            self.srv.start()
        self.base_url = self.srv.base_url

    def _deploy(self, scratch: Path) -> None:
        """The schema step the service documents (``flask init-db``), when it has one."""
        env = dict(os.environ, **self.env)
        proc = subprocess.run([sys.executable, "-m", "flask", "--app", self.app, "init-db"],
                              cwd=str(Path(__file__).resolve().parent.parent), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=SCHEMA_TIMEOUT_S)
        text = proc.stdout.decode("utf-8", "replace")
        if proc.returncode != 0 and "No such command" not in text:
            raise RuntimeError(f"schema step of {self.app} failed:\n{text[-2000:]}")

    def _mount_tmpfs(self) -> None:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={STORAGE_MIB}m,mode=0777", "tmpfs",
                               str(self.image_dir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=30)
        if proc.returncode != 0:
            self.unavailable["disk-full"] = ("mounting a small tmpfs for the image folder failed "
                                             f"(needs root): {proc.stdout.decode('utf-8', 'replace').strip()}")
            return
        self._stack.callback(subprocess.run, ["umount", "-l", str(self.image_dir)], timeout=30)

    # ------------------------------------------------------------------ the faults

    def kill_worker(self) -> str:
        if self.server == "gunicorn":
            workers = _children(self.srv.proc.pid)
            if not workers:
                raise FaultUnavailable("no gunicorn worker process found")
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
            return f"SIGKILL to gunicorn worker(s) {workers}; the master starts a new one"
        from workbench import service_runner as runner

        old = self.srv
        port = old.port
        with contextlib.suppress(ProcessLookupError):
            os.killpg(old.proc.pid, signal.SIGKILL)
        old.proc.wait(timeout=10)
        old.stop()
        self._serve(runner, port=port)  # a supervisor starting it again
        return f"SIGKILL to the server process {old.proc.pid}; started again on port {port}"

    def wait_ready(self, timeout: float = 30.0) -> float:
        return _wait_http(self.base_url, timeout)

    def _pg_datadir(self) -> Path:
        import psycopg2

        conn = psycopg2.connect(self.admin_url, connect_timeout=10)
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW data_directory")
                return Path(cur.fetchone()[0])
        finally:
            conn.close()

    def _pg_ctl(self, *args: str) -> None:
        datadir = self._datadir
        pg_ctl = shutil.which("pg_ctl")
        with contextlib.suppress(ImportError):
            from pgserver._commands import POSTGRES_BIN_PATH

            pg_ctl = str(POSTGRES_BIN_PATH / "pg_ctl")
        if not pg_ctl:
            raise FaultUnavailable("pg_ctl not found")
        st = datadir.stat()
        as_owner = None
        if os.geteuid() == 0 and st.st_uid != 0:  # PostgreSQL refuses to run as root
            def as_owner():
                os.setgid(st.st_gid)
                os.setuid(st.st_uid)
        subprocess.run([pg_ctl, "-D", str(datadir), *args], check=True, timeout=90,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=as_owner)

    def restart_pg(self) -> str:
        if "pg-restart" in self.unavailable:
            raise FaultUnavailable(self.unavailable["pg-restart"])
        self._datadir = self._pg_datadir()
        self._pg_restarted = True
        self._pg_ctl("-m", "fast", "-w", "-t", "60", "restart")
        return f"pg_ctl restart -m fast of {self._datadir}"

    def _stop_restarted_pg(self) -> None:
        # The embedded server's own cleanup stops the postmaster it started; after a restart
        # that process is gone and the new one is ours to stop.
        if self._pg_restarted:
            with contextlib.suppress(Exception):
                self._pg_ctl("-m", "fast", "-w", "-t", "30", "stop")

    def fill_disk(self) -> str:
        if "disk-full" in self.unavailable:
            raise FaultUnavailable(self.unavailable["disk-full"])
        path, written = self.image_dir / FILLER, 0
        chunk = b"\0" * (1 << 16)
        with open(path, "wb", buffering=0) as f:
            while True:
                try:
                    written += f.write(chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
        return f"{written} bytes of filler written until ENOSPC in {self.image_dir}"

    def free_disk(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.image_dir / FILLER)
