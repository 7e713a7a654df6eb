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
"""
from __future__ import annotations

import contextlib

from flask import Flask, current_app
from peewee import DatabaseError, InterfaceError, OperationalError
from playhouse.db_url import parse
from playhouse.pool import MaxConnectionsExceeded, PooledPostgresqlDatabase
import psycopg2
from psycopg2.extensions import TRANSACTION_STATUS_UNKNOWN
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


class TaskDatabasePool(PooledPostgresqlDatabase):
    """peewee's pool, without its liveness probe: peewee sends ``SELECT 1`` on every check-out,
    a round trip per request. A connection that died while idle fails its first statement
    instead; that request answers 503 and the pool drops every idle connection (above)."""

    def _is_closed(self, conn) -> bool:
        return bool(conn.closed) or conn.get_transaction_status() == TRANSACTION_STATUS_UNKNOWN


def make_database(config: Config) -> PooledPostgresqlDatabase:
    """A connection pool; left uninitialised when no URL is configured (``configure`` later)."""
    database = TaskDatabasePool(None, max_connections=config.db_max_connections,
                                stale_timeout=300, timeout=10)
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
