"""Serve a Case 2 Flask service against a chosen database, without editing the service.

The service modules (``reference.case2.as_given.app`` and the fixed one) configure their
database at import time. The runner changes into the work directory first (the as-given service
resolves ``storage/task_images`` against the CWD when it writes; the fixed one makes its
``IMAGE_STORAGE_DIR`` absolute when it is imported, so a relative or default directory must be
resolved there too), then imports the module, re-initialises its peewee ``db`` from a URL with
``db.init(...)`` and serves on 127.0.0.1. A service that ships a ``gunicorn_conf.py`` beside its
module (worker class, request limits, start-up hooks) is served with those settings.

Servers, as the original would be deployed:

* ``gunicorn`` - one worker, ``--worker-class gthread --threads N`` (a fixed thread pool);
* ``flask-dev`` - Flask's threaded development server (a new thread per request).

In-process variants for tests that inject interleavings (``InProcessServer``):

* ``pool`` - a werkzeug server whose requests run on a fixed pool of N threads, like gthread;
* ``per-request`` - werkzeug's ``threaded=True`` server, like flask-dev.

CLI::

    python -m workbench.service_runner --server gunicorn|flask-dev --database-url URL \
        --port N --workdir DIR [--app reference.case2.as_given.app] [--threads 4]
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import itertools
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

DEFAULT_APP = "reference.case2.as_given.app"
HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent

_fresh_counter = itertools.count()


def db_params(url: str) -> tuple[str, dict]:
    """(database name, connect parameters) for peewee's ``Database.init`` from a URL."""
    from playhouse.db_url import parse

    params = parse(url)
    name = params.pop("database")
    # The service was constructed with password="postgres" and host="postgres"; make every
    # key explicit so nothing of the hard-coded configuration survives the re-initialisation.
    params.setdefault("password", None)
    params.setdefault("host", None)
    params.setdefault("port", None)
    return name, {k: v for k, v in params.items()}


def load_app_module(import_path: str = DEFAULT_APP, fresh: bool = False) -> ModuleType:
    """Import the service module; ``fresh`` gives a new copy (new app, db, first-request state),
    as a new process would have."""
    if not fresh:
        return importlib.import_module(import_path)
    package, _, leaf = import_path.rpartition(".")
    spec = importlib.util.find_spec(import_path)
    name = f"{package}._fresh_{leaf}_{next(_fresh_counter)}"
    fresh_spec = importlib.util.spec_from_file_location(name, spec.origin)
    module = importlib.util.module_from_spec(fresh_spec)
    sys.modules[name] = module  # relative imports inside the module resolve via its package
    fresh_spec.loader.exec_module(module)
    return module


def configure(module: ModuleType, database_url: str) -> ModuleType:
    """Point the module's peewee ``db`` at ``database_url`` (keeping the session options a
    service sets on its connections, e.g. timeouts)."""
    name, params = db_params(database_url)
    db = module.db
    kept = {k: v for k, v in db.connect_params.items() if k in ("options", "connect_timeout")}
    db.connect_params = {}
    db.init(name, **kept, **{k: v for k, v in params.items() if v is not None})
    return module


def prepare_workdir(workdir: str | os.PathLike, with_storage: bool = True) -> Path:
    """Create the work directory, and ``storage/task_images`` in it if asked."""
    path = Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    if with_storage:
        (path / "storage" / "task_images").mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------- in-process servers


class InProcessServer:
    """A real threaded WSGI server on 127.0.0.1 in a background thread of this process.

    ``model="pool"``: requests run on a fixed ``ThreadPoolExecutor`` of ``threads`` workers
    (the gthread model). ``warm=True`` first opens the module's connection in every pool
    thread, which is the state each gthread thread is in after its first request, so that
    interleaving tests see steady-state behaviour (the first-request failure has its own test).
    ``model="per-request"``: werkzeug's ``threaded=True`` server (the flask-dev model).
    """

    def __init__(self, module: ModuleType, model: str = "pool", threads: int = 4,
                 warm: bool = True, timeout: float = 10.0):
        from werkzeug.serving import BaseWSGIServer, ThreadedWSGIServer

        self.module = module
        self.model = model
        self.threads = threads
        self._pool = None
        if model == "pool":
            pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="svc-pool")
            self._pool = pool

            class PoolServer(BaseWSGIServer):
                def process_request(self, request, client_address):
                    pool.submit(self._run, request, client_address)

                def _run(self, request, client_address):
                    try:
                        self.finish_request(request, client_address)
                    except Exception:
                        self.handle_error(request, client_address)
                    finally:
                        self.shutdown_request(request)

            self.server = PoolServer(HOST, 0, module.app)
            if warm:
                self._warm(timeout)
        elif model == "per-request":
            self.server = ThreadedWSGIServer(HOST, 0, module.app)
        else:
            raise ValueError(f"unknown model {model!r}")
        self.port = self.server.server_port
        self.base_url = f"http://{HOST}:{self.port}"
        # socketserver's loop itself: werkzeug 1.x (the 2020 stack) overrides serve_forever()
        # without the poll_interval argument; stop() closes the socket either way.
        self._thread = threading.Thread(target=socketserver.BaseServer.serve_forever,
                                        args=(self.server, 0.05), daemon=True)

    def _warm(self, timeout: float) -> None:
        """Bring every pool thread to its steady state: the first-request hook has run in one
        of them (as the first HTTP request would do) and each holds an open connection."""
        barrier = threading.Barrier(self.threads, timeout=timeout)
        app, db = self.module.app, self.module.db

        def warm():
            barrier.wait()  # forces one job per pool thread
            # An unrouted path runs the before-request hooks (the first-request shim) only.
            app.test_client().get("/__warm_up__")
            db.connect(reuse_if_open=True)

        for f in [self._pool.submit(warm) for _ in range(self.threads)]:
            f.result(timeout=timeout)

    def start(self) -> "InProcessServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self._thread.join(timeout=10)
        self.server.server_close()
        if self._pool is not None:
            db = self.module.db

            def close():
                # Leave the pool thread's connection to the thread's end: a transaction the
                # service left open would make peewee's close() raise; drop it instead.
                conn = db._state.conn
                db._state.reset()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()

            with contextlib.suppress(Exception):
                for f in [self._pool.submit(close) for _ in range(self.threads)]:
                    f.result(timeout=5)
            # cancel_futures exists from Python 3.9; on 3.8 queued jobs still run, and find the
            # server closed.
            self._pool.shutdown(wait=False, **({"cancel_futures": True} if sys.version_info >= (3, 9) else {}))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# --------------------------------------------------------------------------- subprocess servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {HOST}:{port} after {timeout}s")


class SubprocessServer:
    """``python -m workbench.service_runner`` in its own process group, log to a file."""

    def __init__(self, server: str, database_url: str, workdir: str | os.PathLike,
                 app: str = DEFAULT_APP, threads: int = 4, port: int | None = None,
                 log_path: str | os.PathLike | None = None):
        self.server = server
        self.port = port or free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        self.workdir = Path(workdir)
        self.log_path = Path(log_path or self.workdir.parent / f"{server}-{self.port}.log")
        self.cmd = [sys.executable, "-m", "workbench.service_runner", "--server", server,
                    "--database-url", database_url, "--port", str(self.port),
                    "--workdir", str(self.workdir), "--app", app, "--threads", str(threads)]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> "SubprocessServer":
        self._log = open(self.log_path, "wb")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=str(ROOT), env=env, start_new_session=True)
        try:
            wait_for_port(self.port, timeout, self.proc)
        except BaseException:
            self.stop()
            raise
        return self

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # Reap anything left in the group (gunicorn workers).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# --------------------------------------------------------------------------- CLI


def service_gunicorn_config(module: ModuleType) -> dict:
    """The settings of the ``gunicorn_conf.py`` beside the service module, if it ships one."""
    path = Path(module.__file__).with_name("gunicorn_conf.py")
    if not path.is_file():
        return {}
    import runpy

    return {k: v for k, v in runpy.run_path(str(path)).items() if not k.startswith("_")}


def _serve_gunicorn(module: ModuleType, port: int, threads: int) -> None:
    from gunicorn.app.base import BaseApplication

    class App(BaseApplication):
        def load_config(self):
            settings = {k: v for k, v in service_gunicorn_config(module).items()
                        if k in self.cfg.settings}
            settings.setdefault("worker_class", "gthread")
            settings.update({"bind": f"{HOST}:{port}", "workers": 1, "threads": threads,
                             "timeout": 120, "graceful_timeout": 2,
                             "accesslog": "-", "errorlog": "-", "loglevel": "info"})
            for key, value in settings.items():
                self.cfg.set(key, value)

        def load(self):
            return module.app

    App().run()


def _serve_flask_dev(module: ModuleType, port: int) -> None:
    # Flask's development server, threaded (a new thread per request), no reloader.
    module.app.run(host=HOST, port=port, threaded=True, use_reloader=False, debug=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.service_runner",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=("gunicorn", "flask-dev"), required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--app", default=DEFAULT_APP, help="import path of the service module")
    parser.add_argument("--threads", type=int, default=4, help="gthread threads (gunicorn)")
    ns = parser.parse_args(argv)
    if str(ROOT) not in sys.path:  # the import must not depend on the directory left
        sys.path.insert(0, str(ROOT))
    os.chdir(ns.workdir)  # before the import: the service may resolve paths when imported
    module = configure(load_app_module(ns.app), ns.database_url)
    if ns.server == "gunicorn":
        _serve_gunicorn(module, ns.port, ns.threads)
    else:
        _serve_flask_dev(module, ns.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
