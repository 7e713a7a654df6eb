"""Evidence for the Case 2 findings added by the completeness review (C2-36 .. C2-39).

Claims go through each service's own protocol (``Api.claim``: ``GET /take_free_task`` as given,
``POST /tasks/claim`` with a lease on the fixed service); the fixed service's lifecycle is
exercised as its OpenAPI document describes it (complete and release take ``{"lease"}``).
"""
from __future__ import annotations

import ast
import contextlib
import secrets
from pathlib import Path

import peewee
import psycopg2
import pytest

from .helpers import Rendezvous, evidence, in_threads, wait_until

AS_GIVEN = Path(__file__).resolve().parents[2] / "reference" / "case2" / "as_given" / "app.py"


def set_database_isolation(inspector, level: str) -> None:
    """What a DBA does: new sessions of this database start at ``level``."""
    name = inspector.one("SELECT current_database()")
    inspector.all(f'ALTER DATABASE "{name}" SET default_transaction_isolation TO %s', level)


def session_isolation(svc) -> str:
    """The isolation level of a session from the service's own database object."""
    db = svc.module.db
    db.connect(reuse_if_open=True)
    try:
        return db.execute_sql("SHOW transaction_isolation").fetchone()[0]
    finally:
        db.close()


def new_session_isolation(url: str) -> str:
    """What any other client of the database gets: its default."""
    with contextlib.closing(psycopg2.connect(url, connect_timeout=10)) as conn, conn.cursor() as cur:
        cur.execute("SHOW transaction_isolation")
        return cur.fetchone()[0]


def _taking(request, *args, **kwargs):
    return request.path == "/take_free_task"


# --- C2-36: the isolation level is left to the server's default -----------------------------------


@pytest.mark.finding("C2-36", side="as_given")
def test_service_runs_at_the_default_read_committed(service):
    assert "isolation" not in AS_GIVEN.read_text(encoding="utf-8").lower()  # nothing chooses a level
    assert session_isolation(service) == "read committed"


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
    r1, r2 = in_threads(lambda: svc.api.claim(user), lambda: svc.api.claim(user))
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
@pytest.mark.parametrize("level", ["repeatable read", "serializable"])
@pytest.mark.parametrize("side", ["fixed"])
def test_fixed_service_keeps_read_committed_under_a_stricter_database_default(
        make_service, inspector, monkeypatch, side, level):
    set_database_isolation(inspector, level)
    svc = make_service(threads=2)
    # Any other session of this database starts at the DBA's level; the service's do not.
    assert new_session_isolation(svc.module.config.database_url) == level
    assert session_isolation(svc) == "read committed"
    user = svc.api.create_user("owner@example.com")

    # Two creations meet right before the counter UPDATE: both transactions already have their
    # snapshot (taken at the INSERT), and the second UPDATE waits for the first one's row lock.
    # READ COMMITTED re-reads the row as committed and adds its 1; at the database's level the
    # waiter would fail with SQLSTATE 40001 ("could not serialize access").
    counting = Rendezvous(2).install(
        monkeypatch, peewee.Database, "execute_sql",
        lambda request, db, sql, *a, **k: (request.path == "/tasks"
                                           and sql.startswith(f"UPDATE {svc.db.users_table}")),
        where="before")
    created = in_threads(lambda: svc.api.post_task(user), lambda: svc.api.post_task(user))
    assert counting.met
    assert [r.status_code for r in created] == [201, 201], [r.text[:200] for r in created]
    assert svc.db.tasks_number(user["id"]) == 2
    assert svc.api.get("/total_tasks_created", user).json()["total_tasks_created"] == 2

    # Complete waits on a row that another transaction (say, an operator extending the lease)
    # has changed and not yet committed; once it commits, complete re-checks the new row and
    # succeeds, instead of failing on a row changed since its snapshot.
    claimed = svc.api.claim(user).json()
    task_id, lease = claimed["task"]["id"], claimed["lease"]["id"]
    writer = psycopg2.connect(svc.module.config.database_url, connect_timeout=10)
    try:
        with writer.cursor() as cur:
            cur.execute("UPDATE task SET lease_expires_at = lease_expires_at + interval '1 minute' "
                        "WHERE id = %s", (task_id,))

        def release_writer_once_complete_waits():
            try:
                svc.db.wait_for(svc.db.lock_waiters, what="complete waits on the row lock")
            finally:
                writer.commit()

        done, _ = in_threads(lambda: svc.api.post(f"/tasks/{task_id}/complete", user,
                                                  json={"lease": lease}),
                             release_writer_once_complete_waits)
    finally:
        writer.close()
    assert done.status_code == 200 and done.json()["state"] == "done", done.text[:300]
    assert svc.errors == []


# --- C2-37: a taken task can never be completed, released or expire -------------------------------


@pytest.mark.finding("C2-37", side="as_given")
def test_taken_task_is_taken_forever(service):
    user = service.api.create_user("worker@example.com")
    task = service.api.create_task(user)
    assert service.api.claim(user).json()["id"] == task["id"]
    # The worker crashes, or finishes: there is no request to report either.
    attempts = {
        "release": service.api.request("POST", f"/tasks/{task['id']}/release", user).status_code,
        "complete": service.api.request("POST", f"/tasks/{task['id']}/complete", user).status_code,
        "update": service.api.request("PATCH", f"/tasks/{task['id']}", user, json={"free": True}).status_code,
        "replace": service.api.request("PUT", f"/tasks/{task['id']}", user, json={"free": True}).status_code,
    }
    assert attempts == {"release": 404, "complete": 404, "update": 405, "replace": 405}
    assert service.api.claim(user).status_code == 404  # the only task is gone from the queue for good
    assert service.db.tasks() == [(task["id"], False, "meta", user["id"])]
    # One boolean: "being worked on" and "done" are the same row, and nothing records when or by whom.
    columns = {r[0] for r in service.db.all(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'task'")}
    assert columns == {"id", "free", "metadata", "owner_id"}
    writes = [n for n in ast.walk(ast.parse(AS_GIVEN.read_text(encoding="utf-8")))
              if isinstance(n, ast.Assign) and any(getattr(t, "attr", None) == "free" for t in n.targets)]
    assert len(writes) == 1  # `task.free = False` in take_free_task; nothing ever sets it back


@pytest.mark.finding("C2-37", side="fixed")
@pytest.mark.parametrize("side", ["fixed"])
def test_fixed_claimed_task_is_released_completed_or_expires(service, side):
    api = service.api
    user = api.create_user("worker@example.com")
    task = api.create_task(user)

    def claim(**body) -> dict:
        r = api.claim(user, json=body)
        assert r.status_code == 200, (r.status_code, r.text[:300])
        return r.json()

    def settle(task_id: int, action: str, lease: str):
        return api.post(f"/tasks/{task_id}/{action}", user, json={"lease": lease})

    first = claim()
    assert first["task"]["id"] == task["id"] and first["task"]["state"] == "claimed"
    assert first["lease"]["claimed_by"] == user["id"] and first["lease"]["claimed_at"]
    assert api.claim(user).status_code == 204  # nothing else to take
    # The worker gives the task back: it is free, and handed out again.
    released = settle(task["id"], "release", first["lease"]["id"])
    assert released.status_code == 200 and released.json()["state"] == "free"
    again = claim()
    assert again["task"]["id"] == task["id"] and again["lease"]["id"] != first["lease"]["id"]
    # The worker finishes it: "done" is a state of its own, with its time, and final.
    done = settle(task["id"], "complete", again["lease"]["id"])
    assert done.status_code == 200 and done.json()["state"] == "done" and done.json()["completed_at"]
    assert api.claim(user).status_code == 204
    assert settle(task["id"], "release", again["lease"]["id"]).status_code == 409
    assert api.get(f"/tasks/{task['id']}", user).json()["state"] == "done"
    # A worker that dies holding a task: once its lease runs out (real clock), the task is free
    # and the next claim gets it.
    orphan = api.create_task(user)
    assert claim(lease_seconds=1)["task"]["id"] == orphan["id"]
    wait_until(lambda: api.get(f"/tasks/{orphan['id']}", user).json()["state"] == "free",
               timeout=10, what="the one-second lease runs out")
    assert claim()["task"]["id"] == orphan["id"]


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


@evidence("C2-38")
def test_no_table_is_named_by_a_reserved_word(service, side):
    for email in ("a@example.com", "b@example.com"):
        service.api.create_user(email)  # the as-given service creates its tables now
    db = service.db
    reserved = db.all(
        "SELECT t.tablename FROM pg_tables t JOIN pg_get_keywords() k ON k.word = t.tablename "
        "WHERE t.schemaname = current_schema() AND k.catcode = 'R'")
    assert reserved == ([("user",)] if side == "as_given" else [])
    # The tables are there (the check above looked at something), under the protocol's names.
    bare = db.users_table.strip('"')  # the users table's name as written by hand, unquoted
    tables = {r[0] for r in db.all("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
    assert {bare, "task"} <= tables
    # The users table named by hand, without quotes, as in psql or a report.
    unquoted = db.one(f"SELECT count(*) FROM {bare}")
    if side == "as_given":
        assert unquoted == 1  # CURRENT_USER, not the two users
    else:
        assert unquoted == 2
        assert [r[0] for r in db.all(f"SELECT email FROM {bare} ORDER BY id")] == ["a@example.com",
                                                                                   "b@example.com"]


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
