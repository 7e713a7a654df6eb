"""API design and code-level findings that are observable on the running service or the module."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import flask
import pytest
from werkzeug.routing import BuildError

from workbench.service_runner import db_params, load_app_module

from .helpers import b64, evidence

AS_GIVEN = Path(__file__).resolve().parents[2] / "reference" / "case2" / "as_given" / "app.py"


@pytest.mark.finding("C2-11", side="as_given")
def test_credentials_and_host_are_hard_coded():
    module = load_app_module(fresh=True)
    assert module.db.database == "test"
    assert module.db.connect_params == {"user": "postgres", "password": "postgres", "host": "postgres"}


@pytest.mark.finding("C2-11", side="fixed")
def test_fixed_reads_database_settings_from_environment(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db.invalid:5433/tasks")
    module = load_app_module("reference.case2.fixed.app", fresh=True)
    assert "password" not in ast_strings("reference/case2/fixed/app.py")
    assert db_params("postgresql://u:p@db.invalid:5433/tasks")[0] == module.db.database


def ast_strings(path):
    tree = ast.parse((Path(__file__).resolve().parents[2] / path).read_text())
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


@pytest.mark.finding("C2-28", side="as_given")
def test_counter_decorator_without_wraps_renames_the_endpoint():
    module = load_app_module(fresh=True)
    app = module.app
    endpoints = {(r.rule, tuple(sorted(r.methods - {"HEAD", "OPTIONS"}))): r.endpoint
                 for r in app.url_map.iter_rules()}
    assert endpoints[("/tasks", ("POST",))] == "wrapper"  # not "create_task"
    with app.test_request_context():
        with pytest.raises(BuildError):
            flask.url_for("create_task")
    # A second counted view cannot even be registered: same endpoint name.
    with pytest.raises(AssertionError, match="overwriting an existing endpoint function: wrapper"):
        app.route("/other", methods=["POST"])(module.with_transaction()(module.with_tasks_counter(lambda: None)))


@pytest.mark.finding("C2-28", side="fixed")
def test_fixed_endpoints_keep_view_names():
    module = load_app_module("reference.case2.fixed.app", fresh=True)
    app = module.app
    # Every endpoint is named after its view function, so url_for works by that name.
    for rule in app.url_map.iter_rules():
        assert rule.endpoint.rsplit(".", 1)[-1] == app.view_functions[rule.endpoint].__name__
    with app.test_request_context():
        assert app.url_for("tasks.create_task") == "/tasks"
        assert app.url_for("claims.claim_task") == "/tasks/claim"


@evidence("C2-29")
def test_documented_path_is_not_served(service, side):
    user = service.api.create_user("a@example.com")
    documented = service.api.delete(f"/user/{user['id']}", user)
    if side == "as_given":
        assert documented.status_code == 404
        assert service.api.delete(f"/users/{user['id']}", user).status_code == 200
    else:
        # The fixed service serves its own description, and the path it documents works
        # (test_contract.py checks every route against the document).
        paths = service.api.get("/openapi.json").json()["paths"]
        assert "delete" in paths["/users/{user_id}"] and "/user/{user_id}" not in paths
        assert service.api.delete(f"/users/{user['id']}", user).status_code == 204
        assert service.db.users() == []


@evidence("C2-30")
def test_get_take_free_task_changes_state_on_every_call(service, side):
    user = service.api.create_user("a@example.com")
    tasks = [service.api.create_task(user) for _ in range(2)]
    got = [service.api.get(service.api.protocol.claim_path, user) for _ in range(3)]
    if side == "as_given":
        assert [r.status_code for r in got] == [200, 200, 404]
        assert [r.json()["id"] for r in got[:2]] == [t["id"] for t in tasks]
        assert all("Cache-Control" not in r.headers for r in got)
        assert [t[1] for t in service.db.tasks()] == [False, False]
    else:
        # GET changes nothing; only POST claims, and its answer is not cacheable.
        assert [r.status_code for r in got] == [405] * 3
        assert [t[1] for t in service.db.tasks()] == [True, True]
        claimed = service.api.claim(user)
        assert claimed.status_code == 200 and claimed.headers["Cache-Control"] == "no-store"
        assert [t[1] for t in service.db.tasks()] == [False, True]


@evidence("C2-31")
def test_base64_image_costs_a_third_more_bytes(service, side):
    user = service.api.create_user("a@example.com")
    image = bytes(range(256)) * 4096  # 1 MiB
    body = json.dumps({"meta": "m", "image": b64(image)}).encode()
    r = service.api.request("POST", "/tasks", user, data=body, headers={"Content-Type": "application/json"})
    overhead = len(body) / len(image) - 1
    if side == "as_given":
        assert r.status_code == 200 and 0.33 <= overhead <= 0.34
    else:
        # The fixed service also takes the image as a file part of multipart/form-data: the
        # bytes as they are, plus a few hundred bytes of part headers.
        png = _png_of_size(2**20)
        raw = service.api.post_task_multipart(user, meta="m", image=png)
        assert raw.status_code == 201, raw.text
        assert len(png) < len(raw.request.body) < len(png) + 1024
        assert service.image_path(raw.json()["id"], "png").read_bytes() == png


def _png_of_size(size: int) -> bytes:
    """A real PNG of about ``size`` bytes (noise does not compress)."""
    import io
    import os

    from PIL import Image

    side = int((size / 3) ** 0.5)
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(out, "PNG",
                                                                          compress_level=0)
    return out.getvalue()


@evidence("C2-33")
def test_task_list_has_no_pagination(service, side):
    user = service.api.create_user("a@example.com")
    service.db.all("INSERT INTO task (free, metadata, owner_id) SELECT true, 'm', %s "
                   "FROM generate_series(1, 500)", user["id"])
    r = service.api.get("/tasks", user, params={"limit": 10, "page": 2, "per_page": 10})
    if side == "as_given":
        assert isinstance(r.json(), list) and len(r.json()) == 500
    else:
        assert len(r.json()["items"]) == 10


@evidence("C2-34")
def test_status_codes_and_field_names_of_responses(service, side):
    api = service.api
    created = api.request("POST", "/users", json={"email": "a@example.com"})
    user = created.json()
    task = api.post_task(user, meta="x")
    deleted = api.delete(f"/tasks/{task.json()['id']}", user)
    if side == "as_given":
        assert (created.status_code, task.status_code) == (200, 200)
        assert "Location" not in created.headers and "Location" not in task.headers
        assert "meta" not in task.json() and task.json()["metadata"] == "x"  # sent as "meta"
        assert (deleted.status_code, deleted.json()) == (200, {})
    else:
        assert (created.status_code, task.status_code, deleted.status_code) == (201, 201, 204)


@pytest.mark.finding("C2-35", side="as_given")
def test_readability_nits_are_in_the_source():
    source = AS_GIVEN.read_text()
    tree = ast.parse(source)
    segment = lambda node: ast.get_source_segment(source, node)  # noqa: E731 - (ast.unparse is 3.9+)
    joins = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
             and segment(n.func) == "os.path.join" and "task_images" in segment(n)]
    assert len(joins) == 3  # the image path is built in three places
    assert "(Task.free == True)" in source and ".limit(1).first()" in source
    assert "model_to_dict(t, recurse=True)" in source  # recurse=True is already the default
    import inspect

    from playhouse.shortcuts import model_to_dict
    assert inspect.signature(model_to_dict).parameters["recurse"].default is True


@pytest.mark.finding("C2-35", side="fixed")
def test_fixed_source_builds_image_path_once():
    sources = {p.relative_to(AS_GIVEN.parents[1] / "fixed").as_posix(): p.read_text()
               for p in (AS_GIVEN.parents[1] / "fixed").rglob("*.py")}
    assert len(sources) > 10  # the whole package is read, not one file
    assert [name for name, src in sources.items() if "== True" in src] == []
    # The image file name is built in one place; nothing else spells the directory.
    assert sum(src.count("task_images") for src in sources.values()) == 1
    assert [name for name, src in sources.items() if 'f"{task_id}.{ext}"' in src] == ["storage.py"]


@pytest.mark.finding("C2-35", side="as_given")
def test_peewee_needs_neither_eq_true_nor_limit_before_first(monkeypatch):
    import peewee

    module = load_app_module(fresh=True)
    Task = module.Task
    with_eq, params = Task.select().where(Task.free == True).sql()  # noqa: E712 - the original's form
    bare, no_params = Task.select().where(Task.free).sql()
    assert with_eq.endswith('WHERE ("t1"."free" = %s)') and params == [True]
    assert bare.endswith('WHERE "t1"."free"') and no_params == []  # the column alone is the condition
    # first() sets LIMIT 1 itself (peewee's SelectBase.first), so .limit(1) before it adds nothing
    monkeypatch.setattr(peewee.SelectBase, "execute", lambda self, database: [])
    query = Task.select()
    assert query.first() is None
    sql, params = query.sql()
    assert sql.endswith("LIMIT %s") and params == [1]


@pytest.mark.both_stacks
def test_first_request_shim_only_where_flask_lacks_the_api(stack):
    """The as-given service runs on Flask's own ``before_first_request`` where it exists (the
    2020 stack, Flask 1.1), and on the shim of ``_compat.py`` where Flask removed it (2.3+)."""
    module = load_app_module(fresh=True)
    native = getattr(flask.Flask, "before_first_request", None)
    if stack == "2020":
        assert native is not None and module.app.before_first_request.__func__ is native
        assert module.app.before_first_request_funcs == [module.initialize_db]
    else:
        assert native is None and module.app.before_first_request.__module__.endswith("_compat")
