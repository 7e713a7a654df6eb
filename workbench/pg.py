"""PostgreSQL for the workbench: an embedded throwaway server by default, DATABASE_URL otherwise.

    python -m workbench.pg serve          # start, print the URL, stop on Ctrl-C / SIGTERM
    python -m workbench.pg run -- CMD...  # start, run CMD with DATABASE_URL set, stop

The embedded server is pgserver's bundled PostgreSQL in a temporary data directory; it is
stopped (and the directory removed) when the context exits, so nothing outlives its owner.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

ENV_VAR = "DATABASE_URL"


@contextlib.contextmanager
def embedded_server() -> Iterator[str]:
    """Start a private PostgreSQL in a fresh temporary directory; yield its URL; stop it."""
    with warnings.catch_warnings():
        # pgserver asks platformdirs for a runtime directory at import; without XDG_RUNTIME_DIR
        # (containers, root shells, CI) platformdirs warns and uses its fallback, which is fine.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import pgserver  # imported lazily: only the embedded path needs it

    datadir = tempfile.mkdtemp(prefix="workbench-pg-")
    server = None
    try:
        server = pgserver.get_server(datadir, cleanup_mode="stop")
        yield server.get_uri()
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(datadir, ignore_errors=True)


@contextlib.contextmanager
def database_url() -> Iterator[str]:
    """``DATABASE_URL`` when it is set, else an embedded server for the duration of the block."""
    url = os.environ.get(ENV_VAR)
    if url:
        yield url
        return
    with embedded_server() as url:
        yield url


def with_database(url: str, name: str) -> str:
    """The same server URL, pointing at database ``name``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def _admin_connect(url: str):
    import psycopg2

    conn = psycopg2.connect(url)
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
    return conn


def _check_name(name: str) -> str:
    if not name.replace("_", "").isalnum() or not name[0].isalpha() or len(name) > 63:
        raise ValueError(f"not a safe database name: {name!r}")
    return name


def create_database(url: str, name: str) -> str:
    """Create an empty database ``name`` on the server behind ``url``; return its URL."""
    conn = _admin_connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{_check_name(name)}"')
    finally:
        conn.close()
    return with_database(url, name)


def drop_database(url: str, name: str) -> None:
    """Drop database ``name``, first ending any sessions still connected to it."""
    conn = _admin_connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()", (_check_name(name),))
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        conn.close()


def _serve(_: argparse.Namespace) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with database_url() as url:
        print(url, flush=True)
        print("PostgreSQL is running; Ctrl-C stops it.", file=sys.stderr, flush=True)
        stop.wait()
    return 0


def _run(ns: argparse.Namespace) -> int:
    cmd = ns.command[1:] if ns.command[:1] == ["--"] else ns.command  # only the separator itself
    if not cmd:
        print("error: nothing to run; usage: python -m workbench.pg run -- CMD [ARGS...]",
              file=sys.stderr)
        return 2
    with database_url() as url:
        env = dict(os.environ, **{ENV_VAR: url})
        try:
            return subprocess.call(cmd, env=env)
        except FileNotFoundError:
            print(f"error: command not found: {cmd[0]}", file=sys.stderr)
            return 127
        except KeyboardInterrupt:
            return 130


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.pg", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("serve", help="start PostgreSQL, print its URL, stop on Ctrl-C")
    run = sub.add_parser("run", help="run a command with DATABASE_URL set, then stop PostgreSQL")
    run.add_argument("command", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)
    return {"serve": _serve, "run": _run}[ns.action](ns)


if __name__ == "__main__":
    sys.exit(main())
