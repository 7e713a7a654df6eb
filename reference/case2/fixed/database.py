"""The database's one home: the connection pool, its session limits, per-request connections,
what a lost or overloaded database looks like to a client, and the ``init-db`` command.

A request takes a pooled connection at its first query (peewee connects on demand, so a
request that needs no database, like ``GET /openapi.json``, takes none) and gives it back after
the response (``teardown_request``). Each PostgreSQL session is opened with ``lock_timeout``,
``statement_timeout`` and ``idle_in_transaction_session_timeout``, so no request can wait on a
lock, run a statement or keep a transaction open for longer than configured: the server cancels
it and the request answers 503. Each session is also pinned to READ COMMITTED, whatever the
database's or the role's default (C2-36): the claim and the counters are correct because of what
READ COMMITTED does with a row another transaction changed meanwhile (``ISOLATION`` below).
When the database is down or one of these limits fires, the
request answers ``503`` with ``Retry-After``; the connection it used is discarded together with
the idle ones (after a restart of PostgreSQL they are all dead), so the service recovers by
itself once the database is back.

Those limits are the server's: a server that cannot answer at all (its processes stopped,
``kill -STOP``; a network partition; a host gone without a reset) cancels nothing, and psycopg2
waits in ``recv`` for ever. So every statement, ``BEGIN``, ``COMMIT`` and ``ROLLBACK`` the
service sends is also guarded from this side (``GuardedCursor``): if the answer has not come
``db_response_timeout_ms`` after it was sent (longer than ``statement_timeout``, so a live server
always cancels first), ``WATCHDOG`` shuts the connection's socket down, the call fails with
"server closed the connection unexpectedly" and the request answers 503. libpq's TCP
keepalives and ``tcp_user_timeout`` do not cover this: a stopped server's kernel still
acknowledges probes and data, and neither applies to the Unix socket the embedded server
uses; a new connection is bounded by ``connect_timeout``.
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

from flask import Flask, current_app
from peewee import DatabaseError, InterfaceError, OperationalError, PostgresqlDatabase
from playhouse.db_url import parse
from playhouse.pool import MaxConnectionsExceeded, PooledPostgresqlDatabase
import psycopg2
from psycopg2.extensions import TRANSACTION_STATUS_UNKNOWN, cursor as Psycopg2Cursor
from werkzeug.exceptions import ServiceUnavailable

from . import models
from .config import Config
from .errors import http_error

# Errors that mean "not now" rather than "never": the database is unreachable, restarting, or
# cancelled a statement that hit one of the session limits (lock_timeout, statement_timeout,
# deadlock, serialization failure are all OperationalError subclasses in psycopg2). A server
# that dies under an open connection surfaces as a bare DatabaseError ("server closed the
# connection unexpectedly", ``_connection_lost``): that is unavailability too.
UNAVAILABLE = (OperationalError, InterfaceError, MaxConnectionsExceeded)


def _connection_lost(exc: Exception) -> bool:
    """psycopg2 reports a connection that died under a statement as a bare DatabaseError with
    no SQLSTATE (every error the server itself sends has one)."""
    orig = getattr(exc, "orig", None)
    return type(orig) is psycopg2.DatabaseError and getattr(orig, "pgcode", None) is None


# The isolation level every statement and transaction of the service runs at. The claim
# (``UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED)``), complete/release (a conditional
# ``UPDATE``) and the counters (``SET n = n + 1``) rely on READ COMMITTED: a statement that waited
# for a row lock re-checks the row as committed meanwhile and goes on. Under REPEATABLE READ or
# SERIALIZABLE the same wait ends in SQLSTATE 40001 ("could not serialize access"), which would
# need a retry of the whole request. A startup option outranks ``ALTER DATABASE/ROLE … SET``.
ISOLATION = "read committed"


def session_options(config: Config) -> str:
    """libpq ``options``: the session limits and the isolation level, set at connection."""
    return (f"-c lock_timeout={config.lock_timeout_ms} "
            f"-c statement_timeout={config.statement_timeout_ms} "
            f"-c idle_in_transaction_session_timeout={config.idle_in_transaction_timeout_ms} "
            # libpq splits ``options`` at spaces; the one inside the value is escaped.
            "-c default_transaction_isolation=" + ISOLATION.replace(" ", "\\ "))


class StatementWatchdog:
    """Cuts the connection of a call that waits too long for PostgreSQL: at the deadline its
    socket is shut down (both ways), which makes the blocked libpq call return at once. One
    daemon thread per process, started at first use; after a fork (gunicorn builds the app in
    the master, then forks the workers) the child starts afresh."""

    def __init__(self):
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[int, tuple[float, object]] = {}  # guard id -> (deadline, connection)
        self._next_id = 0
        self._thread: threading.Thread | None = None
        self._wakes_at = float("inf")  # when the watchdog thread looks next
        self.cut = 0  # connections cut in this process

    @contextlib.contextmanager
    def guard(self, connection, seconds: float):
        with self._cond:
            self._next_id += 1
            key = self._next_id
            self._due[key] = (time.monotonic() + seconds, connection)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="db-watchdog", daemon=True)
                self._thread.start()
            if self._due[key][0] < self._wakes_at:
                # Wake the thread only when this deadline comes before its next look: deadlines
                # are now + a fixed timeout, so under load it sleeps instead of waking per
                # statement (a thread switch, and the GIL, per round trip).
                self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._due.pop(key, None)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for key in [k for k, (deadline, _) in self._due.items() if deadline <= now]:
                    _, connection = self._due.pop(key)
                    self.cut += 1
                    _shut_down(connection)
                nearest = min((deadline for deadline, _ in self._due.values()), default=None)
                self._wakes_at = float("inf") if nearest is None else nearest
                self._cond.wait(None if nearest is None else max(0.0, nearest - now))


def _shut_down(connection) -> None:
    with contextlib.suppress(OSError, psycopg2.Error):
        sock = socket.socket(fileno=os.dup(connection.fileno()))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()  # the duplicate only; psycopg2 closes its own descriptor


WATCHDOG = StatementWatchdog()


class GuardedCursor(Psycopg2Cursor):
    """A psycopg2 cursor whose every ``execute`` waits at most ``timeout_s`` for the server."""

    timeout_s: float | None = None

    def execute(self, query, vars=None):
        if self.timeout_s is None:
            return super().execute(query, vars)
        with WATCHDOG.guard(self.connection, self.timeout_s):
            return super().execute(query, vars)


class GuardedCursors:
    """For peewee's PostgreSQL databases: every cursor peewee asks for (statements, and the
    BEGIN, COMMIT and ROLLBACK of its transactions) is a ``GuardedCursor``."""

    response_timeout_s: float | None = None

    def cursor(self, named_cursor=None):
        if self.is_closed() and not self.autoconnect:
            raise InterfaceError("Error, database connection not opened.")
        cursor = self.connection().cursor(cursor_factory=GuardedCursor)
        cursor.timeout_s = self.response_timeout_s
        return cursor


class TaskDatabasePool(GuardedCursors, PooledPostgresqlDatabase):
    """peewee's pool, without its liveness probe: peewee sends ``SELECT 1`` on every check-out,
    a round trip per request. A connection that died while idle fails its first statement
    instead; that request answers 503 and the pool drops every idle connection (above)."""

    def _is_closed(self, conn) -> bool:
        return bool(conn.closed) or conn.get_transaction_status() == TRANSACTION_STATUS_UNKNOWN


class TaskDatabase(GuardedCursors, PostgresqlDatabase):
    """One connection of its own, guarded like the pool's (``dedicated``)."""


def dedicated(database: PooledPostgresqlDatabase) -> TaskDatabase:
    """A database with the same server, session limits and response timeout as ``database``,
    that opens a connection of its own (not one of the pool's) when asked; close it after use."""
    own = TaskDatabase(database.database, autoconnect=False, **database.connect_params)
    own.response_timeout_s = database.response_timeout_s
    return own


def make_database(config: Config) -> PooledPostgresqlDatabase:
    """A connection pool; left uninitialised when no URL is configured (``configure`` later)."""
    database = TaskDatabasePool(None, max_connections=config.db_max_connections,
                                stale_timeout=300, timeout=10)
    database.response_timeout_s = config.db_response_timeout_ms / 1000
    if config.database_url:
        configure(database, config.database_url, config)
    return database


def configure(database: PooledPostgresqlDatabase, url: str, config: Config) -> None:
    """Point ``database`` at ``url`` with the session limits of ``config``."""
    params = parse(url)
    name = params.pop("database")
    params.setdefault("connect_timeout", config.connect_timeout_s)
    params["options"] = (params.get("options", "") + " " + session_options(config)).strip()
    database.init(name, **params)
    database.response_timeout_s = config.db_response_timeout_ms / 1000


class DatabaseUnavailable(ServiceUnavailable):
    """503 with Retry-After: the database could not serve this request."""

    def __init__(self, retry_after: int, message: str):
        super().__init__(message, retry_after=retry_after)


def _database_error(exc: Exception):
    database = current_app.extensions["task_db"]
    if not isinstance(exc, UNAVAILABLE) and not _connection_lost(exc):
        raise exc  # a bug, not an outage: the 500 path (logged, signalled)
    # The connection this request used may be dead (server restarted) or mid-transaction on a
    # cancelled statement: never hand it out again; the idle ones are probably dead too.
    with contextlib.suppress(Exception):
        if not database.is_closed():
            database.manual_close()
    with contextlib.suppress(Exception):
        database.close_idle()
    current_app.logger.warning("database unavailable: %s: %s", type(exc).__name__, exc)
    retry_after = current_app.extensions["task_config"].retry_after_s
    return http_error(DatabaseUnavailable(retry_after, "the database is unavailable, retry later"))


def init_app(app: Flask, database: PooledPostgresqlDatabase) -> None:
    app.extensions["task_db"] = database
    models.db.initialize(database)

    @app.teardown_request
    def release_connection(exc):
        if not database.is_closed():
            database.close()  # back to the pool

    for error in (DatabaseError, *UNAVAILABLE):
        app.register_error_handler(error, _database_error)

    @app.cli.command("init-db")
    def init_db_command():
        """Create the tables and indexes."""
        models.create_schema(database)

