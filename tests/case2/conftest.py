"""Fixtures for the Case 2 evidence suite: the service under test, in-process or as a process."""
from __future__ import annotations

import importlib.util
import types

import flask
import pytest

from workbench import service_runner as runner

from .helpers import PROTOCOLS, Api, DbInspector, Service

APPS = {
    "as_given": "reference.case2.as_given.app",
    "fixed": "reference.case2.fixed.app",
}


def _app_path(side: str) -> str:
    path = APPS[side]
    if importlib.util.find_spec(path.rpartition(".")[0]) is None:
        pytest.skip(f"{path} is not built yet")
    return path


@pytest.fixture
def side():
    """The code under test when a test is not parametrised over both sides."""
    return "as_given"


@pytest.fixture
def workdir(tmp_path):
    return tmp_path / "work"


@pytest.fixture(autouse=True)
def image_storage_dir(workdir, monkeypatch):
    """The fixed service takes its image directory from the environment when it runs as a
    process; point it where ``Service.image_path`` looks. The as-given service ignores it."""
    path = workdir / "storage" / "task_images"
    monkeypatch.setenv("IMAGE_STORAGE_DIR", str(path))
    return path


def fixed_service_module(database_url: str, storage_dir, **overrides) -> types.SimpleNamespace:
    """The fixed service built the way its tests should build it: ``create_app(Config(...))``
    (imported lazily: fixed code runs on today's stack only). Exposes ``app`` and ``db`` like
    the service module, for the in-process servers; the schema is created (the deployment
    step ``flask init-db``)."""
    from reference.case2.fixed import models
    from reference.case2.fixed.app import create_app
    from reference.case2.fixed.config import Config

    config = Config(database_url=database_url, storage_dir=str(storage_dir), **overrides)
    app = create_app(config)
    db = app.extensions["task_db"]
    models.create_schema(db)
    return types.SimpleNamespace(app=app, db=db, config=config)


def fixed_contract(config=None):
    """The OpenAPI document of the fixed service, as a response checker."""
    from reference.case2.fixed.config import Config
    from reference.case2.fixed.openapi import document

    from .contract import Contract

    return Contract(document(config or Config()))


@pytest.fixture
def inspector(fresh_database_url, side):
    db = DbInspector(fresh_database_url, PROTOCOLS[side])
    yield db
    db.close()


@pytest.fixture
def make_service(fresh_database_url, workdir, inspector, monkeypatch, side):
    """Factory: the service on the test's database, served in-process.

    ``model``: "pool" (fixed thread pool, the gthread model) or "per-request" (flask-dev).
    ``storage``: whether ``storage/task_images`` exists in the work directory.
    ``root_at_workdir``: run as if started from the service's own directory (``send_file``
    resolves relative paths against ``app.root_path``, ``open`` against the CWD).
    ``config``: settings of the fixed service's ``Config`` to change (limits, timeouts).
    """
    started = []

    def make(model="pool", threads=1, storage=True, root_at_workdir=False, warm=True,
             config=None):
        runner.prepare_workdir(workdir, with_storage=storage)
        monkeypatch.chdir(workdir)
        contract = None
        if side == "fixed":
            module = fixed_service_module(fresh_database_url,
                                          workdir / "storage" / "task_images", **(config or {}))
            contract = fixed_contract(module.config)
        else:
            module = runner.configure(runner.load_app_module(_app_path(side), fresh=True),
                                      fresh_database_url)
        if root_at_workdir:
            module.app.root_path = str(workdir)
        errors = []

        def on_exception(sender, exception, **extra):
            errors.append(exception)

        flask.got_request_exception.connect(on_exception, module.app, weak=False)
        server = runner.InProcessServer(module, model=model, threads=threads, warm=warm).start()
        started.append((server, module, on_exception))
        return Service(side=side, module=module,
                       api=Api(server.base_url, PROTOCOLS[side], contract=contract),
                       db=inspector, workdir=workdir, base_url=server.base_url,
                       errors=errors, server=server)

    yield make
    for server, module, receiver in reversed(started):
        server.stop()
        flask.got_request_exception.disconnect(receiver, module.app)
        if side == "fixed":
            module.db.close_all()


@pytest.fixture
def service(make_service):
    """The service with one worker thread (deterministic: every request on one connection)."""
    return make_service()


@pytest.fixture
def image_service(make_service):
    """Started from its own directory, the one layout where the image download can work."""
    return make_service(root_at_workdir=True)


@pytest.fixture
def make_process(fresh_database_url, workdir, tmp_path, side):
    """Factory: the service in its own process (gunicorn gthread or Flask's dev server)."""
    started = []

    def make(server="gunicorn", threads=4, storage=True):
        runner.prepare_workdir(workdir, with_storage=storage)
        if side == "fixed":  # the deployment step: the schema first
            fixed_service_module(fresh_database_url, workdir).db.close_all()
        proc = runner.SubprocessServer(server, fresh_database_url, workdir, app=_app_path(side),
                                       threads=threads, log_path=tmp_path / f"{server}.log")
        started.append(proc)
        proc.start()
        proc.api = Api(proc.base_url, PROTOCOLS[side],
                       contract=fixed_contract() if side == "fixed" else None)
        return proc

    yield make
    for proc in started:
        proc.stop()
