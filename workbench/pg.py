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
import time
import uuid
import warnings
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

ENV_VAR = "DATABASE_URL"
# pgserver's start and cleanup are not safe in two threads of one process at once (its
# inter-process lock object is shared: the second thread's release fails with "Unable to release
# an unaquired lock"), which happens when the 2020-stack run's server starts beside the test
# session's: one at a time.
_PGSERVER_CALLS = threading.Lock()


@contextlib.contextmanager
def embedded_pgserver(prefix: str = "workbench-pg-"):
    """Start a private PostgreSQL in a fresh temporary directory; yield pgserver's server
    object (for tests that stop and start it); stop it and remove the directory."""
    with warnings.catch_warnings():
        # pgserver asks platformdirs for a runtime directory at import; without XDG_RUNTIME_DIR
        # (containers, root shells, CI) platformdirs warns and uses its fallback, which is fine.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import pgserver  # imported lazily: only the embedded path needs it

    datadir = tempfile.mkdtemp(prefix=prefix)
    server = None
    try:
        with _PGSERVER_CALLS:
            server = pgserver.get_server(datadir, cleanup_mode="stop")
        yield server
    finally:
        if server is not None:
            with _PGSERVER_CALLS:
                server.cleanup()
        shutil.rmtree(datadir, ignore_errors=True)


@contextlib.contextmanager
def embedded_server() -> Iterator[str]:
    """Start a private PostgreSQL in a fresh temporary directory; yield its URL; stop it."""
    with embedded_pgserver() as server:
        yield server.get_uri()


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


def _end_sessions(cur, name: str, timeout: float) -> None:
    """Terminate every other session on database ``name`` and wait until they are gone."""
    deadline = time.monotonic() + timeout
    while True:
        cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
        if cur.fetchone()[0] == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"sessions on {name} did not end within {timeout}s")
        time.sleep(0.01)


def public_schema(url: str) -> list[tuple]:
    """Owner and privileges of the ``public`` schema of the database at ``url``: one row
    (owner, grantee, grantee oid, privilege) per privilege granted, grantee oid 0 for PUBLIC."""
    conn = _admin_connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT o.rolname, g.rolname, a.grantee, a.privilege_type FROM pg_namespace n "
                        "JOIN pg_roles o ON o.oid = n.nspowner "
                        "LEFT JOIN LATERAL aclexplode(n.nspacl) a ON true "
                        "LEFT JOIN pg_roles g ON g.oid = a.grantee WHERE n.nspname = 'public'")
            return cur.fetchall()
    finally:
        conn.close()


def reset_database(url: str, name: str, public: list[tuple], timeout: float = 10.0) -> None:
    """Empty database ``name`` again, as CREATE DATABASE left it, for its next user.

    Much cheaper than dropping and creating it (CREATE DATABASE copies the whole template, a
    few hundred milliseconds here; this takes a few tens): its sessions are ended and waited
    for, settings made with ``ALTER DATABASE … SET`` are reset, every schema but the system
    ones is dropped, and ``public`` is created again with the owner and privileges it had when
    the database was new (``public``: as ``public_schema`` read them then)."""
    conn = _admin_connect(url)
    try:
        with conn.cursor() as cur:
            _end_sessions(cur, _check_name(name), timeout)
            cur.execute(f'ALTER DATABASE "{name}" RESET ALL')
        inside = _admin_connect(with_database(url, name))
        try:
            with inside.cursor() as cur:
                _empty_schemas(cur, public)
        finally:
            inside.close()
        with conn.cursor() as cur:  # nothing connected while it was emptied stays
            _end_sessions(cur, name, timeout)
    finally:
        conn.close()


def _empty_schemas(cur, public: list[tuple]) -> None:
    from psycopg2 import sql

    cur.execute("SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
                "AND nspname <> 'information_schema'")
    for (schema,) in cur.fetchall():
        cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    if not public:  # the database had no public schema when it was new
        return
    cur.execute(sql.SQL("CREATE SCHEMA public AUTHORIZATION {}").format(sql.Identifier(public[0][0])))
    cur.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
    for _, grantee, grantee_oid, privilege in public:
        if privilege is not None:
            role = sql.SQL("PUBLIC") if grantee_oid == 0 else sql.Identifier(grantee)
            cur.execute(sql.SQL("GRANT {} ON SCHEMA public TO {}").format(sql.SQL(privilege), role))


class EmptyDatabases:
    """Empty databases, one test at a time: a database a test is done with is emptied
    (``reset_database``) and handed to the next test instead of being dropped; all of them are
    dropped by ``close``. One that cannot be emptied is dropped at once."""

    def __init__(self, url: str, prefix: str = "t_"):
        self.url = url
        self.prefix = prefix
        self._free: list[str] = []
        self._public: dict[str, list[tuple]] = {}  # every database made, as it was when new

    def take(self) -> str:
        """The URL of an empty database, now the caller's until ``give_back``."""
        if self._free:
            return with_database(self.url, self._free.pop())
        name = self.prefix + uuid.uuid4().hex[:16]
        url = create_database(self.url, name)
        self._public[name] = public_schema(url)
        return url

    def give_back(self, database_url: str) -> None:
        name = urlsplit(database_url).path.lstrip("/")
        try:
            reset_database(self.url, name, self._public[name])
        except Exception:
            del self._public[name]
            drop_database(self.url, name)
            raise
        self._free.append(name)

    def close(self) -> None:
        for name in list(self._public):
            drop_database(self.url, name)
            del self._public[name]
        self._free.clear()


# Signals that end ``serve`` and ``run`` with the server stopped and its directory removed: Ctrl-C,
# a kill, and the terminal closing (SIGHUP), whose default action ends Python at once and left
# PostgreSQL running on its directory.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _serve(_: argparse.Namespace) -> int:
    stop = threading.Event()
    for sig in STOP_SIGNALS:
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
            child = subprocess.Popen(cmd, env=env)
        except FileNotFoundError:
            print(f"error: command not found: {cmd[0]}", file=sys.stderr)
            return 127

        def forward(signum, _frame):
            # The command decides how to end; the server is stopped once it has.
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

        for sig in STOP_SIGNALS[1:]:  # SIGINT reaches the whole foreground group by itself
            signal.signal(sig, forward)
        try:
            return child.wait()
        except KeyboardInterrupt:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
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
