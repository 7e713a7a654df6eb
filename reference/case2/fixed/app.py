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
from werkzeug.routing import IntegerConverter

from . import database, errors, models, validation
from .auth import authenticate
from .config import Config
from .reconcile import reconcile_app
from .storage import ImageStorage
from .views import claims, docs, stats, tasks, users

PUBLIC_ENDPOINTS = frozenset({"users.create_user", "docs.openapi_document"})


class IdConverter(IntegerConverter):
    """A database id in a path: 0..2**31-1; a larger number is an unknown id (404), not a
    value PostgreSQL refuses (500). (Refusing it with Werkzeug's ``max`` would answer 405.)"""

    def to_python(self, value: str) -> int:
        number = super().to_python(value)
        if number > validation.MAX_ID:
            raise NotFound("no such id")
        return number


def create_app(config: Config | None = None, db=None) -> Flask:
    config = config or Config.from_env()
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = config.max_content_length
    app.url_map.converters["id"] = IdConverter
    app.extensions["task_config"] = config
    app.extensions["image_storage"] = ImageStorage(config.storage_dir)
    errors.register(app)
    database.init_app(app, db if db is not None else database.make_database(config))

    @app.before_request
    def authenticate_caller():
        # Unrouted requests (404/405) are authenticated too: no endpoint discovery anonymously.
        if request.endpoint not in PUBLIC_ENDPOINTS:
            g.user = authenticate(request)

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
