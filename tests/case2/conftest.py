"""Fixtures for the Case 2 evidence suite: the service under test, in-process or as a process."""
from __future__ import annotations

import importlib.util

import flask
import pytest

from workbench import service_runner as runner

from .helpers import Api, DbInspector, Service, bearer_token_auth, query_param_auth

APPS = {
    "as_given": "reference.case2.as_given.app",
    "fixed": "reference.case2.fixed.app",
}
AUTH = {"as_given": query_param_auth, "fixed": bearer_token_auth}


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
    """The fixed service takes its (absolute) image directory from the environment; point it
    where ``Service.image_path`` looks. The as-given service ignores it."""
    path = workdir / "storage" / "task_images"
    monkeypatch.setenv("IMAGE_STORAGE_DIR", str(path))
    return path


def init_schema(side: str, module) -> None:
    """The fixed service creates its schema in an explicit deployment step, not on the first
    request; run that step (the as-given one creates tables on its first request)."""
    if side == "fixed":
        module.init_schema()


@pytest.fixture
def inspector(fresh_database_url):
    db = DbInspector(fresh_database_url)
    yield db
    db.close()


@pytest.fixture
def make_service(fresh_database_url, workdir, inspector, monkeypatch, side):
    """Factory: a fresh import of the service on the test's database, served in-process.

    ``model``: "pool" (fixed thread pool, the gthread model) or "per-request" (flask-dev).
    ``storage``: whether ``storage/task_images`` exists in the work directory.
    ``root_at_workdir``: run as if started from the service's own directory (``send_file``
    resolves relative paths against ``app.root_path``, ``open`` against the CWD).
    """
    started = []

    def make(model="pool", threads=1, storage=True, root_at_workdir=False, warm=True):
        runner.prepare_workdir(workdir, with_storage=storage)
        monkeypatch.chdir(workdir)
        module = runner.configure(runner.load_app_module(_app_path(side), fresh=True),
                                  fresh_database_url)
        init_schema(side, module)
        if root_at_workdir:
            module.app.root_path = str(workdir)
        errors = []

        def on_exception(sender, exception, **extra):
            errors.append(exception)

        flask.got_request_exception.connect(on_exception, module.app, weak=False)
        server = runner.InProcessServer(module, model=model, threads=threads, warm=warm).start()
        started.append((server, module, on_exception))
        return Service(side=side, module=module, api=Api(server.base_url, AUTH[side]),
                       db=inspector, workdir=workdir, base_url=server.base_url,
                       errors=errors, server=server)

    yield make
    for server, module, receiver in reversed(started):
        server.stop()
        flask.got_request_exception.disconnect(receiver, module.app)


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
        if side == "fixed":
            module = runner.configure(runner.load_app_module(_app_path(side), fresh=True),
                                      fresh_database_url)
            init_schema(side, module)
            module.db.close_all()
        proc = runner.SubprocessServer(server, fresh_database_url, workdir, app=_app_path(side),
                                       threads=threads, log_path=tmp_path / f"{server}.log")
        started.append(proc)
        proc.start()
        proc.api = Api(proc.base_url, AUTH[side])
        return proc

    yield make
    for proc in started:
        proc.stop()
