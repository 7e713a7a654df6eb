"""Application factory of the task service, plus the module-level ``app``/``db`` that WSGI
servers (``gunicorn reference.case2.fixed.app:app``) and the test harness load.

Configuration comes from the environment: ``DATABASE_URL`` (postgresql://…),
``IMAGE_STORAGE_DIR`` (made absolute and created at start), ``MAX_CONTENT_LENGTH`` (bytes),
``DB_MAX_CONNECTIONS``. The schema is created by ``flask --app reference.case2.fixed.app
init-db`` (or ``init_schema()``) as a deployment step.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from flask import Flask, g, request
from playhouse.db_url import parse
from playhouse.pool import PooledPostgresqlDatabase

from . import errors, models
from .auth import authenticate
from .storage import ImageStorage
from .views import stats, tasks, users

PUBLIC_ENDPOINTS = frozenset({"users.create_user"})


@dataclass(frozen=True)
class Config:
    database_url: str | None = None
    storage_dir: str = "storage/task_images"
    max_content_length: int = 10 * 2**20
    db_max_connections: int = 20

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Config":
        defaults = cls()
        return cls(database_url=env.get("DATABASE_URL") or None,
                   storage_dir=env.get("IMAGE_STORAGE_DIR", defaults.storage_dir),
                   max_content_length=int(env.get("MAX_CONTENT_LENGTH", defaults.max_content_length)),
                   db_max_connections=int(env.get("DB_MAX_CONNECTIONS", defaults.db_max_connections)))


def make_database(config: Config) -> PooledPostgresqlDatabase:
    """A connection pool; left uninitialised (``db.init`` later) when no URL is configured."""
    database = PooledPostgresqlDatabase(None, max_connections=config.db_max_connections,
                                        stale_timeout=300, timeout=10)
    if config.database_url:
        params = parse(config.database_url)
        database.init(params.pop("database"), **params)
    return database


def create_app(config: Config | None = None, database=None) -> Flask:
    config = config or Config.from_env()
    database = database if database is not None else make_database(config)
    models.db.initialize(database)

    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = config.max_content_length
    app.extensions["task_db"] = database
    app.extensions["image_storage"] = ImageStorage(config.storage_dir)
    errors.register(app)

    @app.before_request
    def connect_and_authenticate():
        database.connect(reuse_if_open=True)
        # Unrouted requests (404/405) are authenticated too: no endpoint discovery anonymously.
        if request.endpoint not in PUBLIC_ENDPOINTS:
            g.user = authenticate(request)

    @app.teardown_request
    def release_connection(exc):
        if not database.is_closed():
            database.close()  # back to the pool

    for blueprint in (users.bp, tasks.bp, stats.bp):
        app.register_blueprint(blueprint)

    @app.cli.command("init-db")
    def init_db_command():
        """Create the tables and indexes."""
        models.create_schema(database)

    return app


app = create_app()
db = app.extensions["task_db"]


def init_schema() -> None:
    """Create the schema in the configured database (what ``flask init-db`` does)."""
    models.create_schema(db)
