"""Races forced deterministically: the service runs on a real threaded WSGI server in this
process and the test makes two requests meet inside peewee calls (app.py is not touched)."""
from __future__ import annotations

import peewee
import pytest

from .helpers import Gate, Rendezvous, evidence, in_threads


def _is(path, method="GET"):
    return lambda request, *a, **k: request.path == path and request.method == method


def _sql(path, prefix, method="POST"):
    """Matches the statement starting with ``prefix`` sent by a request to ``path``: the
    fixed service does each of these steps in one SQL statement, so the forced interleaving
    makes the requests meet (or wait) right before that statement."""
    return lambda request, db, sql, *a, **k: (request.path == path and request.method == method
                                              and sql.startswith(prefix))


@evidence("C2-01")
def test_take_free_task_hands_one_task_to_two_requests(make_service, monkeypatch, side):
    svc = make_service(threads=2)
    user = svc.api.create_user("owner@example.com")
    task = svc.api.create_task(user)
    if side == "as_given":
        # Both requests have read the same free row before either marks it taken.
        meeting = Rendezvous(2).install(monkeypatch, peewee.SelectBase, "first", _is("/take_free_task"))
    else:
        # Both requests are released together right before the claiming UPDATE.
        meeting = Rendezvous(2).install(monkeypatch, peewee.Database, "execute_sql",
                                        _sql("/tasks/claim", 'UPDATE "task"'), where="before")

    r1, r2 = in_threads(lambda: svc.api.claim(user), lambda: svc.api.claim(user))
    assert meeting.met  # both requests were inside the race window
    statuses = sorted([r1.status_code, r2.status_code])
    if side == "as_given":
        assert statuses == [200, 200]
        assert r1.json()["id"] == r2.json()["id"] == task["id"]
        assert svc.db.tasks() == [(task["id"], False, "meta", user["id"])]
    else:
        assert statuses == [200, 204]
        assert svc.api.protocol.claimed(next(r for r in (r1, r2) if r.status_code == 200))["id"] \
            == task["id"]
        assert svc.db.tasks() == [(task["id"], False, "meta", user["id"])]


@evidence("C2-02")
def test_concurrent_creations_lose_counter_updates(make_service, monkeypatch, side):
    svc = make_service(threads=2)
    user = svc.api.create_user("owner@example.com")
    if side == "as_given":
        # Both requests have loaded the user (tasks_number = 0) before either saves 0 + 1.
        meeting = Rendezvous(2).install(monkeypatch, peewee.Model, "save",
                              lambda request, model, *a, **k: request.path == "/tasks"
                              and type(model).__name__ == "User", where="before")
    else:
        # Both requests have inserted their task and meet right before the counter UPDATE.
        meeting = Rendezvous(2).install(monkeypatch, peewee.Database, "execute_sql",
                                        _sql("/tasks", f"UPDATE {svc.db.users_table}"), where="before")

    r1, r2 = in_threads(lambda: svc.api.post_task(user), lambda: svc.api.post_task(user))
    assert meeting.met  # both requests were inside the race window
    assert [r1.status_code, r2.status_code] == [200 if side == "as_given" else 201] * 2
    assert len(svc.db.tasks()) == 2
    counter = svc.db.tasks_number(user["id"])
    total = svc.api.get("/total_tasks_created", user).json()["total_tasks_created"]
    if side == "as_given":
        assert counter == 1 and total == 1  # two tasks created, one counted
    else:
        assert counter == 2 and total == 2


@evidence("C2-03")
def test_take_free_task_grants_a_task_deleted_meanwhile(make_service, monkeypatch, side):
    svc = make_service(threads=2)
    user = svc.api.create_user("owner@example.com")
    task = svc.api.create_task(user)
    gate = Gate()
    if side == "as_given":
        gate.install(monkeypatch, peewee.SelectBase, "first", _is("/take_free_task"))
    else:  # held right before the claiming UPDATE
        gate.install(monkeypatch, peewee.Database, "execute_sql",
                     _sql("/tasks/claim", 'UPDATE "task"'), where="before")

    def take():
        return svc.api.claim(user)

    def delete_while_take_holds_the_row():
        assert gate.reached.wait(10)
        try:
            return svc.api.delete(f"/tasks/{task['id']}", user)
        finally:
            gate.open()

    taken, deleted = in_threads(take, delete_while_take_holds_the_row)
    assert deleted.status_code == (200 if side == "as_given" else 204)
    assert svc.db.tasks() == []
    if side == "as_given":
        assert taken.status_code == 200 and taken.json()["id"] == task["id"]
    else:
        assert taken.status_code == 204


@evidence("C2-03")
def test_two_deletes_of_one_task_one_fails_with_500(make_service, monkeypatch, side):
    svc = make_service(threads=2)
    user = svc.api.create_user("owner@example.com")
    task = svc.api.create_task(user)
    if side == "as_given":
        # Both deletes have fetched the row before either removes the file.
        meeting = Rendezvous(2).install(monkeypatch, peewee.BaseModelSelect, "get",
                              lambda request, query, *a, **k: request.method == "DELETE"
                              and query.model.__name__ == "Task")
    else:
        # Both deletes are released together right before the single DELETE … RETURNING.
        meeting = Rendezvous(2).install(monkeypatch, peewee.Database, "execute_sql",
                                        _sql(f"/tasks/{task['id']}", 'DELETE FROM "task"', "DELETE"),
                                        where="before")

    r1, r2 = in_threads(lambda: svc.api.delete(f"/tasks/{task['id']}", user),
                        lambda: svc.api.delete(f"/tasks/{task['id']}", user))
    assert meeting.met  # both requests were inside the race window
    statuses = sorted([r1.status_code, r2.status_code])
    if side == "as_given":
        assert statuses == [200, 500]
        assert svc.error_names() == ["FileNotFoundError"]
    else:
        assert statuses == [204, 404] and svc.errors == []
        assert not svc.image_path(task["id"]).exists()
    assert svc.db.tasks() == []


@evidence("C2-15")
def test_concurrent_duplicate_email_one_500_database_keeps_one_row(make_service, monkeypatch, side):
    svc = make_service(threads=2)
    svc.api.create_user("first@example.com")  # tables exist from here on
    gate = Gate()
    gate.install(monkeypatch, peewee.Database, "execute_sql",
                 lambda request, db, sql, *a, **k: sql.startswith(f"INSERT INTO {svc.db.users_table}"))

    def second_after_first_inserted():
        assert gate.reached.wait(10)
        try:
            # The second INSERT waits on the first one's uncommitted unique-index entry.
            svc.db.wait_for(svc.db.lock_waiters, what="second INSERT waits on the first")
        finally:
            gate.open()

    post = lambda: svc.api.request("POST", "/users", json={"email": "dup@example.com"})  # noqa: E731

    def post_after_first_inserted():
        assert gate.reached.wait(10)
        return post()

    results = in_threads(post, post_after_first_inserted, second_after_first_inserted)
    statuses = sorted(r.status_code for r in results[:2])
    emails = [u[1] for u in svc.db.users()]
    assert emails.count("dup@example.com") == 1  # the unique index holds
    if side == "as_given":
        assert statuses == [200, 500]
        assert [n for n in svc.error_names()] == ["IntegrityError"]
    else:
        assert statuses == [201, 409]


@pytest.mark.finding("C2-03", side="fixed")
@pytest.mark.parametrize("side", ["fixed"])
def test_image_read_while_its_task_is_deleted_is_404_not_500(make_service, monkeypatch, side):
    """The image view has read the row and found the file; a DELETE commits and removes the
    file before the view opens it. The task is gone: 404, as for any deleted task."""
    import werkzeug.utils

    svc = make_service(threads=2)
    user = svc.api.create_user("owner@example.com")
    task = svc.api.create_task(user)
    gate = Gate()  # held right before the file is opened (after Werkzeug's isfile check)
    gate.install(monkeypatch, werkzeug.utils, "send_file",
                 lambda request, *a, **k: request.path == f"/tasks/{task['id']}/image", where="before")

    def delete_while_the_read_holds():
        assert gate.reached.wait(10)
        try:
            return svc.api.delete(f"/tasks/{task['id']}", user)
        finally:
            gate.open()

    image, deleted = in_threads(lambda: svc.api.get(f"/tasks/{task['id']}/image", user),
                                delete_while_the_read_holds)
    assert deleted.status_code == 204 and svc.stored_files() == []
    assert image.status_code == 404, image.text[:300]
