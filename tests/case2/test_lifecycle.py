"""The claim lifecycle of the fixed service: claim with a lease, complete, release, expiry.

Races are forced the way the claim's own race is (test_races.py): requests meet, or wait, right
before their one SQL statement; then the same operations run under gunicorn with real
concurrent clients and the history they saw is checked.
"""
from __future__ import annotations

import datetime as dt
import random
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import peewee
import pytest

from .helpers import Gate, Rendezvous, in_threads


@pytest.fixture
def side():
    return "fixed"


def _sql(path_suffix, prefix):
    return lambda request, db, sql, *a, **k: (request.method == "POST"
                                              and request.path.endswith(path_suffix)
                                              and sql.startswith(prefix))


def _expire(svc, task_id):
    """Let the lease of ``task_id`` run out (its expiry moved into the past)."""
    svc.db.all("UPDATE task SET lease_expires_at = now() - interval '1 second' WHERE id = %s",
               task_id)


def _settle(svc, user, task_id, action, lease):
    return svc.api.post(f"/tasks/{task_id}/{action}", user, json={"lease": lease})


def _time(text):
    return dt.datetime.fromisoformat(text)


@pytest.mark.finding("C2-01", side="fixed")
@pytest.mark.finding("C2-30", side="fixed")
def test_claim_records_who_when_and_a_lease(service):
    api = service.api
    user = api.create_user("a@example.com")
    task = api.create_task(user)
    r = api.claim(user, json={"lease_seconds": 60})
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    claim = r.json()
    lease = claim["lease"]
    assert claim["task"]["id"] == task["id"] and claim["task"]["state"] == "claimed"
    assert lease["claimed_by"] == user["id"] == claim["task"]["claimed_by"]
    assert uuid.UUID(lease["id"])
    assert _time(lease["expires_at"]) - _time(lease["claimed_at"]) == dt.timedelta(seconds=60)
    row = service.db.one("SELECT claimed_by_id, lease_id::text, lease_expires_at - claimed_at, "
                         "free FROM task WHERE id = %s", task["id"])
    assert row == (user["id"], lease["id"], dt.timedelta(seconds=60), False)
    shown = api.get(f"/tasks/{task['id']}", user).json()
    assert shown["state"] == "claimed" and shown["lease_expires_at"] == lease["expires_at"]
    assert api.claim(user).status_code == 204  # nothing else is free
    # The default lease and its bounds.
    assert api.claim(user, json={"lease_seconds": 0}).status_code == 400
    assert api.claim(user, json={"lease_seconds": True}).status_code == 400


@pytest.mark.finding("C2-01", side="fixed")
def test_complete_and_release_need_the_current_live_lease(service):
    api = service.api
    alice, bob = api.create_user("alice@example.com"), api.create_user("bob@example.com")
    task = api.create_task(alice)
    first = api.claim(alice).json()["lease"]["id"]
    released = _settle(service, alice, task["id"], "release", first)
    assert released.status_code == 200 and released.json()["state"] == "free"
    assert released.json()["claimed_by"] is None
    assert _settle(service, alice, task["id"], "release", first).status_code == 409
    second = api.claim(alice).json()["lease"]["id"]
    assert second != first
    assert _settle(service, alice, task["id"], "complete", first).status_code == 409  # stale
    assert _settle(service, bob, task["id"], "complete", second).status_code == 404  # not his
    assert api.post(f"/tasks/{task['id']}/complete", alice,
                    json={"lease": "not-a-lease"}).status_code == 400
    assert api.post(f"/tasks/{task['id']}/complete", alice).status_code == 415  # no body
    done = _settle(service, alice, task["id"], "complete", second)
    assert done.status_code == 200 and done.json()["state"] == "done"
    assert done.json()["completed_at"] is not None
    assert _settle(service, alice, task["id"], "complete", second).status_code == 409
    assert _settle(service, alice, task["id"], "release", second).status_code == 409
    assert api.claim(alice).status_code == 204  # done is done
    assert service.db.one("SELECT completed_at IS NOT NULL FROM task WHERE id = %s", task["id"])


@pytest.mark.finding("C2-01", side="fixed")
def test_an_expired_lease_makes_the_task_free_again(service):
    api = service.api
    user = api.create_user("a@example.com")
    older, newer = api.create_task(user), api.create_task(user)
    lease = api.claim(user, json={"lease_seconds": 1}).json()["lease"]
    assert api.claim(user).json()["task"]["id"] == newer["id"]
    time.sleep(1.1)  # the real clock: a one-second lease runs out
    shown = api.get(f"/tasks/{older['id']}", user).json()
    assert shown["state"] == "free" and shown["free"] is True
    assert _settle(service, user, older["id"], "complete", lease["id"]).status_code == 409
    again = api.claim(user).json()
    assert again["task"]["id"] == older["id"] and again["lease"]["id"] != lease["id"]
    listed = {t["id"]: t["state"] for t in api.get("/tasks", user).json()["items"]}
    assert listed == {older["id"]: "claimed", newer["id"]: "claimed"}


@pytest.mark.finding("C2-01", side="fixed")
def test_stale_worker_cannot_complete_a_task_claimed_again(make_service, monkeypatch):
    """Worker A's complete waits right before its UPDATE; meanwhile A's lease runs out and
    worker B claims the task. A's complete then finds a lease that is not its own: 409."""
    svc = make_service(threads=2)
    user = svc.api.create_user("a@example.com")
    task = svc.api.create_task(user)
    lease_a = svc.api.claim(user).json()["lease"]["id"]
    gate = Gate()
    gate.install(monkeypatch, peewee.Database, "execute_sql",
                 _sql("/complete", 'UPDATE "task"'), where="before")

    def complete_a():
        return _settle(svc, user, task["id"], "complete", lease_a)

    def expire_then_claim_b():
        assert gate.reached.wait(10)
        try:
            _expire(svc, task["id"])
            return svc.api.claim(user)
        finally:
            gate.open()

    completed, claimed = in_threads(complete_a, expire_then_claim_b)
    assert claimed.status_code == 200 and claimed.json()["task"]["id"] == task["id"]
    assert completed.status_code == 409
    lease_b = claimed.json()["lease"]["id"]
    assert svc.db.one("SELECT lease_id::text, completed_at FROM task WHERE id = %s",
                      task["id"]) == (lease_b, None)
    assert _settle(svc, user, task["id"], "complete", lease_b).status_code == 200


@pytest.mark.finding("C2-01", side="fixed")
def test_complete_and_release_of_one_lease_one_wins(make_service, monkeypatch):
    svc = make_service(threads=2)
    user = svc.api.create_user("a@example.com")
    task = svc.api.create_task(user)
    lease = svc.api.claim(user).json()["lease"]["id"]
    meeting = Rendezvous(2).install(
        monkeypatch, peewee.Database, "execute_sql",
        lambda request, db, sql, *a, **k: (request.path.startswith(f"/tasks/{task['id']}/")
                                           and sql.startswith('UPDATE "task"')), where="before")
    done, released = in_threads(lambda: _settle(svc, user, task["id"], "complete", lease),
                                lambda: _settle(svc, user, task["id"], "release", lease))
    assert meeting.met
    assert sorted([done.status_code, released.status_code]) == [200, 409]
    state = svc.db.one("SELECT free, completed_at IS NOT NULL FROM task WHERE id = %s", task["id"])
    assert state == ((False, True) if done.status_code == 200 else (True, False))


@pytest.mark.finding("C2-01", side="fixed")
def test_two_claims_of_one_expired_lease_one_wins(make_service, monkeypatch):
    svc = make_service(threads=2)
    user = svc.api.create_user("a@example.com")
    task = svc.api.create_task(user)
    svc.api.claim(user)
    _expire(svc, task["id"])
    meeting = Rendezvous(2).install(monkeypatch, peewee.Database, "execute_sql",
                                    _sql("/tasks/claim", 'UPDATE "task"'), where="before")
    r1, r2 = in_threads(lambda: svc.api.claim(user), lambda: svc.api.claim(user))
    assert meeting.met
    assert sorted([r1.status_code, r2.status_code]) == [200, 204]


def _history_run(api, user, clients: int, seconds: float, seed: int) -> list[dict]:
    """Clients claim with one-second leases, then complete, release or abandon (let the lease
    run out). Every answer is kept."""
    history, lock = [], threading.Lock()
    deadline = time.monotonic() + seconds

    def client(i):
        rng = random.Random(seed + i)
        while time.monotonic() < deadline:
            r = api.claim(user, json={"lease_seconds": 1})
            if r.status_code == 204:
                time.sleep(0.05)
                continue
            claim = r.json()
            entry = {"task": claim["task"]["id"], "lease": claim["lease"]["id"],
                     "claimed_at": _time(claim["lease"]["claimed_at"]),
                     "expires_at": _time(claim["lease"]["expires_at"])}
            action = rng.choice(["complete", "release", "abandon", "complete"])
            time.sleep(rng.uniform(0, 0.3))
            if action != "abandon":
                s = api.post(f"/tasks/{entry['task']}/{action}", user, json={"lease": entry["lease"]})
                assert s.status_code in (200, 409), s.text
                entry[action] = s.status_code == 200
                if action == "complete" and s.status_code == 200:
                    entry["completed_at"] = _time(s.json()["completed_at"])
            with lock:
                history.append(entry)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients), timeout=seconds + 30))
    return history


@pytest.mark.finding("C2-01", side="fixed")
def test_lifecycle_under_gunicorn_keeps_one_live_lease_per_task(make_process, inspector):
    proc = make_process("gunicorn", threads=4)
    user = proc.api.create_user("load@example.com")
    for _ in range(6):
        proc.api.create_task(user)
    history = _history_run(proc.api, user, clients=6, seconds=4, seed=1)
    assert len(history) > 10, history
    grants = defaultdict(list)
    for entry in history:
        grants[entry["task"]].append(entry)
    for task_id, entries in grants.items():
        entries.sort(key=lambda e: e["claimed_at"])
        assert sum(bool(e.get("complete")) for e in entries) <= 1, entries
        for prev, nxt in zip(entries, entries[1:]):
            # A task is handed out again only after its previous lease was released or ran
            # out, and never after it was completed.
            assert prev.get("release") or nxt["claimed_at"] >= prev["expires_at"], (prev, nxt)
            assert not prev.get("complete"), (prev, nxt)
    completed = {e["task"]: e["lease"] for e in history if e.get("complete")}
    rows = dict(inspector.all("SELECT id, lease_id::text FROM task WHERE completed_at IS NOT NULL"))
    assert rows == completed
