"""Application factory of the task service, plus the module-level ``app``/``db`` that WSGI
servers (``gunicorn -c reference/case2/fixed/gunicorn_conf.py reference.case2.fixed.app:app``)
load.

Configuration comes from the environment (``config.Config.from_env``): ``DATABASE_URL``,
``IMAGE_STORAGE_DIR`` (made absolute against the working directory at start), limits and
timeouts. Building the app only configures it: nothing connects, nothing is created on disk.
Deployment steps are commands: ``flask --app reference.case2.fixed.app init-db`` creates the
schema, ``… reconcile`` cleans the image directory after a crash (also run by the gunicorn
configuration at start-up). Tests build their own app with ``create_app(Config(...))``.
"""
from __future__ import annotations

import json

import click
from flask import Flask, g, request
from werkzeug.exceptions import NotFound
from werkzeug.routing import BaseConverter

from . import database, errors, models, validation
from .auth import authenticate
from .config import Config
from .reconcile import pending_files_of, reconcile_app
from .storage import ImageStorage
from .views import claims, docs, stats, tasks, users

PUBLIC_ENDPOINTS = frozenset({"users.create_user", "docs.openapi_document"})


class IdConverter(BaseConverter):
    """A database id in a path, in its one canonical spelling: ASCII digits, no leading zero.
    Werkzeug's ``int`` converter matches any Unicode digit (``/tasks/１４７０`` was task 1470)
    and leading zeros (``/tasks/01``), so one resource had many URLs; any other spelling is no
    route (404). A number over 2**31-1 is an unknown id (404), not a value PostgreSQL refuses
    (500). (Refusing it with a ``ValidationError`` would answer 405.)"""

    regex = r"0|[1-9][0-9]*"
    weight = 50
    part_isolating = True

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > validation.MAX_ID:
            raise NotFound("no such id")
        return number

    def to_url(self, value: int) -> str:
        return str(int(value))


def create_app(config: Config | None = None, db=None) -> Flask:
    config = config or Config.from_env()
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = config.max_content_length
    app.url_map.converters["id"] = IdConverter
    app.extensions["task_config"] = config
    app.extensions["image_storage"] = ImageStorage(config.storage_dir)
    errors.register(app)
    database.init_app(app, db if db is not None else database.make_database(config))
    app.extensions["pending_files"] = pending_files_of(app)

    @app.before_request
    def authenticate_caller():
        # Unrouted requests (404/405) are authenticated too: no endpoint discovery anonymously.
        if request.endpoint not in PUBLIC_ENDPOINTS:
            g.user = authenticate(request)

    @app.after_request
    def close_if_body_unread(response):
        # A body not read to its end (not needed, refused, malformed, too slow) leaves the
        # connection at an unknown point of the byte stream: answer, then close, rather than
        # let the server try to skip the rest and perhaps answer garbage as a next request.
        # (WSGI forbids hop-by-hop headers: the request is marked for the worker, server.py.)
        if validation.has_body(request) and not validation.body_consumed():
            request.environ[errors.CLOSE_CONNECTION] = True
        return response

    for blueprint in (users.bp, tasks.bp, claims.bp, stats.bp, docs.bp):
        app.register_blueprint(blueprint)

    @app.cli.command("reconcile")
    def reconcile_command():
        """Remove orphaned image files and stale staged uploads; print what was done."""
        click.echo(json.dumps(reconcile_app(app).as_dict()))

    return app


app = create_app()
db = app.extensions["task_db"]


def init_schema() -> None:
    """Create the schema in the configured database (what ``flask init-db`` does)."""
    models.create_schema(db)
