"""Client, database inspector and interleaving hooks for the Case 2 evidence suite."""
from __future__ import annotations

import base64
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import psycopg2
import pytest
import requests

HTTP_TIMEOUT = 10.0
WAIT_TIMEOUT = 10.0

PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
BMP_MAGIC = b"BM" + bytes(52)
JPEG_MAGIC = b"\xff\xd8\xff\xe0" + bytes(16) + b"\xff\xd9"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------------------- the HTTP client


def query_param_auth(user: dict) -> dict:
    """The as-given service's "authentication": the user id as a query parameter."""
    return {"params": {"user_id": user["id"]}}


def bearer_token_auth(user: dict) -> dict:
    """The fixed service's authentication: the token issued at user creation, in a header."""
    return {"headers": {"Authorization": f"Bearer {user['token']}"}}


class Api:
    """A small client for the task service; ``auth(user)`` gives the request kwargs that
    identify ``user`` (query parameter for the as-given service, a header later)."""

    def __init__(self, base_url: str, auth: Callable[[dict], dict] = query_param_auth,
                 timeout: float = HTTP_TIMEOUT):
        self.base_url = base_url
        self.auth = auth
        self.timeout = timeout
        self.session = requests.Session()

    def request(self, method: str, path: str, user: dict | None = None, **kw) -> requests.Response:
        if user is not None:
            for key, value in self.auth(user).items():
                kw[key] = {**value, **kw.get(key, {})} if isinstance(value, dict) else value
        kw.setdefault("timeout", self.timeout)
        return requests.request(method, self.base_url + path, **kw)

    def create_user(self, email: str) -> dict:
        r = self.request("POST", "/users", json={"email": email})
        assert r.status_code in (200, 201), (r.status_code, r.text[:300])  # fixed: 201 Created
        return r.json()

    def post_task(self, user: dict, meta="meta", image: bytes = JPEG_MAGIC, **kw) -> requests.Response:
        return self.request("POST", "/tasks", user, json={"meta": meta, "image": b64(image)}, **kw)

    def create_task(self, user: dict, meta="meta", image: bytes = JPEG_MAGIC) -> dict:
        r = self.post_task(user, meta, image)
        assert r.status_code in (200, 201), (r.status_code, r.text[:300])  # fixed: 201 Created
        return r.json()

    def get(self, path: str, user: dict | None = None, **kw) -> requests.Response:
        return self.request("GET", path, user, **kw)

    def delete(self, path: str, user: dict | None = None, **kw) -> requests.Response:
        return self.request("DELETE", path, user, **kw)


# --------------------------------------------------------------------------- the database


class DbInspector:
    """An autocommit connection of its own, to look at what the service committed."""

    def __init__(self, url: str):
        self.conn = psycopg2.connect(url)
        self.conn.autocommit = True

    def all(self, sql: str, *params) -> list[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def one(self, sql: str, *params):
        rows = self.all(sql, *params)
        assert len(rows) == 1, rows
        return rows[0][0] if len(rows[0]) == 1 else rows[0]

    def tasks(self) -> list[tuple]:
        return self.all('SELECT id, free, metadata, owner_id FROM task ORDER BY id')

    def users(self) -> list[tuple]:
        return self.all('SELECT id, email, tasks_number FROM "user" ORDER BY id')

    def tasks_number(self, user_id: int) -> int:
        return self.one('SELECT tasks_number FROM "user" WHERE id = %s', user_id)

    def activity(self) -> list[dict]:
        """The service's sessions on this database (not ours)."""
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT pid, state, wait_event_type, query FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'")
            return [dict(zip(("pid", "state", "wait_event_type", "query"), r)) for r in cur]

    def wait_for(self, predicate: Callable[[], object], timeout: float = WAIT_TIMEOUT, what: str = ""):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout}s: {what}")
            time.sleep(0.02)

    def lock_waiters(self) -> list[dict]:
        return [a for a in self.activity() if a["wait_event_type"] == "Lock"]

    def close(self):
        self.conn.close()


# --------------------------------------------------------------------------- the service under test


@dataclass
class Service:
    side: str
    module: ModuleType
    api: Api
    db: DbInspector
    workdir: Path
    base_url: str
    errors: list = field(default_factory=list)  # exceptions the views raised (in-process only)
    server: object = None

    def image_path(self, task_id: int) -> Path:
        return self.workdir / "storage" / "task_images" / f"{task_id}.jpg"

    def error_names(self) -> list[str]:
        return [type(e).__name__ for e in self.errors]

    def error_texts(self) -> list[str]:
        return [f"{type(e).__name__}: {e}" for e in self.errors]


# --------------------------------------------------------------------------- interleaving


class Rendezvous:
    """Makes the threads serving matching requests meet at a point inside a peewee call.

    ``install(monkeypatch, owner, attr, when)`` wraps ``owner.attr``; a call in a request
    for which ``when(flask.request, *args)`` is true waits at a barrier of ``parties`` before
    (``where="before"``) or after the real call. Only the first ``parties`` matching calls meet.
    """

    def __init__(self, parties: int = 2, timeout: float = WAIT_TIMEOUT):
        self.barrier = threading.Barrier(parties, timeout=timeout)
        self.parties = parties
        self._lock = threading.Lock()
        self._arrived = 0

    def _take_slot(self) -> bool:
        with self._lock:
            if self._arrived >= self.parties:
                return False
            self._arrived += 1
            return True

    def install(self, monkeypatch, owner, attr: str, when, where: str = "after"):
        import flask

        original = getattr(owner, attr)
        rv = self

        def wrapper(*args, **kwargs):
            matches = flask.has_request_context() and when(flask.request, *args, **kwargs)
            if matches and where == "before" and rv._take_slot():
                rv.barrier.wait()
            result = original(*args, **kwargs)
            if matches and where == "after" and rv._take_slot():
                rv.barrier.wait()
            return result

        monkeypatch.setattr(owner, attr, wrapper)
        return self

    @property
    def met(self) -> bool:
        """Whether all parties reached the meeting point (the interleaving really happened)."""
        return self._arrived == self.parties


class Gate:
    """Holds matching calls until ``open()``; ``reached`` is set when one arrives."""

    def __init__(self, timeout: float = WAIT_TIMEOUT):
        self.reached = threading.Event()
        self._open = threading.Event()
        self.timeout = timeout

    def open(self):
        self._open.set()

    def install(self, monkeypatch, owner, attr: str, when, where: str = "after"):
        import flask

        original = getattr(owner, attr)
        gate = self

        def hold():
            gate.reached.set()
            if not gate._open.wait(gate.timeout):
                raise TimeoutError("gate was never opened")

        def wrapper(*args, **kwargs):
            matches = flask.has_request_context() and when(flask.request, *args, **kwargs)
            if matches and where == "before":
                hold()
            result = original(*args, **kwargs)
            if matches and where == "after":
                hold()
            return result

        monkeypatch.setattr(owner, attr, wrapper)


def in_threads(*calls: Callable[[], object], timeout: float = WAIT_TIMEOUT * 2) -> list:
    """Run the calls concurrently; return their results (exceptions are returned, not raised)."""
    results: list = [None] * len(calls)

    def run(i, c):
        try:
            results[i] = c()
        except Exception as e:  # noqa: BLE001 - reported to the caller
            results[i] = e

    threads = [threading.Thread(target=run, args=(i, c), daemon=True) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a concurrent call did not finish in time"
    return results


class QueryCounter:
    """Counts SQL statements the service sends through peewee's ``Database.execute_sql``."""

    def __init__(self):
        self.statements: list[str] = []

    def install(self, monkeypatch):
        import peewee

        original = peewee.Database.execute_sql
        counter = self

        def execute_sql(db, sql, params=None, *args, **kwargs):
            counter.statements.append(sql)
            return original(db, sql, params, *args, **kwargs)

        monkeypatch.setattr(peewee.Database, "execute_sql", execute_sql)
        return self

    @contextlib.contextmanager
    def measure(self):
        start = len(self.statements)
        box = {}
        yield box
        box["statements"] = self.statements[start:]
        box["count"] = len(box["statements"])


def evidence(*finding_ids: str, fixed_pending: str | None = None, present_on: tuple | None = None):
    """Parametrise a test over ``side``: as_given (the defect is observed) and fixed (the
    redesigned service does not have it; pending, with the reason, if ``fixed_pending``).
    ``present_on``: the stacks the as-given defect exists on, when not all ("2020" or "today");
    on the others the as-given test checks that it is absent."""
    return pytest.mark.parametrize("side", [
        pytest.param("as_given", id="as_given",
                     marks=[pytest.mark.finding(f, side="as_given", stacks=present_on)
                            for f in finding_ids]),
        pytest.param("fixed", id="fixed",
                     marks=[pytest.mark.finding(f, side="fixed") for f in finding_ids]
                     + ([pytest.mark.pending(fixed_pending)] if fixed_pending else [])),
    ])
