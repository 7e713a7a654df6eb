"""Evidence for the Case 2 findings added by the completeness review (C2-36 .. C2-39).

The fixed halves talk to the redesigned service over HTTP only (its internals are being reworked):
claims go to ``POST /tasks/claim`` when the service routes it, else to the older
``POST /take_free_task``; "nothing to claim" is 204 or 404.
"""
from __future__ import annotations

import ast
import secrets
from pathlib import Path

import peewee
import psycopg2
import pytest

from .helpers import Rendezvous, in_threads, evidence

AS_GIVEN = Path(__file__).resolve().parents[2] / "reference" / "case2" / "as_given" / "app.py"
NOTHING_TO_CLAIM = (204, 404)


def claim(svc, user):
    """Take a free task: GET /take_free_task as given; the fixed service's claim endpoint."""
    if svc.side == "as_given":
        return svc.api.get("/take_free_task", user)
    rules = {r.rule for r in svc.module.app.url_map.iter_rules()}
    path = "/tasks/claim" if "/tasks/claim" in rules else "/take_free_task"
    return svc.api.request("POST", path, user)


def set_database_isolation(inspector, level: str) -> None:
    """What a DBA does: new sessions of this database start at ``level``."""
    name = inspector.one("SELECT current_database()")
    inspector.all(f'ALTER DATABASE "{name}" SET default_transaction_isolation TO %s', level)


def _taking(request, *args, **kwargs):
    return request.path == "/take_free_task"


# --- C2-36: the isolation level is left to the server's default -----------------------------------


@pytest.mark.finding("C2-36", side="as_given")
def test_service_runs_at_the_default_read_committed(service):
    assert "isolation" not in AS_GIVEN.read_text(encoding="utf-8").lower()  # nothing chooses a level
    db = service.module.db
    db.connect(reuse_if_open=True)
    try:
        assert db.execute_sql("SHOW transaction_isolation").fetchone()[0] == "read committed"
    finally:
        db.close()


@pytest.mark.finding("C2-36", side="as_given")
@pytest.mark.parametrize("level", ["repeatable read", "serializable"])
def test_stricter_isolation_turns_the_double_grant_into_an_unhandled_500(make_service, inspector, monkeypatch,
                                                                        level):
    set_database_isolation(inspector, level)
    svc = make_service(threads=2)
    user = svc.api.create_user("owner@example.com")
    task = svc.api.create_task(user)
    # The interleaving of C2-01: both requests have read the free row before either marks it.
    meeting = Rendezvous(2).install(monkeypatch, peewee.SelectBase, "first", _taking)
    r1, r2 = in_threads(lambda: claim(svc, user), lambda: claim(svc, user))
    assert meeting.met
    won, lost = sorted((r1, r2), key=lambda r: r.status_code)
    # The database refuses the second UPDATE instead of granting the task twice ...
    assert (won.status_code, lost.status_code) == (200, 500)
    assert won.json()["id"] == task["id"]
    assert svc.db.tasks() == [(task["id"], False, "meta", user["id"])]
    assert [t.split("\n")[0] for t in svc.error_texts()] == [
        "OperationalError: could not serialize access due to concurrent update"]
    # ... but the loser gets an HTML 500 with no hint that a retry would do, and (C2-04) its
    # thread's connection stays in the failed transaction.
    assert lost.headers["Content-Type"].startswith("text/html") and "Retry-After" not in lost.headers
    assert sorted(a["state"] for a in svc.db.activity()) == ["idle", "idle in transaction (aborted)"]


@pytest.mark.finding("C2-36", side="fixed")
@pytest.mark.pending("the fixed service neither pins READ COMMITTED nor retries serialization failures "
                     "(SQLSTATE 40001); stream 3 (case2) owns the fix")
@pytest.mark.parametrize("side", ["fixed"])
def test_fixed_claims_and_creations_survive_a_serializable_database(make_service, inspector, side):
    set_database_isolation(inspector, "serializable")
    svc = make_service(threads=4)
    user = svc.api.create_user("owner@example.com")
    created = in_threads(*[lambda: svc.api.post_task(user) for _ in range(8)])
    claims = in_threads(*[lambda: claim(svc, user) for _ in range(8)])
    assert [r.status_code for r in created] == [201] * 8
    assert [r.status_code for r in claims] == [200] * 8
    assert len({r.json()["id"] for r in claims}) == 8
    assert svc.db.tasks_number(user["id"]) == len(svc.db.tasks()) == 8


# --- C2-37: a taken task can never be completed, released or expire -------------------------------


@pytest.mark.finding("C2-37", side="as_given")
def test_taken_task_is_taken_forever(service):
    user = service.api.create_user("worker@example.com")
    task = service.api.create_task(user)
    assert claim(service, user).json()["id"] == task["id"]
    # The worker crashes, or finishes: there is no request to report either.
    attempts = {
        "release": service.api.request("POST", f"/tasks/{task['id']}/release", user).status_code,
        "complete": service.api.request("POST", f"/tasks/{task['id']}/complete", user).status_code,
        "update": service.api.request("PATCH", f"/tasks/{task['id']}", user, json={"free": True}).status_code,
        "replace": service.api.request("PUT", f"/tasks/{task['id']}", user, json={"free": True}).status_code,
    }
    assert attempts == {"release": 404, "complete": 404, "update": 405, "replace": 405}
    assert claim(service, user).status_code == 404  # the only task is gone from the queue for good
    assert service.db.tasks() == [(task["id"], False, "meta", user["id"])]
    # One boolean: "being worked on" and "done" are the same row, and nothing records when or by whom.
    columns = {r[0] for r in service.db.all(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'task'")}
    assert columns == {"id", "free", "metadata", "owner_id"}
    writes = [n for n in ast.walk(ast.parse(AS_GIVEN.read_text(encoding="utf-8")))
              if isinstance(n, ast.Assign) and any(getattr(t, "attr", None) == "free" for t in n.targets)]
    assert len(writes) == 1  # `task.free = False` in take_free_task; nothing ever sets it back


@pytest.mark.finding("C2-37", side="fixed")
@pytest.mark.pending("lifecycle lands with the case2 branch")
@pytest.mark.parametrize("side", ["fixed"])
def test_fixed_claimed_task_can_be_released_and_completed(service, side):
    user = service.api.create_user("worker@example.com")
    task = service.api.create_task(user)
    first = service.api.request("POST", "/tasks/claim", user)
    assert first.status_code == 200 and first.json()["id"] == task["id"]
    assert service.api.request("POST", "/tasks/claim", user).status_code == 204
    assert service.api.request("POST", f"/tasks/{task['id']}/release", user).status_code in (200, 204)
    again = service.api.request("POST", "/tasks/claim", user)
    assert again.status_code == 200 and again.json()["id"] == task["id"]
    assert service.api.request("POST", f"/tasks/{task['id']}/complete", user).status_code in (200, 204)
    assert service.api.request("POST", "/tasks/claim", user).status_code == 204
    assert service.api.request("POST", f"/tasks/{task['id']}/release", user).status_code >= 400  # done is final


# --- C2-38: the table is named `user`, a reserved word -------------------------------------------


@pytest.mark.finding("C2-38", side="as_given")
def test_unquoted_user_table_silently_means_the_current_role(service):
    for email in ("a@example.com", "b@example.com"):
        service.api.create_user(email)
    db = service.db
    assert db.one("SELECT catcode FROM pg_get_keywords() WHERE word = 'user'") == "R"  # reserved
    assert db.one('SELECT count(*) FROM "user"') == 2
    # Without quotes `user` is CURRENT_USER: one row, the database role, and no error.
    assert db.one("SELECT count(*) FROM user") == 1
    assert db.all("SELECT * FROM user") == [(db.one("SELECT current_user"),)]
    with pytest.raises(psycopg2.errors.UndefinedColumn):
        db.all("SELECT email FROM user")
    with pytest.raises(psycopg2.errors.SyntaxError):
        db.all("DELETE FROM user WHERE id = 1")
    assert db.one('SELECT count(*) FROM "user"') == 2


@evidence("C2-38", fixed_pending="the fixed schema still names its table \"user\"; renaming it (and every "
                                "query that names it) is stream 3's (case2) call")
def test_no_table_is_named_by_a_reserved_word(service, side):
    if side == "as_given":
        service.api.create_user("a@example.com")  # the as-given service creates its tables now
    reserved = service.db.all(
        "SELECT t.tablename FROM pg_tables t JOIN pg_get_keywords() k ON k.word = t.tablename "
        "WHERE t.schemaname = current_schema() AND k.catcode = 'R'")
    if side == "as_given":
        assert reserved == [("user",)]
    else:
        assert reserved == []


# --- C2-39: nothing limits guessing ids ----------------------------------------------------------


@pytest.mark.finding("C2-39", side="as_given")
def test_enumerating_ids_reveals_users_and_tasks(service):
    api = service.api
    alice = api.create_user("alice@example.com")
    secrets_of_alice = [api.create_task(alice, meta=f"secret {i}")["id"] for i in range(3)]
    bob = api.create_user("bob@example.com")
    # Bob walks the id space with his own id: no token, no limit.
    tasks = {i: api.get(f"/tasks/{i}", bob) for i in range(1, 11)}
    users = {i: api.get("/total_tasks_created", params={"user_id": i}) for i in range(1, 11)}
    assert [i for i, r in tasks.items() if r.status_code == 200] == secrets_of_alice
    assert {tasks[i].json()["metadata"] for i in secrets_of_alice} == {"secret 0", "secret 1", "secret 2"}
    assert {r.status_code for i, r in tasks.items() if i not in secrets_of_alice} == {500}
    # "who exists" answers itself: 200 for a user id, 500 for none; either one acts as that user
    assert [i for i, r in users.items() if r.status_code == 200] == sorted([alice["id"], bob["id"]])
    # a burst is served in full: no 429, no Retry-After, no slowdown that a client could see
    burst = [api.get(f"/tasks/{1 + i % 10}", bob) for i in range(100)]
    answered = tasks.values(), users.values(), burst
    assert all(r.status_code != 429 and "Retry-After" not in r.headers for group in answered for r in group)


@pytest.mark.finding("C2-39", side="fixed")
@pytest.mark.parametrize("side", ["fixed"])
def test_fixed_enumeration_learns_nothing(service, side):
    api = service.api
    alice = api.create_user("alice@example.com")
    task = api.create_task(alice, meta="secret")
    bob = api.create_user("bob@example.com")
    missing = task["id"] + 1000
    others, nobody = api.get(f"/tasks/{task['id']}", bob), api.get(f"/tasks/{missing}", bob)
    assert others.status_code == nobody.status_code == 404
    assert others.json() == nobody.json()  # "someone else's" and "no such task" look the same
    # identity is a 256-bit token, not a counter: every guess gets the same 401, and a user id
    # in the query says nothing about whether that user exists
    guesses = [api.get("/tasks", {"token": secrets.token_urlsafe(32)}) for _ in range(5)]
    assert {r.status_code for r in guesses} == {401} and len({r.text for r in guesses}) == 1
    by_id = [api.get("/tasks", params={"user_id": i}) for i in (alice["id"], bob["id"], missing)]
    assert {r.status_code for r in by_id} == {401} and len({r.text for r in by_id}) == 1
